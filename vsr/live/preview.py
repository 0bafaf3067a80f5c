"""The live preview: capture → upscale → display (and record), latest frame wins.

Capture, upscaling and recording run in threads of :class:`vsr.pipeline.LatestFrameStages`;
the display loop runs in the caller's thread (GUI toolkits want that). Between stages
sits a one-value :class:`~vsr.pipeline.LatestSlot`: when upscaling is slower than the
source, the frames it could not take are dropped and counted, never queued, so a frame
is shown at most about one upscaling time after it was captured.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..config import EncoderConfig
from ..errors import EncodeError, MediaError
from ..media import SourceDescription, VideoWriter, new_frame, resize_plane
from ..pipeline import LatestFrameStages, LatestSlot, SlotClosed
from .display import Display, UserInput
from .render import View, Status, ViewState, render
from .sources import FrameSource

__all__ = ["Captured", "LiveOptions", "LiveReport", "LiveUpscaler", "Recorder", "Upscaled", "run_live"]

log = logging.getLogger("vsr")

# Keys (cv2.waitKeyEx codes). Arrows: X11 keysyms (Qt and GTK backends) and Windows codes.
_QUIT = {ord("q"), ord("Q"), 27}
_LEFT = {ord("["), ord(","), 65361, 2424832}
_RIGHT = {ord("]"), ord("."), 65363, 2555904}


@dataclass(frozen=True)
class Captured:
    index: int
    image: np.ndarray  # BGR uint8
    t_captured: float  # time.perf_counter() when the source handed it out


@dataclass(frozen=True)
class Upscaled:
    index: int
    t_captured: float
    infer_s: float
    upscaled: np.ndarray  # BGR uint8, r× the capture: model luma, bicubic chroma
    bicubic: np.ndarray  # BGR uint8, r× the capture: bicubic everywhere
    luma: np.ndarray  # the upscaled Y (full range), for recording
    chroma: tuple[np.ndarray, np.ndarray]  # the captured Cb, Cr (full range), for recording


class LumaModel(Protocol):
    scale: int

    def forward_float(self, x: torch.Tensor) -> torch.Tensor: ...


class LiveUpscaler:
    """Upscales BGR frames as ``vsr run`` upscales video: the model on luma, bicubic on chroma.

    One OpenCV conversion to YCrCb (BT.601, full range) and one back. The model was
    trained on studio-range luma (MATLAB's rgb2ycbcr, as video carries it), so Y is
    mapped to 16-235 on the way in and back on the way out. Also makes the bicubic
    image the preview compares with.
    """

    def __init__(self, luma: LumaModel) -> None:
        self.luma = luma
        self.scale = luma.scale

    def __call__(self, frame: Captured) -> Upscaled:
        import cv2

        t0 = time.perf_counter()
        h, w = frame.image.shape[:2]
        size = (w * self.scale, h * self.scale)
        ycrcb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2YCrCb)
        y = torch.from_numpy(np.ascontiguousarray(ycrcb[:, :, 0]))[None, None].float()
        y_studio = (16.0 + y * (219.0 / 255.0)) / 255.0
        out = self.luma.forward_float(y_studio).float()[0, 0]
        out = (out * 255.0 - 16.0) * (255.0 / 219.0)
        luma = out.round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        cr, cb = ycrcb[:, :, 1], ycrcb[:, :, 2]
        up = cv2.merge([luma, *(cv2.resize(c, size, interpolation=cv2.INTER_CUBIC) for c in (cr, cb))])
        upscaled = cv2.cvtColor(up, cv2.COLOR_YCrCb2BGR)
        bicubic = cv2.resize(frame.image, size, interpolation=cv2.INTER_CUBIC)
        return Upscaled(frame.index, frame.t_captured, time.perf_counter() - t0, upscaled, bicubic, luma,
                        (np.ascontiguousarray(cb), np.ascontiguousarray(cr)))


class Recorder:
    """Writes the upscaled stream (not the window) through :class:`vsr.media.VideoWriter`.

    The window's size changes with the view, a video's cannot; so a recording holds the
    model's output alone, at the upscaled size, each frame at its capture time. Started
    and stopped from the display loop, written from the record stage: hence the lock.
    """

    def __init__(self, encoder: EncoderConfig, *, fps: float | None, overwrite: bool = False) -> None:
        self.encoder = encoder
        self.overwrite = overwrite
        self.description = SourceDescription(name="live preview", frame_rate=Fraction(round(fps or 30)),
                                             time_base=Fraction(1, 1000))
        self.files: list[Path] = []
        self.frames = 0
        self._writer: VideoWriter | None = None
        self._t0 = 0.0
        self._last_pts = -1
        self._lock = threading.Lock()

    @property
    def active(self) -> Path | None:
        w = self._writer
        return Path(w.path) if w is not None else None

    def start(self, path: Path) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = VideoWriter(path, self.description, encoder=self.encoder, overwrite=self.overwrite)
                self._t0, self._last_pts = time.perf_counter(), -1

    def stop(self) -> Path | None:
        """Finish the file (playable); None when nothing was recorded."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is None:
                return None
            if writer.frames == 0:
                writer.abort()
                return None
            writer.close()
            self.files.append(Path(writer.path))
            return Path(writer.path)

    def abort(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.abort()
                self._writer = None

    def write(self, item: Upscaled) -> None:
        with self._lock:
            writer = self._writer
            if writer is None or item.t_captured < self._t0:
                return
            h, w = item.luma.shape
            frame, planes = new_frame(w, h, writer.output_format(w, h, "yuv420p"))
            planes[0][...] = item.luma
            for src, dst in zip(item.chroma, planes[1:]):
                resize_plane(src, dst)
            self._last_pts = max(self._last_pts + 1, round((item.t_captured - self._t0) * 1000))
            frame.pts, frame.time_base = self._last_pts, Fraction(1, 1000)
            frame.color_range, frame.colorspace = 2, 5  # full range, BT.601: OpenCV's YCrCb
            writer.write(frame)
            self.frames += 1


@dataclass(frozen=True, kw_only=True)
class LiveOptions:
    view: View = "side-by-side"
    max_frames: int | None = None  # stop after this many frames shown
    snapshot: Path | None = None  # the last shown image is saved here on exit
    record: Path | None = None  # record from the start into this file
    label: str = "ESPCN"  # the upscaled side's name in the status bar

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {self.max_frames}")


@dataclass(frozen=True)
class LiveReport:
    """Counts and timings of a preview. ``captured == inferred + dropped_before_inference + unprocessed_capture``."""

    shown: int
    captured: int
    inferred: int
    dropped_before_inference: int  # captured while the model was busy: never upscaled
    dropped_before_display: int  # upscaled while the display was busy or paused: never shown
    unprocessed_capture: int  # captured, not upscaled when the preview stopped (0 or 1 or 2)
    unshown: int  # upscaled, neither shown nor dropped when the preview stopped (0 or 1)
    elapsed_s: float
    fps: dict[str, float]  # capture, infer (throughput), display: over the whole run
    infer_ms: dict[str, float]  # p50, p95 of one upscaling
    latency_ms: dict[str, float]  # p50, p95, max: capture → handed to the display
    recorded_frames: int
    recordings: tuple[str, ...]
    snapshot: str | None
    ended_by: str  # "quit", "max-frames", "end of stream"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Rates:
    """Rates of growing counters over the last ``window`` seconds."""

    window: float = 1.0
    history: deque[tuple[float, tuple[int, ...]]] = field(default_factory=deque)

    def update(self, now: float, counts: tuple[int, ...]) -> tuple[float, ...]:
        self.history.append((now, counts))
        while len(self.history) > 2 and self.history[1][0] <= now - self.window:
            self.history.popleft()
        t0, c0 = self.history[0]
        dt = now - t0
        return tuple((c - b) / dt if dt > 0 else 0.0 for c, b in zip(counts, c0))


def _percentiles(values: list[float], *qs: int) -> dict[str, float]:
    arr = np.asarray(values if values else [0.0], dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


def _snapshot_name(folder: Path) -> Path:
    now = time.time()
    return folder / f"vsr-live-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{int(now * 1000) % 1000:03d}.png"


def _next_recording(base: Path | None, taken: list[Path]) -> Path:
    if base is None:
        return Path(time.strftime("vsr-live-%Y%m%d-%H%M%S.mp4"))
    if base not in taken:
        return base
    return base.with_name(f"{base.stem}-{len(taken) + 1}{base.suffix}")


def save_image(path: Path, image: np.ndarray) -> None:
    import cv2

    try:
        ok = cv2.imwrite(str(path), image)
    except cv2.error:
        ok = False
    if not ok:
        raise MediaError(f"{path}: cannot write the image (folder writable? extension .png or .jpg?)")


def run_live(
    source: FrameSource,
    upscaler: LiveUpscaler,
    display: Display,
    options: LiveOptions,
    recorder: Recorder | None = None,
) -> LiveReport:
    """Run the preview until the user quits, ``max_frames`` are shown or the source ends.

    Closes ``source`` and ``display``; finishes the recording (playable) on every exit,
    errors included, and saves the snapshot if a frame was shown. A stage's error is
    raised after that.
    """
    captured: LatestSlot[Captured] = LatestSlot()
    upscaled: LatestSlot[Upscaled] = LatestSlot()
    to_record: LatestSlot[Upscaled] = LatestSlot()
    counter = itertools.count()

    def capture() -> Captured | None:
        image = source.read()
        return None if image is None else Captured(next(counter), image, time.perf_counter())

    stages = LatestFrameStages()
    stages.producer("capture", capture, captured)
    stages.worker("upscale", upscaler, captured, upscaled, *([to_record] if recorder else []))
    if recorder is not None:
        stages.worker("record", recorder.write, to_record)

    state = ViewState(view=options.view)
    rates = _Rates()
    latencies: list[float] = []
    infer_times: deque[float] = deque(maxlen=30)
    all_infer: list[float] = []
    shown = 0
    last: Upscaled | None = None
    image: np.ndarray | None = None
    status = Status()
    ended_by = "end of stream"
    t_start = time.perf_counter()
    t_status = 0.0
    try:
        if recorder is not None and options.record is not None:
            recorder.start(options.record)
        stages.start()
        while True:
            user = display.poll(20 if state.paused else 1)
            changed, quit_ = _handle(user, state, recorder, options, image)
            if quit_:
                ended_by = "quit"
                break
            item = None
            if not state.paused:
                try:
                    item = upscaled.take(timeout=0.01)
                except SlotClosed:
                    break
            now = time.perf_counter()
            if item is not None:
                last = item
                infer_times.append(item.infer_s)
                all_infer.append(item.infer_s)
            if now - t_status >= 0.25 or item is not None:
                capture_fps, infer_fps, display_fps = rates.update(now, (captured.offered, upscaled.offered, shown))
                status = Status(
                    capture_fps=capture_fps, infer_fps=infer_fps, display_fps=display_fps,
                    infer_ms=1000 * float(np.median(infer_times or [0.0])),
                    latency_ms=latencies[-1] if latencies else 0.0,
                    dropped=captured.dropped + upscaled.dropped, shown=shown + (item is not None),
                    recording=recorder.active.name if recorder and recorder.active else None)
                t_status, changed = now, True
            if last is not None and changed:
                image = render(state, last.upscaled, last.bicubic, status, options.label)
                display.show(image)
                if item is not None:
                    latencies.append((time.perf_counter() - item.t_captured) * 1000.0)
                    shown += 1
                    if options.max_frames is not None and shown >= options.max_frames:
                        ended_by = "max-frames"
                        break
    finally:
        elapsed = time.perf_counter() - t_start
        stopped = stages.stop()
        if stopped:
            source.close()
        if recorder is not None:
            try:
                recorder.stop()
            except EncodeError as exc:
                log.warning("recording not finished: %s", exc)
        display.close()
        if options.snapshot is not None and image is not None:
            save_image(options.snapshot, image)
    stages.raise_error()
    return LiveReport(
        shown=shown,
        captured=captured.offered,
        inferred=upscaled.offered,
        dropped_before_inference=captured.dropped,
        dropped_before_display=upscaled.dropped,
        unprocessed_capture=captured.pending + (captured.taken - upscaled.offered),
        unshown=upscaled.pending,
        elapsed_s=elapsed,
        fps={name: n / elapsed if elapsed > 0 else 0.0
             for name, n in (("capture", captured.offered), ("infer", upscaled.offered), ("display", shown))},
        infer_ms={k: 1000 * v for k, v in _percentiles(all_infer, 50, 95).items()},
        latency_ms={**_percentiles(latencies, 50, 95), "max": max(latencies, default=0.0)},
        recorded_frames=recorder.frames if recorder else 0,
        recordings=tuple(str(p) for p in recorder.files) if recorder else (),
        snapshot=str(options.snapshot) if options.snapshot is not None and image is not None else None,
        ended_by=ended_by,
    )


def _handle(user: UserInput, state: ViewState, recorder: Recorder | None, options: LiveOptions,
            image: np.ndarray | None) -> tuple[bool, bool]:
    """Apply the user's input to the view; (whether the window must be redrawn, whether to quit)."""
    if user.closed:
        return False, True
    changed = False
    for key in user.keys:
        if key in _QUIT:
            return changed, True
        changed = True
        if key == ord(" "):
            state.paused = not state.paused
        elif key in (ord("v"), ord("V")):
            state.cycle_view()
        elif key in (ord("t"), ord("T"), ord("b"), ord("B")):
            state.show_bicubic = not state.show_bicubic
        elif key in _LEFT:
            state.move_split(-0.05)
        elif key in _RIGHT:
            state.move_split(0.05)
        elif key in (ord("s"), ord("S")) and image is not None:
            path = _snapshot_name(options.snapshot.parent if options.snapshot else Path("."))
            try:
                save_image(path, image)
                log.info("snapshot saved: %s", path)
            except MediaError as exc:
                log.warning("%s", exc)
        elif key in (ord("r"), ord("R")) and recorder is not None:
            if recorder.active is not None:
                done = recorder.stop()
                log.info("recording finished: %s", done if done else "no frame, nothing written")
            else:
                path = _next_recording(options.record, recorder.files)
                recorder.start(path)
                log.info("recording to %s", path)
        else:
            changed = False
    if user.pointer is not None and image is not None:
        if state.view == "split":
            width = image.shape[1]
            state.split = min(1.0, max(0.0, user.pointer[0] / width))
            changed = True
        elif state.view == "toggle" and user.clicked:
            state.show_bicubic = not state.show_bicubic
            changed = True
    return changed, False
