"""ESPCN (Shi et al., CVPR 2016): every convolution in LR space, then a periodic shuffle.

The last convolution outputs ``scale**2 * channels`` maps which
:class:`torch.nn.PixelShuffle` rearranges into the ``scale``-times larger image.
All layer sizes are parameters so that faster variants are one-line registrations
in :mod:`vsr.models.registry`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["ESPCN", "ESPCNConfig", "ACTIVATIONS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "prelu": nn.PReLU,
}


@dataclass(frozen=True)
class ESPCNConfig:
    """Architecture of one ESPCN: hidden widths, kernel sizes (one more than widths), activation."""

    scale: int = 3
    channels: int = 1
    widths: tuple[int, ...] = (64, 32)
    kernels: tuple[int, ...] = (5, 3, 3)
    activation: str = "tanh"
    arch: str = field(default="espcn", compare=True)

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ConfigError(f"scale must be 2, 3 or 4, got {self.scale!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (luma) or 3 (RGB), got {self.channels!r}")
        if len(self.kernels) != len(self.widths) + 1:
            raise ConfigError(
                f"ESPCN needs one kernel size per layer: {len(self.widths) + 1} for widths "
                f"{self.widths}, got {self.kernels}"
            )
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise ConfigError(f"kernel sizes must be odd and positive, got {self.kernels}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["kernels"] = list(self.kernels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ESPCNConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        d["kernels"] = tuple(d["kernels"])
        return cls(**d)

    @property
    def halo(self) -> int:
        """LR pixels of context each output pixel needs on every side (for tiling)."""
        return sum(k // 2 for k in self.kernels)

    @property
    def macs_per_lr_pixel(self) -> int:
        """Multiply-accumulates of the convolutions per LR input pixel."""
        chans = (self.channels, *self.widths, self.channels * self.scale**2)
        return sum(chans[i] * chans[i + 1] * k * k for i, k in enumerate(self.kernels))


class ESPCN(nn.Module):
    """Efficient sub-pixel CNN: ``(N, C, h, w)`` in [0, 1] → ``(N, C, r·h, r·w)``.

    The output is not clamped, so that training sees the true error; callers that
    need pixel values clamp (the pipeline does).
    """

    def __init__(self, config: ESPCNConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = config if config is not None else ESPCNConfig(**kwargs)
        cfg = self.config
        chans = (cfg.channels, *cfg.widths)
        layers: list[nn.Module] = []
        for i, width in enumerate(cfg.widths):
            k = cfg.kernels[i]
            layers.append(nn.Conv2d(chans[i], width, k, padding=k // 2))
            layers.append(ACTIVATIONS[cfg.activation]())
        self.features = nn.Sequential(*layers)
        k = cfg.kernels[-1]
        self.subpixel = nn.Conv2d(chans[-1], cfg.channels * cfg.scale**2, k, padding=k // 2)
        self.shuffle = nn.PixelShuffle(cfg.scale)
        self.reset_parameters()

    @property
    def scale(self) -> int:
        return self.config.scale

    def reset_parameters(self) -> None:
        """The paper's initialisation: small normal weights, zero biases."""
        gain = nn.init.calculate_gain("tanh" if self.config.activation == "tanh" else "relu")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, gain=gain if m is not self.subpixel else 1.0)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.channels:
            raise ValueError(
                f"ESPCN expects a (N, {self.config.channels}, H, W) tensor, "
                f"got shape {tuple(x.shape)}"
            )
        return self.shuffle(self.subpixel(self.features(x)))
