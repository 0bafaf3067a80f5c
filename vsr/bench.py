"""``vsr bench``: how fast each stage is alone, how fast vsr's pipeline is, and how close it gets to the limit.

For each case (an LR size and a scale, on a synthetic clip or the first frames of a
file), in one process and one run, with the same model, device, precision, threads
and encoder as ``vsr run`` would use:

- ``decode_fps``: :class:`vsr.media.VideoReader` alone, frames discarded;
- ``infer_fps``: the pipeline's infer stage alone (luma planes out of decoded frames held
  in memory, :class:`vsr.engine.LumaUpscaler` on them, batches, CPU workers or CUDA
  streams as in a run), nothing decoded or encoded meanwhile;
- ``encode_fps``: the pipeline's compose (bicubic chroma) + :class:`vsr.media.VideoWriter`
  alone, upscaled luma already in memory;
- ``sequential_fps``: the naive loop, one frame at a time through decode, infer, encode;
- ``pipeline_fps``: :meth:`vsr.pipeline.Pipeline.run` end to end;
- with ``realtime``: the case is measured with what ``vsr run --realtime`` chooses on its clip
  (``realtime`` holds the choice and the probe's figures; ``encoder_preset`` the preset);
- ``run_default``: the same encode stage and pipeline with ``vsr run``'s own encoder preset
  (``run_preset``, medium: what a user's plain ``vsr run`` gets), timed in the same rounds,
  beside the bench's real-time ``preset`` (ultrafast); with ``realtime_factor`` against the
  clip's frame rate (30 fps for the synthetic clips), as the top-level one;
- ``bound_fps``: the best any pipeline could do from the stage figures: on CPU, where the
  stages share the cores, ``1 / (1/decode + 1/infer + 1/encode)``; on CUDA, where
  inference runs beside the CPU stages, ``min(decode, infer, encode)``;
  ``efficiency = pipeline_fps / bound_fps``;
- ``infer_gflops`` (from :attr:`ESPCNConfig.macs_per_lr_pixel`) beside ``matmul_gflops``,
  a large matrix product measured here at the same precision;
- ``accuracy``: the precision and engine used against the fp32 module on the case's
  first frame (PSNR of the 8-bit luma, and the largest difference);
- peers, when installed: ``opencv_fps`` (``cv2.dnn_superres`` ESPCN of the same scale,
  its whole ``upsample`` call on the luma plane; OpenCV 4 contrib, run in a child
  process from ``VSR_CV2_CONTRIB_PATH`` because it conflicts with the ``opencv-python``
  vsr uses) and ``bicubic_fps`` (``cv2.resize`` INTER_CUBIC of the luma plane).

Every stage figure is the median over ``repeats`` rounds (each round measures every
stage once, in turn); bound and efficiency are computed from those medians.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np
import torch

from ._version import __version__
from .config import PipelineConfig, load_config
from .engine import LumaUpscaler
from .errors import ConfigError, MediaError
from .media import VideoReader, VideoWriter, frame_planes, new_frame
from .models import create_model, get_spec, save_weights, shipped_weights
from .pipeline import Pipeline, bound_fps, measure_encode, measure_infer
from .pipeline._flow import _Job, _luma_tensor

__all__ = ["BenchCase", "BenchOptions", "DEFAULT_CASES", "format_table", "machine_info", "run_bench"]

STAGE_KEYS = ("decode_fps", "infer_fps", "encode_fps", "sequential_fps", "pipeline_fps")


@dataclass(frozen=True, kw_only=True)
class BenchCase:
    """One measurement: LR ``width`` x ``height`` upscaled ``scale`` times, or the first frames of ``input``."""

    scale: int
    width: int = 0
    height: int = 0
    input: str | None = None

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ConfigError(f"--scale must be 2, 3 or 4, got {self.scale}")
        if self.input is None and (self.width < 8 or self.height < 8):
            raise ConfigError(f"--size must be at least 8x8 pixels, got {self.width}x{self.height}")

    @property
    def label(self) -> str:
        src = Path(self.input).name if self.input else f"{self.width}x{self.height}"
        return f"{src} x{self.scale}"


#: 360p, 540p and 270p to 1080p, and 1080p to 2160p.
DEFAULT_CASES: tuple[BenchCase, ...] = (
    BenchCase(width=640, height=360, scale=3),
    BenchCase(width=960, height=540, scale=2),
    BenchCase(width=480, height=270, scale=4),
    BenchCase(width=1920, height=1080, scale=2),
)


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    cases: tuple[BenchCase, ...] = DEFAULT_CASES
    model: str = "espcn"
    weights: str | None = None  # None: shipped when there are some, else random; "random"; or a file
    device: str = "auto"
    precision: str = "auto"
    frames: int = 48  # per case
    repeats: int = 3
    batch: int = 1
    threads: int = 0  # torch CPU threads; 0: the pipeline's default
    codec: str = "libx264"
    preset: str | None = "ultrafast"  # a real-time setting; vsr run's default is "medium"
    # vsr run's default encoder preset, also timed (encode stage and pipeline) in each round; None: not
    run_preset: str | None = dataclasses.field(default_factory=lambda: PipelineConfig().encoder.preset)
    crf: int | None = 18
    fused: bool = True  # the engine's fused CPU path (False: the plain module, for comparison)
    realtime: bool = False  # benchmark what vsr run --realtime chooses on each case's clip (model, precision, preset)
    peers: bool = True
    cv2_contrib_path: str | None = None  # default: $VSR_CV2_CONTRIB_PATH
    peer_models: str | None = None  # default: $VSR_PEER_MODELS, else ../shared/data/peer_models

    def __post_init__(self) -> None:
        if not self.cases:
            raise ConfigError("no benchmark case: give --size WxH, --input FILE, or no option for the defaults")
        for name, low in (("frames", 2), ("repeats", 1), ("batch", 1), ("threads", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name} must be at least {low}, got {getattr(self, name)}")
        get_spec(self.model)  # a ModelError (one line) for an unknown name
        if self.realtime and not self.fused:
            raise ConfigError("--realtime chooses among the engine vsr run uses; leave out --engine module")
        if self.weights not in (None, "random") and not Path(self.weights).is_file():
            raise ConfigError(f"--weights {self.weights}: no such file (or use --weights random)")

    def pipeline_config(self, scale: int, weights: str) -> PipelineConfig:
        return load_config(None, {
            "model.name": self.model, "model.scale": scale, "model.weights": weights,
            "device": self.device, "precision": self.precision, "batch": self.batch,
            "threads": self.threads or None, "encoder.codec": self.codec, "encoder.preset": self.preset,
            "encoder.crf": self.crf, "output.overwrite": True, "progress": "never",
        })


# -- the machine ---------------------------------------------------------------------------------
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def _gpu_name(device: str | torch.device | None) -> str | None:
    """The name of the GPU that ``device`` runs on (``cuda:N``: GPU N, not GPU 0; else the current one); None without CUDA."""
    if not torch.cuda.is_available():
        return None
    dev = torch.device(device) if device not in (None, "auto") else torch.device("cuda")
    if dev.type != "cuda":
        dev = torch.device("cuda")
    return torch.cuda.get_device_name(dev.index if dev.index is not None else torch.cuda.current_device())


def cpu_label(machine: dict[str, Any]) -> str:
    """``machine_info()``'s CPU as one phrase, e.g. "AMD EPYC (family/model 25/1)"."""
    family = machine.get("cpu_family_model")
    return f"{machine['cpu']} (family/model {family})" if family else machine["cpu"]


