"""Where live frames go: an OpenCV highgui window, or anything with the same three methods.

highgui must be driven from one thread (the main one with Qt): the preview calls
:meth:`Display.show` and :meth:`Display.poll` from its display loop only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import MediaError

__all__ = ["Display", "UserInput", "WindowDisplay", "check_display", "xcb_clash"]


@dataclass(frozen=True)
class UserInput:
    """What the user did since the last poll."""

    keys: tuple[int, ...] = ()  # key codes as cv2.waitKeyEx gives them
    pointer: tuple[int, int] | None = None  # image (x, y) of the last left-button press or drag
    clicked: bool = False  # a left-button press (not a drag)
    closed: bool = False  # the window was closed


class Display(Protocol):
    def show(self, image: np.ndarray) -> None:
        """Show a BGR uint8 image (the window follows its size)."""

    def poll(self, wait_ms: int) -> UserInput:
        """Handle window events for up to ``wait_ms`` milliseconds and report the user's input."""

    def close(self) -> None: ...


_PROBE = "import cv2; cv2.namedWindow('vsr-probe'); cv2.waitKey(1); cv2.destroyAllWindows()"


def xcb_clash() -> bool:
    """Whether OpenCV's Qt windows would hang in this process because PyAV was loaded first.

    The av and opencv-python wheels both bundle libxcb-shape/-shm/-xfixes under the same
    mangled names; whichever loads first serves both. PyAV's copies call into PyAV's own
    libxcb, Qt into the system's, and the first window then waits forever. Importing cv2
    before av avoids it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            maps = f.read()
    except OSError:
        return False
    return any(f"av.libs/libxcb-{ext}" in maps for ext in ("shape", "shm", "xfixes"))


def check_display() -> None:
    """Refuse, in one line, to open a window where none can be shown.

    OpenCV's Qt backend aborts the whole process when it cannot reach an X server, so on
    Linux the first window is opened in a throw-away process first.
    """
    if not sys.platform.startswith("linux"):
        return
    hint = "run vsr live on a desktop, or under a virtual one: xvfb-run -a vsr live ..."
    if not os.environ.get("DISPLAY"):
        raise MediaError(f"no display: DISPLAY is not set; {hint}")
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise MediaError(f"display {os.environ['DISPLAY']} does not answer; {hint}") from None
    if probe.returncode != 0:
        lines = [ln for ln in probe.stderr.splitlines() if ln.strip() and "QFontDatabase" not in ln]
        why = lines[0].strip() if lines else f"exit status {probe.returncode}"
        raise MediaError(f"cannot open a window on display {os.environ['DISPLAY']} ({why}); {hint}")
    if xcb_clash():
        raise MediaError("OpenCV cannot open windows in this process: PyAV was imported before OpenCV "
                         "(their wheels bundle clashing libxcb copies); import cv2 before av")


def _quiet_qt_fonts() -> None:
    """opencv-python points Qt at a font folder it does not ship; use the system's fonts instead."""
    folder = os.environ.get("QT_QPA_FONTDIR")
    if folder and not Path(folder).is_dir():
        for candidate in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
            if Path(candidate).is_dir():
                os.environ["QT_QPA_FONTDIR"] = candidate
                return


@dataclass
class _Mouse:
    pointer: tuple[int, int] | None = None
    clicked: bool = False
    moved: list[tuple[int, int]] = field(default_factory=list)


class WindowDisplay:
    """An OpenCV highgui window, scaled down (keeping the aspect ratio) to fit ``max_size``."""

    def __init__(self, title: str = "vsr live", *, max_size: tuple[int, int] = (1600, 900)) -> None:
        check_display()
        import cv2

        _quiet_qt_fonts()
        self.title = title
        self.max_size = max_size
        self._size: tuple[int, int] | None = None
        self._mouse = _Mouse()
        flags = cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL
        cv2.namedWindow(title, flags)
        cv2.setMouseCallback(title, self._on_mouse)
        self._open = True

    def _on_mouse(self, event: int, x: int, y: int, flags: int, _: object) -> None:
        import cv2

        if event == cv2.EVENT_LBUTTONDOWN:
            self._mouse.pointer, self._mouse.clicked = (x, y), True
        elif event == cv2.EVENT_MOUSEMOVE and flags & cv2.EVENT_FLAG_LBUTTON:
            self._mouse.pointer = (x, y)

    def show(self, image: np.ndarray) -> None:
        import cv2

        h, w = image.shape[:2]
        if self._size != (w, h):  # first frame, or the view changed size
            self._size = (w, h)
            fit = min(1.0, self.max_size[0] / w, self.max_size[1] / h)
            cv2.resizeWindow(self.title, max(1, round(w * fit)), max(1, round(h * fit)))
        cv2.imshow(self.title, image)

    def poll(self, wait_ms: int) -> UserInput:
        import cv2

        key = cv2.waitKeyEx(max(1, wait_ms))
        closed = self._size is not None and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        mouse, self._mouse = self._mouse, _Mouse()
        return UserInput(keys=(key,) if key >= 0 else (), pointer=mouse.pointer, clicked=mouse.clicked,
                         closed=closed)

    def close(self) -> None:
        import cv2

        if self._open:
            self._open = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
