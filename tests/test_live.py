"""The live preview: latest frame wins (drops, bounded latency), views and keys, recording, errors, a real window.

Headless tests drive :func:`vsr.live.run_live` with a fake source (frames paced like a
camera, each carrying its index in a flat corner block), a fake display (which reads
the index back from the bicubic half it is shown) and a model slowed on purpose.
The window test runs ``vsr live`` under a virtual X display (Debian package xvfb).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from media_utils import make_clip, pattern, probe
from vsr.cli import main as cli_main
from vsr.config import EncoderConfig
from vsr.engine import LumaUpscaler
from vsr.errors import MediaError
from vsr.live import LiveOptions, LiveUpscaler, Recorder, UserInput, ViewState, picture, run_live
from vsr.models import create_model
from vsr.pipeline import LatestFrameStages, LatestSlot, SlotClosed

REPO = Path(__file__).resolve().parents[1]
MARK = 16  # LR size of the flat block that carries the frame index


# -- fakes --------------------------------------------------------------------------------------
class FakeSource:
    """``frames`` BGR frames at ``fps``, paced like a camera; frame i has value i in its top-left block."""

    name = "fake camera"

    def __init__(self, frames: int, *, fps: float = 60.0, size: tuple[int, int] = (64, 48),
                 fail_after: int | None = None) -> None:
        self.frames, self.fps, self.size, self.fail_after = frames, fps, size, fail_after
        self.produced = 0
        self.t_read: dict[int, float] = {}
        self.closed = False
        self._t0: float | None = None

    def read(self) -> np.ndarray | None:
        i = self.produced
        if self.fail_after is not None and i >= self.fail_after:
            raise MediaError("fake camera stopped delivering frames (disconnected?)")
        if i >= self.frames:
            return None
        if self._t0 is None:
            self._t0 = time.perf_counter()
        delay = self._t0 + i / self.fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        image = np.ascontiguousarray(pattern(*self.size, i)[:, :, ::-1])
        image[:MARK, :MARK] = i % 256
        self.produced += 1
        self.t_read[i] = time.perf_counter()
        return image

    def close(self) -> None:
        self.closed = True


class FakeDisplay:
    """Records what is shown; reads each frame's index from the bicubic side; plays scripted keys.

    ``script`` maps a number of distinct frames shown to the keys pressed then.
    """

    def __init__(self, scale: int, script: dict[int, list[int | str]] | None = None,
                 show_delay: float = 0.0) -> None:
        self.scale = scale
        self.script = dict(script or {})
        self.show_delay = show_delay
        self.shown: list[tuple[int, float]] = []  # (frame index, time) of each new frame shown
        self.sizes: list[tuple[int, int]] = []  # (width, height) of every image shown
        self.last: np.ndarray | None = None
        self.closed = False

    def show(self, image: np.ndarray) -> None:
        t = time.perf_counter()
        centre = MARK * self.scale // 2  # inside the block on the bicubic side of every view but toggle
        index = int(image[centre, centre, 0])
        if not self.shown or self.shown[-1][0] != index:
            self.shown.append((index, t))
        self.sizes.append((image.shape[1], image.shape[0]))
        self.last = image
        if self.show_delay:
            time.sleep(self.show_delay)

    def poll(self, wait_ms: int) -> UserInput:
        time.sleep(wait_ms / 1000)
        keys = self.script.pop(len(self.shown), [])
        return UserInput(keys=tuple(ord(k) if isinstance(k, str) else k for k in keys))

    def close(self) -> None:
        self.closed = True


class SlowLuma:
    """The real model, made slower than the source by sleeping first."""

    def __init__(self, luma: LumaUpscaler, delay: float) -> None:
        self.luma, self.scale, self.delay = luma, luma.scale, delay
        self.calls = 0

    def forward_float(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.delay)
        return self.luma.forward_float(x)


@pytest.fixture(scope="module")
def luma() -> LumaUpscaler:
    torch.manual_seed(0)
    return LumaUpscaler(create_model("espcn-fast", scale=2, weights=None), device="cpu")


# -- the latest-frame-wins helper ------------------------------------------------------------------
def test_latest_slot_keeps_only_the_newest_value() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.take(timeout=0.01) is None
    for i in range(5):
        slot.put(i)
    assert slot.take() == 4
    assert (slot.offered, slot.taken, slot.dropped, slot.pending) == (5, 1, 4, 0)
    slot.put(5)
    slot.close()
    assert slot.take() == 5  # what was put before close is still delivered
    with pytest.raises(SlotClosed):
        slot.take()
    with pytest.raises(SlotClosed):
        slot.put(6)


def test_stages_hand_an_error_to_the_caller_and_stop_the_chain() -> None:
    a: LatestSlot[int] = LatestSlot()
    b: LatestSlot[int] = LatestSlot()
    values = iter(range(1000))

    def fail_at_3(x: int) -> int:
        if x >= 3:
            raise MediaError("stage broke")
        return x

    stages = LatestFrameStages()
    stages.producer("produce", lambda: (time.sleep(0.001), next(values, None))[1], a)
    stages.worker("work", fail_at_3, a, b)
    stages.start()
    with pytest.raises(SlotClosed):
        while True:
            b.take(timeout=5)
    assert stages.stop(timeout=5)
    with pytest.raises(MediaError, match="stage broke"):
        stages.raise_error()
    assert stages.stage == "work"
    assert threading.active_count() < 50


# -- the preview headless ------------------------------------------------------------------------
def test_slow_model_drops_stale_frames_and_latency_stays_bounded(luma: LumaUpscaler) -> None:
    infer_s = 0.06  # the model takes ~4 frame times of a 60 fps source
    source = FakeSource(120, fps=60.0)
    display = FakeDisplay(scale=2)
    slow = SlowLuma(luma, infer_s)
    report = run_live(source, LiveUpscaler(slow), display, LiveOptions())

    assert report.ended_by == "end of stream" and source.closed and display.closed
    # Counts add up, from the fakes' own records as well as the report.
    assert report.captured == source.produced == 120
    assert report.inferred == slow.calls and report.unprocessed_capture == 0
    assert report.captured == report.inferred + report.dropped_before_inference + report.unprocessed_capture
    assert report.inferred == report.shown + report.dropped_before_display + report.unshown
    assert report.shown == len(display.shown)
    # Frames were dropped, not queued: far fewer upscaled than captured, shown in order, skipping.
    assert report.dropped_before_inference > 120 // 3
    indices = [i for i, _ in display.shown]
    assert indices == sorted(set(indices))
    assert max(np.diff(indices)) >= 3
    assert indices[-1] >= 120 - 1 - 10  # the end of the stream was shown, not a backlog
    # Latency stays bounded by the model's time, measured by the fakes themselves.
    latency = np.array([t - source.t_read[i] for i, t in display.shown])
    assert np.percentile(latency, 95) < 3 * infer_s, latency
    assert report.latency_ms["p95"] < 3 * infer_s * 1000
    assert report.infer_ms["p50"] >= infer_s * 1000


def test_slow_display_drops_upscaled_frames(luma: LumaUpscaler) -> None:
    source = FakeSource(60, fps=60.0)
    display = FakeDisplay(scale=2, show_delay=0.05)
    report = run_live(source, LiveUpscaler(luma), display, LiveOptions())
    assert report.dropped_before_display > 0
    assert report.inferred == report.shown + report.dropped_before_display + report.unshown
    assert report.shown == len(display.shown) < 60


def test_views_keys_snapshot_and_max_frames(luma: LumaUpscaler, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = FakeSource(10_000, fps=60.0)
    # Frame 3: split view; 6: toggle view, showing bicubic; 9: back to side by side; 10: save a snapshot.
    display = FakeDisplay(scale=2, script={3: ["v"], 6: ["v", "t"], 9: ["v"], 10: ["s"]})
    snapshot = tmp_path / "last.png"
    report = run_live(source, LiveUpscaler(luma), display, LiveOptions(max_frames=12, snapshot=snapshot))

    assert report.ended_by == "max-frames" and report.shown == 12 == len(display.shown)
    assert source.produced < 10_000
    w, h = 64 * 2, 48 * 2
    assert {width for width, _ in display.sizes} == {2 * w, w}  # side by side and split / toggle
    assert all(height > h for _, height in display.sizes)  # the picture, then the status bar
    assert display.sizes[0][0] == 2 * w and display.sizes[-1][0] == 2 * w
    saved = cv2.imread(str(snapshot))
    assert saved is not None and np.array_equal(saved, display.last)
    assert report.snapshot == str(snapshot)
    key_snapshots = list(tmp_path.glob("vsr-live-*.png"))
    assert len(key_snapshots) == 1 and cv2.imread(str(key_snapshots[0])).shape == saved.shape


def test_views_compare_the_two_images() -> None:
    up = np.full((4, 10, 3), 200, np.uint8)
    bi = np.full((4, 10, 3), 50, np.uint8)
    assert np.array_equal(picture(ViewState(view="side-by-side"), up, bi), np.hstack([bi, up]))
    split = picture(ViewState(view="split", split=0.3), up, bi)
    assert (split[:, :2] == 50).all() and (split[:, 4:] == 200).all()
    assert (picture(ViewState(view="toggle"), up, bi) == 200).all()
    assert (picture(ViewState(view="toggle", show_bicubic=True), up, bi) == 50).all()


def test_upscaler_runs_the_model_on_luma_and_bicubic_on_chroma() -> None:
    """With a model that repeats pixels, luma must come back as the repeated Y: the colour round trip is exact."""

    class Repeat:
        scale = 3

        def forward_float(self, x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(3, dim=-1).repeat_interleave(3, dim=-2)

    from vsr.live import Captured

    bgr = np.ascontiguousarray(pattern(40, 30, 5)[:, :, ::-1])
    out = LiveUpscaler(Repeat())(Captured(0, bgr, 0.0))
    y = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[:, :, 0]
    assert np.abs(out.luma.astype(int) - np.kron(y, np.ones((3, 3), np.uint8)).astype(int)).max() <= 1
    assert np.array_equal(out.bicubic, cv2.resize(bgr, (120, 90), interpolation=cv2.INTER_CUBIC))
    ycrcb = cv2.cvtColor(out.upscaled, cv2.COLOR_BGR2YCrCb)
    bicubic_chroma = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[:, :, 1:], (120, 90),
                                interpolation=cv2.INTER_CUBIC)
    assert np.abs(ycrcb[:, :, 1:].astype(int) - bicubic_chroma.astype(int)).mean() < 1.5
    assert out.upscaled.shape == (90, 120, 3)


# -- recording ----------------------------------------------------------------------------------
def test_camera_lost_mid_stream_keeps_a_playable_recording(luma: LumaUpscaler, tmp_path: Path) -> None:
    source = FakeSource(1000, fps=60.0, fail_after=40)
    display = FakeDisplay(scale=2)
    recorder = Recorder(EncoderConfig(preset="ultrafast"), fps=60.0)
    rec = tmp_path / "rec.mp4"
    with pytest.raises(MediaError, match="stopped delivering"):
        run_live(source, LiveUpscaler(luma), display,
                 LiveOptions(record=rec, snapshot=tmp_path / "last.png"), recorder)
    assert source.closed and display.closed and (tmp_path / "last.png").is_file()
    info = probe(rec)
    assert (info["width"], info["height"]) == (128, 96)
    assert info["frames"] == recorder.frames > 0
    assert info["duration"] < 40 / 60 + 0.2  # frames at their capture times
    assert not list(tmp_path.glob(".rec.vsr-*"))  # no temporary file left


def test_record_key_starts_and_stops_a_recording(luma: LumaUpscaler, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = FakeSource(10_000, fps=60.0)
    display = FakeDisplay(scale=2, script={2: ["r"], 8: ["r"]})
    recorder = Recorder(EncoderConfig(preset="ultrafast"), fps=60.0)
    report = run_live(source, LiveUpscaler(luma), display, LiveOptions(max_frames=12), recorder)
    assert len(report.recordings) == 1 and report.recorded_frames >= 2  # the encoder may drop some: live
    assert probe(tmp_path / report.recordings[0])["frames"] == report.recorded_frames


# -- the command's errors --------------------------------------------------------------------------
def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_no_camera_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if sys.platform.startswith("linux") and Path("/dev/video9").exists():
        pytest.skip("this machine has a /dev/video9")
    assert "no camera 9" in _one_line_error(capsys, ["live", "--source", "9"])


def test_no_display_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch, random_weights) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("display detection is for X11")
    clip = make_clip(tmp_path / "in.mp4", frames=4)
    monkeypatch.delenv("DISPLAY", raising=False)
    err = _one_line_error(capsys, ["live", "--source", str(clip), "--weights", str(random_weights("espcn-fast", 2)),
                                   "--model", "espcn-fast", "--scale", "2"])
    assert "no display" in err and "xvfb-run" in err


# -- a real window ---------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run (Debian package xvfb)")
def test_window_under_xvfb(tmp_path: Path, random_weights) -> None:
    w, h, scale = 96, 72, 2
    clip = make_clip(tmp_path / "in.mp4", width=w, height=h, frames=48, rate=24)
    snapshot, rec, report_file = tmp_path / "out.png", tmp_path / "rec.mkv", tmp_path / "report.json"
    cmd = ["xvfb-run", "-a", sys.executable, "-m", "vsr", "live", "--source", str(clip), "--loop",
           "--max-frames", "30", "--snapshot", str(snapshot), "--record", str(rec), "--report", str(report_file),
           "--weights", str(random_weights("espcn-fast", scale)), "--model", "espcn-fast",
           "--scale", str(scale), "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "VSR_LIVE_RESTARTED")}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(report_file.read_text())
    assert report["shown"] == 30 and report["ended_by"] == "max-frames"

    shot = cv2.imread(str(snapshot))
    rw, rh = w * scale, h * scale
    assert shot.shape[1] == 2 * rw and shot.shape[0] > rh  # picture, then the status bar
    bicubic, upscaled = shot[:rh, :rw].astype(int), shot[:rh, rw:].astype(int)
    assert np.abs(bicubic - upscaled).mean() > 5
    # The bicubic half is exactly a frame of the clip, upscaled bicubically.
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    errors = [np.abs(cv2.resize(f, (rw, rh), interpolation=cv2.INTER_CUBIC).astype(int) - bicubic).max()
              for f in frames]
    assert min(errors) == 0
    info = probe(rec)
    assert (info["width"], info["height"]) == (rw, rh) and info["frames"] >= 30


_INTERACT = """
"$@" &
pid=$!
for i in $(seq 1 600); do xdotool search --name "vsr live" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 2
xdotool mousemove 5 5 click 1; sleep 0.5  # focus: Xvfb runs no window manager
xdotool key v; sleep 1  # split view
xdotool mousemove {x0} 20 mousedown 1 mousemove {x1} 30 mousemove {x2} 30 mouseup 1; sleep 1
xdotool key Right; sleep 1
xdotool key s; sleep 1
xdotool key r; sleep 2; xdotool key r; sleep 1
xdotool key q
wait $pid
"""


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("xdotool") is None,
                    reason="needs xvfb-run and xdotool (Debian packages xvfb, xdotool)")
def test_keys_and_mouse_in_the_window(tmp_path: Path, random_weights) -> None:
    """Real key presses and a mouse drag through OpenCV's own window: view, split line, snapshot, recording."""
    w, h, scale = 96, 72, 2
    clip = make_clip(tmp_path / "in.mp4", width=w, height=h, frames=48, rate=24)
    report_file = tmp_path / "report.json"
    script = tmp_path / "interact.sh"
    script.write_text(_INTERACT.format(x0=w, x1=w + 20, x2=60))
    # its own display numbers (from 150): the previous test's Xvfb on :99 may still be going away, and a server that
    # cannot take the display leaves the window with none ("could not connect to display :99", seen in CI)
    cmd = ["xvfb-run", "-a", "-n", "150", "bash", str(script), sys.executable, "-m", "vsr", "live",
           "--source", str(clip),
           "--loop", "--report", str(report_file), "--weights", str(random_weights("espcn-fast", scale)),
           "--model", "espcn-fast", "--scale", str(scale), "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "VSR_LIVE_RESTARTED")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(report_file.read_text())
    assert report["ended_by"] == "quit"
    (snapshot,) = tmp_path.glob("vsr-live-*.png")
    shot = cv2.imread(str(snapshot))
    rw = w * scale
    assert shot.shape[1] == rw  # the split view: one picture wide
    line = np.where(np.abs(shot[h].astype(int) - (80, 200, 255)).sum(axis=1) < 10)[0]  # the split line
    assert abs(line.max() - (60 + round(0.05 * rw))) <= 2  # dragged to x=60, then one step right
    (recording,) = report["recordings"]
    info = probe(tmp_path / recording)
    assert (info["width"], info["height"]) == (rw, h * scale) and info["frames"] == report["recorded_frames"] > 0