def machine_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, the instruction sets that matter, library versions, the GPU of ``device``."""
    model, flags = platform.processor() or "unknown", set()
    family = number = None  # "AMD EPYC" names Zen 3 (family 25, model 1) and Zen 4 (model 17) alike
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "cpu family" and family is None:
                    family = value.strip()
                elif key == "model" and number is None:
                    number = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": model,
        "cpu_family_model": f"{family}/{number}" if family and number else None,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_flags": [f for f in _CPU_FLAGS if f in flags],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onednn": torch.backends.mkldnn.is_available(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),  # a cap
        "pyav": av.__version__,
        "ffmpeg": av.library_versions.get("libavcodec"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": _gpu_name(device),
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        info["opencv"] = None
    return info


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 0, rounds: int = 7) -> float:
    """GFLOP/s of a square matrix product at ``dtype``: what this machine's cores can do at that precision."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    mm = torch._int_mm if dtype == torch.int8 else torch.mm  # int8: integer dot products, GOP/s
    times = []
    for i in range(rounds + 2):
        _sync(device)
        t0 = time.perf_counter()
        mm(a, b)
        _sync(device)
        if i >= 2:  # warm-up: oneDNN/cuBLAS pick their kernels on the first calls
            times.append(time.perf_counter() - t0)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- inputs ----------------------------------------------------------------------------------------
