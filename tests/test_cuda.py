"""The CUDA path on a GPU: the runner, the pipeline, deep planes and the out-of-memory fallback.

Every test here needs CUDA and skips without it; tests/test_gpu_engine.py and
tests/test_gpu_pipeline.py check the same logic on CPU, and tools/gpu_check.py measures it.
"""

from __future__ import annotations

import gc
import queue
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import cuda
from test_gpu_engine import planes_with_white_patch
from test_gpu_pipeline import jobs_of
from vsr.config import load_config
from vsr.engine import LumaUpscaler, tf32_flags
from vsr.errors import DeviceError
from vsr.models import create_model
from vsr.media import VideoReader, frame_planes
from vsr.pipeline import Pipeline
from vsr.pipeline._flow import _Clock, _Control
from vsr.pipeline._runners import _CudaRunner

pytestmark = cuda
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "stream-of-water.mp4"


@pytest.mark.parametrize("batch", [1, 4])
def test_cuda_runner_outputs_equal_synchronous_calls(batch: int) -> None:
    up = LumaUpscaler(create_model("espcn", scale=2), device="cuda", dtype=torch.float16)
    jobs = jobs_of(24, size=(320, 180))
    ctl, out, clock = _Control(), queue.Queue(), _Clock()
    runner = _CudaRunner(up, ctl, out, clock, depth=3)
    try:
        for k in range(0, len(jobs), batch):
            runner.submit(jobs[k : k + batch])
        runner.drain()
    finally:
        runner.close()
    got = [out.get_nowait() for _ in range(len(jobs))]
    assert [j.index for j in got] == list(range(len(jobs)))
    for k in range(0, len(jobs), batch):
        x = torch.stack([torch.from_numpy(np.ascontiguousarray(frame_planes(j.frame)[0])) for j in jobs[k : k + batch]])
        want = up(x[:, None].cuda(), 255).cpu().numpy()
        for job, w in zip(got[k : k + batch], want):
            np.testing.assert_array_equal(job.luma, w[0])
    assert clock.frames == len(jobs) and clock.busy > 0


@pytest.mark.parametrize("batch", [1, 8])
def test_cuda_pipeline_with_audio_matches_cpu_fp32(batch: int, tmp_path: Path) -> None:
    base = {"model.scale": 2, "encoder.codec": "ffv1"}
    Pipeline(load_config(None, {**base, "device": "cpu", "precision": "fp32"})).run(SAMPLE, tmp_path / "cpu.mkv")
    report = Pipeline(load_config(None, {**base, "device": "cuda", "batch": batch})).run(SAMPLE, tmp_path / "gpu.mkv")
    assert report.precision == "fp16" and report.frames == 90
    assert any("is the bound" in n for n in report.notes)
    with VideoReader(tmp_path / "cpu.mkv") as a, VideoReader(tmp_path / "gpu.mkv") as b:
        assert len(b.passthrough) == 1
        fa = [frame_planes(f)[0].astype(int) for f in a if isinstance(f, av.VideoFrame)]
        fb = [frame_planes(f)[0].astype(int) for f in b if isinstance(f, av.VideoFrame)]
    assert len(fa) == len(fb) == 90
    assert max(np.abs(x - y).max() for x, y in zip(fa, fb)) <= 2


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_cuda_high_bit_depth_fp16_and_fp32(bits: int) -> None:
    x, mv = planes_with_white_patch(bits)
    ref = LumaUpscaler(create_model("espcn", scale=2), device="cpu", dtype=torch.float32, fused=False)(x, mv).long()
    fp32 = LumaUpscaler(create_model("espcn", scale=2), device="cuda", dtype=torch.float32)
    assert tf32_flags()["cudnn_conv"] == "ieee"
    assert (fp32(x.cuda(), mv).cpu().long() - ref).abs().max().item() <= 1
    got = LumaUpscaler(create_model("espcn", scale=2), device="cuda", dtype=torch.float16)(x.cuda(), mv).cpu().long()
    assert got[..., 16:40, 16:40].min().item() >= mv - mv // 64  # no NaN, no black
    assert (got - ref).abs().max().item() <= (2 if bits <= 10 else 1)


def test_cuda_out_of_memory_falls_back_to_tiles_and_then_to_a_device_error() -> None:
    total = torch.cuda.get_device_properties(0).total_memory
    x = torch.randint(0, 256, (1, 1, 1080, 1920), dtype=torch.uint8, device="cuda")
    whole = LumaUpscaler(create_model("espcn", scale=2), device="cuda", dtype=torch.float16)(x).cpu().long()
    up = LumaUpscaler(create_model("espcn", scale=2), device="cuda", dtype=torch.float16)
    gc.collect()
    torch.cuda.empty_cache()
    try:
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + (192 << 20)) / total)
        tiled = up(x).cpu().long()
        assert up.tile > 0 and (tiled - whole).abs().max().item() <= 1
        tiny = LumaUpscaler(create_model("espcn", scale=2), device="cuda", dtype=torch.float16)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.set_per_process_memory_fraction((before + (1 << 20)) / total)
        with pytest.raises(DeviceError, match="out of memory even in 64-pixel tiles"):
            tiny(x)
        gc.collect()
        assert torch.cuda.memory_allocated() <= before + (1 << 20)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
