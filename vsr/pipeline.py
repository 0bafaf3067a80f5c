"""The streaming pipeline: decode → upscale → encode, three stages overlapped.

Each stage runs in its own thread and hands work to the next through a bounded
queue, so memory is bounded by ``queue_depth`` whatever the video's length and the
slowest stage sets the pace (PyAV and PyTorch release the GIL in their heavy calls).

Items flow in demux order: decoded frames, and the packets of copied streams, which
the upscale stage forwards untouched so that audio stays interleaved with video.

On CUDA the upscale stage keeps several batches in flight: luma planes are staged
in pinned host buffers, copied to the device on a copy stream (``non_blocking``),
upscaled on a compute stream and copied back on a third stream, ordered by events,
so that transfers overlap computation. This module is the only home of threads and
CUDA streams in vsr.

The live preview's stages (capture, upscale, display, record) are latest-frame-wins
instead: see :class:`LatestSlot` and :class:`LatestFrameStages` at the end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from array import array
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import av
import numpy as np
import torch

from .config import PipelineConfig
from .engine import LumaUpscaler, upscaler_from_config
from .errors import PipelineError, UnsupportedMediaError, VsrError
from .media import VideoReader, VideoWriter, frame_planes, new_frame, resize_plane

__all__ = [
    "LatestFrameStages",
    "LatestSlot",
    "Pipeline",
    "Progress",
    "RunReport",
    "SlotClosed",
    "StageReport",
    "default_output_path",
    "overlapped_map",
]

log = logging.getLogger("vsr")


@dataclass(frozen=True)
class Progress:
    frames: int
    total: int  # estimate from the container; 0 when unknown
    elapsed: float

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class StageReport:
    frames: int
    busy_s: float  # time spent working, not waiting on a queue
    fps: float  # frames per second of busy time
    busy_fraction: float  # busy time over the run's wall time


@dataclass(frozen=True)
class RunReport:
    input: str
    output: str
    frames: int
    elapsed_s: float
    fps: float
    source_fps: float | None
    realtime_factor: float | None  # fps / source_fps
    device: str
    precision: str
    model: str
    scale: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    stages: dict[str, StageReport]
    latency_ms: dict[str, float]  # per frame, decoded → handed to the encoder
    lost_packets: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def default_output_path(src: str | Path, config: PipelineConfig) -> Path:
    src = Path(src)
    name = config.output.pattern.format(stem=src.stem, scale=config.model.scale, suffix=src.suffix or ".mkv")
    return src.with_name(name)


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was cancelled."""


_END = object()


@dataclass
class _Job:
    index: int
    frame: av.VideoFrame
    t_decoded: float
    luma: np.ndarray | None = None


@dataclass
class _Clock:
    frames: int = 0
    busy: float = 0.0

    def report(self, wall: float) -> StageReport:
        return StageReport(
            frames=self.frames,
            busy_s=self.busy,
            fps=self.frames / self.busy if self.busy > 0 else 0.0,
            busy_fraction=min(1.0, self.busy / wall) if wall > 0 else 0.0,
        )


