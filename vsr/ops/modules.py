"""Module forms of the sub-pixel convolution, and whole-model conversion of transposed convs."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .kernels import SubpixelConv, _crop
from .shuffle import PeriodicShuffle

__all__ = [
    "SubpixelConvModule",
    "SubpixelConversionWarning",
    "convert_transposed_convs",
    "unsupported_reason",
]


class SubpixelConvModule(nn.Module):
    """``Conv{1,2}d`` + periodic shuffle + crop: the drop-in replacement of a transposed conv.

    Unlike ``ConvTranspose2d.forward`` it takes no ``output_size``: the output size is
    fixed by the converted layer's ``output_padding``.
    """

    def __init__(self, sub: SubpixelConv) -> None:
        super().__init__()
        conv_cls = nn.Conv1d if sub.dims == 1 else nn.Conv2d
        self.conv = conv_cls(
            sub.in_channels, sub.weight.shape[0], tuple(sub.weight.shape[2:]), padding=sub.padding,
            bias=sub.bias is not None, device=sub.weight.device, dtype=sub.weight.dtype,
        )
        with torch.no_grad():
            self.conv.weight.copy_(sub.weight)
            if sub.bias is not None:
                self.conv.bias.copy_(sub.bias)
        self.shuffle: nn.Module = nn.PixelShuffle(sub.scale) if sub.dims == 2 else PeriodicShuffle(sub.scale)
        self.scale = sub.scale
        self.crop = sub.crop

    def to_subpixel(self) -> SubpixelConv:
        bias = None if self.conv.bias is None else self.conv.bias.detach()
        return SubpixelConv(weight=self.conv.weight.detach(), bias=bias, scale=self.scale,
                            padding=tuple(self.conv.padding), crop=self.crop)

    def forward(self, x: Tensor) -> Tensor:
        unbatched = x.ndim == len(self.crop) + 1
        y = self.shuffle(self.conv(x[None] if unbatched else x))
        y = _crop(y, self.crop)
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return f"scale={self.scale}, crop={self.crop}"


class SubpixelConversionWarning(UserWarning):
    """A transposed convolution :func:`convert_transposed_convs` left as it was.

    ``layer_name`` is its qualified name in the model (``""`` for the model itself) and
    ``reason`` says why it was not converted.
    """

    def __init__(self, layer_name: str, reason: str) -> None:
        super().__init__(f"left transposed conv {layer_name or '<root>'!r} unconverted: {reason}")
        self.layer_name = layer_name
        self.reason = reason


def unsupported_reason(layer: nn.Module) -> str | None:
    """Why ``layer`` cannot become a :class:`SubpixelConvModule`, or None if it can.

    Supported: ``ConvTranspose1d``/``2d`` with ``groups=1``, ``dilation=1``, a square
    stride ``r > 1`` and zero padding mode.
    """
    if not isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        return f"{type(layer).__name__} is not a ConvTranspose1d or ConvTranspose2d"
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in layer.parameters()):
        return "lazy layer not initialised yet (run one forward pass first)"
    if layer.groups != 1:
        return f"groups={layer.groups} (only groups=1 converts)"
    if any(v != 1 for v in layer.dilation):
        return f"dilation={tuple(layer.dilation)} (only dilation 1 converts)"
    if len(set(layer.stride)) != 1:
        return f"non-square stride {tuple(layer.stride)}"
    if layer.stride[0] == 1:
        return "stride 1: it is a plain convolution, no sub-pixel form to gain"
    if layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r} (only 'zeros' converts)"
    return None


def convert_transposed_convs(module: nn.Module, *, strict: bool = False) -> nn.Module:
    """Deep copy of ``module`` with every supported transposed conv as a :class:`SubpixelConvModule`.

    Outputs are identical up to float summation order. Transposed convolutions that cannot
    convert (:func:`unsupported_reason`: ConvTranspose3d, groups > 1, dilation > 1,
    non-square stride, stride 1, uninitialised lazy layers) are left as they are, each reported by one
    :class:`SubpixelConversionWarning` carrying ``layer_name`` and ``reason`` (collect them
    with ``warnings.catch_warnings(record=True)``); with ``strict=True`` a
    :class:`~vsr.errors.ConfigError` naming all of them is raised instead. The input module
    is never modified; a layer shared under several names is converted once.
    """
    model = copy.deepcopy(module)
    converted: dict[int, nn.Module] = {}
    skipped: list[tuple[str, str]] = []
    todo: list[tuple[str, nn.Module]] = []
    for name, child in model.named_modules(remove_duplicate=False):
        if not isinstance(child, nn.modules.conv._ConvTransposeNd):
            continue
        if id(child) in converted:
            todo.append((name, child))
            continue
        reason = unsupported_reason(child)
        if reason is not None:
            skipped.append((name, reason))
            continue
        new = SubpixelConv.from_conv_transpose(child).to_module()
        new.train(child.training)
        converted[id(child)] = new
        todo.append((name, child))
    if skipped and strict:
        listed = "; ".join(f"{n or '<root>'}: {why}" for n, why in skipped)
        raise ConfigError(f"cannot convert {len(skipped)} transposed conv(s) ({listed}); pass strict=False to keep them")
    for name, reason in skipped:
        warnings.warn(SubpixelConversionWarning(name, reason), stacklevel=2)
    for name, child in todo:
        if name == "":
            return converted[id(child)]
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, converted[id(child)])
    return model
