"""int8 against bf16 (and OpenCV's dnn_superres ESPCN) inside the engine, in one process and one run.

What ``vsr run`` calls for each frame: ``LumaUpscaler.__call__`` on a (1, 1, H, W) uint8 plane.
Each round times every engine on the same frames, one after the other; the figures are medians
over rounds, the ratios medians of the per-round ratios. For a model whose int8 file has scheme v4's linear
bypass, ``int8_no_bypass`` times the same file through scheme v3's steps (tanh tables or ReLU codes, no composite
convolution): what the bypass costs, not a quality anyone ships. To measure a CPU without AMX (AMD Zen 4:
AVX-512, VNNI and BF16) on an Intel one with it, cap oneDNN::

    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python tools/bench_int8.py --threads 2
    VSR_CV2_CONTRIB_PATH=/tmp/cv2peers python tools/bench_int8.py --threads 2   # with the OpenCV peer

``--ort`` adds issue 16's other int8 route in the same rounds: ONNX Runtime's static int8 (the network exported
by ``vsr export``, quantized by ``onnxruntime.quantization.quantize_static`` with per-channel int8 weights and
uint8 activations calibrated on four frames of each of the first four clips of ``../shared/data/videos``, taken by
``vsr.qat.calibration_planes`` as ``vsr train --qat`` takes its clip frames; QDQ and QOperator formats) and
ONNX Runtime fp32, each timed luma plane in, uint8 plane out, as the engine is; and each engine's PSNR against
the fp32 engine on the bench frames.
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
from vsr.metrics import psnr  # noqa: E402
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


class _OrtEngine:
    """An ONNX Runtime session called as the engine is: a (1, 1, H, W) uint8 plane in, the uint8 plane out."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, peak: int = 255) -> torch.Tensor:
        y = self.session.run(None, {"input": x.numpy().astype(np.float32) / peak})[0]
        return torch.from_numpy(np.clip(np.rint(y * peak), 0, peak).astype(np.uint8))


def _ort_engines(name: str, scale: int, threads: int, tmp: Path) -> dict[str, _OrtEngine]:
    """ONNX Runtime fp32 and its static int8 in both formats, for the shipped weights of ``name``."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from vsr.export import export_onnx
    from vsr.qat import calibration_planes

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice to pre-process
    fp32 = export_onnx(tmp / f"{name}.onnx", scale=scale, model=name)
    videos = sorted((Path(__file__).resolve().parents[2] / "shared" / "data" / "videos").glob("*.mp4"))[:4]
    if not videos:
        raise SystemExit("--ort: no clips in ../shared/data/videos to calibrate ONNX Runtime on")
    planes = calibration_planes((), scale, [str(v) for v in videos])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({"input": p[None, None].astype(np.float32) / 255} for p in planes)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    engines = {"ort_fp32": _OrtEngine(fp32, threads)}
    for fmt, label in ((QuantFormat.QDQ, "ort_int8_qdq"), (QuantFormat.QOperator, "ort_int8_qoperator")):
        out = tmp / f"{name}_{label}.onnx"
        quantize_static(str(fp32), str(out), Reader(), quant_format=fmt, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        engines[label] = _OrtEngine(out, threads)
    return engines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="espcn,espcn-fast")
    p.add_argument("--size", default="640x360")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--ort", action="store_true", help="also ONNX Runtime fp32 and static int8 (needs onnxruntime)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    frames = _frames(width, height, args.frames)
    results = {"machine": machine_info(), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
               "size": args.size, "scale": args.scale, "frames": args.frames, "rounds": args.rounds,
               "threads": args.threads, "models": {}}
    ort_tmp = tempfile.TemporaryDirectory() if args.ort else None  # every model's ONNX files; removed at exit
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
        if ort_tmp is not None:
            engines.update(_ort_engines(name, args.scale, args.threads, Path(ort_tmp.name)))
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
        if args.ort:
            reference = LumaUpscaler(create_model(name, scale=args.scale), dtype=torch.float32)
            row["psnr_vs_fp32_engine"] = {
                k: statistics.median(psnr(reference(x, 255).numpy(), e(x, 255).numpy()) for x in frames[:4])
                for k, e in engines.items()}
            row["int8_over_ort_int8"] = statistics.median(
                a / max(b, c) for a, b, c in zip(samples["int8"], samples["ort_int8_qdq"],
                                                  samples["ort_int8_qoperator"]))
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
        if args.ort:
            print("  " + ", ".join(f"{k} {row[k + '_fps']:.1f} fps ({row['psnr_vs_fp32_engine'][k]:.1f} dB vs fp32)"
                                   for k in engines) + f"; int8 / the faster ONNX Runtime int8 {row['int8_over_ort_int8']:.2f}",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
