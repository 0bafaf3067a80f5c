"""Kernel conversion between a strided transposed convolution and its sub-pixel form.

See :mod:`vsr.ops` for the derivation and the index conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .shuffle import _check_scale, periodic_shuffle

if TYPE_CHECKING:
    from .modules import SubpixelConvModule

__all__ = ["SubpixelConv", "TransposedConv", "deconv_to_subpixel", "subpixel_to_deconv"]


def _per_dim(value: int | Sequence[int], d: int, name: str) -> tuple[int, ...]:
    vals = (value,) * d if isinstance(value, int) else tuple(value)
    if len(vals) != d or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        raise ConfigError(f"{name} must be an int or {d} ints, got {value!r}")
    return vals


def _conv_nd(d: int):  # noqa: ANN202 - F.conv1d / F.conv2d
    return F.conv1d if d == 1 else F.conv2d


@dataclass(frozen=True, eq=False)
class SubpixelConv:
    """LR convolution, periodic shuffle, HR crop: the sub-pixel form of a transposed conv.

    ``weight`` is ``(out·r^d, in, *k)`` (Conv layout, cross-correlation), ``bias`` is
    ``(out·r^d,)`` or None, ``padding`` the symmetric LR zero padding per spatial dim,
    ``crop`` the ``(begin, end)`` HR pixels dropped per spatial dim after the shuffle.
    """

    weight: Tensor
    bias: Tensor | None
    scale: int
    padding: tuple[int, ...]
    crop: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        d = self.weight.ndim - 2
        r = _check_scale(self.scale)
        if d not in (1, 2):
            raise ConfigError(f"SubpixelConv weight must be (O·r^d, I, *k) with d = 1 or 2, got {tuple(self.weight.shape)}")
        if self.weight.shape[0] % r**d:
            raise ConfigError(f"SubpixelConv: {self.weight.shape[0]} output channels is not a multiple of r^{d} = {r**d}")
        if self.bias is not None and tuple(self.bias.shape) != (self.weight.shape[0],):
            raise ConfigError(f"SubpixelConv bias must be ({self.weight.shape[0]},), got {tuple(self.bias.shape)}")
        if len(self.padding) != d or any(p < 0 for p in self.padding):
            raise ConfigError(f"SubpixelConv padding must be {d} non-negative ints, got {self.padding}")
        if len(self.crop) != d or any(len(c) != 2 or min(c) < 0 for c in self.crop):
            raise ConfigError(f"SubpixelConv crop must be {d} (begin, end) pairs >= 0, got {self.crop}")

    @property
    def dims(self) -> int:
        return self.weight.ndim - 2

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        """Channels after the shuffle (the LR convolution outputs ``out_channels·r^d``)."""
        return self.weight.shape[0] // self.scale**self.dims

    def apply(self, x: Tensor) -> Tensor:
        """``(N, in, *S)`` → ``(N, out, *(s·r - crop))``."""
        y = _conv_nd(self.dims)(x, self.weight, self.bias, padding=self.padding)
        return _crop(periodic_shuffle(y, self.scale), self.crop)

    def to_module(self) -> "SubpixelConvModule":
        from .modules import SubpixelConvModule  # modules.py builds on this file

        return SubpixelConvModule(self)

    @classmethod
    def from_conv_transpose(cls, layer: nn.ConvTranspose1d | nn.ConvTranspose2d) -> "SubpixelConv":
        """The sub-pixel form of a supported ``ConvTranspose1d``/``2d`` (see :func:`unsupported_reason`)."""
        from .modules import unsupported_reason

        reason = unsupported_reason(layer)
        if reason is not None:
            raise ConfigError(f"cannot convert {layer}: {reason}")
        return deconv_to_subpixel(
            layer.weight.detach(),
            None if layer.bias is None else layer.bias.detach(),
            stride=layer.stride[0],
            padding=tuple(layer.padding),
            output_padding=tuple(layer.output_padding),
        )


def _crop(y: Tensor, crop: tuple[tuple[int, int], ...]) -> Tensor:
    index: list[slice] = [slice(b, (n - e)) for (b, e), n in zip(crop, y.shape[-len(crop):])]
    return y[(..., *index)]


@dataclass(frozen=True, eq=False)
class TransposedConv:
    """A transposed convolution in PyTorch's terms: weight ``(in, out, *K)``, bias ``(out,)``."""

    weight: Tensor
    bias: Tensor | None
    stride: int
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]

    @property
    def dims(self) -> int:
        return self.weight.ndim - 2

    def apply(self, x: Tensor) -> Tensor:
        fn = F.conv_transpose1d if self.dims == 1 else F.conv_transpose2d
        return fn(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)

    def to_module(self) -> nn.ConvTranspose1d | nn.ConvTranspose2d:
        cls = nn.ConvTranspose1d if self.dims == 1 else nn.ConvTranspose2d
        i, o, *ks = self.weight.shape
        m = cls(i, o, tuple(ks), stride=self.stride, padding=self.padding,
                output_padding=self.output_padding, bias=self.bias is not None,
                device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            m.weight.copy_(self.weight)
            if self.bias is not None:
                m.bias.copy_(self.bias)
        return m


def deconv_to_subpixel(
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
) -> SubpixelConv:
    """Sub-pixel form of ``conv_transpose{1,2}d(x, weight, bias, stride, padding, output_padding)``.

    ``weight`` is ``(in, out, K)`` or ``(in, out, Kh, Kw)`` (ConvTranspose layout); any
    ``K >= 1`` works. Exact on the whole output: only a permutation of the weights, so
    the result differs from the transposed convolution by float summation order only.
    The LR padding is symmetric (a plain ``Conv2d``), so when ``output_padding`` needs
    LR pixels on one side only the other side computes a few that the crop drops.
    """
    d = weight.ndim - 2
    if d not in (1, 2):
        raise ConfigError(f"weight must be (in, out, K) or (in, out, Kh, Kw), got {tuple(weight.shape)}")
    r = _check_scale(stride)
    pads = _per_dim(padding, d, "padding")
    out_pads = _per_dim(output_padding, d, "output_padding")
    c_in, c_out, *ks = weight.shape
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ConfigError(f"bias must be ({c_out},) for weight {tuple(weight.shape)}, got {tuple(bias.shape)}")
    lr_pad: list[int] = []
    crop: list[tuple[int, int]] = []
    front: list[int] = []
    for K, p, op in zip(ks, pads, out_pads):
        if p < 0 or not 0 <= op < r:
            raise ConfigError(f"need padding >= 0 and 0 <= output_padding < stride ({r}), got {p}, {op}")
        k = math.ceil(K / r)
        e = k * r - K  # zeros put in front of w (at the end of the note's f)
        q, s = divmod(p + e, r)  # HR pixels to drop at the start of the padded full output
        ideal = k - 1 - q  # LR padding that drops exactly q LR pixels
        P = max(0, ideal)
        end = r * (P + ideal - k + 2) - s - K + 2 * p - op
        if end < 0:  # output_padding reaches past the padded full output: more LR pixels
            more = -(end // r)  # ceil(-end / r)
            P += more
            end += more * r
        lr_pad.append(P)
        crop.append((s + (P - ideal) * r, end))
        front.append(e)
    w = F.pad(weight, [v for e in reversed(front) for v in (e, 0)])
    k_lr = [(K + e) // r for K, e in zip(ks, front)]
    # (i, o, k1, r, k2, r) → (o, r, r, i, k1, k2), taps flipped: w_pad[(k-1-v)·r + φ]
    w = w.reshape(c_in, c_out, *[v for k in k_lr for v in (k, r)])
    w = w.permute(1, *range(3, 2 * d + 2, 2), 0, *range(2, 2 * d + 2, 2))
    w = w.flip(list(range(d + 2, 2 * d + 2))).reshape(c_out * r**d, c_in, *k_lr)
    b = None if bias is None else bias.repeat_interleave(r**d)
    return SubpixelConv(weight=w.contiguous(), bias=b, scale=r, padding=tuple(lr_pad), crop=tuple(crop))


def subpixel_to_deconv(
    sub: SubpixelConv, *, kernel_size: int | Sequence[int] | None = None
) -> TransposedConv:
    """The transposed convolution equal to ``sub`` (inverse of :func:`deconv_to_subpixel`).

    The kernel comes out ``k·r`` wide (less the leading taps that ``output_padding < r``
    needs dropped) unless ``kernel_size`` asks for another ``K <= k·r``; dropped leading taps
    (in ``w``'s order) must be zero. Raises ConfigError when no
    ``padding >= 0``/``0 <= output_padding < r`` expresses ``sub``'s padding and crop, or when
    the bias differs between the ``r^d`` phases of an output channel.
    """
    d, r = sub.dims, sub.scale
    c_out, c_in = sub.out_channels, sub.in_channels
    k_lr = list(sub.weight.shape[2:])
    if kernel_size is None:  # k·r, minus the leading taps that output_padding < r forces out
        ks = [k * r - max(0, b - end - (r - 1)) for k, (b, end) in zip(k_lr, sub.crop)]
    else:
        ks = list(_per_dim(kernel_size, d, "kernel_size"))
    pads: list[int] = []
    out_pads: list[int] = []
    for K, k, P, (b, end) in zip(ks, k_lr, sub.padding, sub.crop):
        e = k * r - K
        if not 0 <= e < k * r:
            raise ConfigError(f"kernel_size must be in 1..{k * r} for a {k}-tap LR kernel at x{r}, got {K}")
        p, op = b + (k - 1 - P) * r - e, b - end - e
        if p < 0 or not 0 <= op < r:
            raise ConfigError(
                f"padding {P} and crop {(b, end)} give transposed-conv padding {p}, output_padding {op}: "
                f"need padding >= 0 and 0 <= output_padding < {r}; change the crop or kernel_size"
            )
        pads.append(p)
        out_pads.append(op)
    # inverse of deconv_to_subpixel's permutation: (o, r.., i, k..) → (i, o, k1, r, k2, r)
    w = sub.weight.reshape(c_out, *[r] * d, c_in, *k_lr).flip(list(range(d + 2, 2 * d + 2)))
    w = w.permute(d + 1, 0, *[v for j in range(d) for v in (d + 2 + j, 1 + j)])
    w = w.reshape(c_in, c_out, *[k * r for k in k_lr])
    front = [k * r - K for k, K in zip(k_lr, ks)]
    index = (slice(None), slice(None), *[slice(e, None) for e in front])
    if any(front) and w.count_nonzero() != w[index].count_nonzero():
        raise ConfigError(f"kernel_size {tuple(ks)} would drop non-zero taps; use a larger kernel_size")
    bias = None
    if sub.bias is not None:
        per_phase = sub.bias.reshape(c_out, r**d)
        if not torch.equal(per_phase, per_phase[:, :1].expand_as(per_phase)):
            raise ConfigError("the bias differs between the phases of an output channel: no transposed conv has it")
        bias = per_phase[:, 0].clone()
    return TransposedConv(weight=w[index].contiguous(), bias=bias, stride=r,
                          padding=tuple(pads), output_padding=tuple(out_pads))
