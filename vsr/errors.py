"""The exceptions vsr raises, all rooted at :class:`VsrError`.

Each one also inherits the builtin a caller would catch without knowing vsr::

    VsrError(Exception)
    ├── ConfigError(ValueError)          a bad option, YAML key or value
    ├── ModelError(LookupError)          an unknown model name or scale
    ├── WeightsError(ValueError)         a weights file that is missing, corrupt or of another architecture
    ├── DeviceError(RuntimeError)        a device that is not available (e.g. ``cuda`` without a GPU)
    ├── MediaError(OSError)              an input that cannot be opened or decoded
    │   ├── UnsupportedMediaError(ValueError)  a property vsr does not handle (named in the message)
    │   └── EncodeError                  the output cannot be encoded or written
    ├── OutputExistsError(FileExistsError)    the destination exists and overwriting was not asked for
    └── PipelineError(RuntimeError)      a stage of the streaming pipeline failed

Messages are one line and say how to fix the problem where there is a fix.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeviceError",
    "EncodeError",
    "MediaError",
    "ModelError",
    "OutputExistsError",
    "PipelineError",
    "UnsupportedMediaError",
    "VsrError",
    "WeightsError",
]


class VsrError(Exception):
    """Root of every error vsr raises on purpose."""


class ConfigError(VsrError, ValueError):
    """A configuration option, YAML key or value is not valid."""


class ModelError(VsrError, LookupError):
    """A model name or scale that vsr does not know."""

    def __str__(self) -> str:  # LookupError/KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(VsrError, ValueError):
    """A weights file that is missing, unreadable or made for another model."""


class DeviceError(VsrError, RuntimeError):
    """The requested compute device is not available."""


class MediaError(VsrError, OSError):
    """An input that cannot be opened, demuxed or decoded."""


class UnsupportedMediaError(MediaError, ValueError):
    """A media property vsr does not handle; the message names it."""


class EncodeError(MediaError):
    """The output cannot be encoded, muxed or written."""


class OutputExistsError(VsrError, FileExistsError):
    """The destination exists and overwriting was not requested."""


class PipelineError(VsrError, RuntimeError):
    """A stage of the streaming pipeline failed; the cause is chained."""
