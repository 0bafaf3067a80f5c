#!/usr/bin/env python3
"""Figures of a (possibly unfinished) training run: export its checkpoint, evaluate on Set5 and Set14.

    python tools/eval_checkpoint.py runs/i19_x3_coll/checkpoint.pt [--weights OUT.safetensors] [--json]

The checkpoint's network (collapsed to the plain ESPCN when the run is ``--collapsible``) is written
with :func:`vsr.training.export_checkpoint` (to a temporary file unless ``--weights`` is given) and
evaluated under the published protocol, exactly as ``vsr eval --weights FILE`` would.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BENCH = REPO.parent / "shared" / "data" / "benchmark"

import torch  # noqa: E402

from vsr.errors import VsrError  # noqa: E402
from vsr.evaluate import evaluate  # noqa: E402
from vsr.models import ESPCN, ESPCNConfig, load_weights, read_weights  # noqa: E402
from vsr.training import export_checkpoint  # noqa: E402


def figures(checkpoint: Path, weights: Path | None = None, sets: tuple[str, ...] = ("Set5", "Set14")) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = export_checkpoint(checkpoint, weights or Path(tmp) / "w.safetensors")
        _, meta = read_weights(out)
        model = load_weights(ESPCN(ESPCNConfig.from_dict(meta["config"])), out).eval()
        scale = model.scale
        row = {"checkpoint": str(checkpoint), "step": meta["steps"], "steps": meta["training"]["steps"],
               "seconds": meta["wall_seconds"], "scale": scale}
        for name in sets:
            res = evaluate(model, BENCH / name, scale, name=name)
            row[name] = {"psnr": round(res.psnr, 3), "ssim": round(res.ssim, 4)}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint.pt files of vsr train runs")
    parser.add_argument("--weights", type=Path, help="also keep the exported weights here (one checkpoint only)")
    parser.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    args = parser.parse_args(argv)
    if args.weights and len(args.checkpoints) > 1:
        parser.error("--weights takes one checkpoint")
    torch.set_num_threads(1)
    try:
        for ckpt in args.checkpoints:
            row = figures(ckpt, args.weights)
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{ckpt}: step {row['step']}/{row['steps']} ({row['seconds'] / 60:.0f} min), x{row['scale']}: "
                      f"Set5 {row['Set5']['psnr']:.3f} / {row['Set5']['ssim']:.4f}, "
                      f"Set14 {row['Set14']['psnr']:.3f} / {row['Set14']['ssim']:.4f}")
    except (VsrError, OSError) as exc:
        print(f"tools/eval_checkpoint.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
