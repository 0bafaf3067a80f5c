"""Segment-parallel upscaling on a Ray cluster (``vsr run --executor ray``); the only home of Ray in vsr.

Each input is cut at keyframes into segments of about ``executor.segment_seconds``
(:func:`vsr.resume.plan_segments`). Workers, Ray actors that load the model once (one
per ``gpus_per_worker`` GPUs, or one per ``cpus_per_worker`` cores on CPU nodes), each
encode one segment at a time into the destination's work folder, exactly as a resumable
local run does (:func:`vsr.resume.encode_segment`); the driver joins the finished
segments in order with the input's audio and subtitles (:func:`vsr.resume.join_segments`)
into the destination, atomically. What happens when workers or nodes die is told in
``_job``; where files may live in ``_storage``; how vsr reaches Ray in ``_connect``.

Importing this package does not import Ray; :func:`run` does, and without the extra
(``pip install 'vsr[ray]'``) says so in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..config import PipelineConfig
from ..pipeline import Progress, RunReport

__all__ = ["ClusterResult", "FileResult", "run"]


@dataclass(frozen=True)
class FileResult:
    """One input of a cluster job: its report when it succeeded, else its one-line error."""

    input: str
    output: str
    report: RunReport | None
    error: str | None
    segments: int = 0
    retries: int = 0
    busy_s: float = 0.0  # worker seconds spent on its segments
    join_s: float = 0.0  # driver seconds spent joining them

    def to_dict(self) -> dict[str, Any]:
        extra = {"segments": self.segments, "retries": self.retries, "busy_s": self.busy_s, "join_s": self.join_s}
        if self.report is not None:
            return {"status": "ok", **self.report.to_dict(), **extra}
        return {"status": "failed", "input": self.input, "output": self.output, "error": self.error, **extra}


@dataclass(frozen=True)
class ClusterResult:
    """What :func:`run` did: per file, per node (frames, segments, busy seconds, reruns, fps), and the wall time."""

    files: list[FileResult]
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    workers: int = 0
    overhead_s: list[float] = field(default_factory=list)  # per segment: scheduling and transfer, not work

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.report is None]


def run(
    jobs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    config: PipelineConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    format: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> ClusterResult:
    """Upscale each (input, output) pair on Ray; a file that fails is reported and the others go on.

    ``address``: a Ray cluster (``host:port`` of the head, or ``auto``); None takes
    ``config.executor.address``, and if that is None too, starts a Ray on this machine,
    on loopback, for this call. Inputs and outputs are paths every node sees, or
    object-store URLs (``s3://...``). ``resume``: keep finished segments beside each
    output and reuse those of an earlier interrupted run. Errors that concern the whole
    job (no Ray, an unreachable address, a node that cannot see the files, a model that
    cannot be loaded) raise :class:`~vsr.VsrError` subclasses before any file is written.
    """
    import time

    from ._connect import connect
    from ._job import ClusterJob, FileJob

    conn = connect(address if address is not None else config.executor.address)
    try:
        files = [FileJob(os.fspath(src), os.fspath(dst), format=format) for src, dst in jobs]
        job = ClusterJob(conn.ray, config, files, resume=resume, progress=progress)
        t0 = time.perf_counter()
        try:
            job.prepare()
        except BaseException:
            job.cancel()
            job.close()
            raise
        job.run()
        elapsed = time.perf_counter() - t0
        nodes = {}
        for name, n in job.nodes.items():
            fps = n["frames"] / n["busy_s"] if n["busy_s"] > 0 else 0.0
            nodes[name] = {**n, "fps": fps}
        results = [FileResult(f.src, f.dst, f.report, f.error if f.report is None else None,
                              segments=len(f.plan), retries=f.retries,
                              busy_s=sum(r["busy_s"] for r in f.results.values()), join_s=f.join_s) for f in files]
        return ClusterResult(results, nodes, elapsed, job._started, job.overhead_s)
    finally:
        conn.close()
