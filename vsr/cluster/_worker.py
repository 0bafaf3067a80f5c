"""What runs on the cluster's nodes: the segment worker (an actor that loads the model once),
the progress tally, and the check that a node sees the job's files. Imported only once Ray is.
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

# How often a worker tells the tally how far its segment is (seconds).
TALLY_EVERY_S = 0.5


def node_label() -> str:
    """A node as reports name it: its address and the start of its Ray node id."""
    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


@ray.remote(num_cpus=0)
class Tally:
    """Frames done so far of each segment in progress, as its worker last said."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}

    def set(self, key: str, frames: int) -> None:
        self.frames[key] = frames

    def snapshot(self) -> dict[str, int]:
        return dict(self.frames)


class SegmentWorker:
    """Loads the model once; :meth:`encode` upscales one segment of an input into a segment file.

    Made into a Ray actor by :func:`worker_class` with the CPUs or GPUs it takes. Two
    calls may run at once (``max_concurrency=2``) so that :meth:`pid` and :meth:`cleanup`
    answer while a segment is being encoded; the driver gives each worker one segment at
    a time.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.pipeline = Pipeline(config_from_dict(config))
        self.node = node_label()
        self.host = socket.gethostname()
        self.cache = Path(tempfile.mkdtemp(prefix="vsr-cluster-"))
        self._fetched: dict[str, Path] = {}
        self._lock = threading.Lock()

    def ready(self) -> dict[str, Any]:
        return {"node": self.node, "device": str(self.pipeline.device), "precision": self.pipeline.precision,
                "pid": os.getpid()}

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

    def encode(self, task: dict[str, Any], tally: Any) -> dict[str, Any]:
        """Encode ``task["segment"]`` of ``task["src"]`` into ``task["out"]`` (a path, or a URL to upload to)."""
        t0 = time.perf_counter()
        segment = Segment.from_dict(task["segment"])
        key = task["key"]
        src = self._input(task["src"], task.get("identity"))
        out = task["out"]
        local = Path(out) if not _storage.is_url(out) else self.cache / f"{key.replace('/', '_')}{task['suffix']}"
        last = [0.0]
        tally.set.remote(key, 0)

        def progress(p: Progress) -> None:
            now = time.perf_counter()
            if now - last[0] >= TALLY_EVERY_S:
                last[0] = now
                tally.set.remote(key, p.frames)

        report = encode_segment(self.pipeline, src, local, segment, format=task.get("format"), progress=progress)
        if _storage.is_url(out):
            try:
                _storage.put(local, out)
            finally:
                local.unlink(missing_ok=True)
        tally.set.remote(key, report.frames)
        return {"key": key, "index": segment.index, "frames": report.frames, "busy_s": time.perf_counter() - t0,
                "node": self.node, "pid": os.getpid(), "device": report.device, "precision": report.precision,
                "stages": {k: (v.frames, v.busy_s) for k, v in report.stages.items()},
                "latency_ms": report.latency_ms}

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


@ray.remote(num_cpus=0)
def check_paths(inputs: list[dict[str, Any]], folders: list[str]) -> list[str]:
    """On one node: the inputs it cannot see as the driver does, and the output folders it cannot write."""
    problems = []
    where = node_label()
    for ident in inputs:
        path = ident["path"]
        try:
            st = os.stat(path)
        except OSError as exc:
            problems.append(f"node {where} cannot see input {path} ({exc.strerror or exc})")
            continue
        if st.st_size != ident["size"] or st.st_mtime_ns != ident["mtime_ns"]:
            problems.append(f"node {where} sees another file at {path} (size or time differ from the driver's)")
        elif not os.access(path, os.R_OK):
            problems.append(f"node {where} cannot read input {path} (permission denied)")
    for folder in folders:
        if not os.path.isdir(folder):
            problems.append(f"node {where} cannot see the output folder {folder}")
        elif not os.access(folder, os.W_OK):
            problems.append(f"node {where} cannot write to the output folder {folder}")
    return problems


__all__ = ["SegmentWorker", "Tally", "check_paths", "node_label", "worker_class"]
