"""The pipeline's CUDA logic on CPU: fake streams and events in place of torch.cuda's.

The fakes keep the runner's order of calls checkable (which stream waits on what, which
event is waited on, which pinned buffer is reused when) while the upscaler runs on CPU;
test_cuda.py runs the same paths on a GPU.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

import vsr.api
from vsr import bench
from vsr.config import load_config
from vsr.engine import LumaUpscaler
from vsr.models import create_model
from vsr.pipeline import Pipeline, _overlap, _runners
from vsr.pipeline._flow import _END, _Clock, _Control, _Job
from vsr.media import VideoReader, frame_planes
from media_utils import make_clip

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "stream-of-water.mp4"
GPU_MS = 7.0  # what every fake compute-stream interval lasts


class FakeStream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.waited_streams: list[Any] = []
        self.waited_events: list[FakeEvent] = []

    def wait_stream(self, other: Any) -> None:
        self.waited_streams.append(other)

    def wait_event(self, event: "FakeEvent") -> None:
        assert event.recorded, "a stream waits on an event that was never recorded"
        self.waited_events.append(event)


class FakeEvent:
    made: list["FakeEvent"] = []

    def __init__(self, *, timing: bool = False) -> None:
        self.timing, self.blocking = timing, True
        self.recorded = 0
        self.synchronized = 0
        self.gate: threading.Event | None = None  # when set by a test: synchronize() waits for it
        FakeEvent.made.append(self)

    def record(self, stream: FakeStream) -> None:
        self.recorded += 1
        self.stream = stream

    def synchronize(self) -> None:
        if self.gate is not None:
            assert self.gate.wait(5)
        self.synchronized += 1

    def elapsed_time(self, end: "FakeEvent") -> float:
        assert self.timing and end.timing and self.recorded and end.recorded
        return GPU_MS


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's streams, events and pinned memory replaced in the runner; returns what was made."""
    FakeEvent.made = []
    made: dict[str, Any] = {"streams": [], "pinned": 0, "current": FakeStream("caller's")}

    def new_stream(device: torch.device) -> FakeStream:
        s = FakeStream(f"stream{len(made['streams'])}")
        made["streams"].append(s)
        return s

    def pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        made["pinned"] += 1
        return torch.empty(shape, dtype=dtype)

    monkeypatch.setattr(_runners, "_new_stream", new_stream)
    monkeypatch.setattr(_runners, "_current_stream", lambda device: made["current"])
    monkeypatch.setattr(_runners, "_use_stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(_runners, "_new_event", FakeEvent)
    monkeypatch.setattr(_runners, "_record_stream", lambda tensor, stream: None)
    monkeypatch.setattr(_runners, "_pinned", pinned)
    saved = torch.backends.cudnn.benchmark
    yield made
    torch.backends.cudnn.benchmark = saved


@pytest.fixture(scope="module")
def upscaler() -> LumaUpscaler:
    torch.manual_seed(1)
    return LumaUpscaler(create_model("espcn-fast", scale=2, weights=None), device="cpu", dtype=torch.float32)


def jobs_of(n: int, start: int = 0, size: tuple[int, int] = (40, 24)) -> list[_Job]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        frame = av.VideoFrame(*size, "yuv420p")
        for plane in frame_planes(frame):
            plane[...] = rng.integers(0, 256, plane.shape, dtype=np.uint8)
        out.append(_Job(i, frame, 0.0))
    return out


def expected_luma(up: LumaUpscaler, job: _Job) -> np.ndarray:
    y = torch.from_numpy(np.ascontiguousarray(frame_planes(job.frame)[0]))[None, None]
    return up(y, 255).numpy()[0, 0]


def take(q: queue.Queue, n: int, timeout: float = 5.0) -> list[Any]:
    return [q.get(timeout=timeout) for _ in range(n)]


def test_cuda_runner_waits_for_the_model_then_hands_batches_on_when_done(fake_cuda, upscaler) -> None:
    """#7: every stream waits on the caller's stream (where the model was moved) before any batch.
    #8: a finished batch is handed on without a next submit; busy time is the events' GPU time."""
    ctl, out, clock = _Control(), queue.Queue(), _Clock()
    runner = _runners._CudaRunner(upscaler, ctl, out, clock, depth=3)
    try:
        assert [s.waited_streams for s in fake_cuda["streams"]] == [[fake_cuda["current"]]] * 3
        assert torch.backends.cudnn.benchmark is True  # #11: frame sizes are fixed within a run
        jobs = jobs_of(2)
        runner.submit(jobs)
        got = take(out, 2)  # no other submit, no drain: the hand-off thread passed them on
        assert [j.index for j in got] == [0, 1]
        for job in got:
            np.testing.assert_array_equal(job.luma, expected_luma(upscaler, job))
        assert clock.frames == 2 and clock.busy == pytest.approx(GPU_MS / 1000)
    finally:
        runner.close()


def test_cuda_runner_keeps_order_and_sleeps_on_blocking_events(fake_cuda, upscaler) -> None:
    """#10: the hand-off waits on blocking events (a sleep, not a spinning core); batches leave in order,
    the packets between them in their place; a later batch waits while an earlier one is not done."""
    ctl, out, clock = _Control(), queue.Queue(), _Clock()
    runner = _runners._CudaRunner(upscaler, ctl, out, clock, depth=3)
    try:
        gate = threading.Event()
        runner.slots[0].done.gate = gate  # the first batch's copy back is slow
        runner.submit(jobs_of(2, 0))
        runner.passthrough("packet-a")
        runner.submit(jobs_of(2, 2))
        time.sleep(0.2)
        assert out.empty(), "the second batch or the packet overtook the first batch"
        gate.set()
        runner.drain()
        items = [out.get_nowait() for _ in range(5)]
        assert [i.index if isinstance(i, _Job) else i for i in items] == [0, 1, "packet-a", 2, 3]
        waited = [e for e in FakeEvent.made if e.synchronized]
        assert waited and all(e.blocking for e in waited)
    finally:
        runner.close()


def test_pinned_buffers_are_a_small_ring_reused_after_their_batch(fake_cuda, upscaler) -> None:
    """#11: depth slots of pinned buffers, each taken again only after its batch came back."""
    ctl, out, clock = _Control(), queue.Queue(), _Clock()
    runner = _runners._CudaRunner(upscaler, ctl, out, clock, depth=3)
    reused_early: list[int] = []
    real_buffer = _runners._Slot.buffer

    def watch(slot: _runners._Slot, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if name == "host_in" and slot.done.recorded > slot.done.synchronized:
            reused_early.append(slot.done.recorded)
        return real_buffer(slot, name, shape, dtype)

    try:
        _runners._Slot.buffer = watch  # type: ignore[method-assign]
        jobs = jobs_of(40)
        for k in range(0, 40, 4):
            runner.submit(jobs[k : k + 4])
        runner.submit(jobs_of(3, 40))  # a shorter last batch fits the same buffers
        runner.drain()
    finally:
        _runners._Slot.buffer = real_buffer  # type: ignore[method-assign]
        runner.close()
    got = [out.get_nowait() for _ in range(43)]
    assert [j.index for j in got] == list(range(43))
    for job in got[::7]:
        np.testing.assert_array_equal(job.luma, expected_luma(upscaler, job))
    assert fake_cuda["pinned"] == 2 * 3  # one input and one output buffer per slot, for 11 batches
    assert not reused_early


def test_a_failing_batch_stops_the_run_through_the_control(fake_cuda, upscaler, monkeypatch) -> None:
    ctl, out, clock = _Control(), queue.Queue(), _Clock()
    runner = _runners._CudaRunner(upscaler, ctl, out, clock, depth=2)
    try:
        def broken(slot: _runners._Slot) -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        monkeypatch.setattr(FakeEvent, "synchronize", broken)
        runner.submit(jobs_of(1))
        with pytest.raises(_runners._Stopped):
            runner.drain()
        assert ctl.stage == "infer" and "illegal memory access" in str(ctl.error)
    finally:
        runner.close()


# -- #3: packets of copied streams do not drain the GPU ------------------------------------------
class CountingRunner:
    """Stands in for a runner: upscales synchronously and counts what the infer loop asks of it."""

    def __init__(self, pipe: Pipeline, ctl: _Control, out: queue.Queue) -> None:
        self.pipe, self.ctl, self.out = pipe, ctl, out
        self.batches: list[int] = []
        self.drains = 0
        self.passed = 0

    def submit(self, jobs: list[_Job]) -> None:
        self.batches.append(len(jobs))
        for job in jobs:
            self.ctl.put(self.out, job)

    def passthrough(self, item: Any) -> None:
        self.passed += 1
        self.ctl.put(self.out, item)

    def drain(self) -> None:
        self.drains += 1


def demuxed(path: Path) -> list[Any]:
    items: list[Any] = []
    with VideoReader(path) as reader:
        index = 0
        for item in reader:
            if isinstance(item, av.VideoFrame):
                item = _Job(index, item, 0.0)
                index += 1
            items.append(item)
    return items


def run_infer_loop(pipe: Pipeline, items: list[Any], runner_factory) -> tuple[list[Any], Any]:
    src, out, ctl = queue.Queue(), queue.Queue(), _Control()
    for item in items:
        src.put(item)
    src.put(_END)
    runner = runner_factory(ctl, out)
    try:
        pipe._infer_loop(src, out, ctl, _Clock(), [], runner)
    finally:
        if hasattr(runner, "close"):
            runner.close()
    return list(iter(out.get_nowait, _END)), runner


def check_order(items: list[Any], got: list[Any], batch: int) -> None:
    assert len(got) == len(items)
    frames = [g.index for g in got if isinstance(g, _Job)]
    assert frames == sorted(frames) == list(range(len(frames)))
    packets_in = [i for i in items if not isinstance(i, _Job)]
    assert [g for g in got if not isinstance(g, _Job)] == packets_in  # same packets, same order
    # Each packet leaves at most batch - 1 frames after the place it had in demux order.
    frames_before = lambda seq, p: sum(isinstance(x, _Job) for x in seq[: seq.index(p)])  # noqa: E731
    for p in packets_in[:: max(1, len(packets_in) // 20)]:
        assert 0 <= frames_before(got, p) - frames_before(items, p) <= batch - 1


def test_audio_packets_do_not_drain_or_split_batches(tmp_path: Path) -> None:
    """#3: on the sample with --batch 8, 90 frames went out as 14 batches with 137 drains; now 12 and 1."""
    if not SAMPLE.is_file():
        pytest.skip("samples/stream-of-water.mp4 is missing")
    pipe = Pipeline(load_config(None, {"device": "cpu", "batch": 8, "model.name": "espcn-fast", "model.scale": 2}))
    items = demuxed(SAMPLE)
    n_frames = sum(isinstance(i, _Job) for i in items)
    assert n_frames == 90 and len(items) > n_frames + 100  # real audio packets between the frames
    got, runner = run_infer_loop(pipe, items, lambda ctl, out: CountingRunner(pipe, ctl, out))
    assert runner.batches == [8] * 11 + [2]
    assert runner.drains == 1  # at the end only
    assert runner.passed == len(items) - n_frames
    check_order(items, got, batch=8)


def test_audio_packets_through_the_cuda_runner_fakes(fake_cuda, tmp_path: Path, random_weights) -> None:
    """The same through _CudaRunner (fake streams): every frame upscaled as a synchronous call, one drain."""
    if not SAMPLE.is_file():
        pytest.skip("samples/stream-of-water.mp4 is missing")
    pipe = Pipeline(load_config(None, {"device": "cpu", "batch": 8, "model.name": "espcn-fast", "model.scale": 2,
                                       "model.weights": str(random_weights("espcn-fast", 2))}))
    items = demuxed(SAMPLE)[:70]
    drains: list[int] = []

    def factory(ctl: _Control, out: queue.Queue) -> _runners._CudaRunner:
        r = _runners._CudaRunner(pipe.upscaler, ctl, out, _Clock())
        real = r.drain
        r.drain = lambda: drains.append(1) or real()  # type: ignore[method-assign]
        return r

    got, _ = run_infer_loop(pipe, items, factory)
    assert drains == [1]
    check_order(items, got, batch=8)
    for job in [g for g in got if isinstance(g, _Job)][::9]:
        np.testing.assert_array_equal(job.luma, expected_luma(pipe.upscaler, job))


def test_audio_clip_batch_8_end_to_end_matches_batch_1(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", width=96, height=64, frames=30, audio={"channels": 1})
    base = {"device": "cpu", "model.name": "espcn-fast", "model.scale": 2, "encoder.codec": "ffv1",
            "model.weights": str(random_weights("espcn-fast", 2)), "threads": 1}
    one = Pipeline(load_config(None, {**base, "batch": 1})).run(src, tmp_path / "b1.mkv")
    eight = Pipeline(load_config(None, {**base, "batch": 8})).run(src, tmp_path / "b8.mkv")
    assert one.frames == eight.frames == 30
    with av.open(str(tmp_path / "b1.mkv")) as a, av.open(str(tmp_path / "b8.mkv")) as b:
        assert [s.type for s in a.streams] == [s.type for s in b.streams] == ["video", "audio"]
        for fa, fb in zip(a.decode(video=0), b.decode(video=0), strict=True):
            assert fa.pts == fb.pts
            np.testing.assert_array_equal(fa.to_ndarray(format="gray"), fb.to_ndarray(format="gray"))
    with av.open(str(src)) as s, av.open(str(tmp_path / "b8.mkv")) as b:
        assert sum(p.size for p in s.demux(audio=0)) == sum(p.size for p in b.demux(audio=0))


# -- #9: Upscaler.stream() on the caller's stream --------------------------------------------------
_local = threading.local()


@contextlib.contextmanager
def _thread_stream(stream: Any):
    """A fake ``torch.cuda.stream``: the current stream is per thread, as CUDA's is."""
    _local.stream = stream
    try:
        yield
    finally:
        _local.stream = None


def test_overlapped_map_runs_its_stages_on_the_callers_stream(monkeypatch) -> None:
    callers = object()
    inside: dict[str, list[Any]] = {}

    def stage(name: str):
        def fn(x: int) -> int:
            inside.setdefault(name, []).append(getattr(_local, "stream", None))
            return x + 1
        return fn

    monkeypatch.setattr(_overlap, "_current_stream", lambda device: callers)
    monkeypatch.setattr(_overlap, "_use_stream", _thread_stream)
    assert list(_overlap.overlapped_map(range(5), stage("a"), stage("b"), device="cuda:0")) == [2, 3, 4, 5, 6]
    assert inside == {"a": [callers] * 5, "b": [callers] * 5}
    inside.clear()
    assert list(_overlap.overlapped_map(range(3), stage("a"), device="cpu")) == [1, 2, 3]
    assert inside == {"a": [None] * 3}


def test_upscaler_stream_passes_its_device(monkeypatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(vsr.api, "overlapped_map", lambda *a, **kw: seen.update(kw) or iter(()))
    up = vsr.Upscaler(scale=2, model="espcn-fast", device="cpu")
    list(up.stream([]))
    assert seen["device"] == up.device


def test_bench_names_the_gpu_it_runs_on(monkeypatch) -> None:
    """#11: cuda:1 is GPU 1, not GPU 0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU{i}")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert bench.machine_info("cuda:1")["gpu"] == "GPU1"
    assert bench.machine_info("cuda")["gpu"] == "GPU0"
    assert bench.machine_info("cpu")["gpu"] == "GPU0"
