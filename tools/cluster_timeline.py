"""When each step of a ``vsr run --executor ray`` job happens: the timeline behind docs/CLUSTER.md's
"what changed" table (node check, first worker ready, each segment, each join).

    python tools/cluster_timeline.py [--cpus-per-worker 2] [--clips DIR]

Starts a Ray on loopback, runs the batch of ``tools/bench_cluster.py`` (same settings) once, and
prints seconds since the start for each step, from wrappers around the driver's methods.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vsr import cluster  # noqa: E402
from vsr.cluster import _job  # noqa: E402
from vsr.config import load_config  # noqa: E402

STEPS = ("prepare", "_check_nodes", "_start_worker", "_worker_ready", "_join")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "videos")
    ap.add_argument("--cpus-per-worker", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()

    def mark(what: str) -> None:
        print(f"{time.perf_counter() - t0:8.3f} s  {what}", flush=True)

    for name in STEPS:
        real = getattr(_job.ClusterJob, name)

        def wrapped(self, *a, _real=real, _name=name, **k):
            mark(f"{_name} begins")
            try:
                return _real(self, *a, **k)
            finally:
                mark(f"{_name} ends")
        setattr(_job.ClusterJob, name, wrapped)
    finished = _job.ClusterJob._finished

    def on_finished(self, ref, entry, pending):
        _, job, seg = entry
        finished(self, ref, entry, pending)
        busy = job.results.get(seg.index, {}).get("busy_s")
        mark(f"segment {seg.index} of {Path(job.src).name} in" + (f" (worker busy {busy:.2f} s)" if busy else ""))
    _job.ClusterJob._finished = on_finished

    clips = sorted(p for p in args.clips.iterdir() if p.suffix in (".mp4", ".mkv"))
    cfg = load_config(None, {"model.name": "espcn-fast", "model.scale": 2, "device": "cpu",
                             "encoder.preset": "veryfast", "executor.segment_seconds": 4,
                             "executor.cpus_per_worker": args.cpus_per_worker, "progress": "never"})
    out = Path(tempfile.mkdtemp(prefix="vsr-timeline-"))
    mark("start (Ray starts here)")
    result = cluster.run([(c, out / c.name) for c in clips], cfg)
    mark(f"end: {result.workers} worker(s), {len(result.failed)} failed")
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
