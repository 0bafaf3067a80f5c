"""The machinery shared by the threaded stages: bounded queues that give up when stopped."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch

from ._reports import StageReport

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
