"""Periodic shuffle (ESPCN's sub-pixel rearrangement) in 1-D and 2-D, and its inverse."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["PeriodicShuffle", "periodic_shuffle", "periodic_unshuffle"]


def _check_scale(r: object) -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"scale must be a positive integer, got {r!r}")
    return r


def periodic_shuffle(x: Tensor, r: int) -> Tensor:
    """``(N, C·r^d, *S)`` → ``(N, C, *(s·r))`` for d = 1 or 2 spatial dims (``x.ndim - 2``).

    In 2-D this is exactly :func:`torch.nn.functional.pixel_shuffle`.
    """
    r = _check_scale(r)
    d = x.ndim - 2
    if d not in (1, 2):
        raise ConfigError(f"periodic_shuffle needs an (N, C, L) or (N, C, H, W) tensor, got {tuple(x.shape)}")
    n, cr, *sizes = x.shape
    if cr % r**d:
        raise ConfigError(f"periodic_shuffle: {cr} channels is not a multiple of r^{d} = {r**d}")
    c = cr // r**d
    y = x.reshape(n, c, *([r] * d), *sizes)
    if d == 1:  # (n, c, φ, l) → (n, c, l, φ)
        y = y.permute(0, 1, 3, 2)
    else:  # (n, c, φh, φw, h, w) → (n, c, h, φh, w, φw)
        y = y.permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c, *(s * r for s in sizes))


def periodic_unshuffle(x: Tensor, r: int) -> Tensor:
    """Inverse of :func:`periodic_shuffle`: ``(N, C, *(s·r))`` → ``(N, C·r^d, *S)``.

    In 2-D this is exactly :func:`torch.nn.functional.pixel_unshuffle`.
    """
    r = _check_scale(r)
    d = x.ndim - 2
    if d not in (1, 2):
        raise ConfigError(f"periodic_unshuffle needs an (N, C, L) or (N, C, H, W) tensor, got {tuple(x.shape)}")
    n, c, *sizes = x.shape
    if any(s % r for s in sizes):
        raise ConfigError(f"periodic_unshuffle: spatial size {tuple(sizes)} is not a multiple of r = {r}")
    lr = [s // r for s in sizes]
    if d == 1:
        y = x.reshape(n, c, lr[0], r).permute(0, 1, 3, 2)
    else:
        y = x.reshape(n, c, lr[0], r, lr[1], r).permute(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * r**d, *lr)


class PeriodicShuffle(nn.Module):
    """Module form of :func:`periodic_shuffle` (1-D or 2-D, chosen by the input's rank)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = _check_scale(scale)

    def forward(self, x: Tensor) -> Tensor:
        return periodic_shuffle(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
