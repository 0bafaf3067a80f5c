"""Long runs: memory is bounded by the queue depths, not by the video's length."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from media_utils import make_clip
from vsr.config import load_config
from vsr.errors import PipelineError
from vsr.media import VideoReader
from vsr.pipeline import Pipeline, Progress

FRAMES = 3000


class _Enough(Exception):
    pass
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE


@pytest.fixture(scope="module")
def long_small_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("soak") / "long.mkv", width=32, height=24, frames=FRAMES, rate=50,
                     audio={"channels": 1})


def pipeline(weights: Path, **overrides: Any) -> Pipeline:
    base = {"model.name": "espcn-fast", "model.scale": 2, "model.weights": str(weights), "device": "cpu",
            "encoder.preset": "ultrafast", "queue_depth": 4}
    return Pipeline(load_config(None, {**base, **overrides}))


def test_resident_memory_flat_over_thousands_of_frames(long_small_clip: Path, tmp_path: Path,
                                                       random_weights) -> None:
    samples: list[tuple[int, int]] = []

    def progress(p: Progress) -> None:
        if p.frames % 100 == 0:
            samples.append((p.frames, rss_bytes()))

    report = pipeline(random_weights("espcn-fast", 2)).run(long_small_clip, tmp_path / "out.mkv", progress=progress)
    assert report.frames == FRAMES
    assert len(samples) == FRAMES // 100
    warm = [rss for frames, rss in samples if frames >= 500]  # after the codecs' and allocators' first growth
    growth = max(warm) - warm[0]
    # A leak of one 64x48 output frame (4.6 kB) per frame would add ~11 MB over these 2500 frames.
    assert growth < 6 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB after warm-up: {samples}"
    # And no upward trend: the last quarter is not above the second quarter by more than noise.
    q = len(warm) // 4
    assert max(warm[-q:]) - max(warm[q : 2 * q]) < 3 * 2**20, samples


def test_frames_in_flight_bounded_by_queue_depth(long_small_clip: Path, tmp_path: Path, random_weights,
                                                 monkeypatch) -> None:
    """With a slow encoder, the decoder waits instead of piling decoded frames up in memory."""
    readers: list[VideoReader] = []
    real_iter = VideoReader.__iter__

    def iterate(self: VideoReader):  # noqa: ANN202
        readers.append(self)
        return real_iter(self)

    monkeypatch.setattr(VideoReader, "__iter__", iterate)
    in_flight: list[int] = []
    depth, batch = 3, 2

    def slow_progress(p: Progress) -> None:
        in_flight.append(readers[0].frames_decoded - p.frames)
        time.sleep(0.002)
        if p.frames == 300:
            raise _Enough  # enough seen; a failing callback also stops the run cleanly

    with pytest.raises(PipelineError, match="encode stage failed: _Enough"):
        p = pipeline(random_weights("espcn-fast", 2), queue_depth=depth, batch=batch)
        p.run(long_small_clip, tmp_path / "out.mkv", progress=slow_progress)
    assert len(in_flight) == 300
    # Two queues; the batches being upscaled (one per CPU worker, and one more waiting its
    # turn to be handed on); one frame in the hands of decode and of encode each.
    workers = getattr(p, "cpu_workers", 1)
    assert max(in_flight) <= 2 * depth + (workers + 2) * batch + 2, max(in_flight)
    assert not (tmp_path / "out.mkv").exists() and list(tmp_path.iterdir()) == []


_FAULTS = """
import resource, torch
from vsr.engine._heap import keep_freed_heap
keep_freed_heap()
def tensor(mb):
    return torch.empty(int(mb * 2**20), dtype=torch.uint8).fill_(1)
def frame():  # the int8 engine's tensors on a 640x360 espcn x3 frame (MB) in its order before the composite's add
    # was fused (commit ff2d643): an order under which glibc's dynamic thresholds give them back every frame
    codes = tensor(14.7); layer2 = tensor(29.5); del codes
    plane = tensor(0.9); linear = tensor(29.5); del plane, linear
    layer3 = tensor(8.3); del layer2
    out = tensor(2.0); del layer3
    return out
for _ in range(5):
    frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    frame()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="glibc's malloc")
def test_freed_frames_stay_in_the_heap() -> None:
    """With glibc's thresholds raised, a frame's freed tensors serve the next frame instead of being unmapped and
    page-faulted back in (zero-filled) every frame; a user's own ``MALLOC_*_`` tuning is left alone, which is
    glibc's default here: each frame faults most of its tensors in again (glibc's dynamic thresholds follow the
    last mmap'd size, and trim the heap's top at twice that)."""
    def faults(**env: str) -> int:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=environ, capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    pages = int((14.7 + 29.5 + 29.5) * 2**20) // PAGE  # a frame's three large tensors, in pages
    assert faults() < pages // 10  # ten frames fault less than a tenth of one frame's worth
    assert faults(MALLOC_TOP_PAD_="131072") > 10 * pages // 3  # the user's tuning (glibc's default values) is kept


def test_cpu_engines_keep_freed_frames_in_the_heap(monkeypatch) -> None:
    """Every CPU engine raises the thresholds when it is built (a CUDA one does not: its frames are on the GPU)."""
    from vsr.engine import LumaUpscaler, _luma
    from vsr.models import create_model

    calls: list[str] = []
    monkeypatch.setattr(_luma, "keep_freed_heap", lambda: calls.append("cpu"))
    LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu")
    assert calls == ["cpu"]
