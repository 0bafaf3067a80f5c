"""Overhead of ``vsr run --executor ray`` on one machine, and the measured parts of a scaling model.

    python tools/bench_cluster.py [--clips DIR] [--rounds 3] [--segment-seconds 4] [--cpus-per-worker 2] [--json out.json]

In one process, on the same batch of real clips, with the same settings, ``--rounds`` times
(the order of the two runs alternating from round to round, since a shared machine's load drifts):

1. local: one Pipeline (one model load) runs every clip in turn, as ``vsr run DIR -o OUT`` does;
2. ray: a Ray started here on loopback, workers sized to the cores, ``vsr.cluster.run`` on the
   batch, Ray stopped again: the whole wall time of ``vsr run DIR -o OUT --executor ray``.

After the rounds, once: the job alone on a Ray that is already running (started before, kept
after), as with ``--ray-address`` to a ``ray start --head`` on this machine.

Printed: per round both wall times and their ratio, and the median ratio; the Ray start, worker start-up and stop; per segment
the median work (worker busy seconds), the driver's scheduling overhead (dispatch to result,
less the worker's time) and the join time; the join's bandwidth (output MB per join second).
docs/CLUSTER.md turns these into a throughput model against node count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vsr.config import load_config  # noqa: E402
from vsr.pipeline import Pipeline  # noqa: E402


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "videos")
    ap.add_argument("--model", default="espcn-fast")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--segment-seconds", type=int, default=4)
    ap.add_argument("--cpus-per-worker", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="local and Ray runs each (default 3)")
    ap.add_argument("--ray-first", action="store_true", help="begin with the Ray job (then alternate)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    clips = sorted(p for p in args.clips.iterdir() if p.suffix in (".mp4", ".mkv"))
    if not clips:
        print(f"no clips in {args.clips}", file=sys.stderr)
        return 1
    cfg = load_config(None, {"model.name": args.model, "model.scale": args.scale, "device": "cpu",
                             "encoder.preset": args.preset, "executor.segment_seconds": args.segment_seconds,
                             "executor.cpus_per_worker": args.cpus_per_worker, "progress": "never"})
    out = Path(tempfile.mkdtemp(prefix="vsr-bench-cluster-"))
    (out / "local").mkdir()
    (out / "ray").mkdir()
    load = os.getloadavg()

    def run_local() -> tuple[float, int]:
        t0 = time.perf_counter()
        pipeline = Pipeline(cfg)
        frames = 0
        for c in clips:
            (out / "local" / c.name).unlink(missing_ok=True)
            frames += pipeline.run(c, out / "local" / c.name).frames
        local_s = time.perf_counter() - t0
        return local_s, frames

    from vsr import cluster
    from vsr.cluster._connect import connect

    def run_ray(stop: bool = True) -> tuple[float, float, float, float, object, object]:
        for c in clips:
            (out / "ray" / c.name).unlink(missing_ok=True)
        t0 = time.perf_counter()
        conn = connect(None)
        t_up = time.perf_counter()
        result = cluster.run([(c, out / "ray" / c.name) for c in clips], cfg)
        t_run = time.perf_counter()
        if stop:
            conn.close()
        t_down = time.perf_counter()
        bad = [f.error for f in result.files if f.report is None]
        if bad:
            raise SystemExit(f"failed: {bad}")
        return t0, t_up, t_run, t_down, result, conn

    rounds = []
    for r in range(args.rounds):
        ray_first = args.ray_first == (r % 2 == 0)
        if ray_first:
            t0, t_up, t_run, t_down, result, _ = run_ray()
            local_s, frames = run_local()
        else:
            local_s, frames = run_local()
            t0, t_up, t_run, t_down, result, _ = run_ray()
        rounds.append({"order": "ray, local" if ray_first else "local, ray", "local_s": local_s,
                       "ray_s": t_down - t0, "ratio": (t_down - t0) / local_s, "ray_start_s": t_up - t0,
                       "ray_job_s": t_run - t_up, "ray_stop_s": t_down - t_run,
                       "load": os.getloadavg()[0]})
        print(f"round {r + 1}: {rounds[-1]['order']}: local {local_s:.1f} s, ray {t_down - t0:.1f} s "
              f"(start {t_up - t0:.1f}, job {t_run - t_up:.1f}, stop {t_down - t_run:.1f}) = "
              f"{rounds[-1]['ratio']:.3f}x", flush=True)
    # A Ray kept running between jobs: start it, run one job on it to start its processes, then time
    # the job alone (the driver is connected already, as a second `vsr run --ray-address` would be after
    # its 0.5 s connect).
    *_, conn = run_ray(stop=False)
    t_warm = time.perf_counter()
    run_ray(stop=False)
    warm_s = time.perf_counter() - t_warm
    conn.close()
    local_med = statistics.median(r["local_s"] for r in rounds)
    ray_s = statistics.median(r["ray_s"] for r in rounds)
    segments = sum(f.segments for f in result.files)
    busy = [f.busy_s / max(1, f.segments) for f in result.files]  # per file: its mean segment
    join_s = sum(f.join_s for f in result.files)
    out_bytes = sum((out / "ray" / c.name).stat().st_size for c in clips)
    first_work = min((f.report.elapsed_s for f in result.files if f.report), default=0.0)
    figures = {
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores",
        "load_before": load,
        "load_after": os.getloadavg(),
        "clips": len(clips),
        "frames": frames,
        "settings": {"model": args.model, "scale": args.scale, "preset": args.preset,
                     "segment_seconds": args.segment_seconds, "cpus_per_worker": args.cpus_per_worker},
        "rounds": rounds,
        "local_s": local_med,
        "ray_s": ray_s,
        "ratio": statistics.median(r["ratio"] for r in rounds),  # median of the rounds' ratios
        "ray_start_s": statistics.median(r["ray_start_s"] for r in rounds),
        "ray_job_s": statistics.median(r["ray_job_s"] for r in rounds),
        "ray_stop_s": statistics.median(r["ray_stop_s"] for r in rounds),
        "ray_running_job_s": warm_s,
        "ray_running_ratio": warm_s / local_med,
        "workers": result.workers,
        "segments": segments,
        "segment_work_s_median_of_files": statistics.median(busy),
        "overhead_per_segment_s_median": statistics.median(result.overhead_s),
        "overhead_per_segment_s_max": max(result.overhead_s),
        "join_per_segment_s": join_s / segments,
        "join_mb_per_s": out_bytes / 1e6 / join_s if join_s > 0 else None,
        "output_mb": out_bytes / 1e6,
        "first_file_s": first_work,
    }
    for k, v in figures.items():
        if k == "rounds":
            continue
        print(f"{k:32} {v:.3f}" if isinstance(v, float) else f"{k:32} {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