class _Control:
    """Shared stop flag and first error; queue operations that give up when stopped."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.stage: str | None = None
        self._lock = threading.Lock()

    def fail(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error, self.stage = exc, stage
        self.stop.set()

    def put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue) -> Any:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue


def _luma_tensor(planes: list[np.ndarray]) -> torch.Tensor:
    y = planes[0]
    if y.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(y))
    return torch.from_numpy(y.astype(np.int32))


class Pipeline:
    """Loads the model once; :meth:`run` upscales one video file (call it for each file)."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config = config or PipelineConfig()
        self.upscaler = upscaler_from_config(config)
        self.device, self.dtype = self.upscaler.device, self.upscaler.dtype
        self.cpu_workers, self.cpu_worker_threads = _cpu_worker_split(config.threads or torch.get_num_threads())
        self.scale = config.model.scale

    @property
    def precision(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    # -- the three stages ------------------------------------------------------------------
    def _decode(self, reader: VideoReader, out: queue.Queue, ctl: _Control, clock: _Clock) -> None:
        it = iter(reader)
        index = 0
        while True:
            t0 = time.perf_counter()
            item = next(it, _END)
            t1 = time.perf_counter()
            clock.busy += t1 - t0
            if item is _END:
                break
            if isinstance(item, av.VideoFrame):
                clock.frames += 1
                item = _Job(index, item, t1)
                index += 1
            ctl.put(out, item)
        ctl.put(out, _END)

    def _infer(self, src: queue.Queue, out: queue.Queue, ctl: _Control, clock: _Clock) -> None:
        batch: list[_Job] = []
        runner: _CudaRunner | _CpuRunner | None = None
        if self.device.type == "cuda":
            runner = _CudaRunner(self.upscaler, ctl, out, clock)
        elif self.cpu_workers > 1:
            runner = _CpuRunner(self, ctl, out, clock)
        try:
            self._infer_loop(src, out, ctl, clock, batch, runner)
        finally:
            if isinstance(runner, _CpuRunner):
                runner.close()

    def _infer_loop(self, src: queue.Queue, out: queue.Queue, ctl: _Control, clock: _Clock,
                    batch: list[_Job], runner: _CudaRunner | _CpuRunner | None) -> None:
        def flush() -> None:
            if not batch:
                return
            if runner is not None:
                runner.submit(list(batch))
            else:
                t0 = time.perf_counter()
                self._upscale_batch(batch)
                clock.busy += time.perf_counter() - t0
                clock.frames += len(batch)
                for job in batch:
                    ctl.put(out, job)
            batch.clear()

        while True:
            item = ctl.get(src)
            if item is _END:
                break
            if isinstance(item, _Job):
                if batch and item.frame.format.name != batch[0].frame.format.name or (
                    batch and (item.frame.width, item.frame.height) != (batch[0].frame.width, batch[0].frame.height)
                ):
                    flush()
                batch.append(item)
                if len(batch) >= self.config.batch:
                    flush()
            else:
                flush()
                if isinstance(runner, _CpuRunner):
                    runner.passthrough(item)  # in order, without waiting for the batches before it
                    continue
                if runner is not None:
                    runner.drain()
                ctl.put(out, item)
        flush()
        if runner is not None:
            runner.drain()
        ctl.put(out, _END)

    def _upscale_batch(self, jobs: list[_Job]) -> None:
        planes = [frame_planes(j.frame) for j in jobs]
        max_value = (1 << jobs[0].frame.format.components[0].bits) - 1
        x = torch.stack([_luma_tensor(p) for p in planes])[:, None]
        y = self.upscaler(x, max_value).cpu().numpy()
        for job, luma in zip(jobs, y):
            job.luma = luma[0]

    def _encode(
        self,
        writer: VideoWriter,
        src: queue.Queue,
        ctl: _Control,
        clock: _Clock,
        latencies: array,
        progress: Callable[[Progress], None] | None,
        total: int,
        t_start: float,
    ) -> None:
        size: tuple[int, int] | None = None
        while True:
            item = ctl.get(src)
            if item is _END:
                break
            t0 = time.perf_counter()
            if isinstance(item, _Job):
                frame = item.frame
                if size is None:
                    size = (frame.width, frame.height)
                elif size != (frame.width, frame.height):
                    raise UnsupportedMediaError(
                        f"{writer.reader.path}: frame size changes mid-stream at frame {item.index} "
                        f"({size[0]}x{size[1]} to {frame.width}x{frame.height})"
                    )
                writer.write(self._compose(writer, item))
                t1 = time.perf_counter()
                latencies.append((t1 - item.t_decoded) * 1000.0)
                clock.frames += 1
                clock.busy += t1 - t0
                if progress is not None:
                    progress(Progress(clock.frames, total, t1 - t_start))
            else:
                writer.write(item)
                clock.busy += time.perf_counter() - t0
        t0 = time.perf_counter()
        writer.close()
        clock.busy += time.perf_counter() - t0

    def _compose(self, writer: VideoWriter, job: _Job) -> av.VideoFrame:
        """The output frame: model luma, bicubic chroma, the input's timestamps and colour tags."""
        src = job.frame
        r = self.scale
        width, height = src.width * r, src.height * r
        fmt = writer.output_format(width, height, src.format.name)
        out, planes = new_frame(width, height, fmt)
        in_planes = frame_planes(src)
        planes[0][...] = job.luma
        for i in range(1, len(planes)):
            resize_plane(in_planes[i], planes[i])
        out.pts = src.pts
        out.time_base = src.time_base
        for attr in ("color_range", "colorspace", "color_primaries", "color_trc"):
            value = getattr(src, attr, None)
            if value:
                setattr(out, attr, value)
        return out

    # -- running -----------------------------------------------------------------------------
    def run(
        self,
        src: str | Path,
        dst: str | Path | None = None,
        *,
        overwrite: bool | None = None,
        progress: Callable[[Progress], None] | None = None,
        format: str | None = None,
        resume: bool = False,
    ) -> RunReport:
        """Upscale ``src`` into ``dst`` (default: ``output.pattern`` beside ``src``).

        ``resume``: encode in segments kept beside ``dst`` until the end, and continue an
        interrupted run of the same job from its last finished segment (:mod:`vsr.resume`).

        ``src`` and ``dst`` may be ``"-"``: standard input and output. ``format`` names the
        output container (``y4m``, ``mkv``, ``mp4``... or any FFmpeg muxer); None: from
        ``dst``'s extension, matroska on standard output.
        """
        cfg = self.config
        dst = default_output_path(src, cfg) if dst is None else dst
        overwrite = cfg.output.overwrite if overwrite is None else overwrite
        reader = VideoReader(src)
        try:
            if resume:
                from .resume import SegmentedWriter, run_settings

                writer = SegmentedWriter(dst, reader, encoder=cfg.encoder, overwrite=overwrite, format=format,
                                         settings=run_settings(cfg, str(self.device), self.precision),
                                         segment_seconds=cfg.resume_segment)
                if writer.start is not None:
                    reader.start_at(writer.start)
            else:
                writer = VideoWriter(dst, reader, encoder=cfg.encoder, overwrite=overwrite, format=format)
        except BaseException:
            reader.close()
            raise
        ctl = _Control()
        clocks = {"decode": _Clock(), "infer": _Clock(), "encode": _Clock()}
        q_decoded: queue.Queue = queue.Queue(cfg.queue_depth)
        q_upscaled: queue.Queue = queue.Queue(cfg.queue_depth)
        latencies = array("d")
        t_start = time.perf_counter()

        def guard(name: str, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
            def body() -> None:
                try:
                    fn(*args)
                except _Stopped:
                    pass
                except BaseException as exc:  # handed to the main thread
                    ctl.fail(name, exc)

            return body

        stages = [
            threading.Thread(target=guard("decode", self._decode, reader, q_decoded, ctl, clocks["decode"]),
                             name="vsr-decode", daemon=True),
            threading.Thread(target=guard("infer", self._infer, q_decoded, q_upscaled, ctl, clocks["infer"]),
                             name="vsr-infer", daemon=True),
            threading.Thread(
                target=guard("encode", self._encode, writer, q_upscaled, ctl, clocks["encode"], latencies,
                             progress, max(0, reader.info.frames - getattr(writer, "kept_frames", 0)), t_start),
                name="vsr-encode", daemon=True),
        ]
        try:
            for t in stages:
                t.start()
            for t in stages:
                while t.is_alive():
                    t.join(timeout=0.1)
        except BaseException:  # Ctrl-C / SIGTERM: stop every stage, keep the destination as it was
            ctl.stop.set()
            for t in stages:
                t.join(timeout=5)
            writer.abort()
            reader.close()
            raise
        reader.close()
        if ctl.error is not None:
            writer.abort()
            exc = ctl.error
            if isinstance(exc, VsrError):
                raise exc
            raise PipelineError(f"{ctl.stage} stage failed: {type(exc).__name__}: {exc}") from exc
        wall = time.perf_counter() - t_start
        return self._report(reader, writer, src, dst, clocks, wall, latencies)

    def _report(self, reader: VideoReader, writer: VideoWriter, src: Any, dst: Any,
                clocks: dict[str, _Clock], wall: float, latencies: array) -> RunReport:
        info = reader.info
        frames = clocks["encode"].frames
        fps = frames / wall if wall > 0 else 0.0
        lat = np.frombuffer(latencies, dtype=np.float64) if len(latencies) else np.zeros(1)
        notes = list(writer.notes)
        if reader.lost_packets:
            log.info("%s: %d damaged packet(s) could not be decoded", info.path, reader.lost_packets)
        if reader.missing_frames:
            total = reader.frames_decoded + reader.missing_frames
            notes.append(f"{info.path}: input ends early (truncated file?): {reader.missing_frames} of {total} "
                         f"frames could not be read; the output holds the first {reader.frames_decoded}")
            log.warning("%s", notes[-1])
        return RunReport(
            input=str(src),
            output=str(dst),
            frames=frames,
            elapsed_s=wall,
            fps=fps,
            source_fps=info.fps,
            realtime_factor=fps / info.fps if info.fps else None,
            device=str(self.device),
            precision=self.precision,
            model=self.config.model.name,
            scale=self.scale,
            input_size=(info.width, info.height),
            output_size=(info.width * self.scale, info.height * self.scale),
            stages={name: c.report(wall) for name, c in clocks.items()},
            latency_ms={"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))},
            lost_packets=reader.lost_packets,
            notes=tuple(notes),
        )


def _cpu_worker_split(threads: int) -> tuple[int, int]:
    """(workers, torch threads per worker) for CPU inference with ``threads`` threads in all.

    Frames are upscaled in parallel, each by a worker with its own small OpenMP team,
    rather than one frame at a time by all cores: OpenMP threads that meet at a barrier
    while a decode or encode thread holds one of their cores stall the whole call (on a
    busy 2-core VM, 2-thread calls ran 5x slower with the default spin-wait policy), and
    single-threaded workers never wait for each other. Up to 4 workers; with more
    cores, each worker gets a team of ``threads // workers``.
    """
    threads = max(1, threads)
    workers = min(threads, 4)
    return workers, max(1, threads // workers)


class _CpuRunner:
    """Upscales batches on worker threads (one OpenMP team each) and hands them on in demux order.

    At most ``workers + 1`` batches are in flight, so every worker has the next batch
    ready; items of copied streams wait in line behind the batches before them.
    """

    def __init__(self, pipeline: "Pipeline", ctl: _Control, out: queue.Queue, clock: _Clock) -> None:
        self.pipeline = pipeline
        self.ctl, self.out, self.clock = ctl, out, clock
        self.workers = pipeline.cpu_workers
        self.previous_threads = torch.get_num_threads()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vsr-infer-worker",
                                       initializer=torch.set_num_threads,
                                       initargs=(pipeline.cpu_worker_threads,))
        self.line: deque[tuple[Future | None, list[Any]]] = deque()
        self.in_flight = 0

    def _work(self, jobs: list[_Job]) -> float:
        t0 = time.perf_counter()
        self.pipeline._upscale_batch(jobs)
        return time.perf_counter() - t0

    def submit(self, jobs: list[_Job]) -> None:
        self.line.append((self.pool.submit(self._work, jobs), jobs))
        self.in_flight += 1
        self._emit(limit=self.workers + 1)

    def passthrough(self, item: Any) -> None:
        self.line.append((None, [item]))
        self._emit(limit=self.workers + 1)

    def _emit(self, limit: int) -> None:
        """Hand on what is finished, in order; wait for the oldest batch while more than ``limit`` are in flight."""
        while self.line:
            future, items = self.line[0]
            if future is not None:
                if not future.done() and self.in_flight <= limit:
                    return
                seconds = future.result()  # a worker's exception is raised here, in the infer stage
                self.in_flight -= 1
                self.clock.busy += seconds / self.workers  # core-seconds spread over the workers
                self.clock.frames += len(items)
            self.line.popleft()
            for item in items:
                self.ctl.put(self.out, item)

    def drain(self) -> None:
        self._emit(limit=0)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self.previous_threads)  # the workers' setting is process-wide


class _CudaRunner:
    """Keeps several batches in flight on CUDA: H2D copy, compute and D2H copy on their own streams."""

    def __init__(self, upscaler: LumaUpscaler, ctl: _Control, out: queue.Queue, clock: _Clock,
                 depth: int = 3) -> None:
        self.upscaler = upscaler
        self.ctl, self.out, self.clock = ctl, out, clock
        self.depth = depth
        dev = upscaler.device
        self.h2d = torch.cuda.Stream(dev)
        self.compute = torch.cuda.Stream(dev)
        self.d2h = torch.cuda.Stream(dev)
        self.inflight: deque[tuple[list[_Job], torch.Tensor, torch.cuda.Event, float]] = deque()

    def submit(self, jobs: list[_Job]) -> None:
        t0 = time.perf_counter()
        planes = [frame_planes(j.frame) for j in jobs]
        max_value = (1 << jobs[0].frame.format.components[0].bits) - 1
        host = torch.stack([_luma_tensor(p) for p in planes])[:, None].pin_memory()
        up = self.upscaler
        with torch.cuda.stream(self.h2d):
            dev_in = host.to(up.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.h2d)
        with torch.cuda.stream(self.compute):
            self.compute.wait_event(copied)
            dev_in.record_stream(self.compute)
            dev_out = up(dev_in, max_value)
            computed = torch.cuda.Event()
            computed.record(self.compute)
        n, _, h, w = dev_out.shape
        host_out = torch.empty((n, 1, h, w), dtype=dev_out.dtype, pin_memory=True)
        with torch.cuda.stream(self.d2h):
            self.d2h.wait_event(computed)
            dev_out.record_stream(self.d2h)
            host_out.copy_(dev_out, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.d2h)
        self.inflight.append((jobs, host_out, done, t0))
        self.clock.busy += time.perf_counter() - t0
        while len(self.inflight) > self.depth or (self.inflight and self.inflight[0][2].query()):
            self._emit()

    def _emit(self) -> None:
        jobs, host_out, done, t_submit = self.inflight.popleft()
        t0 = time.perf_counter()
        done.synchronize()
        luma = host_out.numpy()
        for job, plane in zip(jobs, luma):
            job.luma = plane[0].copy()
        self.clock.busy += time.perf_counter() - t0
        self.clock.frames += len(jobs)
        for job in jobs:
            self.ctl.put(self.out, job)

    def drain(self) -> None:
        while self.inflight:
            self._emit()


# -- latest-frame-wins stages (live preview) ------------------------------------------------------
#
# The file pipeline above must keep every frame, so its stages hand work on through bounded
# queues and the slowest stage sets the pace. A live preview must instead stay current: when a
# stage is slower than the one feeding it, the stale values are dropped, never queued, so that
# what is shown is at most one item behind at each stage and latency stays bounded.

_T = TypeVar("_T")
_U = TypeVar("_U")


class SlotClosed(Exception):
    """The slot was closed: by its producer at the end of the stream, or to stop the chain."""


class LatestSlot(Generic[_T]):
    """A one-value mailbox between two threads in which the newest value wins.

    :meth:`put` never blocks: a value nobody has taken yet is replaced and counted in
    ``dropped``. :meth:`take` waits for a value not taken before. After :meth:`close`,
    ``put`` raises :class:`SlotClosed` and ``take`` does once the slot is empty.
    Counters: ``offered == taken + dropped + pending``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: _T | None = None
        self._full = False
        self._closed = False
        self.offered = 0
        self.taken = 0
        self.dropped = 0

    def put(self, value: _T) -> None:
        with self._cond:
            if self._closed:
                raise SlotClosed
            if self._full:
                self.dropped += 1
            self._value, self._full = value, True
            self.offered += 1
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> _T | None:
        """The newest value not taken yet; None when ``timeout`` seconds pass without one."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                raise SlotClosed
            value, self._value, self._full = self._value, None, False
            self.taken += 1
            return value

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """1 when a value waits to be taken, else 0."""
        return int(self._full)


class LatestFrameStages:
    """Threads of a latest-frame-wins chain: a producer and workers linked by :class:`LatestSlot`.

    Each stage runs in a daemon thread. A producer calls ``produce()`` until it returns
    None; a worker applies ``fn`` to the newest value of its input. A stage that ends
    closes its output slots, so the end of the stream travels down the chain to the
    consumer (the caller's thread, which takes from the last slot until SlotClosed).
    The first exception in a stage is kept and every slot closed, so that all stages
    end; :meth:`raise_error` re-raises it in the caller's thread.
    """

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.stage: str | None = None
        self._threads: list[threading.Thread] = []
        self._slots: list[LatestSlot[Any]] = []
        self._lock = threading.Lock()

    def producer(self, name: str, produce: Callable[[], _T | None], *outs: LatestSlot[_T]) -> None:
        def body() -> None:
            while (value := produce()) is not None:
                for out in outs:
                    out.put(value)

        self._add(name, body, (), outs)

    def worker(self, name: str, fn: Callable[[_T], _U], inp: LatestSlot[_T], *outs: LatestSlot[_U]) -> None:
        def body() -> None:
            while True:
                value = inp.take()
                result = fn(value)  # type: ignore[arg-type]
                for out in outs:
                    out.put(result)

        self._add(name, body, (inp,), outs)

    def _add(self, name: str, body: Callable[[], None], inputs: tuple[LatestSlot[Any], ...],
             outs: tuple[LatestSlot[Any], ...]) -> None:
        def run() -> None:
            try:
                body()
            except SlotClosed:
                pass
            except BaseException as exc:  # handed to the caller's thread by raise_error()
                with self._lock:
                    if self.error is None:
                        self.error, self.stage = exc, name
                for slot in self._slots:
                    slot.close()
            finally:
                for out in outs:
                    out.close()

        self._slots.extend(s for s in (*inputs, *outs) if s not in self._slots)
        self._threads.append(threading.Thread(target=run, name=f"vsr-{name}", daemon=True))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Close every slot and wait for the stages; False when one is still busy after ``timeout``."""
        for slot in self._slots:
            slot.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def raise_error(self) -> None:
        """Re-raise the first stage's exception; one not from vsr becomes a PipelineError."""
        exc = self.error
        if exc is None:
            return
        if isinstance(exc, (VsrError, KeyboardInterrupt)):
            raise exc
        raise PipelineError(f"{self.stage} stage failed: {type(exc).__name__}: {exc}") from exc


def overlapped_map(items: Iterable[Any], *stages: Callable[[Any], Any], depth: int = 4) -> Iterator[Any]:
    """``stages`` applied in turn to every item, each stage in its own thread; results in order.

    The generic form of :class:`Pipeline`'s machinery, for work that is not a file (the
    Python API's ``Upscaler.stream``). Pulling from ``items`` runs in a thread as well, so a
    decoder behind the iterable, every stage and the caller's own work on each result all
    overlap; queues of ``depth`` items between them bound memory. With one thread per
    stage, item ``i`` leaves in order and every stage sees the items in order.

    The first exception in a stage, or from ``items``, stops every stage and is raised in
    the caller's thread unchanged (like :func:`map`). Closing the generator early (``break``
    out of the loop) stops the threads too; nothing starts before the first ``next()``.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    ctl = _Control()
    queues: list[queue.Queue] = [queue.Queue(depth) for _ in range(len(stages) + 1)]

    def feed() -> None:
        for item in items:
            ctl.put(queues[0], item)
        ctl.put(queues[0], _END)

    def work(fn: Callable[[Any], Any], src: queue.Queue, dst: queue.Queue) -> None:
        while (item := ctl.get(src)) is not _END:
            ctl.put(dst, fn(item))
        ctl.put(dst, _END)

    def guarded(name: str, body: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                body(*args)
            except _Stopped:
                pass
            except BaseException as exc:  # raised again in the caller's thread
                ctl.fail(name, exc)

        return threading.Thread(target=run, name=f"vsr-{name}", daemon=True)

    threads = [guarded("map-feed", feed)] + [
        guarded(f"map-stage{i}", work, fn, queues[i], queues[i + 1]) for i, fn in enumerate(stages)
    ]
    try:
        for t in threads:
            t.start()
        while True:
            try:
                item = ctl.get(queues[-1])
            except _Stopped:
                break
            if item is _END:
                break
            yield item
        if ctl.error is not None:
            raise ctl.error
    finally:
        ctl.stop.set()
        for t in threads:
            if t.ident is not None:
                t.join(timeout=5)
