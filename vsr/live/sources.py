"""Where live frames come from: cameras (OpenCV), files and URLs (PyAV), as BGR images.

A :class:`FrameSource` hands out one BGR ``uint8`` image ``(H, W, 3)`` per call, at
the source's own pace: a camera blocks until its next frame, a file is paced to its
timestamps so that it plays like a live stream. Tests pass their own sources.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import Iterator, Protocol

import av
import numpy as np

from ..errors import MediaError
from ..media import VideoReader

__all__ = ["CameraSource", "FileSource", "FrameSource", "open_source"]

log = logging.getLogger("vsr")


class FrameSource(Protocol):
    name: str  # as messages name it
    fps: float | None  # nominal frames per second; None when unknown

    def read(self) -> np.ndarray | None:
        """The next frame, BGR uint8 ``(H, W, 3)``; None at the end of the stream; MediaError on failure."""

    def close(self) -> None: ...


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV logs its own warnings when a camera cannot be opened; vsr says it in one line instead."""
    import cv2

    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


class CameraSource:
    """A camera by index (0: the first) or device path, through ``cv2.VideoCapture``."""

    def __init__(self, device: int | str) -> None:
        import cv2

        self.name = f"camera {device}" if isinstance(device, int) else str(device)
        self.frames = 0
        hint = "pass --source with another camera index, a device, a video file or a URL"
        if sys.platform.startswith("linux"):
            node = Path(f"/dev/video{device}" if isinstance(device, int) else device)
            if not node.exists():
                raise MediaError(f"no {self.name}: {node} does not exist; {hint}")
        with _opencv_quiet():
            self._capture = cv2.VideoCapture(device)
            opened = self._capture.isOpened()
        if not opened:
            raise MediaError(f"{self.name}: cannot be opened (in use, or not a camera?); {hint}")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or None

    def read(self) -> np.ndarray | None:
        import cv2

        ok, image = self._capture.read()
        if not ok or image is None:
            if self.frames == 0:
                raise MediaError(f"{self.name}: opened but delivers no frames")
            raise MediaError(f"{self.name} stopped delivering frames after {self.frames} (disconnected?)")
        self.frames += 1
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return image

    def close(self) -> None:
        self._capture.release()


class FileSource:
    """A video file or URL decoded with PyAV, played at the pace of its timestamps.

    With ``loop`` it starts over at the end; without, the stream ends. ``realtime=False``
    hands out frames as fast as they decode.
    """

    def __init__(self, path: str, *, loop: bool = False, realtime: bool = True) -> None:
        self.name = path
        self.loop = loop
        self.realtime = realtime
        self._reader = VideoReader(path)
        self.fps = self._reader.info.fps
        self._frames = self._video_frames()
        self._origin: float | None = None  # wall-clock time of stream time 0

    def _video_frames(self) -> Iterator[av.VideoFrame]:
        while True:
            for item in self._reader:
                if isinstance(item, av.VideoFrame):
                    yield item
            if not self.loop or self._reader.frames_decoded == 0:
                return
            self._reader.close()
            self._reader = VideoReader(self.name)
            self._origin = None

    def _pace(self, frame: av.VideoFrame, index_time: float) -> None:
        t = float(frame.time) if frame.time is not None else index_time
        now = time.perf_counter()
        if self._origin is None or now - (self._origin + t) > 0.5:  # start, or fell behind: no catch-up burst
            self._origin = now - t
        delay = self._origin + t - now
        if delay > 0:
            time.sleep(min(delay, 1.0))

    def read(self) -> np.ndarray | None:
        frame = next(self._frames, None)
        if frame is None:
            return None
        if self.realtime:
            self._pace(frame, self._reader.frames_decoded / (self.fps or 25.0))
        return frame.to_ndarray(format="bgr24")

    def close(self) -> None:
        self._reader.close()


def _is_device(spec: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(spec).st_mode)
    except OSError:
        return spec.startswith("/dev/video")


def open_source(spec: str, *, loop: bool = False) -> FrameSource:
    """``0``, ``1``…: a camera by index; a device path (``/dev/video2``): a camera; else a file or URL."""
    if spec.isdigit():
        source: FrameSource = CameraSource(int(spec))
    elif _is_device(spec):
        source = CameraSource(spec)
    else:
        return FileSource(spec, loop=loop)
    if loop:
        log.info("--loop applies to files; %s is live", source.name)
    return source