def _pattern(width: int, height: int) -> Callable[[int], np.ndarray]:
    """A deterministic moving test picture: smooth waves, rings and fine texture (8-bit luma)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    texture = rng.normal(0.0, 12.0, (height, width)).astype(np.float32)
    radius = np.hypot(xx - width / 2, yy - height / 2) / max(4.0, width / 80)

    def frame(i: int) -> np.ndarray:
        y = 128 + 55 * np.sin((xx + 3 * i) / 19.0) * np.cos((yy - i) / 27.0) + 35 * np.sin(radius - 0.3 * i)
        y += np.roll(texture, (i, 2 * i), axis=(0, 1))
        return np.clip(y, 0, 255).astype(np.uint8)

    return frame


def _encode_clip(path: Path, frames: Iterator[av.VideoFrame], rate: int = 30) -> Path:
    """Write frames as H.264 (FFV1 when the format or size does not suit H.264) in Matroska."""
    with av.open(str(path), "w") as out:
        stream = None
        for frame in frames:
            if stream is None:
                fmt = frame.format.name
                h264 = fmt in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p") and not (frame.width % 2 or frame.height % 2)
                stream = out.add_stream("libx264" if h264 else "ffv1", rate=rate)
                stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, fmt
                if h264:
                    stream.codec_context.options = {"crf": "18", "preset": "veryfast"}
            frame.pts = None
            out.mux(stream.encode(frame))
        if stream is None:
            raise MediaError("no video frame to benchmark")
        out.mux(stream.encode(None))
    return path


def _synthetic_clip(path: Path, width: int, height: int, frames: int) -> Path:
    fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    picture = _pattern(width, height)

    def gen() -> Iterator[av.VideoFrame]:
        for i in range(frames):
            frame, planes = new_frame(width, height, fmt)
            planes[0][...] = picture(i)
            for k, plane in enumerate(planes[1:]):
                ramp = np.linspace(96 + 32 * k, 160 - 32 * k, plane.shape[1], dtype=np.float32)
                plane[...] = (ramp[None, :] + (i % 16)).astype(np.uint8)
            yield frame

    return _encode_clip(path, gen())


def _clip_from_input(path: Path, src: str, frames: int) -> Path:
    """The first ``frames`` frames of ``src``, re-encoded once, so that every stage sees the same frames."""
    reader = VideoReader(src)

    def gen() -> Iterator[av.VideoFrame]:
        n = 0
        for item in reader:
            if isinstance(item, av.VideoFrame):
                yield item
                n += 1
                if n >= frames:
                    return

    try:
        return _encode_clip(path, gen(), rate=round(reader.info.fps or 30))
    finally:
        reader.close()


# -- the stages ------------------------------------------------------------------------------------
def _video_frames(path: Path) -> list[av.VideoFrame]:
    with VideoReader(path) as reader:
        return [item for item in reader if isinstance(item, av.VideoFrame)]


def _time_decode(path: Path) -> float:
    t0 = time.perf_counter()
    n = 0
    with VideoReader(path) as reader:
        for item in reader:
            n += isinstance(item, av.VideoFrame)
    return n / (time.perf_counter() - t0)


def _time_sequential(pipe: Pipeline, clip: Path, dst: Path) -> float:
    """The naive loop most scripts use: decode a frame, upscale it, encode it, next."""
    up = pipe.upscaler
    t0 = time.perf_counter()
    n = 0
    with VideoReader(clip) as reader:
        writer = VideoWriter(dst, reader, encoder=pipe.config.encoder, overwrite=True)
        for item in reader:
            if not isinstance(item, av.VideoFrame):
                continue
            max_value = (1 << item.format.components[0].bits) - 1
            x = _luma_tensor(frame_planes(item))[None, None].to(up.device)
            luma = up(x, max_value).cpu().numpy()[0, 0]
            writer.write(pipe._compose(writer, _Job(n, item, 0.0, luma)))
            n += 1
        writer.close()
    return n / (time.perf_counter() - t0)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float | None:
    """PSNR in dB; None when the two are identical (JSON has no infinity)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


