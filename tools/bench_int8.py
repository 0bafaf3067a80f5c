"""int8 against bf16 (and OpenCV's dnn_superres ESPCN) inside the engine, in one process and one run.

What ``vsr run`` calls for each frame: ``LumaUpscaler.__call__`` on a (1, 1, H, W) uint8 plane.
Each round times every engine on the same frames, one after the other; the figures are medians
over rounds, the ratios medians of the per-round ratios. For a model whose int8 file has scheme v4's linear
bypass, ``int8_no_bypass`` times the same file through scheme v3's steps (tanh tables or ReLU codes, no composite
convolution): what the bypass costs, not a quality anyone ships. To measure a CPU without AMX (AMD Zen 4:
AVX-512, VNNI and BF16) on an Intel one with it, cap oneDNN::

    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python tools/bench_int8.py --threads 2
    VSR_CV2_CONTRIB_PATH=/tmp/cv2peers python tools/bench_int8.py --threads 2   # with the OpenCV peer
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsr.bench import BenchOptions, _opencv_fps, machine_info  # noqa: E402
from vsr.engine import LumaUpscaler  # noqa: E402
from vsr.models import create_model  # noqa: E402
from vsr.quantize import load_int8, shipped_int8  # noqa: E402


def _frames(width: int, height: int, count: int) -> list[torch.Tensor]:
    """Luma planes of a real clip (stream of water), cropped or tiled to the size."""
    import av

    clip = Path(__file__).resolve().parents[1] / "samples" / "stream-of-water.mp4"
    with av.open(str(clip)) as c:
        ys = [f.to_ndarray(format="gray") for _, f in zip(range(count), c.decode(video=0))]
    out = []
    for y in ys:
        reps = (-(-height // y.shape[0]), -(-width // y.shape[1]))
        out.append(torch.from_numpy(np.ascontiguousarray(np.tile(y, reps)[:height, :width]))[None, None])
    return out


def _fps(engine: LumaUpscaler, frames: list[torch.Tensor]) -> float:
    t0 = time.perf_counter()
    for x in frames:
        engine(x, 255)
    return len(frames) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="espcn,espcn-fast")
    p.add_argument("--size", default="640x360")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    frames = _frames(width, height, args.frames)
    results = {"machine": machine_info(), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
               "size": args.size, "scale": args.scale, "frames": args.frames, "rounds": args.rounds,
               "threads": args.threads, "models": {}}
    for name in args.models.split(","):
        int8_file = shipped_int8(name, args.scale)
        if int8_file is None:
            print(f"{name} x{args.scale}: no int8 file ships, skipped")
            continue
        q = load_int8(int8_file)[0]
        engines = {
            "int8": LumaUpscaler(q, dtype=torch.bfloat16, int8=True),
            "bf16": LumaUpscaler(create_model(name, scale=args.scale), dtype=torch.bfloat16),
        }
        if q.bypass:
            engines["int8_no_bypass"] = LumaUpscaler(q.unbypassed(), dtype=torch.bfloat16, int8=True)
        for e in engines.values():
            _fps(e, frames[:2])  # warm-up: prepacking
        samples: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(args.rounds):
            for k, e in engines.items():
                samples[k].append(_fps(e, frames))
        ratios = [a / b for a, b in zip(samples["int8"], samples["bf16"])]
        row = {f"{k}_fps": statistics.median(v) for k, v in samples.items()}
        row["int8_over_bf16"] = statistics.median(ratios)
        if "int8_no_bypass" in samples:
            row["int8_over_no_bypass"] = statistics.median(
                a / b for a, b in zip(samples["int8"], samples["int8_no_bypass"]))
        row["samples"] = samples
        with tempfile.TemporaryDirectory() as tmp:
            peer = _opencv_fps(BenchOptions(model=name), args.scale, [f[0, 0].numpy() for f in frames], Path(tmp))
        if "fps" in peer:
            row["opencv_fps"] = peer["fps"]
            row["int8_over_opencv"] = row["int8_fps"] / peer["fps"]
        else:
            row["opencv"] = peer
        results["models"][name] = row
        print(f"{name} x{args.scale} {args.size} ({results['onednn_max_cpu_isa']}, {args.threads} threads): "
              f"int8 {row['int8_fps']:.1f} fps, bf16 {row['bf16_fps']:.1f} fps, int8/bf16 {row['int8_over_bf16']:.2f}"
              + (f", int8 without the bypass {row['int8_no_bypass_fps']:.1f} fps, int8/that "
                 f"{row['int8_over_no_bypass']:.2f}" if "int8_no_bypass_fps" in row else "")
              + (f", OpenCV {row['opencv_fps']:.1f} fps, int8/OpenCV {row['int8_over_opencv']:.1f}"
                 if "opencv_fps" in row else f", OpenCV: {peer.get('skipped')}"), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
