#!/usr/bin/env python3
"""Write the model card's results table (docs/MODELS.md) under the published protocol.

    python tools/results_table.py                                   # vsr + bicubic + paper
    PYTHONPATH=/tmp/cv2peers python tools/results_table.py --fps    # + OpenCV peers, + speed

Rows: bicubic, vsr's shipped models, OpenCV's ESPCN/FSRCNN peers (when ``cv2.dnn_superres``
is importable, see tools/eval_peers.py), and the ESPCN paper's published figures (quoted,
not measured).  Y-PSNR (dB) / SSIM, ``scale`` pixels shaved, via :func:`vsr.evaluate.evaluate`.
``--fps``: frames per second upscaling one 640x360 luma frame on this machine's CPU
(median of 15 runs, ``--threads`` threads): vsr's models through the engine ``vsr run`` uses
(:class:`vsr.engine.LumaUpscaler`, precision ``auto``: bf16 on CPUs with native bf16),
the peers through their own call.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
SHARED = REPO.parent / "shared" / "data"

from eval_peers import PEERS, peer_available, peer_upscaler, time_fps  # noqa: E402

from vsr.evaluate import evaluate  # noqa: E402
from vsr.models import create_model, shipped_weights  # noqa: E402

#: Shi et al., CVPR 2016, Y-PSNR on Set5 / Set14 (their protocol; no x2 figures published).
PAPER: dict[str, dict[int, tuple[float | None, float | None]]] = {
    "paper ESPCN, 91 images (Table 1)": {3: (32.55, 29.08)},
    "paper ESPCN, ImageNet (Table 2)": {3: (33.13, 29.49), 4: (30.90, 27.73)},
}


def _cell(res: Any) -> str:
    return f"{res.psnr:.2f} / {res.ssim:.4f}"


def _engine_upscaler(model: torch.nn.Module):
    """One 8-bit luma plane (floats in [0, 1]) through the engine and precision ``vsr run`` uses on CPU."""
    import numpy as np

    from vsr.engine import LumaUpscaler, resolve_precision

    engine = LumaUpscaler(model, device="cpu", dtype=resolve_precision("auto", torch.device("cpu")))

    def run(lr_y: "np.ndarray") -> torch.Tensor:
        return engine(torch.from_numpy(np.round(lr_y * 255).astype(np.uint8))[None, None])

    return run


def build_rows(scales: list[int], fps: bool, threads: int) -> list[tuple[int, str, str, str, str]]:
    sets = [SHARED / "benchmark" / "Set5", SHARED / "benchmark" / "Set14"]
    rows: list[tuple[int, str, str, str, str]] = []
    for scale in scales:
        bic = [evaluate(None, s, scale) for s in sets]
        rows.append((scale, "bicubic (MATLAB imresize)",
                     *(f"{r.bicubic_psnr:.2f} / {r.bicubic_ssim:.4f}" for r in bic), ""))
        for name in ("espcn", "espcn-fast"):
            if shipped_weights(name, scale) is None:
                rows.append((scale, f"vsr {name}", "no weights", "no weights", ""))
                continue
            model = create_model(name, scale=scale)
            res = [evaluate(model, s, scale) for s in sets]
            speed = ""
            if fps:
                speed = f"{time_fps(_engine_upscaler(model), repeats=15):.1f}"
            rows.append((scale, f"vsr {name}", _cell(res[0]), _cell(res[1]), speed))
        if peer_available():
            import cv2

            cv2.setNumThreads(threads)
            for label, prefix, algorithm in PEERS:
                pb = SHARED / "peer_models" / f"{prefix}_x{scale}.pb"
                if not pb.is_file():
                    continue
                fn = peer_upscaler(pb, algorithm, scale)
                res = [evaluate(fn, s, scale) for s in sets]
                rows.append((scale, label, _cell(res[0]), _cell(res[1]), f"{time_fps(fn, repeats=15):.1f}" if fps else ""))
        for label, figures in PAPER.items():
            if scale in figures:
                s5, s14 = figures[scale]
                rows.append((scale, label, f"{s5:.2f}" if s5 else "-", f"{s14:.2f}" if s14 else "-", ""))
    return rows


def _stages(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The training stages recorded in a shipped file, oldest first (init_metadata nests)."""
    stages = []
    while meta:
        stages.append(meta)
        meta = meta.get("init_metadata") or {}
    return stages[::-1]


def training_table() -> None:
    """How each shipped file was trained, from its own metadata (tools/ship_weights.py records the stages)."""
    from vsr.models import read_weights

    print("| file | stage | steps | wall time | Set5 at the end | command |")
    print("|---|---|---|---|---|---|")
    for name in ("espcn", "espcn-fast"):
        for scale in (2, 3, 4):
            path = shipped_weights(name, scale)
            if path is None:
                continue
            _, meta = read_weights(path)
            stages = _stages(meta)
            for i, st in enumerate(stages, 1):
                psnr = st.get("val_set5_psnr") or st.get("val_set5_psnr_step10000")
                note = " (stopped early)" if st.get("unfinished") else ""
                print(f"| {path.name} | {i}/{len(stages)}{note} | {st.get('steps')} | "
                      f"{st.get('wall_seconds', 0) / 60:.0f} min | {f'{psnr:.2f} dB' if psnr else '-'} | "
                      f"`{st.get('command', '?')}` |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, action="append", choices=(2, 3, 4), help="default: 2, 3, 4")
    parser.add_argument("--fps", action="store_true", help="also time one 640x360 luma frame per model")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenCV threads for --fps (default 2)")
    parser.add_argument("--training", action="store_true",
                        help="print how each shipped file was trained (from its metadata) instead")
    args = parser.parse_args(argv)
    if args.training:
        training_table()
        return 0
    torch.set_num_threads(args.threads)
    rows = build_rows(args.scale or [2, 3, 4], args.fps, args.threads)
    print("| scale | method | Set5 PSNR / SSIM | Set14 PSNR / SSIM |" + (" fps, 640x360 in |" if args.fps else ""))
    print("|---|---|---|---|" + ("---|" if args.fps else ""))
    for scale, label, s5, s14, speed in rows:
        print(f"| x{scale} | {label} | {s5} | {s14} |" + (f" {speed} |" if args.fps else ""))
    if args.fps:
        print(f"\nfps measured on: {platform.processor() or platform.machine()}, {args.threads} threads, "
              f"torch {torch.__version__}; vsr rows: the engine at precision auto, peers: their upsample call")
    if not peer_available():
        print("\n(OpenCV peers left out: cv2.dnn_superres not importable; see tools/eval_peers.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
