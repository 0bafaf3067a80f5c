"""The upscale stage's helpers: parallel CPU workers, and CUDA batches in flight on three streams."""

from __future__ import annotations

import queue
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import torch

from ..engine import LumaUpscaler
from ..media import frame_planes
from ._flow import _Clock, _Control, _Job, _luma_tensor

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
