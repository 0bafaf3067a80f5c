"""Named model variants, and their shipped weights.

A variant is a name bound to an architecture config; adding one is one line::

    register_model("espcn", widths=(64, 32), kernels=(5, 3, 3), activation="tanh")

Weights ship inside the package as ``weights/<name>_x<scale>.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ModelError, WeightsError
from .espcn import ESPCN, ESPCNConfig
from .weights_io import load_weights

__all__ = [
    "ModelSpec",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
    "shipped_weights",
]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    options: tuple[tuple[str, Any], ...]

    def config(self, scale: int, channels: int = 1) -> ESPCNConfig:
        return ESPCNConfig(scale=scale, channels=channels, **dict(self.options))


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str = "", **options: Any) -> ModelSpec:
    """Register a named ESPCN variant; a name can be registered once."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    ESPCNConfig(**options)  # validate now, not at first use
    spec = ModelSpec(name, description, tuple(sorted(options.items())))
    _REGISTRY[name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def shipped_weights(name: str, scale: int) -> Path | None:
    """Path of the weights shipped for ``name`` at ``scale``, or None."""
    ref = resources.files("vsr.models") / "weights" / f"{name}_x{scale}.safetensors"
    path = Path(str(ref))
    return path if path.is_file() else None


def create_model(
    name: str = "espcn",
    *,
    scale: int = 3,
    channels: int = 1,
    weights: str | Path | None = "shipped",
) -> ESPCN:
    """Build a registered variant.

    ``weights``: ``"shipped"`` loads the package's trained weights (error if none ship),
    ``None`` leaves the random initialisation, a path loads that file.
    """
    spec = get_spec(name)
    model = ESPCN(spec.config(scale, channels))
    if weights is None:
        return model.eval()
    if weights == "shipped":
        path = shipped_weights(name, scale)
        if path is None or channels != 1:
            raise WeightsError(
                f"no shipped weights for model {name!r} at x{scale} with {channels} channel(s); "
                "train some with `vsr train` and pass --weights FILE"
            )
        weights = path
    load_weights(model, weights)
    return model.eval()


register_model(
    "espcn",
    "the paper's network: 5x5 conv to 64, 3x3 to 32, 3x3 to r^2, tanh",
    widths=(64, 32),
    kernels=(5, 3, 3),
    activation="tanh",
)
register_model(
    "espcn-fast",
    "real-time variant for 2-core CPUs: 3x3 convs to 32 and 16, ReLU",
    widths=(32, 16),
    kernels=(3, 3, 3),
    activation="relu",
)
register_model(
    "espcn-teacher",
    "distillation teacher (no shipped weights): 5x5 conv to 128, 3x3 to 64, 3x3 to 32, 3x3 to r^2, tanh",
    widths=(128, 64, 32),
    kernels=(5, 3, 3, 3),
    activation="tanh",
)
