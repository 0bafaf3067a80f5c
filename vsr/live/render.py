"""What the preview window shows: the comparison view above a status bar.

The pictures are never written on: labels and measurements go in a status bar
under them, so that what is compared is exactly what the two methods produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["VIEWS", "Status", "ViewState", "picture", "render", "status_lines"]

View = Literal["side-by-side", "split", "toggle"]
VIEWS: tuple[View, ...] = ("side-by-side", "split", "toggle")

_FONT_SCALE = 0.45
_LINE_H = 18  # pixels per status line at _FONT_SCALE
_BAR_BG = (32, 32, 32)
_TEXT = (235, 235, 235)
_ACCENT = (80, 200, 255)  # the upscaled side's label and the split line
_REC = (60, 60, 230)


@dataclass
class ViewState:
    """The user's choices, changed by keys and the mouse."""

    view: View = "side-by-side"
    split: float = 0.5  # split view: where the upscaled side starts, as a fraction of the width
    show_bicubic: bool = False  # toggle view: which image is shown
    paused: bool = False

    def cycle_view(self) -> None:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]

    def move_split(self, delta: float) -> None:
        self.split = min(1.0, max(0.0, self.split + delta))


@dataclass(frozen=True)
class Status:
    """The measurements the status bar shows (rates over the last second)."""

    capture_fps: float = 0.0
    infer_fps: float = 0.0
    infer_ms: float = 0.0
    display_fps: float = 0.0
    latency_ms: float = 0.0
    dropped: int = 0
    shown: int = 0
    recording: str | None = None  # the file being written


def picture(state: ViewState, upscaled: np.ndarray, bicubic: np.ndarray) -> np.ndarray:
    """The comparison, at the upscaled size: both side by side, split at a line, or one of them."""
    if state.view == "side-by-side":
        return np.hstack([bicubic, upscaled])
    if state.view == "toggle":
        return (bicubic if state.show_bicubic else upscaled).copy()
    out = upscaled.copy()
    x = round(state.split * out.shape[1])
    out[:, :x] = bicubic[:, :x]
    if 0 < x < out.shape[1]:
        out[:, max(0, x - 1) : x + 1] = _ACCENT
    return out


def status_lines(state: ViewState, status: Status, label: str) -> list[list[tuple[str, tuple[int, int, int]]]]:
    """The status bar's lines, each a list of (text, colour) pieces."""
    if state.view == "side-by-side":
        first = [("left: bicubic", _TEXT), ("   right: ", _TEXT), (label, _ACCENT)]
    elif state.view == "split":
        first = [("bicubic", _TEXT), (" | ", _ACCENT), (label, _ACCENT), ("  (drag, [ ])", _TEXT)]
    else:
        first = [("showing ", _TEXT), ("bicubic" if state.show_bicubic else label, _ACCENT), ("  (t, click)", _TEXT)]
    rates = (f"capture {status.capture_fps:.1f} fps  infer {status.infer_fps:.1f} fps ({status.infer_ms:.0f} ms)"
             f"  display {status.display_fps:.1f} fps")
    third = [(f"latency {status.latency_ms:.0f} ms  dropped {status.dropped}  shown {status.shown}", _TEXT)]
    if state.paused:
        third.append(("  PAUSED", _ACCENT))
    if status.recording:
        third.append((f"  REC {status.recording}", _REC))
    return [first, [(rates, _TEXT)], third]


def render(state: ViewState, upscaled: np.ndarray, bicubic: np.ndarray, status: Status, label: str) -> np.ndarray:
    """The window's image: the picture with the status bar under it."""
    import cv2

    pic = picture(state, upscaled, bicubic)
    lines = status_lines(state, status, label)
    width = pic.shape[1]
    longest = max(sum(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, 1)[0][0] for t, _ in line)
                  for line in lines)
    scale = _FONT_SCALE * min(1.0, (width - 12) / max(1, longest))  # narrow pictures: smaller text
    line_h = max(10, round(_LINE_H * scale / _FONT_SCALE))
    bar = np.empty((line_h * len(lines) + 8, width, 3), np.uint8)
    bar[...] = _BAR_BG
    for i, line in enumerate(lines):
        x, y = 6, 4 + line_h * (i + 1) - max(3, line_h // 4)
        for text, colour in line:
            cv2.putText(bar, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
            x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    return np.vstack([pic, bar])
