#!/usr/bin/env python3
"""One prepared check of vsr's GPU path: run it as is on a machine with an NVIDIA GPU.

    python tools/gpu_check.py                  # on the GPU: writes docs/bench/gpu_check.json, prints a table
    python tools/gpu_check.py --dry-run        # the same logic on CPU at small sizes (CI runs this)

Exit status 1 when any assertion fails (each is a row of the table with its bound); the
targets of issue 17 (fp16 infer fps >= 2000 at 1080p out, ...) are reported, not asserted.
Sections, in order, each timed (well under 8 minutes in all on an H100/H200 is the aim):

- ``environment``: GPU name, capability and memory, torch/CUDA/cuDNN versions, TF32 flags,
  NVENC and NVDEC here; ``pytest -k cuda`` (the CUDA-marked tests and the CPU ones about CUDA);
- ``accuracy``: the engine against the CPU fp32 module, espcn and espcn-fast, x2 and x3,
  8/10/16-bit frames with white patches: fp32 (TF32 off) <= 1 level; fp16 (what ``auto``
  picks) at 8 bit <= 2 levels and > 50 dB; no NaN and no black in the white patches;
- ``stress``: ~300 1080p frames through ``_CudaRunner`` (depth 3, batch 1 and 4): every output
  bit-identical to a synchronous call on the same batch, in order, none lost;
- ``end_to_end``: the sample with audio through ``Pipeline`` on CUDA (fp16, batch 1 and 8) and on
  CPU fp32, lossless FFV1: luma <= 2 levels, same frame count, audio kept;
- ``speed``: fp16 infer fps 960x540 -> 1920x1080 (x2), batch 1/4/8, host clock (synchronised)
  cross-checked with CUDA events within 10%; copy/compute overlap from ``torch.profiler``;
  the runner's wall time < 0.8x the serial copy + compute + copy;
- ``memory``: allocated memory back to baseline after two pipeline runs; a 4K frame under
  ``set_per_process_memory_fraction`` falls back to tiles (<= 1 level from untiled); a tiny
  fraction gives ``DeviceError`` and releases its memory; peak memory reported;
- ``video``: NVDEC against CPU decoding of a 1080p H.264 clip (same frames and timestamps, fps
  each) and whether NVENC opens.

``--dry-run`` runs every section's own logic on CPU with small frames (the CPU runner for the
stream stress, an injected out-of-memory error for the memory section); what needs CUDA (events,
profiler, memory fraction, NVDEC) is reported as skipped there.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vsr.config import load_config  # noqa: E402
from vsr.engine import LumaUpscaler, tf32_flags  # noqa: E402
from vsr.errors import DeviceError  # noqa: E402
from vsr.media import VideoReader, frame_planes, new_frame  # noqa: E402
from vsr.media import _hwcodec  # noqa: E402
from vsr.models import create_model  # noqa: E402
from vsr.pipeline import Pipeline  # noqa: E402
from vsr.pipeline._flow import _END, _Clock, _Control, _Job  # noqa: E402
from vsr.pipeline._runners import _CpuRunner, _CudaRunner  # noqa: E402

SAMPLE = REPO / "samples" / "stream-of-water.mp4"


class Check:
    """Collects results and assertions; an assertion that fails makes the exit status 1."""

    def __init__(self, dry: bool, device: torch.device) -> None:
        self.dry, self.device = dry, device
        self.rows: list[dict[str, Any]] = []
        self.sections: dict[str, Any] = {}

    def expect(self, section: str, name: str, ok: bool, value: Any, bound: str) -> bool:
        self.rows.append({"section": section, "check": name, "ok": bool(ok), "value": value, "bound": bound})
        return bool(ok)

    def note(self, section: str, name: str, value: Any, bound: str = "reported") -> None:
        self.rows.append({"section": section, "check": name, "ok": None, "value": value, "bound": bound})

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["ok"] is False]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# -- inputs -------------------------------------------------------------------------------------------
def white_patch_planes(bits: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, int, tuple[slice, slice]]:
    """Waves and noise with a white (max_value) patch and a black one; the white patch's LR slices."""
    mv = (1 << bits) - 1
    yy, xx = np.mgrid[0:h, 0:w]
    y = (0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0)) * mv
    y += np.random.default_rng(seed).normal(0, mv * 0.03, (h, w))
    ph, pw = max(12, h // 4), max(12, w // 4)
    patch = (slice(h // 8, h // 8 + ph), slice(w // 8, w // 8 + pw))
    y[patch] = mv
    y[h - h // 4 :, w - w // 4 :] = 0
    t = torch.from_numpy(np.clip(y, 0, mv).astype(np.int32))[None, None]
    return (t.to(torch.uint8) if bits == 8 else t), mv, patch


def make_frames(n: int, width: int, height: int) -> list[av.VideoFrame]:
    """``n`` distinct yuv420p frames: 8 random pictures, each frame stamped with its index."""
    rng = np.random.default_rng(0)
    bases = [[rng.integers(0, 256, p.shape, dtype=np.uint8) for p in new_frame(width, height, "yuv420p")[1]]
             for _ in range(8)]
    frames = []
    for i in range(n):
        frame, planes = new_frame(width, height, "yuv420p")
        for plane, base in zip(planes, bases[i % 8]):
            plane[...] = base
        planes[0][:8, :8] = i % 256
        planes[0][:8, 8:16] = i // 256
        frames.append(frame)
    return frames


def clip_with_audio(path: Path, width: int, height: int, frames: int) -> Path:
    """A small H.264 clip with an AAC tone, for the dry run's end-to-end section."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
        pics = make_frames(frames, width, height)
        samples, per = 0, 1024
        for i, frame in enumerate(pics):
            frame.pts = i
            frame.time_base = Fraction(1, 24)
            out.mux(v.encode(frame))
            while samples < (i + 1) * 44100 / 24:
                t = (np.arange(per) + samples) / 44100.0
                af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                format="fltp", layout="mono")
                af.sample_rate, af.pts = 44100, samples
                out.mux(a.encode(af))
                samples += per
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    return path


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


# -- sections ----------------------------------------------------------------------------------------
def environment(c: Check, run_pytest: bool) -> None:
    env: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "pyav": av.__version__, "python": platform.python_version(), "tf32_before": tf32_flags(),
        "nvenc_opens": _hwcodec.encoder_opens("h264_nvenc"),
        "hwdevices": list(av.codec.hwaccel.hwdevices_available()),
    }
    if c.device.type == "cuda":
        p = torch.cuda.get_device_properties(c.device)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1))
    else:
        env["gpu"] = None
    c.sections["environment"] = env
    c.note("environment", "gpu", env["gpu"] or "none (dry run)")
    c.note("environment", "NVENC opens", env["nvenc_opens"])
    if run_pytest:
        target = ["tests/test_cuda.py"] if c.dry else ["tests", "-k", "cuda"]
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *target],
                              cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        tail = (done.stdout.strip().splitlines() or [""])[-1]
        env["pytest"] = {"rc": done.returncode, "summary": tail, "seconds": time.perf_counter() - t0}
        c.expect("environment", "pytest -k cuda", done.returncode == 0, tail, "exit 0")


def accuracy(c: Check) -> None:
    h, w = (24, 32) if c.dry else (270, 480)
    reduced = torch.float16  # what precision auto picks on CUDA; on CPU the same arithmetic runs
    out: list[dict[str, Any]] = []
    for name in ("espcn", "espcn-fast"):
        for scale in (2, 3):
            ref = LumaUpscaler(create_model(name, scale=scale), device="cpu", dtype=torch.float32, fused=False)
            fp32 = LumaUpscaler(create_model(name, scale=scale), device=c.device, dtype=torch.float32)
            fp16 = LumaUpscaler(create_model(name, scale=scale), device=c.device, dtype=reduced, fused=False)
            if c.device.type == "cuda":
                c.expect("accuracy", "TF32 off after a fp32 engine", tf32_flags()["cudnn_conv"] == "ieee",
                         tf32_flags(), "cudnn conv ieee")
            for bits in (8, 10, 16):
                x, mv, patch = white_patch_planes(bits, h, w, seed=bits)
                want = ref(x, mv).numpy()[0, 0].astype(np.int64)
                core = tuple(slice((s.start + 2) * scale, (s.stop - 2) * scale) for s in patch)
                for label, up in (("fp32", fp32), ("fp16", fp16)):
                    got = up(x.to(c.device), mv).cpu().numpy()[0, 0].astype(np.int64)
                    diff = int(np.abs(got - want).max())
                    db = psnr(got, want, mv)
                    white_min = int(got[core].min())
                    row = {"model": name, "scale": scale, "bits": bits, "precision": label, "max_diff": diff,
                           "psnr_db": None if db == float("inf") else db, "white_min": white_min}
                    out.append(row)
                    tag = f"{name} x{scale} {bits}-bit {label}"
                    if label == "fp32":
                        c.expect("accuracy", f"{tag} max diff", diff <= 1, diff, "<= 1 level")
                    elif bits == 8:
                        c.expect("accuracy", f"{tag} max diff", diff <= 2, diff, "<= 2 levels")
                        c.expect("accuracy", f"{tag} PSNR", db > 50, round(db, 1), "> 50 dB")
                    else:  # deeper than fp16 holds: runs in fp32 above 10 bits (LumaUpscaler._module_for)
                        c.note("accuracy", f"{tag} max diff", diff)
                    c.expect("accuracy", f"{tag} white patch", white_min >= mv - mv // 64, white_min,
                             f">= {mv - mv // 64} (no NaN/black)")
    c.sections["accuracy"] = out


def _runner(c: Check, up: LumaUpscaler, ctl: _Control, out: queue.Queue, clock: _Clock, pipe: Pipeline) -> Any:
    if c.device.type == "cuda":
        return _CudaRunner(up, ctl, out, clock, depth=3)
    return _CpuRunner(pipe._upscale_batch, 2, 1, ctl, out, clock)  # the dry run: the CPU runner, same surface


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def stress(c: Check) -> None:
    n, (w, h) = (12, (48, 32)) if c.dry else (300, (1920, 1080))
    pipe = Pipeline(load_config(None, {"device": str(c.device), "precision": "auto", "model.scale": 2}))
    up = pipe.upscaler
    frames = make_frames(n, w, h)
    result: dict[str, Any] = {"frames": n, "size": [w, h], "precision": pipe.precision}
    for batch in (1, 4):
        want = []
        for k in range(0, n, batch):  # the synchronous call on the same batches
            x = torch.stack([torch.from_numpy(np.ascontiguousarray(frame_planes(f)[0])) for f in frames[k:k + batch]])
            want += [_digest(y[0]) for y in up(x[:, None].to(up.device), 255).cpu().numpy()]
        ctl, out, clock = _Control(), queue.Queue(), _Clock()
        runner = _runner(c, up, ctl, out, clock, pipe)
        t0 = time.perf_counter()
        try:
            for k in range(0, n, batch):
                runner.submit([_Job(i, frames[i], 0.0) for i in range(k, min(n, k + batch))])
            runner.drain()
        finally:
            runner.close()
        seconds = time.perf_counter() - t0
        got = [out.get_nowait() for _ in range(out.qsize())]
        order = [j.index for j in got]
        same = sum(_digest(j.luma) == want[j.index] for j in got)
        result[f"batch{batch}"] = {"handed_on": len(got), "identical": same, "seconds": seconds}
        c.expect("stress", f"batch {batch}: none lost", len(got) == n, len(got), f"== {n}")
        c.expect("stress", f"batch {batch}: in order", order == list(range(n)), "in order" if order == list(range(n))
                 else "out of order", "0..n-1")
        c.expect("stress", f"batch {batch}: bit-identical", same == n, same, f"== {n}")
    c.sections["stress"] = result


def _luma_frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as r:
        return [frame_planes(f)[0].astype(np.int64) for f in r if isinstance(f, av.VideoFrame)]


def end_to_end(c: Check, tmp: Path) -> None:
    src = clip_with_audio(tmp / "e2e.mp4", 64, 48, 20) if c.dry else SAMPLE
    base = {"model.scale": 2, "encoder.codec": "ffv1", "output.overwrite": True, "progress": "never"}
    ref_pipe = Pipeline(load_config(None, {**base, "device": "cpu", "precision": "fp32"}))
    ref_report = ref_pipe.run(src, tmp / "cpu.mkv")
    ref = _luma_frames(tmp / "cpu.mkv")
    result: dict[str, Any] = {"input": str(src.name), "cpu_fp32_frames": ref_report.frames}
    for batch in (1, 8):
        pipe = Pipeline(load_config(None, {**base, "device": str(c.device), "precision": "auto", "batch": batch}))
        report = pipe.run(src, tmp / f"dev{batch}.mkv")
        got = _luma_frames(tmp / f"dev{batch}.mkv")
        with av.open(str(tmp / f"dev{batch}.mkv")) as f:
            streams = [s.type for s in f.streams]
        diff = max(int(np.abs(a - b).max()) for a, b in zip(got, ref)) if got and len(got) == len(ref) else None
        result[f"batch{batch}"] = {"frames": report.frames, "precision": report.precision, "max_diff": diff,
                                   "fps": report.fps, "notes": list(report.notes), "streams": streams,
                                   "stages": {k: v.__dict__ for k, v in report.stages.items()}}
        c.expect("end_to_end", f"batch {batch}: frame count", len(got) == len(ref) == ref_report.frames, len(got),
                 f"== {ref_report.frames}")
        c.expect("end_to_end", f"batch {batch}: luma vs CPU fp32", diff is not None and diff <= 2, diff, "<= 2 levels")
        c.expect("end_to_end", f"batch {batch}: audio kept", "audio" in streams, streams, "video + audio")
    c.sections["end_to_end"] = result


def _timed(c: Check, fn: Callable[[], Any], rounds: int) -> tuple[float, float | None]:
    """(host seconds per round, CUDA-event seconds per round or None), both synchronised."""
    fn()
    c.sync()
    if c.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    if c.device.type == "cuda":
        end.record()
    c.sync()
    host = (time.perf_counter() - t0) / rounds
    return host, (start.elapsed_time(end) / 1000 / rounds if c.device.type == "cuda" else None)


def speed(c: Check) -> None:
    w, h = (96, 54) if c.dry else (960, 540)
    dtype = torch.float16 if c.device.type == "cuda" else torch.float32
    up = LumaUpscaler(create_model("espcn", scale=2), device=c.device, dtype=dtype)
    result: dict[str, Any] = {"input": [w, h], "output": [2 * w, 2 * h], "precision": str(dtype)}
    rounds = 3 if c.dry else 50
    for batch in (1, 4, 8):
        x = torch.randint(0, 256, (batch, 1, h, w), dtype=torch.uint8, device=c.device)
        host, events = _timed(c, lambda: up(x, 255), rounds)
        fps = batch / host
        result[f"infer_fps_batch{batch}"] = fps
        c.note("speed", f"infer fps batch {batch} ({w}x{h} -> {2 * w}x{2 * h})", round(fps, 1),
               "target >= 2000 (fp16)")
        if events is not None:
            gap = abs(host - events) / events
            result[f"event_gap_batch{batch}"] = gap
            c.expect("speed", f"batch {batch}: host vs CUDA events", gap <= 0.10, f"{gap:.1%}", "<= 10%")
    _runner_speed(c, up, w, h, result)
    c.sections["speed"] = result


def _runner_speed(c: Check, up: LumaUpscaler, w: int, h: int, result: dict[str, Any]) -> None:
    """The runner's wall time against the serial sum of its three steps; overlap from the profiler."""
    n, batch = (8, 4) if c.dry else (160, 4)
    frames = make_frames(n, w, h)
    pipe = Pipeline(load_config(None, {"device": str(c.device), "precision": "auto", "model.scale": 2}))
    pipe.upscaler = up

    def through_runner() -> float:
        ctl, out, clock = _Control(), queue.Queue(), _Clock()
        runner = _runner(c, up, ctl, out, clock, pipe)
        t0 = time.perf_counter()
        try:
            for k in range(0, n, batch):
                runner.submit([_Job(i, frames[i], 0.0) for i in range(k, k + batch)])
            runner.drain()
        finally:
            runner.close()
        return time.perf_counter() - t0

    through_runner()  # warm-up (cudnn.benchmark picks its kernels)
    wall = min(through_runner() for _ in range(3))
    host = [torch.from_numpy(np.stack([frame_planes(f)[0] for f in frames[k:k + batch]]))[:, None]
            for k in range(0, n, batch)]
    if c.device.type == "cuda":
        host = [t.pin_memory() for t in host]
    copy_in = compute = copy_out = 0.0
    for t in host:  # serial: each step alone, synchronised
        c.sync(); t0 = time.perf_counter()
        d = t.to(c.device, non_blocking=True); c.sync(); t1 = time.perf_counter()
        y = up(d, 255); c.sync(); t2 = time.perf_counter()
        back = torch.empty(y.shape, dtype=y.dtype, pin_memory=c.device.type == "cuda")
        back.copy_(y, non_blocking=True); c.sync(); t3 = time.perf_counter()
        copy_in, compute, copy_out = copy_in + t1 - t0, compute + t2 - t1, copy_out + t3 - t2
    serial = copy_in + compute + copy_out
    result["runner"] = {"frames": n, "batch": batch, "wall_s": wall, "serial_s": serial, "h2d_s": copy_in,
                        "compute_s": compute, "d2h_s": copy_out, "fps": n / wall}
    if c.device.type == "cuda":
        c.expect("speed", "runner wall vs serial copy+compute+copy", wall < 0.8 * serial,
                 f"{wall / serial:.2f}x", "< 0.8x")
        result["runner"]["overlap"] = _overlap_from_profiler(through_runner)
        c.note("speed", "copy time overlapped with compute (profiler)", f"{result['runner']['overlap']:.0%}")
    else:
        c.note("speed", "runner wall vs serial (CPU runner, not asserted)", f"{wall / serial:.2f}x")


def _overlap_from_profiler(run: Callable[[], float]) -> float:
    """Fraction of the memcpy kernels' GPU time during which a compute kernel ran too."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
    copies, kernels = [], []
    for e in prof.events():
        if getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        span = (e.time_range.start, e.time_range.end)
        (copies if "memcpy" in e.name.lower() else kernels).append(span)

    def merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[list[float]] = []
        for a, b in sorted(spans):
            if out and a <= out[-1][1]:
                out[-1][1] = max(out[-1][1], b)
            else:
                out.append([a, b])
        return [(a, b) for a, b in out]

    k = merged(kernels)
    total = sum(b - a for a, b in copies) or 1.0
    shared = 0.0
    for a, b in copies:
        shared += sum(max(0.0, min(b, kb) - max(a, ka)) for ka, kb in k)
    return shared / total


class _OomAbove(torch.nn.Module):
    """The dry run's stand-in for a memory limit: out of memory for inputs above ``limit`` pixels a side."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.limit:
            raise RuntimeError("CUDA error: out of memory (injected by gpu_check --dry-run)")
        return self.inner(x)


def memory(c: Check, tmp: Path) -> None:
    cuda = c.device.type == "cuda"
    result: dict[str, Any] = {}
    if cuda:
        gc.collect(); torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(c.device)
        torch.cuda.reset_peak_memory_stats(c.device)
        pipe = Pipeline(load_config(None, {"device": str(c.device), "model.scale": 2, "encoder.codec": "ffv1",
                                           "output.overwrite": True, "progress": "never"}))
        for k in range(2):
            pipe.run(SAMPLE, tmp / f"mem{k}.mkv")
        result["peak_pipeline_mb"] = torch.cuda.max_memory_allocated(c.device) / 2**20
        del pipe
        gc.collect(); torch.cuda.empty_cache()
        after = torch.cuda.memory_allocated(c.device)
        result.update(baseline_bytes=baseline, after_bytes=after)
        c.expect("memory", "back to baseline after two runs", after <= baseline + (1 << 20),
                 f"{(after - baseline) / 2**20:+.1f} MiB", "<= +1 MiB")
        c.note("memory", "peak GPU memory, two runs of the sample", f"{result['peak_pipeline_mb']:.0f} MiB")
    h, w = (160, 200) if c.dry else (2160, 3840)
    x = torch.randint(0, 256, (1, 1, h, w), dtype=torch.uint8)
    dtype = torch.float16 if cuda else torch.float32
    whole = LumaUpscaler(create_model("espcn", scale=2), device=c.device, dtype=dtype, fused=False)
    want = whole(x.to(c.device), 255).cpu().numpy()[0, 0].astype(np.int64)
    limited = LumaUpscaler(create_model("espcn", scale=2), device=c.device, dtype=dtype, fused=False)
    total = torch.cuda.get_device_properties(c.device).total_memory if cuda else 0
    if cuda:
        del whole
        gc.collect(); torch.cuda.empty_cache()
        x_dev = x.to(c.device)
        room = torch.cuda.memory_allocated(c.device) + (768 << 20)  # far less than an untiled 4K frame needs
        torch.cuda.set_per_process_memory_fraction(room / total, c.device)
    else:
        x_dev = x
        limited.model = _OomAbove(limited.model, 100)  # type: ignore[assignment]
    try:
        got = limited(x_dev, 255).cpu().numpy()[0, 0].astype(np.int64)
        diff = int(np.abs(got - want).max())
        result["tiled"] = {"tile": limited.tile, "max_diff_vs_untiled": diff}
        c.expect("memory", "4K frame under a memory limit: tiles", limited.tile > 0, limited.tile, "> 0 (tiled)")
        c.expect("memory", "tiled vs untiled", diff <= 1, diff, "<= 1 level")
        del got
        tiny = LumaUpscaler(create_model("espcn", scale=2), device=c.device, dtype=dtype, fused=False)
        if cuda:
            gc.collect(); torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(c.device)
            torch.cuda.set_per_process_memory_fraction((before + (1 << 20)) / total, c.device)
        else:
            before = 0
            tiny.model = _OomAbove(tiny.model, 1)  # type: ignore[assignment]
        try:
            tiny(x_dev, 255)
            raised = "nothing raised"
        except DeviceError as exc:
            raised = f"DeviceError: {str(exc)[:40]}..."
        released = (torch.cuda.memory_allocated(c.device) - before) if cuda else 0
        result["tiny"] = {"raised": raised, "left_allocated_bytes": released}
        c.expect("memory", "tiny memory limit: DeviceError", raised.startswith("DeviceError"), raised, "DeviceError")
        if cuda:
            c.expect("memory", "tiny memory limit: memory released", released <= 0, f"{released / 2**20:+.1f} MiB",
                     "<= +0 MiB")
    finally:
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, c.device)
    c.sections["memory"] = result


def video(c: Check, tmp: Path) -> None:
    """NVDEC against CPU decoding of a 1080p H.264 clip: same frames and timestamps, and both speeds."""
    w, h, n = (64, 48, 6) if c.dry else (1920, 1080, 120)
    path = tmp / "decode.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"preset": "ultrafast", "crf": "18"}
        for i, frame in enumerate(make_frames(n, w, h)):
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    result: dict[str, Any] = {"size": [w, h], "frames": n, "nvenc_opens": _hwcodec.encoder_opens("h264_nvenc")}

    def decode(gpu: int | None) -> tuple[list[tuple[int | None, str]], float, str]:
        saved = _hwcodec.NVDEC_MIN_PIXELS
        _hwcodec.NVDEC_MIN_PIXELS = min(saved, w * h)
        try:
            t0 = time.perf_counter()
            with VideoReader(path, nvdec=gpu) as r:
                got = [(f.pts, _digest(frame_planes(f)[0])) for f in r if isinstance(f, av.VideoFrame)]
                used = r.decoder
            return got, n / (time.perf_counter() - t0), used
        finally:
            _hwcodec.NVDEC_MIN_PIXELS = saved

    cpu, cpu_fps, _ = decode(None)
    gpu_index = (c.device.index or 0) if c.device.type == "cuda" else 0
    hw, hw_fps, used = decode(gpu_index)
    result.update(cpu_fps=cpu_fps, decoder=used, nvdec_fps=hw_fps if used == "nvdec" else None)
    c.note("video", "CPU decode fps", round(cpu_fps, 1))
    c.note("video", "decoder used on the GPU path", used)
    if used == "nvdec":
        c.note("video", "NVDEC decode fps", round(hw_fps, 1))
        c.expect("video", "NVDEC frames and timestamps", hw == cpu, "identical" if hw == cpu else "differ", "== CPU")
    c.sections["video"] = result


# -- the table ---------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    head = ("section", "check", "value", "bound", "result")
    lines = [head] + [(r["section"], r["check"], str(r["value"]), r["bound"],
                       "-" if r["ok"] is None else ("ok" if r["ok"] else "FAIL")) for r in rows]
    widths = [max(len(l[k]) for l in lines) for k in range(5)]
    return "\n".join("  ".join(v.ljust(widths[k]) for k, v in enumerate(l)).rstrip() for l in lines)


SECTIONS = ("environment", "accuracy", "stress", "end_to_end", "speed", "memory", "video")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="run the logic on CPU at small sizes (no GPU needed)")
    p.add_argument("--device", default="cuda", help="the GPU to check (default: cuda, i.e. the current one)")
    p.add_argument("--out", type=Path, help="JSON file (default: docs/bench/gpu_check.json; dry run: a temp file)")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--no-pytest", action="store_true", help="skip the pytest -k cuda step")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; run it on a machine with an NVIDIA GPU, or pass --dry-run",
              file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.dry_run else torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    c = Check(args.dry_run, device)
    started = time.time()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vsr-gpu-check-") as tmp_dir:
        tmp = Path(tmp_dir)
        steps: dict[str, Callable[[], None]] = {
            "environment": lambda: environment(c, not args.no_pytest),
            "accuracy": lambda: accuracy(c),
            "stress": lambda: stress(c),
            "end_to_end": lambda: end_to_end(c, tmp),
            "speed": lambda: speed(c),
            "memory": lambda: memory(c, tmp),
            "video": lambda: video(c, tmp),
        }
        for name in args.only or SECTIONS:
            t0 = time.perf_counter()
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            try:
                steps[name]()
            except Exception as exc:  # a crash in one section is a failed assertion, not the end of the check
                c.expect(name, "section ran", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}",
                         "no exception")
            timings[name] = time.perf_counter() - t0
    result = {
        "dry_run": args.dry_run, "device": str(device), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                    time.gmtime(started)),
        "seconds": time.time() - started, "section_seconds": timings, "checks": c.rows, "sections": c.sections,
        "failed": len(c.failed), "tf32_after": tf32_flags(), "machine": platform.platform(),
    }
    out = args.out or (Path(tempfile.gettempdir()) / "vsr_gpu_check_dry_run.json" if args.dry_run
                       else REPO / "docs" / "bench" / "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table(c.rows))
    print(f"{len(c.failed)} failed of {sum(r['ok'] is not None for r in c.rows)} assertions in "
          f"{result['seconds']:.0f} s; JSON: {out}")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
