"""What runs on the cluster's nodes: the segment worker, an actor that loads the model once.
Imported only once Ray is; the node check, which must not import vsr, is in ``_nodes``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray

from ..config import config_from_dict
from ..pipeline import Pipeline, Progress
from ..resume import Segment, encode_segment
from . import _storage
from ._nodes import node_label

class SegmentWorker:
    """Loads the model once; :meth:`encode` upscales one segment of an input into a segment file.

    Made into a Ray actor by :func:`worker_class` with the CPUs or GPUs it takes. Two
    calls may run at once (``max_concurrency=2``) so that :meth:`progress`, :meth:`pid` and
    :meth:`cleanup` answer while a segment is being encoded; the driver gives each worker
    one segment at a time, and asks it how far it is for the job's progress bar (no
    separate tally actor: on a small node every extra process costs a PyTorch import).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.pipeline = Pipeline(config_from_dict(config))
        self.node = node_label()
        self.host = socket.gethostname()
        self.cache = Path(tempfile.mkdtemp(prefix="vsr-cluster-"))
        self._fetched: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._current: tuple[str | None, int] = (None, 0)  # (segment key, frames done) of the call running

    def ready(self) -> dict[str, Any]:
        return {"node": self.node, "device": str(self.pipeline.device), "precision": self.pipeline.precision,
                "pid": os.getpid()}

    def progress(self) -> tuple[str | None, int]:
        """The segment being encoded (its key) and its frames done so far; (None, 0) between segments."""
        return self._current

    def pid(self) -> int:
        return os.getpid()

    def _input(self, src: str, ident: dict[str, Any] | None) -> str:
        """A local path for ``src``: itself, or this worker's copy of an object-store input (fetched once)."""
        if not _storage.is_url(src):
            return src
        key = f"{src}#{(ident or {}).get('tag')}"
        with self._lock:
            if key not in self._fetched:
                local = self.cache / f"in-{len(self._fetched)}{Path(src).suffix}"
                self._fetched[key] = _storage.fetch(src, local)
            return str(self._fetched[key])

    def encode(self, task: dict[str, Any]) -> dict[str, Any]:
        """Encode ``task["segment"]`` of ``task["src"]`` into ``task["out"]`` (a path, or a URL to upload to)."""
        t0 = time.perf_counter()
        segment = Segment.from_dict(task["segment"])
        key = task["key"]
        src = self._input(task["src"], task.get("identity"))
        out = task["out"]
        local = Path(out) if not _storage.is_url(out) else self.cache / f"{key.replace('/', '_')}{task['suffix']}"
        self._current = (key, 0)

        def progress(p: Progress) -> None:
            self._current = (key, p.frames)

        try:
            report = encode_segment(self.pipeline, src, local, segment, format=task.get("format"), progress=progress)
            if _storage.is_url(out):
                try:
                    _storage.put(local, out)
                finally:
                    local.unlink(missing_ok=True)
        finally:
            self._current = (None, 0)
        return {"key": key, "index": segment.index, "frames": report.frames, "busy_s": time.perf_counter() - t0,
                "node": self.node, "pid": os.getpid(), "device": report.device, "precision": report.precision,
                "stages": {k: (v.frames, v.busy_s) for k, v in report.stages.items()},
                "latency_ms": report.latency_ms, "encoder": report.encoder}

    def cleanup(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)


def worker_class(*, num_cpus: float, num_gpus: float, name: str | None = None, strategy: Any = None) -> Any:
    """The :class:`SegmentWorker` actor class with these resources (Ray's own restarts off: the driver
    replaces dead workers and reruns their segments itself)."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": 0,
                               "max_task_retries": 0, "max_concurrency": 2}
    if name is not None:
        options["name"] = name
    if strategy is not None:
        options["scheduling_strategy"] = strategy
    return ray.remote(SegmentWorker).options(**options)


__all__ = ["SegmentWorker", "worker_class"]