# -- peers -----------------------------------------------------------------------------------------
_PEER_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
import cv2
pb, scale, frames = sys.argv[1], int(sys.argv[2]), np.load(sys.argv[3])
if not hasattr(cv2, "dnn_superres"):
    print(json.dumps({"error": "this cv2 has no dnn_superres (needs opencv-contrib < 5)"})); sys.exit(0)
sr = cv2.dnn_superres.DnnSuperResImpl_create()
sr.readModel(pb)
sr.setModel("espcn", scale)
sr.upsample(frames[0])
times = []
for f in frames:
    t0 = time.perf_counter(); out = sr.upsample(f); times.append(time.perf_counter() - t0)
print(json.dumps({"fps": 1.0 / statistics.median(times), "opencv": cv2.__version__,
                  "threads": cv2.getNumThreads(), "shape": list(out.shape)}))
"""


def _default_peer_models() -> Path | None:
    env = os.environ.get("VSR_PEER_MODELS")
    if env:
        return Path(env)
    guess = Path(__file__).resolve().parents[2] / "shared" / "data" / "peer_models"
    return guess if guess.is_dir() else None


def _opencv_fps(options: BenchOptions, scale: int, lumas: list[np.ndarray], tmp: Path) -> dict[str, Any]:
    """OpenCV dnn_superres ESPCN, timed in a child process that imports OpenCV 4 contrib."""
    contrib = options.cv2_contrib_path or os.environ.get("VSR_CV2_CONTRIB_PATH")
    models = Path(options.peer_models) if options.peer_models else _default_peer_models()
    if not contrib or not Path(contrib).is_dir():
        return {"skipped": "OpenCV contrib not installed (set VSR_CV2_CONTRIB_PATH to a --target dir of "
                           "opencv-contrib-python-headless<5)"}
    pb = models / f"ESPCN_x{scale}.pb" if models else None
    if pb is None or not pb.is_file():
        return {"skipped": f"no ESPCN_x{scale}.pb (set VSR_PEER_MODELS to the folder of OpenCV's models)"}
    data = tmp / "peer_frames.npy"
    np.save(data, np.stack(lumas))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [contrib, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run([sys.executable, "-c", _PEER_SCRIPT, str(pb), str(scale), str(data)],
                              env=env, capture_output=True, text=True, timeout=600, check=False)
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        return {"skipped": f"OpenCV peer failed: {type(exc).__name__}"}
    if "fps" not in result:
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        return {"skipped": f"OpenCV peer failed: {result.get('error') or tail}"}
    return result


def _bicubic_fps(lumas: list[np.ndarray], scale: int) -> float:
    import cv2

    h, w = lumas[0].shape
    cv2.resize(lumas[0], (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    t0 = time.perf_counter()
    for y in lumas:
        cv2.resize(y, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    return len(lumas) / (time.perf_counter() - t0)


# -- one case --------------------------------------------------------------------------------------
def _weights_file(options: BenchOptions, scale: int, tmp: Path) -> tuple[str, str]:
    """(file, label): the given file, the shipped weights, or a random initialisation saved for the run."""
    if options.weights not in (None, "random"):
        return options.weights, options.weights
    if options.weights is None:
        shipped = shipped_weights(options.model, scale)
        if shipped is not None:
            return str(shipped), "shipped"
    torch.manual_seed(0)
    path = tmp / f"{options.model}_x{scale}_random.safetensors"
    save_weights(create_model(options.model, scale=scale, weights=None), path)
    return str(path), "random (no shipped weights; speed does not depend on their values)"


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def bench_case(case: BenchCase, options: BenchOptions, tmp: Path,
               say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    weights, weights_label = _weights_file(options, case.scale, tmp)
    clip = tmp / f"in_{case.width}x{case.height}_x{case.scale}.mkv"
    if case.input:
        _clip_from_input(clip, case.input, options.frames)
    else:
        _synthetic_clip(clip, case.width, case.height, options.frames)
    choice = None
    if options.realtime:
        pipe, choice = _realtime_pipeline(options, case.scale, weights, weights_label, clip)
        weights = pipe.config.model.weights or str(shipped_weights(pipe.config.model.name, case.scale))
        say(f"{case.label}: {choice.line()}")
    else:
        pipe = Pipeline(options.pipeline_config(case.scale, weights))
    model_name = pipe.config.model.name
    up = pipe.upscaler
    if not options.fused:
        up = pipe.upscaler = LumaUpscaler(create_model(model_name, scale=case.scale, weights=weights),
                                          device=pipe.device, dtype=pipe.dtype, fused=False)
    frames = _video_frames(clip)
    width, height = frames[0].width, frames[0].height
    max_value = (1 << frames[0].format.components[0].bits) - 1
    lumas = [_luma_tensor(frame_planes(f))[None, None] for f in frames]
    upscaled = [up(x.to(up.device), max_value).cpu().numpy()[0, 0] for x in lumas]  # also the warm-up

    # Accuracy of the precision and engine used, against the fp32 module, on the first frame.
    reference = LumaUpscaler(create_model(model_name, scale=case.scale, weights=weights),
                             device=pipe.device, dtype=torch.float32, fused=False)
    ref = reference(lumas[0].to(pipe.device), max_value).cpu().numpy()[0, 0]
    accuracy = {
        "psnr_vs_fp32_db": _psnr(upscaled[0], ref, max_value),
        "max_abs_diff": int(np.abs(upscaled[0].astype(np.int64) - ref.astype(np.int64)).max()),
        "reference": "fp32 module on the same frame (8-bit luma)",
    }
    del reference

    measure_infer(pipe, frames[:4])  # warm-up of the infer stage's workers
    samples: dict[str, list[float]] = {k: [] for k in STAGE_KEYS}
    run_pipe = None
    if options.run_preset is not None and options.run_preset != pipe.config.encoder.preset:
        run_config = dataclasses.replace(pipe.config, encoder=dataclasses.replace(pipe.config.encoder,
                                                                                  preset=options.run_preset))
        run_pipe = Pipeline(run_config, upscaler=up)
    run_samples: dict[str, list[float]] = {"encode_fps": [], "pipeline_fps": []}
    peak_gpu_mb: float | None = None
    for r in range(options.repeats):
        say(f"{case.label}: round {r + 1}/{options.repeats}")
        samples["decode_fps"].append(_time_decode(clip))
        samples["infer_fps"].append(measure_infer(pipe, frames)[0])
        samples["encode_fps"].append(measure_encode(pipe, clip, tmp / "encode.mkv", frames, upscaled))
        samples["sequential_fps"].append(_time_sequential(pipe, clip, tmp / "sequential.mkv"))
        if pipe.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pipe.device)
        report = pipe.run(clip, tmp / "pipeline.mkv", overwrite=True)
        if pipe.device.type == "cuda":
            peak_gpu_mb = max(peak_gpu_mb or 0.0, torch.cuda.max_memory_allocated(pipe.device) / 2**20)
        samples["pipeline_fps"].append(report.fps)
        if run_pipe is not None:  # vsr run's own encoder setting, beside the bench's real-time one
            run_samples["encode_fps"].append(measure_encode(run_pipe, clip, tmp / "encode.mkv", frames, upscaled))
            run_samples["pipeline_fps"].append(run_pipe.run(clip, tmp / "pipeline.mkv", overwrite=True).fps)

    med = {k: _median(v) for k, v in samples.items()}
    d, i, e = med["decode_fps"], med["infer_fps"], med["encode_fps"]
    cuda = pipe.device.type == "cuda"
    bound = bound_fps(d, i, e, cuda=cuda)
    source_fps = _clip_rate(clip)
    flops_per_frame = 2.0 * up.model.config.macs_per_lr_pixel * width * height
    result: dict[str, Any] = {
        "case": case.label,
        "input": case.input or "synthetic",
        "input_size": [width, height],
        "output_size": [width * case.scale, height * case.scale],
        "scale": case.scale,
        "frames": len(frames),
        "model": model_name,
        "weights": weights_label,
        "encoder_preset": pipe.config.encoder.preset,
        "realtime": choice.to_dict() if choice is not None else None,
        "device": str(pipe.device),
        "precision": pipe.precision,
        "engine": "fused" if up.fused else "module",
        "batch": options.batch,
        "cpu_workers": None if cuda else [pipe.cpu_workers, pipe.cpu_worker_threads],  # workers, threads each
        **med,
        "bound_fps": bound,
        "bound_rule": "min(decode, infer, encode)" if cuda else "1/(1/decode + 1/infer + 1/encode)",
        "efficiency": med["pipeline_fps"] / bound,
        "pipeline_vs_sequential": med["pipeline_fps"] / med["sequential_fps"],
        "source_fps": source_fps,
        "realtime_factor": med["pipeline_fps"] / source_fps if source_fps else None,
        "run_default": _run_default(options, run_samples, d, i, cuda, source_fps),
        "infer_gflops": flops_per_frame * i / 1e9,
        "gflop_per_frame": flops_per_frame / 1e9,
        "accuracy": accuracy,
        "samples": samples,
        "peak_gpu_memory_mb": peak_gpu_mb,
    }
    luma_np = [x[0, 0].numpy() for x in lumas]
    result["bicubic_fps"] = _bicubic_fps(luma_np, case.scale) if max_value == 255 else None
    result["opencv_fps"] = None
    if options.peers and max_value == 255:
        say(f"{case.label}: OpenCV peer")
        peer = _opencv_fps(options, case.scale, luma_np[: min(len(luma_np), 8)], tmp)
        result["opencv"] = peer
        result["opencv_fps"] = peer.get("fps")
    result["infer_vs_opencv"] = i / result["opencv_fps"] if result["opencv_fps"] else None
    return result


def _realtime_pipeline(options: BenchOptions, scale: int, weights: str, weights_label: str,
                       clip: Path) -> tuple[Pipeline, Any]:
    """What ``vsr run --realtime`` would choose on the case's clip, from ``--model`` and vsr run's preset.

    The model may change only with shipped weights, the precision only when ``--precision`` is auto.
    """
    from .realtime import choose_realtime

    shipped = weights_label == "shipped"
    start = options.pipeline_config(scale, None if shipped else weights)  # type: ignore[arg-type]
    preset = options.run_preset if options.run_preset is not None else start.encoder.preset
    start = dataclasses.replace(start, encoder=dataclasses.replace(start.encoder, preset=preset))
    explicit = ({"model.weights"} if not shipped else set()) | ({"precision"} if options.precision != "auto" else set())
    choice = choose_realtime(clip, start, frozenset(explicit))
    assert choice.pipeline is not None
    return choice.pipeline, choice


def _clip_rate(clip: Path) -> float | None:
    with VideoReader(clip) as reader:
        return reader.info.fps


def _run_default(options: BenchOptions, samples: dict[str, list[float]], decode: float, infer: float, cuda: bool,
                 source_fps: float | None) -> dict[str, Any] | None:
    """``vsr run``'s encoder preset (medium), timed in the same rounds: its encode stage and whole pipeline."""
    if not samples["pipeline_fps"]:
        return None
    enc, pipe = _median(samples["encode_fps"]), _median(samples["pipeline_fps"])
    bound = bound_fps(decode, infer, enc, cuda=cuda)
    return {"preset": options.run_preset, "encode_fps": enc, "pipeline_fps": pipe, "bound_fps": bound,
            "efficiency": pipe / bound, "realtime_factor": pipe / source_fps if source_fps else None,
            "samples": samples}


