#!/usr/bin/env python3
"""Quality against speed for vsr's variants and the peers (docs/quality_speed_x3.png), from `vsr bench` JSON.

Speed: each point's frames per second on the ``--case`` case (default 640x360 x3) of the
given bench results: ``infer_fps`` for vsr's models (the engine and precision the bench
used), ``opencv_fps`` and ``bicubic_fps`` for the peers. Quality: Y-PSNR on Set5 under
the published protocol (:func:`vsr.evaluate.evaluate`), measured here with the same
engine and precision as the speed (and with the fp32 module, to report the precision's
cost), OpenCV's ESPCN through ``cv2.dnn_superres`` when importable, bicubic as published.
vsr's models need shipped weights (a model without them is left out, and said so)::

    PYTHONPATH=/tmp/cv2peers python tools/bench_plot.py bench_espcn.json bench_fast.json \\
        --out docs/quality_speed_x3.png --json quality_speed_x3.json

(``PYTHONPATH`` to OpenCV 4 contrib only for the OpenCV point; drawing uses cv2 and numpy.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
SHARED = REPO.parent / "shared" / "data"

from vsr.engine import LumaUpscaler  # noqa: E402
from vsr.evaluate import evaluate  # noqa: E402
from vsr.models import create_model, shipped_weights  # noqa: E402

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


WEIGHTS: dict[str, str] = {}  # model name -> weights file (--weights), instead of the shipped ones


def engine_upscaler(name: str, scale: int, precision: str, fused: bool):
    """An evaluate() upscaler running vsr's engine as the pipeline does: 8-bit luma in, 8-bit luma out."""
    model = create_model(name, scale=scale, weights=WEIGHTS.get(name, "shipped"))
    up = LumaUpscaler(model, device="cpu", dtype=_DTYPES[precision], fused=fused)

    def run(lr_y: np.ndarray) -> np.ndarray:
        y8 = torch.from_numpy(np.round(np.clip(lr_y, 0, 1) * 255).astype(np.uint8))[None, None]
        return up(y8, 255)[0, 0].numpy().astype(np.float32) / 255.0

    return run


def find_case(result: dict[str, Any], label: str) -> dict[str, Any] | None:
    return next((c for c in result["cases"] if c["case"] == label), None)


def collect(bench_files: list[Path], label: str, set5: Path, scale: int) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    peer_speed: dict[str, float] = {}
    for path in bench_files:
        case = find_case(json.loads(path.read_text()), label)
        if case is None:
            print(f"{path}: no case {label!r}; skipped", file=sys.stderr)
            continue
        for key in ("opencv_fps", "bicubic_fps"):
            if case.get(key):
                peer_speed.setdefault(key, case[key])
        name, precision, fused = case["model"], case["precision"], case["engine"] == "fused"
        if name not in WEIGHTS and shipped_weights(name, scale) is None:
            print(f"vsr {name}: no shipped x{scale} weights; left out of the plot", file=sys.stderr)
            continue
        psnr = evaluate(engine_upscaler(name, scale, precision, fused), set5, scale).psnr
        psnr_fp32 = evaluate(engine_upscaler(name, scale, "fp32", False), set5, scale).psnr
        points.append({
            "label": f"vsr {name} ({precision}, {'fused' if fused else 'module'})", "fps": case["infer_fps"],
            "weights": WEIGHTS.get(name, "shipped"),
            "pipeline_fps": case["pipeline_fps"], "psnr": psnr, "psnr_fp32_module": psnr_fp32,
            "psnr_delta_vs_fp32": psnr - psnr_fp32, "source": str(path),
        })
    bicubic = evaluate(None, set5, scale)
    if "bicubic_fps" in peer_speed:
        points.append({"label": "bicubic (cv2.resize)", "fps": peer_speed["bicubic_fps"],
                       "psnr": bicubic.bicubic_psnr})
    try:
        from eval_peers import peer_available, peer_upscaler

        pb = SHARED / "peer_models" / f"ESPCN_x{scale}.pb"
        if peer_available() and pb.is_file() and "opencv_fps" in peer_speed:
            res = evaluate(peer_upscaler(pb, "espcn", scale), set5, scale)
            points.append({"label": "OpenCV dnn_superres ESPCN", "fps": peer_speed["opencv_fps"], "psnr": res.psnr})
        else:
            print("OpenCV peer: cv2.dnn_superres, its model or its speed missing; left out", file=sys.stderr)
    except ImportError:
        pass
    return points


