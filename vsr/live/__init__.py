"""Live preview (``vsr live``): a camera, file or URL upscaled on the fly in a window.

Sources and displays are interfaces (:class:`FrameSource`, :class:`Display`) so that
the preview runs headless in tests; threads live in :mod:`vsr.pipeline`.
"""

from .display import Display, UserInput, WindowDisplay, check_display
from .preview import Captured, LiveOptions, LiveReport, LiveUpscaler, Recorder, Upscaled, run_live, save_image
from .render import VIEWS, Status, ViewState, picture, render
from .sources import CameraSource, FileSource, FrameSource, open_source

__all__ = [
    "VIEWS",
    "CameraSource",
    "Captured",
    "Display",
    "FileSource",
    "FrameSource",
    "LiveOptions",
    "LiveReport",
    "LiveUpscaler",
    "Recorder",
    "Status",
    "Upscaled",
    "UserInput",
    "ViewState",
    "WindowDisplay",
    "check_display",
    "open_source",
    "picture",
    "render",
    "run_live",
    "save_image",
]
