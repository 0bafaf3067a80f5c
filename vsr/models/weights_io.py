"""Saving and loading ESPCN weights: safetensors (preferred) or a plain state_dict.

Files never hold pickled modules: ``.safetensors`` carries the architecture in its
metadata, and ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from .espcn import ESPCN, ESPCNConfig

__all__ = ["load_weights", "read_weights", "save_weights"]


def save_weights(model: ESPCN, path: str | Path, **metadata: Any) -> Path:
    """Write ``model``'s weights; the suffix picks the format (.safetensors or .pt)."""
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.config.to_dict()), **{k: json.dumps(v) for k, v in metadata.items()}}
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp), metadata=meta)
    else:
        torch.save({"state_dict": state, "metadata": meta}, tmp)
    os.replace(tmp, path)
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, metadata)`` of a weights file without building a model."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
                raw = f.metadata() or {}
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "state_dict" in obj:
                state, raw = obj["state_dict"], obj.get("metadata", {})
            else:
                state, raw = obj, {}
    except WeightsError:
        raise
    except Exception as exc:  # corrupt file, pickled module, wrong format
        raise WeightsError(
            f"cannot read weights {str(path)!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{str(path)!r} is not a state_dict of tensors")
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError):
            meta[k] = v
    return state, meta


def _describe(cfg: dict[str, Any] | ESPCNConfig) -> str:
    d = cfg.to_dict() if isinstance(cfg, ESPCNConfig) else cfg
    return (
        f"x{d.get('scale')} {d.get('channels')}ch widths={list(d.get('widths', []))} "
        f"kernels={list(d.get('kernels', []))} {d.get('activation')}"
    )


def load_weights(model: ESPCN, path: str | Path) -> ESPCN:
    """Load ``path`` into ``model``; a file made for another architecture or scale is refused."""
    state, meta = read_weights(path)
    want = model.config
    got = meta.get("config")
    if isinstance(got, dict):
        same = {k: got.get(k) for k in ("scale", "channels", "widths", "kernels", "activation")}
        expected = {k: v for k, v in want.to_dict().items() if k in same}
        if same != expected:
            raise WeightsError(
                f"{str(path)!r} holds weights for {_describe(got)}, "
                f"but the model is {_describe(want)}"
            )
    own = model.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        found = {k: tuple(v.shape) for k, v in state.items()}
        expected_shapes = {k: tuple(v.shape) for k, v in own.items()}
        raise WeightsError(
            f"{str(path)!r} does not fit the model ({_describe(want)}): "
            f"expected tensors {expected_shapes}, found {found}"
        )
    model.load_state_dict(state)
    return model
