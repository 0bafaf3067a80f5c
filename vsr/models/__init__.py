"""Super-resolution models: the ESPCN architecture, its named variants and weights."""

from .espcn import ESPCN, ESPCNConfig
from .registry import create_model, get_spec, list_models, register_model, shipped_weights
from .weights_io import load_weights, read_weights, save_weights

__all__ = [
    "ESPCN",
    "ESPCNConfig",
    "create_model",
    "get_spec",
    "list_models",
    "load_weights",
    "read_weights",
    "register_model",
    "save_weights",
    "shipped_weights",
]
