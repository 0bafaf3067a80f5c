"""The upscale stage's helpers: parallel CPU workers, and CUDA batches in flight on three streams."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch

from ..engine import LumaUpscaler
from ..media import frame_planes
from ._flow import _Clock, _Control, _Job, _Stopped


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

    def __init__(self, upscale_batch: Callable[[list[_Job]], None], workers: int, threads_each: int,
                 ctl: _Control, out: queue.Queue, clock: _Clock) -> None:
        self.upscale_batch = upscale_batch  # fills each job's ``luma``
        self.ctl, self.out, self.clock = ctl, out, clock
        self.workers = workers
        self.previous_threads = torch.get_num_threads()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="vsr-infer-worker",
                                       initializer=torch.set_num_threads, initargs=(threads_each,))
        self.line: deque[tuple[Future | None, list[Any]]] = deque()
        self.in_flight = 0

    def _work(self, jobs: list[_Job]) -> float:
        t0 = time.perf_counter()
        self.upscale_batch(jobs)
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


# The CUDA calls _CudaRunner makes, as module functions so that tests without a GPU can put fakes
# in their place (tests/test_gpu_pipeline.py).
def _new_stream(device: torch.device) -> Any:
    return torch.cuda.Stream(device)


def _current_stream(device: torch.device) -> Any:
    return torch.cuda.current_stream(device)


def _use_stream(stream: Any) -> Any:
    return torch.cuda.stream(stream)


def _new_event(*, timing: bool = False) -> Any:
    # Blocking: synchronize() sleeps until the GPU signals, instead of spinning a core that
    # decode and encode need.
    return torch.cuda.Event(enable_timing=timing, blocking=True)


def _record_stream(tensor: torch.Tensor, stream: Any) -> None:
    tensor.record_stream(stream)


def _pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


def _host_plane(y: np.ndarray) -> torch.Tensor:
    """A decoded luma plane (a strided view of the frame) as a tensor, without a copy where torch can."""
    if y.dtype == np.uint16 and not hasattr(torch, "uint16"):  # pragma: no cover - torch < 2.3
        return torch.from_numpy(y.astype(np.int32))
    return torch.from_numpy(y)


class _Slot:
    """One batch's place in flight: pinned input and output buffers, reused, and the events that order them."""

    def __init__(self) -> None:
        self.host_in: torch.Tensor | None = None
        self.host_out: torch.Tensor | None = None
        self.copied = _new_event()
        self.started = _new_event(timing=True)
        self.computed = _new_event(timing=True)
        self.done = _new_event()
        self.allocations = 0  # pinned buffers made for this slot (a test counts them)

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The slot's pinned buffer ``name``, grown only when a batch does not fit it."""
        held: torch.Tensor | None = getattr(self, name)
        if held is None or held.dtype != dtype or held.shape[1:] != shape[1:] or held.shape[0] < shape[0]:
            held = _pinned(shape, dtype)
            setattr(self, name, held)
            self.allocations += 1
        return held[: shape[0]]


class _Marker:
    """Put in the hand-off line by :meth:`_CudaRunner.drain`: set once everything before it is handed on."""

    def __init__(self) -> None:
        self.reached = threading.Event()


_CLOSE = object()


