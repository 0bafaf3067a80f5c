"""vsr: real-time video super-resolution with ESPCN.

The public surface is what ``__all__`` lists; everything in modules whose name
starts with an underscore, or not re-exported here, may change without notice.
"""

# OpenCV before PyAV: both wheels bundle libxcb-shape/-shm/-xfixes under the same names, and
# when PyAV's copies load first OpenCV's first window hangs (see vsr.live.display.xcb_clash).
import cv2  # noqa: F401  isort: skip

from ._version import __version__
from .errors import (
    ConfigError,
    DeviceError,
    EncodeError,
    MediaError,
    ModelError,
    OutputExistsError,
    PipelineError,
    UnsupportedMediaError,
    VsrError,
    WeightsError,
)
from . import ops
from .models import ESPCN, ESPCNConfig, create_model, list_models, load_weights, register_model, save_weights
from .api import Upscaler, upscale_video
from .export import export_mpv, export_onnx
from .pipeline import RunReport

__all__ = [
    "ConfigError",
    "DeviceError",
    "ESPCN",
    "ESPCNConfig",
    "EncodeError",
    "MediaError",
    "ModelError",
    "OutputExistsError",
    "PipelineError",
    "RunReport",
    "UnsupportedMediaError",
    "Upscaler",
    "VsrError",
    "WeightsError",
    "__version__",
    "create_model",
    "export_mpv",
    "export_onnx",
    "list_models",
    "load_weights",
    "ops",
    "register_model",
    "save_weights",
    "upscale_video",
]