def draw(points: list[dict[str, Any]], out: Path, title: str) -> None:
    import cv2

    w, h, left, right, top, bottom = 960, 600, 90, 40, 60, 70
    img = np.full((h, w, 3), 255, np.uint8)
    fps = [p["fps"] for p in points]
    lo, hi = 10 ** math.floor(math.log10(min(fps + [10.0]))), 10 ** math.ceil(math.log10(max(fps + [100.0])))
    q = [p["psnr"] for p in points]
    qlo, qhi = math.floor(min(q) - 0.3), math.ceil(max(q) + 0.3)

    def xy(f: float, v: float) -> tuple[int, int]:
        x = left + (math.log10(f) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (w - left - right)
        y = top + (qhi - v) / (qhi - qlo) * (h - top - bottom)
        return int(round(x)), int(round(y))

    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (0, 0, 0)
    decade = lo
    while decade <= hi:
        for m in range(1, 10):
            f = decade * m
            if lo <= f <= hi:
                x, _ = xy(f, qlo)
                cv2.line(img, (x, top), (x, h - bottom), grey if m == 1 else (235, 235, 235), 1)
                if m == 1:
                    cv2.putText(img, f"{f:g}", (x - 12, h - bottom + 22), font, 0.5, black, 1, cv2.LINE_AA)
        decade *= 10
    for v in range(int(qlo), int(qhi) + 1):
        _, y = xy(lo, v)
        cv2.line(img, (left, y), (w - right, y), grey, 1)
        cv2.putText(img, f"{v}", (left - 34, y + 5), font, 0.5, black, 1, cv2.LINE_AA)
    x30, _ = xy(30, qlo)
    for y in range(top, h - bottom, 12):
        cv2.line(img, (x30, y), (x30, y + 6), (0, 0, 220), 2)
    cv2.putText(img, "30 fps", (x30 + 4, top + 14), font, 0.5, (0, 0, 220), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), black, 1)
    colours = [(200, 80, 0), (0, 140, 0), (150, 0, 150), (0, 120, 220), (80, 80, 80), (0, 0, 200)]
    dots = [xy(p["fps"], p["psnr"]) for p in points]
    placed: list[tuple[int, int, int, int]] = [(x - 9, y - 9, x + 9, y + 9) for x, y in dots]  # boxes to avoid

    def free(box: tuple[int, int, int, int]) -> bool:
        return box[0] >= left and box[2] <= w - right and box[1] >= top and box[3] <= h - bottom and not any(
            box[0] < r[2] and r[0] < box[2] and box[1] < r[3] and r[1] < box[3] for r in placed)

    for i, (p, (x, y)) in enumerate(zip(points, dots)):
        c = colours[i % len(colours)]
        cv2.circle(img, (x, y), 7, c, -1, cv2.LINE_AA)
        text = f"{p['label']}: {p['psnr']:.2f} dB, {p['fps']:.1f} fps"
        size = cv2.getTextSize(text, font, 0.48, 1)[0][0]
        # Beside the dot if there is room, else further up or down with a leader line to it.
        candidates = [(tx, y + 5 + dy) for dy in (0, -22, 22, -44, 44, -66, 66, -88, 88)
                      for tx in (x + 12, x - 12 - size)]
        tx, ty = next(((a, b) for a, b in candidates if free((a, b - 13, a + size, b + 4))), candidates[0])
        placed.append((tx, ty - 13, tx + size, ty + 4))
        if ty != y + 5:
            cv2.line(img, (x, y), (tx if tx > x else tx + size, ty - 5), c, 1, cv2.LINE_AA)
        cv2.putText(img, text, (tx, ty), font, 0.48, c, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 36), font, 0.62, black, 1, cv2.LINE_AA)
    cv2.putText(img, "infer-stage frames per second (log scale), this machine's CPU", (left + 180, h - 22),
                font, 0.55, black, 1, cv2.LINE_AA)
    label = np.full((30, h - top - bottom, 3), 255, np.uint8)
    cv2.putText(label, "Set5 Y-PSNR (dB)", (int((h - top - bottom) / 2 - 80), 21), font, 0.55, black, 1, cv2.LINE_AA)
    img[top : h - bottom, 20:50] = np.rot90(label)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", nargs="+", type=Path, help="vsr bench --json files (one per model or engine)")
    ap.add_argument("--case", default="640x360 x3", help="which case's speed (default: 640x360 x3)")
    ap.add_argument("--set5", type=Path, default=SHARED / "benchmark" / "Set5")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "quality_speed_x3.png")
    ap.add_argument("--json", type=Path, help="write the points as JSON")
    ap.add_argument("--weights", action="append", default=[], metavar="MODEL=FILE",
                    help="weights for a model instead of the shipped ones (repeatable)")
    args = ap.parse_args()
    for item in args.weights:
        name, _, path = item.partition("=")
        WEIGHTS[name] = path
    scale = int(args.case.rsplit("x", 1)[1])
    points = collect(args.bench, args.case, args.set5, scale)
    if not points:
        print("nothing to plot", file=sys.stderr)
        return 1
    for p in points:
        delta = f"  ({p['psnr_delta_vs_fp32']:+.3f} dB vs fp32 module)" if "psnr_delta_vs_fp32" in p else ""
        print(f"{p['label']:<40} {p['psnr']:6.2f} dB  {p['fps']:8.1f} fps{delta}")
    draw(points, args.out, f"Quality vs speed, x{scale}, {args.case.split()[0]} -> x{scale} (Set5 Y-PSNR; speed from vsr bench)")
    if args.json:
        args.json.write_text(json.dumps(points, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
