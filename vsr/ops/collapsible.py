"""Collapsible (re-parameterised) convolutions: parallel linear branches that fold into one conv.

A :class:`CollapsibleConv2d` is a ``k x k`` convolution (stride 1, zero "same" padding) with
parallel *linear* branches, as in ECBSR's edge-oriented blocks and SESR's collapsible linear
blocks:

* ``main``: the ``k x k`` convolution itself (weight and the block's only bias);
* ``point``: a ``1 x 1`` convolution;
* ``expand``: ``1 x 1`` (in → E) → ``k x k`` (E → E) → ``1 x 1`` (E → out), E = ``expand`` channels (16);
* ``identity`` (only when in == out): the input itself, with a learned scale per channel;
* ``edges`` (only when k >= 3): a ``1 x 1`` convolution followed by a fixed Sobel-x, Sobel-y or
  Laplacian filter on each channel, with a learned scale per channel.

Every branch is linear and bias-free except ``main``, so the sum is one convolution of the
deployed shape, exactly, *including the borders*: a bias-free ``1 x 1`` maps the zero padding to
zero, so ``conv_kxk(pad(conv_1x1(x)))`` is ``conv_kxk(conv_1x1(pad(x)))``, and a ``3 x 3`` filter
with padding 1 is the ``k x k`` filter with that ``3 x 3`` in its centre and padding ``k // 2``.
(ECBSR's branches carry a bias before their ``k x k`` filter and must pad with it; leaving those
biases out costs nothing, since they would only add to ``main``'s.)

:meth:`CollapsibleConv2d.kernel` computes the folded kernel differentiably and ``forward`` runs
that one convolution, so training costs about what the plain network costs while the optimiser
sees the branched parameters; :meth:`CollapsibleConv2d.branched` runs every branch explicitly
(the reference the tests compare with).  :func:`make_collapsible` turns every eligible
``nn.Conv2d`` of a model into a collapsible one that computes *exactly* what the conv did (the
extra branches start at zero output: their last factor is zero, the others random, so gradients
reach them); :func:`collapse` turns them back into plain ``nn.Conv2d`` layers, so a collapsed
ESPCN's ``state_dict`` is a plain ESPCN's.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EDGE_FILTERS", "CollapsibleConv2d", "collapse", "collapsed_state_dict", "is_collapsible_conv",
           "make_collapsible"]

#: The fixed 3x3 edge filters of ECBSR's edge-oriented branches (cross-correlation taps).
EDGE_FILTERS: dict[str, tuple[tuple[float, ...], ...]] = {
    "sobel_x": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "sobel_y": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}


def is_collapsible_conv(layer: nn.Module) -> bool:
    """A plain stride-1, groups-1, undilated, zero-padded odd square conv with 'same' padding and a bias."""
    if type(layer) is not nn.Conv2d:
        return False
    k = layer.kernel_size
    return (k[0] == k[1] and k[0] % 2 == 1 and layer.stride == (1, 1) and layer.dilation == (1, 1)
            and layer.groups == 1 and layer.padding == (k[0] // 2, k[0] // 2) and layer.padding_mode == "zeros"
            and layer.bias is not None)


class CollapsibleConv2d(nn.Module):
    """A ``k x k`` conv with parallel linear branches (module docstring); ``forward`` runs the folded conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, expand: int = 16,
                 edges: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {kernel_size}")
        k, i, o = kernel_size, in_channels, out_channels
        self.in_channels, self.out_channels, self.kernel_size = i, o, k
        # expand: 16 keeps a collapsible espcn's training state (weights + Adam moments) near 0.5 MB, so
        # that an unfinished run's checkpoint can be committed; the folded kernel is the same either way.
        e = expand
        self.main = nn.Conv2d(i, o, k, padding=k // 2)
        self.point = nn.Parameter(torch.zeros(o, i))
        # Scales chosen so that an Adam step of size lr on the zero factors moves the folded kernel by
        # about lr per tap, as it moves ``main``'s: the folded expand kernel, expand_mid @ expand_in, has
        # taps of std 1/sqrt(e), summed over e random-signed steps of expand_out; edge taps reach 4.
        self.expand_in = nn.Parameter(torch.randn(e, i) / math.sqrt(e))
        self.expand_mid = nn.Parameter(torch.randn(e, e, k, k) / math.sqrt(e))
        self.expand_out = nn.Parameter(torch.zeros(o, e))
        self.identity_scale = nn.Parameter(torch.zeros(o)) if i == o else None
        names = list(EDGE_FILTERS) if edges and k >= 3 else []
        self.edge_names = tuple(names)
        self.register_buffer("edge_filters", torch.tensor([EDGE_FILTERS[n] for n in names]).reshape(-1, 3, 3),
                             persistent=False)
        self.edge_in = nn.Parameter(torch.randn(len(names), o, i) / 4.0)
        self.edge_scale = nn.Parameter(torch.zeros(len(names), o))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options) -> "CollapsibleConv2d":
        """A collapsible conv whose output equals ``conv``'s exactly (extra branches at zero output)."""
        if not is_collapsible_conv(conv):
            raise ValueError(f"{conv} is not a stride-1 'same'-padded odd square Conv2d with bias")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], **options)
        new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.main.weight.copy_(conv.weight)
            new.main.bias.copy_(conv.bias)
        new.train(conv.training)
        return new

    def _centre(self, kernel: Tensor) -> Tensor:
        """A smaller odd kernel zero-padded to ``k x k`` around its centre."""
        p = (self.kernel_size - kernel.shape[-1]) // 2
        return F.pad(kernel, (p, p, p, p))

    def kernel(self) -> Tensor:
        """The folded ``(out, in, k, k)`` kernel (differentiable in every branch's parameters)."""
        with torch.autocast(self.main.weight.device.type, enabled=False):
            w = self.main.weight.contiguous()
            w = w + self._centre(self.point[:, :, None, None])
            mid_in = torch.einsum("fekl,ei->fikl", self.expand_mid, self.expand_in)
            w = w + torch.einsum("of,fikl->oikl", self.expand_out, mid_in)
            if self.identity_scale is not None:
                eye = torch.diag(self.identity_scale)[:, :, None, None]
                w = w + self._centre(eye)
            if self.edge_names:
                mix = self.edge_scale[:, :, None] * self.edge_in  # (n, o, i)
                w = w + self._centre(torch.einsum("noi,nkl->oikl", mix, self.edge_filters))
        return w

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel(), self.main.bias, padding=self.kernel_size // 2)

    def branched(self, x: Tensor) -> Tensor:
        """Every branch computed on its own and summed: what :meth:`forward` folds into one conv."""
        pad = self.kernel_size // 2
        y = self.main(x) + F.conv2d(x, self.point[:, :, None, None])
        h = F.conv2d(x, self.expand_in[:, :, None, None])
        h = F.conv2d(h, self.expand_mid, padding=pad)
        y = y + F.conv2d(h, self.expand_out[:, :, None, None])
        if self.identity_scale is not None:
            y = y + self.identity_scale[None, :, None, None] * x
        o = self.out_channels
        for n in range(len(self.edge_names)):
            h = F.conv2d(x, self.edge_in[n, :, :, None, None])
            h = F.conv2d(h, self.edge_filters[n].expand(o, 1, 3, 3), padding=1, groups=o)
            y = y + self.edge_scale[n][None, :, None, None] * h
        return y

    def to_conv(self) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` this block folds into."""
        w = self.main.weight
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, padding=self.kernel_size // 2,
                         device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
            conv.bias.copy_(self.main.bias)
        conv.train(self.training)
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"expand={self.expand_in.shape[0]}, identity={self.identity_scale is not None}, "
                f"edges={list(self.edge_names)}")


def _replace(model: nn.Module, pick: type[nn.Module], build) -> nn.Module:  # noqa: ANN001
    model = copy.deepcopy(model)
    for name, child in list(model.named_modules()):
        if name and isinstance(child, pick) and (pick is not nn.Conv2d or is_collapsible_conv(child)):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, build(child))
    return model


def make_collapsible(model: nn.Module, **options) -> nn.Module:
    """Deep copy of ``model`` with every eligible ``nn.Conv2d`` (:func:`is_collapsible_conv`) collapsible.

    The copy computes what ``model`` computes (the extra branches start at zero output); ``options``
    go to :class:`CollapsibleConv2d` (``expand``, ``edges``). The random factors of the branches are
    drawn from torch's global generator (seed it for a reproducible run).
    """
    return _replace(model, nn.Conv2d, lambda conv: CollapsibleConv2d.from_conv(conv, **options))


def collapse(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` with every :class:`CollapsibleConv2d` folded into its plain ``nn.Conv2d``."""
    return _replace(model, CollapsibleConv2d, CollapsibleConv2d.to_conv)


def collapsed_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The ``state_dict`` of :func:`collapse` of ``model``: for a collapsible ESPCN, a plain ESPCN's."""
    return {k: v.detach().clone() for k, v in collapse(model).state_dict().items()}
