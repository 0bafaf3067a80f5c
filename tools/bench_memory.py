#!/usr/bin/env python3
"""Peak resident memory of ``vsr run`` on a 10-minute input against a 10-second one (a benchmark, not a test).

The streaming pipeline holds at most ``queue_depth`` frames between stages, so its memory
must not grow with the input's length. Both inputs are small (160x90, 30 fps, H.264 with
AAC audio, so that audio passthrough is exercised too) to keep the run short; each
``vsr run`` is a child process whose peak RSS comes from ``wait4`` (the kernel's
``ru_maxrss``), so nothing of this script's own memory is counted::

    python tools/bench_memory.py                       # table on stdout
    python tools/bench_memory.py --json memory.json    # and the figures as JSON

Random weights are used unless shipped ones exist (memory does not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vsr.bench import machine_info  # noqa: E402
from vsr.media import new_frame  # noqa: E402
from vsr.models import create_model, save_weights, shipped_weights  # noqa: E402


def make_input(path: Path, seconds: float, width: int = 160, height: int = 90, rate: int = 30) -> Path:
    """A clip of ``seconds`` with moving video and a mono AAC tone."""
    frames = round(seconds * rate)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.codec_context.options = {"preset": "ultrafast", "crf": "23"}
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
        samples_per_frame = 16000 // rate
        t_audio = 0
        for i in range(frames):
            y = (128 + 90 * np.sin((xx + 2 * i) / 6.0) * np.cos((yy - i) / 9.0)).astype(np.uint8)
            frame, planes = new_frame(width, height, "yuv420p")
            planes[0][...] = y
            planes[1][...] = 128
            planes[2][...] = 128
            frame.pts = i
            frame.time_base = Fraction(1, rate)
            out.mux(v.encode(frame))
            tone = (0.2 * np.sin(2 * np.pi * 440 * (t_audio + np.arange(samples_per_frame)) / 16000)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(tone[None, :], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, t_audio, Fraction(1, 16000)
            t_audio += samples_per_frame
            out.mux(a.encode(af))
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    return path


def peak_rss_of_run(src: Path, dst: Path, args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one ``vsr run`` child process."""
    cmd = [sys.executable, "-m", "vsr", "run", str(src), "-o", str(dst), "-y", "-q", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vsr run failed: {err.strip()}")
    return usage.ru_maxrss / 1024.0, seconds  # ru_maxrss is in KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="espcn-fast")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--short", type=float, default=10.0, help="seconds of the short input")
    ap.add_argument("--long", type=float, default=600.0, help="seconds of the long input")
    ap.add_argument("--json", metavar="FILE")
    opts = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="vsr-mem-") as tmp_dir:
        tmp = Path(tmp_dir)
        weights = shipped_weights(opts.model, opts.scale)
        if weights is None:
            weights = save_weights(create_model(opts.model, scale=opts.scale, weights=None), tmp / "w.safetensors")
        run_args = ["--model", opts.model, "--scale", str(opts.scale), "--weights", str(weights),
                    "--preset", "ultrafast"]
        rows = []
        for label, seconds in (("short", opts.short), ("long", opts.long)):
            src = make_input(tmp / f"{label}.mp4", seconds)
            rss, wall = peak_rss_of_run(src, tmp / f"{label}_out.mp4", run_args)
            rows.append({"input": label, "seconds_of_video": seconds, "frames": round(seconds * 30),
                         "peak_rss_mib": rss, "run_seconds": wall})
            print(f"{label:5s} {seconds:7.0f} s of video  peak RSS {rss:7.1f} MiB  ({wall:.1f} s to run)", flush=True)
    ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"long / short peak RSS: {ratio:.3f} (target: within 10%, i.e. <= 1.10)")
    if opts.json:
        Path(opts.json).write_text(json.dumps({
            "rows": rows, "ratio": ratio, "model": opts.model, "scale": opts.scale, "input_size": [160, 90],
            "machine": machine_info(), "started_utc": started,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
