"""Where an int8 frame's time goes: each step of ``Int8CpuNet.__call__`` timed apart on one whole frame.

The steps are the engine's own calls, in its order, on a real frame (stream-of-water tiled to
the size); the last row times the engine's whole call on the same frame, and the steps' output
is checked to equal it bit for bit, so that the breakdown cannot drift from the engine. Medians
over ``--repeats`` after 5 warm-up rounds. ``--tiles``: the engine (``LumaUpscaler``) on whole
frames against cache tiles of each given side, same frames, same medians::

    python tools/int8_breakdown.py --model espcn --scale 3 --size 640x360 --threads 2 --json out.json
    python tools/int8_breakdown.py --tiles 64,128,192,256,320
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_int8 import _frames  # noqa: E402
from vsr.bench import machine_info  # noqa: E402
from vsr.engine._fused_bf16 import write_shuffled  # noqa: E402
from vsr.engine import LumaUpscaler  # noqa: E402
from vsr.engine._int8 import Int8CpuNet  # noqa: E402
from vsr.quantize import load_int8, shipped_int8  # noqa: E402


def breakdown(net: Int8CpuNet, x: torch.Tensor, repeats: int) -> dict[str, float]:
    q = torch.ops.onednn.qconv2d_pointwise
    times: dict[str, list[float]] = {}

    def step(name: str, f: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        r = f()
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return r

    act = "relu" if net.kind == "relu" else "none"
    for _ in range(repeats + 5):
        coded, (w_last, b_last, pad_last, bounds) = net._pack(255, list(x.shape))
        *coded, (w_f, s_f, b_f, pad_f, xzp_f, _) = list(coded)
        y = x
        for i, (w, ws, b, pad, xzp, ozp) in enumerate(coded):
            y = step(f"layer {i + 1}: int8 conv, uint8 codes out",
                     lambda: q(y, 1.0, xzp, w, ws, net._zeros(len(ws)), b, [1, 1], pad, [1, 1], 1, 1.0, ozp, None,
                               act, [], ""))
            if net._tables:
                codes = y.permute(0, 2, 3, 1).numpy().reshape(-1, y.shape[3], y.shape[1])
                step(f"tanh of layer {i + 1}'s codes (cv2.LUT, per-channel tables)",
                     lambda: cv2.LUT(codes, net._tables[i], dst=codes))
        n = len(coded) + 1
        y = step(f"layer {n}: int8 conv, fp32 out",
                 lambda: q(y, 1.0, xzp_f, w_f, s_f, net._zeros(len(s_f)), b_f, [1, 1], pad_f, [1, 1], 1, 1.0, 0,
                           torch.float32, act, [], ""))
        if net.kind == "tanh":
            step("tanh in fp32 (as sigmoid(2z) - 1/2)", lambda: y.sigmoid_().sub_(0.5))
        out = step(f"layer {n + 1}: fp32 conv", lambda: torch.ops.mkldnn._convolution_pointwise(
            y, w_last, b_last, pad_last, [1, 1], [1, 1], 1, "hardtanh", bounds, ""))
        planes = step("periodic shuffle + integer copy", lambda: write_shuffled(out, net.scale, torch.uint8))
        whole = step("whole frame (Int8CpuNet)", lambda: net(x))
        if not torch.equal(planes, whole):
            raise SystemExit("int8_breakdown: the steps no longer compute what Int8CpuNet does; update them")
    return {k: statistics.median(v[5:]) for k, v in times.items()}


def tiles(model: object, frames: list[torch.Tensor], sides: list[int], repeats: int) -> dict[str, float]:
    """ms per frame of the int8 engine on whole frames (side 0) and in cache tiles of each side."""
    engine = LumaUpscaler(model, dtype=torch.bfloat16, int8=True)
    reference = engine(frames[0], 255)
    times: dict[int, list[float]] = {side: [] for side in [0, *sides]}
    for _ in range(repeats):
        for side in times:  # alternating, so that drift reaches every side alike
            engine.tile = side
            t0 = time.perf_counter()
            for x in frames:
                engine(x, 255)
            times[side].append((time.perf_counter() - t0) / len(frames) * 1000)
    engine.tile = 0
    if not torch.equal(engine(frames[0], 255), reference):  # pragma: no cover - tiles are exact by design
        raise SystemExit("int8_breakdown: tiled output differs from whole frames")
    return {("whole frame" if side == 0 else f"tiles of {side}"): statistics.median(v) for side, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--size", default="640x360")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tiles", metavar="SIDES", help="comma-separated LR tile sides to time against whole frames")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    int8_file = shipped_int8(args.model, args.scale)
    if int8_file is None:
        sys.exit(f"int8_breakdown: no int8 file ships for {args.model} x{args.scale}")
    model = load_int8(int8_file)[0]
    if args.tiles:
        sides = [int(v) for v in args.tiles.split(",")]
        for k, v in tiles(model, _frames(width, height, 10), sides, max(3, args.repeats // 5)).items():
            print(f"{v:7.2f} ms  {k}")
        return
    net = Int8CpuNet(model)
    x = _frames(width, height, 1)[0].contiguous(memory_format=torch.channels_last)
    ms = breakdown(net, x, args.repeats)
    steps = sum(v for k, v in ms.items() if not k.startswith("whole"))
    for k, v in ms.items():
        print(f"{v:7.2f} ms  {k}")
    print(f"{steps:7.2f} ms  sum of the steps")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(), "model": args.model, "scale": args.scale,
                                               "size": args.size, "threads": args.threads, "repeats": args.repeats,
                                               "ms": ms, "sum_of_steps_ms": steps}, indent=1) + "\n")


if __name__ == "__main__":
    main()