def run_bench(options: BenchOptions, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure every case of ``options``; a JSON-ready dict (see the module docstring for the keys)."""
    started = time.time()
    load_start = os.getloadavg()
    cases = []
    matmul: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vsr-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        for case in options.cases:
            result = bench_case(case, options, tmp, say)
            key = f"{result['device']}/{result['precision']}"
            if key not in matmul:
                say(f"matmul GFLOP/s at {result['precision']}")
                dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                         "int8": torch.int8}[result["precision"]]
                matmul[key] = matmul_gflops(dtype, torch.device(result["device"]))
            result["matmul_gflops"] = matmul[key]
            result["infer_vs_matmul"] = result["infer_gflops"] / matmul[key]
            cases.append(result)
            for f in tmp.glob("*.mkv"):
                f.unlink()
    return {
        "vsr": __version__,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": time.time() - started,
        "machine": machine_info(cases[0]["device"] if cases else options.device),
        "load_average_1m": {"start": load_start[0], "end": os.getloadavg()[0]},
        "options": {k: v for k, v in asdict(options).items() if k != "cases"},
        "cases": cases,
    }


# -- the table -------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: one row per case."""
    o = result["options"]
    run = f"@{o.get('run_preset')}"
    head = ("case", "out", "decode", "infer", "encode", "seq", "pipe", "bound", "eff", f"encode{run}",
            f"pipe{run}", f"eff{run}", "GFLOP/s", "matmul", "opencv", "bicubic", "dB vs fp32")
    rows = [head]
    for c in result["cases"]:
        rd = c.get("run_default") or {}
        rows.append((
            c["case"], "x".join(map(str, c["output_size"])), _fmt(c["decode_fps"]), _fmt(c["infer_fps"]),
            _fmt(c["encode_fps"]), _fmt(c["sequential_fps"]), _fmt(c["pipeline_fps"]), _fmt(c["bound_fps"]),
            _fmt(c["efficiency"], ".2f"), _fmt(rd.get("encode_fps")), _fmt(rd.get("pipeline_fps")),
            _fmt(rd.get("efficiency"), ".2f"), _fmt(c["infer_gflops"], ".0f"), _fmt(c["matmul_gflops"], ".0f"),
            _fmt(c["opencv_fps"]), _fmt(c["bicubic_fps"]), _fmt(c["accuracy"]["psnr_vs_fp32_db"], ".1f") if c["accuracy"]["max_abs_diff"] else "same",
        ))
    widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
    lines = ["  ".join(v.rjust(widths[k]) if k else v.ljust(widths[k]) for k, v in enumerate(r)) for r in rows]
    m = result["machine"]
    first = result["cases"][0] if result["cases"] else {}
    lines.append(f"fps = frames per second (medians of {o['repeats']} rounds of {first.get('frames', '?')} frames); "
                 f"{first.get('model', '')} {first.get('device', '')} {first.get('precision', '')} "
                 f"({first.get('engine', '')}), encoder {o['codec']} preset {first.get('encoder_preset')} crf "
                 f"{o['crf']}; {run}: the same with preset {o.get('run_preset')}, what vsr run uses by default")
    for c in result["cases"]:
        if c.get("realtime"):
            r = c["realtime"]
            lines.append(f"{c['case']}: --realtime chose {r['model']} {r['precision']} preset {r['preset']} "
                         f"({r['predicted_fps']:.1f} fps predicted for a {r['source_fps']:.2f} fps source)")
    lines.append(f"machine: {cpu_label(m)}, {m['usable_cores']} cores [{' '.join(m['cpu_flags'])}], torch {m['torch']} "
                 f"({m['torch_threads']} threads)"
                 + (f", oneDNN capped to {m['onednn_max_cpu_isa']}" if m.get("onednn_max_cpu_isa") else "")
                 + f", GPU {m['gpu'] or 'none'}; load average "
                 f"{result['load_average_1m']['start']:.1f} -> {result['load_average_1m']['end']:.1f}")
    return "\n".join(lines)