class _CudaRunner:
    """Keeps up to ``depth`` batches in flight on CUDA: H2D copy, compute and D2H copy on their own streams.

    Each batch's luma planes are copied once, from the decoded frames into a pinned buffer of
    one of ``depth`` slots (reused: a slot is taken again only after its batch came back).
    A hand-off thread waits on each batch's last event (a blocking event: it sleeps) and
    hands the batch on as soon as it is done, in submit order; the packets of copied streams
    wait in the same line, so that they never drain the GPU. The infer stage's busy time is
    GPU time: the compute stream's events around each batch (copies run beside it).
    """

    def __init__(self, upscaler: LumaUpscaler, ctl: _Control, out: queue.Queue, clock: _Clock,
                 depth: int = 3) -> None:
        self.upscaler = upscaler
        self.ctl, self.out, self.clock = ctl, out, clock
        self.depth = depth
        dev = upscaler.device
        self.h2d = _new_stream(dev)
        self.compute = _new_stream(dev)
        self.d2h = _new_stream(dev)
        # The model was moved and re-laid out on the caller's stream: nothing here may start before that.
        current = _current_stream(dev)
        for s in (self.h2d, self.compute, self.d2h):
            s.wait_stream(current)
        # Frame sizes are fixed within a run: let cuDNN pick the fastest kernels once (process-wide).
        torch.backends.cudnn.benchmark = True
        self.slots = [_Slot() for _ in range(depth)]
        self._free: queue.Queue[_Slot] = queue.Queue()
        for slot in self.slots:
            self._free.put(slot)
        self._line: queue.Queue = queue.Queue()  # batches in flight and the packets between them, in order
        self._handoff = threading.Thread(target=self._hand_on, name="vsr-infer-handoff", daemon=True)
        self._handoff.start()

    # -- the infer stage's side ----------------------------------------------------------------
    def submit(self, jobs: list[_Job]) -> None:
        slot = self._take_slot()
        first = jobs[0].frame
        max_value = (1 << first.format.components[0].bits) - 1
        dtype = torch.uint8 if max_value <= 255 else torch.int32
        host_in = slot.buffer("host_in", (len(jobs), 1, first.height, first.width), dtype)
        for i, job in enumerate(jobs):
            host_in[i, 0].copy_(_host_plane(frame_planes(job.frame)[0]))  # the one host copy per frame
        up = self.upscaler
        with _use_stream(self.h2d):
            dev_in = host_in.to(up.device, non_blocking=True)
            slot.copied.record(self.h2d)
        with _use_stream(self.compute):
            self.compute.wait_event(slot.copied)
            _record_stream(dev_in, self.compute)
            slot.started.record(self.compute)
            dev_out = up(dev_in, max_value)
            slot.computed.record(self.compute)
        host_out = slot.buffer("host_out", tuple(dev_out.shape), dev_out.dtype)
        with _use_stream(self.d2h):
            self.d2h.wait_event(slot.computed)
            _record_stream(dev_out, self.d2h)
            host_out.copy_(dev_out, non_blocking=True)
            slot.done.record(self.d2h)
        self._line.put((jobs, slot))

    def passthrough(self, item: Any) -> None:
        """A packet of a copied stream: handed on after the batches before it, without waiting for them here."""
        self._line.put(item)

    def drain(self) -> None:
        """Wait until everything submitted so far is handed on."""
        marker = _Marker()
        self._line.put(marker)
        while not marker.reached.wait(0.05):
            self._check()

    def close(self) -> None:
        self._line.put(_CLOSE)
        self._handoff.join(timeout=5)

    def _take_slot(self) -> _Slot:
        while True:
            try:
                return self._free.get(timeout=0.05)
            except queue.Empty:
                self._check()

    def _check(self) -> None:
        if self.ctl.stop.is_set():
            raise _Stopped
        if not self._handoff.is_alive():  # pragma: no cover - it fails through ctl, which sets stop
            raise RuntimeError("the CUDA hand-off thread ended")

    # -- the hand-off thread -------------------------------------------------------------------
    def _hand_on(self) -> None:
        try:
            while True:
                try:
                    entry = self._line.get(timeout=0.05)
                except queue.Empty:
                    if self.ctl.stop.is_set():
                        return
                    continue
                if entry is _CLOSE:
                    return
                if isinstance(entry, _Marker):
                    entry.reached.set()
                elif isinstance(entry, tuple):
                    self._finish(*entry)
                else:
                    self.ctl.put(self.out, entry)
        except _Stopped:
            pass
        except BaseException as exc:  # raised again by the pipeline, as the infer stage's error
            self.ctl.fail("infer", exc)

    def _finish(self, jobs: list[_Job], slot: _Slot) -> None:
        slot.done.synchronize()
        assert slot.host_out is not None
        luma = slot.host_out[: len(jobs)].numpy()
        for job, plane in zip(jobs, luma):
            job.luma = plane[0].copy()
        self.clock.busy += slot.started.elapsed_time(slot.computed) / 1000.0  # GPU milliseconds
        self.clock.frames += len(jobs)
        self._free.put(slot)  # its buffers are read: the next batch may take it
        for job in jobs:
            self.ctl.put(self.out, job)
