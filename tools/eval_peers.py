#!/usr/bin/env python3
"""Evaluate OpenCV's ESPCN/FSRCNN models under vsr's protocol (same code: :func:`vsr.evaluate.evaluate`).

The peer models (``../shared/data/peer_models/*.pb``) are TensorFlow graphs that only
OpenCV 4's ``cv2.dnn_superres`` (opencv-contrib) loads.  That package conflicts with the
``opencv-python`` vsr depends on, so install it apart and put it first on the path::

    pip install --no-deps --target /tmp/cv2peers "opencv-contrib-python-headless<5"
    PYTHONPATH=/tmp/cv2peers python tools/eval_peers.py            # table on stdout
    PYTHONPATH=/tmp/cv2peers python tools/eval_peers.py --json     # one JSON object per line

Every model gets exactly vsr's input: the 8-bit Y of the MATLAB-downscaled LR image, as a
one-channel image (``DnnSuperResImpl.upsample`` runs ESPCN/FSRCNN on it directly); its 8-bit
output is scored against the HR Y like vsr's models.  ``--fps`` also times one upscale of a
640x360 luma frame (median of several runs, this machine's CPU threads as set by ``--threads``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

from vsr.evaluate import evaluate  # noqa: E402

#: (label, file prefix, cv2.dnn_superres algorithm name)
PEERS: tuple[tuple[str, str, str], ...] = (
    ("OpenCV ESPCN", "ESPCN", "espcn"),
    ("OpenCV FSRCNN", "FSRCNN", "fsrcnn"),
    ("OpenCV FSRCNN-small", "FSRCNN-small", "fsrcnn"),
)


def peer_available() -> bool:
    try:
        import cv2

        return hasattr(cv2, "dnn_superres")
    except ImportError:
        return False


def peer_upscaler(pb_path: Path, algorithm: str, scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """An LR-Y -> HR-Y callable backed by ``cv2.dnn_superres`` (8-bit in, 8-bit out)."""
    import cv2

    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(pb_path))
    sr.setModel(algorithm, scale)

    def run(lr_y: np.ndarray) -> np.ndarray:
        y8 = np.round(np.clip(lr_y, 0.0, 1.0) * 255.0).astype(np.uint8)
        out = sr.upsample(y8)
        if out.ndim == 3:
            out = out[:, :, 0]
        return out.astype(np.float32) / 255.0

    return run


def time_fps(fn: Callable[[np.ndarray], Any], repeats: int = 7, size: tuple[int, int] = (360, 640)) -> float:
    """Frames per second of ``fn`` on one LR luma frame of ``size`` (median of ``repeats`` runs)."""
    frame = np.random.default_rng(0).random(size, dtype=np.float32)
    fn(frame)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(frame)
        times.append(time.perf_counter() - t)
    return 1.0 / statistics.median(times)


def evaluate_peers(
    peer_dir: Path, datasets: list[Path], scales: list[int], fps: bool = False
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, prefix, algorithm in PEERS:
        for scale in scales:
            pb = peer_dir / f"{prefix}_x{scale}.pb"
            if not pb.is_file():
                continue
            fn = peer_upscaler(pb, algorithm, scale)
            speed = time_fps(fn) if fps else None
            for folder in datasets:
                res = evaluate(fn, folder, scale, name=label)
                row = res.to_dict()
                row.pop("images")
                row["fps_640x360"] = speed
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=Path, default=SHARED / "peer_models", help="folder of the .pb files")
    parser.add_argument("--dataset", type=Path, action="append",
                        help="HR image folder (repeatable; default Set5 and Set14)")
    parser.add_argument("--scale", type=int, action="append", choices=(2, 3, 4), help="default: 2, 3, 4")
    parser.add_argument("--fps", action="store_true", help="also time a 640x360 luma frame")
    parser.add_argument("--threads", type=int, default=2, help="OpenCV threads (default 2)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    if not peer_available():
        print("tools/eval_peers.py: cv2.dnn_superres is missing; install opencv-contrib-python-headless<5 "
              "apart and run with PYTHONPATH set (see this file's docstring)", file=sys.stderr)
        return 1
    import cv2

    cv2.setNumThreads(args.threads)
    datasets = args.dataset or [SHARED / "benchmark" / "Set5", SHARED / "benchmark" / "Set14"]
    rows = evaluate_peers(args.peers, datasets, args.scale or [2, 3, 4], fps=args.fps)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            speed = f"  {row['fps_640x360']:.1f} fps" if row["fps_640x360"] else ""
            print(f"{row['model']:<20} x{row['scale']} {row['dataset']:<6} "
                  f"{row['psnr']:.2f} dB / {row['ssim']:.4f}  (bicubic {row['bicubic_psnr']:.2f}){speed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
