#!/usr/bin/env python3
"""Where inference time goes, and which CPU backend wins: the evidence behind vsr's engine choice.

On one 640x360 luma frame, x3 (change with --size/--scale), for each model:

1. ``torch.profiler`` of the plain PyTorch module (bf16, channels_last) and of vsr's
   fused engine, on one thread: the top operators by self CPU time;
2. frames per second of each backend, single frames, at 1 and at ``--threads`` torch threads,
   and vsr's engine as the pipeline runs it (frames in parallel on single-threaded workers):
   module fp32 / bf16 (+ channels_last), TorchScript freeze + optimize_for_inference (bf16),
   ONNX Runtime fp32, ``torch.compile`` (inductor, freezing; with --compile), vsr's fused engine
   fp32 / bf16; each with its 8-bit output's PSNR against the fp32 module.

    python tools/bench_backends.py --json backends.json [--compile]

Random weights (speed does not depend on their values). Medians of --repeats frames.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vsr.engine import LumaUpscaler  # noqa: E402
from vsr.models import create_model  # noqa: E402

Runner = Callable[[], torch.Tensor]


def fps_of(run: Runner, repeats: int) -> float:
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


def parallel_fps(run: Runner, workers: int, frames: int) -> float:
    """Frames per second of ``workers`` single-threaded threads sharing ``frames`` frames."""
    counter = iter(range(frames))
    lock = threading.Lock()

    def work() -> None:
        torch.set_num_threads(1)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            run()

    run()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return frames / (time.perf_counter() - t0)


def to8(y: torch.Tensor) -> np.ndarray:
    y = y.float()
    if y.is_floating_point() and y.max() <= 2.0:  # float output in [0, 1]
        y = y * 255
    return y.round().clamp(0, 255).to(torch.uint8).numpy().reshape(-1)


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else 10 * math.log10(255 * 255 / mse)


def backends(name: str, scale: int, size: tuple[int, int], compile_: bool) -> dict[str, tuple[Runner, Any]]:
    torch.manual_seed(0)
    state = create_model(name, scale=scale, weights=None).state_dict()

    def model(dtype: torch.dtype = torch.float32, cl: bool = False) -> torch.nn.Module:
        m = create_model(name, scale=scale, weights=None)
        m.load_state_dict(state)
        return m.eval().to(dtype=dtype, memory_format=torch.channels_last if cl else torch.contiguous_format)

    w, h = size
    x8 = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 1, h, w), dtype=np.uint8))
    xf = x8.float() / 255
    out: dict[str, tuple[Runner, Any]] = {}
    mods = {
        "module fp32": (model(), xf),
        "module fp32 channels_last": (model(cl=True), xf.contiguous(memory_format=torch.channels_last)),
        "module bf16 channels_last": (model(torch.bfloat16, True),
                                      xf.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)),
    }
    for label, (m, x) in mods.items():
        out[label] = (lambda m=m, x=x: _infer(m, x), None)
    m, x = mods["module bf16 channels_last"]
    with torch.inference_mode(), redirect_stderr(io.StringIO()):
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(m, x)))
    out["TorchScript freeze+optimize bf16"] = (lambda: _infer(frozen, x), None)
    try:
        import onnxruntime as ort

        path = Path(tempfile.mkdtemp()) / "m.onnx"
        with redirect_stderr(io.StringIO()):
            torch.onnx.export(model(), (xf,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        xn = xf.numpy()
        out["ONNX Runtime fp32"] = (lambda: torch.from_numpy(sess.run(None, {"x": xn})[0]), sess)
    except Exception as exc:  # optional backend
        print(f"ONNX Runtime skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    if compile_:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        cm = torch.compile(mods["module bf16 channels_last"][0])
        t0 = time.perf_counter()
        _infer(cm, x)
        print(f"torch.compile: {time.perf_counter() - t0:.1f} s to compile", file=sys.stderr)
        out["torch.compile inductor bf16"] = (lambda: _infer(cm, x), None)
    for dtype, label in ((torch.float32, "vsr fused fp32"), (torch.bfloat16, "vsr fused bf16")):
        up = LumaUpscaler(model(), dtype=dtype)
        assert up.fused
        out[label] = (lambda up=up: up(x8), None)
    return out


@torch.inference_mode()
def _infer(m: Any, x: torch.Tensor) -> torch.Tensor:
    return m(x)


def profile(name: str, scale: int, size: tuple[int, int], rows: int = 6) -> dict[str, list[dict[str, Any]]]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    result = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: operator times without OpenMP barrier waits mixed in
    b = backends(name, scale, size, compile_=False)
    for label in ("module bf16 channels_last", "vsr fused bf16"):
        run = b[label][0]
        run()
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(5):
                run()
        events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events) or 1
        result[label] = [
            {"op": e.key, "shapes": str(e.input_shapes)[:60], "share": e.self_cpu_time_total / total,
             "ms_per_frame": e.self_cpu_time_total / 1000 / 5}
            for e in events[:rows]
        ]
    torch.set_num_threads(previous)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["espcn", "espcn-fast"])
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (inductor; slow to compile)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    report: dict[str, Any] = {"size": args.size, "scale": args.scale, "threads": args.threads,
                              "torch": torch.__version__, "load_average_1m": os.getloadavg()[0], "models": {}}
    for name in args.models:
        torch.set_num_threads(args.threads)
        prof = profile(name, args.scale, size)
        rows = []
        b = backends(name, args.scale, size, args.compile)
        ref = to8(b["module fp32"][0]())
        for label, (run, _) in b.items():
            row: dict[str, Any] = {"backend": label, "psnr_vs_fp32_module": psnr(to8(run()), ref)}
            for threads in sorted({1, args.threads}):
                torch.set_num_threads(threads)
                row[f"fps_{threads}_threads"] = fps_of(run, args.repeats)
            torch.set_num_threads(args.threads)
            if label.startswith("vsr fused") and args.threads > 1:
                row[f"fps_{args.threads}_workers"] = parallel_fps(run, args.threads, 2 * args.repeats)
                torch.set_num_threads(args.threads)
            rows.append(row)
            cells = "  ".join(f"{k}={v:.1f}" for k, v in row.items() if k.startswith("fps") and v)
            acc = row["psnr_vs_fp32_module"]
            print(f"{name:<10} {label:<34} {cells}  PSNR vs fp32 {'same' if acc is None else f'{acc:.1f} dB'}",
                  flush=True)
        for label, ops in prof.items():
            print(f"{name:<10} profile of {label}: " + ", ".join(
                f"{o['op']} {o['share']:.0%} ({o['ms_per_frame']:.1f} ms)" for o in ops[:4]), flush=True)
        report["models"][name] = {"backends": rows, "profile": prof}
    report["load_average_1m_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
