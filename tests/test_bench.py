"""vsr bench on a tiny case: it runs, and its JSON holds every figure with values consistent with each other."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import time

import pytest
import torch

from conftest import cuda
from vsr.bench import STAGE_KEYS, BenchCase, BenchOptions, run_bench
from vsr.cli import main as vsr_main
from vsr.config import load_config
from vsr.errors import ConfigError, PipelineError
from vsr.models import create_model
from vsr.pipeline import Pipeline


def _check_case(c: dict, scale: int, size: tuple[int, int], frames: int) -> None:
    assert c["input_size"] == list(size) and c["output_size"] == [size[0] * scale, size[1] * scale]
    assert c["frames"] == frames and c["scale"] == scale
    for key in STAGE_KEYS:
        assert c[key] > 0, key
        assert c[key] == pytest.approx(statistics.median(c["samples"][key])), key  # medians of the rounds
    d, i, e = c["decode_fps"], c["infer_fps"], c["encode_fps"]
    if c["device"] == "cpu":
        assert c["bound_fps"] == pytest.approx(1 / (1 / d + 1 / i + 1 / e))
    else:
        assert c["bound_fps"] == pytest.approx(min(d, i, e))
    assert c["bound_fps"] < min(d, i, e) or c["device"] != "cpu"
    assert c["efficiency"] == pytest.approx(c["pipeline_fps"] / c["bound_fps"])
    assert c["realtime_factor"] == pytest.approx(c["pipeline_fps"] / c["source_fps"])
    rd = c["run_default"]  # vsr run's own preset, timed in the same rounds
    if rd is not None:
        assert rd["preset"] == load_config(None).encoder.preset
        for key in ("encode_fps", "pipeline_fps"):
            assert rd[key] > 0 and rd[key] == pytest.approx(statistics.median(rd["samples"][key]))
            assert len(rd["samples"][key]) == len(c["samples"]["pipeline_fps"])
        assert rd["bound_fps"] == pytest.approx(1 / (1 / d + 1 / i + 1 / rd["encode_fps"])
                                                if c["device"] == "cpu" else min(d, i, rd["encode_fps"]))
        assert rd["efficiency"] == pytest.approx(rd["pipeline_fps"] / rd["bound_fps"])
    assert c["pipeline_vs_sequential"] == pytest.approx(c["pipeline_fps"] / c["sequential_fps"])
    macs = create_model(c["model"], scale=scale, weights=None).config.macs_per_lr_pixel
    assert c["gflop_per_frame"] == pytest.approx(2 * macs * size[0] * size[1] / 1e9)
    assert c["infer_gflops"] == pytest.approx(c["gflop_per_frame"] * i)
    assert c["matmul_gflops"] > 0
    assert c["infer_vs_matmul"] == pytest.approx(c["infer_gflops"] / c["matmul_gflops"])
    acc = c["accuracy"]
    assert acc["max_abs_diff"] >= 0
    assert acc["max_abs_diff"] == 0 or acc["psnr_vs_fp32_db"] > 40  # bf16 stays close to fp32
    assert c["bicubic_fps"] > 0
    if c["opencv_fps"] is not None:
        assert c["infer_vs_opencv"] == pytest.approx(i / c["opencv_fps"])
    else:
        assert c["infer_vs_opencv"] is None


def test_cli_bench_tiny_case_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = vsr_main(["bench", "--size", "64x36", "--scale", "3", "--frames", "4", "--repeats", "2",
                     "--weights", "random", "--device", "cpu", "--json", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "64x36 x3" in captured.out and "192x108" in captured.out and "machine:" in captured.out
    result = json.loads(out.read_text())
    m = result["machine"]
    assert m["cores"] >= 1 and m["torch"] and "cpu_flags" in m and "gpu" in m
    assert result["options"]["repeats"] == 2 and result["options"]["preset"] == "ultrafast"
    (case,) = result["cases"]
    assert case["weights"].startswith("random")
    assert case["run_default"] is not None and "pipe@medium" in captured.out
    assert case["source_fps"] == pytest.approx(30.0)
    _check_case(case, 3, (64, 36), 4)


def test_fp32_module_engine_matches_the_reference_exactly(tmp_path: Path) -> None:
    options = BenchOptions(cases=(BenchCase(width=48, height=32, scale=2),), model="espcn-fast", weights="random",
                           device="cpu", precision="fp32", frames=3, repeats=1, fused=False, peers=False,
                           run_preset=None)
    result = run_bench(options)
    (case,) = result["cases"]
    assert case["run_default"] is None  # not asked for
    assert (case["engine"], case["precision"]) == ("module", "fp32")
    assert case["accuracy"] == {**case["accuracy"], "max_abs_diff": 0, "psnr_vs_fp32_db": None}
    assert case["opencv_fps"] is None and "opencv" not in case
    _check_case(case, 2, (48, 32), 3)


def test_bench_on_a_file(tmp_path: Path) -> None:
    from media_utils import make_clip

    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=6, audio={"channels": 1})
    options = BenchOptions(cases=(BenchCase(input=str(src), scale=2),), model="espcn-fast", weights="random",
                           device="cpu", frames=4, repeats=1, peers=False)
    (case,) = run_bench(options)["cases"]
    assert case["input"] == str(src)
    _check_case(case, 2, (64, 48), 4)  # the first --frames frames of the file


@pytest.mark.parametrize("argv, message", [
    (["--size", "64by36"], "give WIDTHxHEIGHT"),
    (["--size", "4x4"], "at least 8x8"),
    (["--size", "64x36", "--frames", "1"], "--frames must be at least 2"),
    (["--size", "64x36", "--weights", "nope.safetensors"], "no such file"),
    (["--size", "64x36", "--model", "nope"], "unknown model"),
    (["--input", "missing.mp4"], "no such file"),
])
def test_bad_options_are_one_line_errors(argv: list[str], message: str, capsys) -> None:
    assert vsr_main(["bench", *argv, "-q"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        BenchOptions(cases=())
    with pytest.raises(ConfigError):
        BenchCase(width=64, height=36, scale=5)


@cuda
def test_cuda_bench_uses_the_cuda_bound_and_reports_gpu_memory(tmp_path: Path) -> None:
    options = BenchOptions(cases=(BenchCase(width=64, height=36, scale=2),), model="espcn-fast", weights="random",
                           device="cuda", precision="fp16", frames=4, repeats=1, peers=False)
    (case,) = run_bench(options)["cases"]
    assert case["device"].startswith("cuda") and case["precision"] == "fp16"
    assert case["bound_rule"].startswith("min")
    assert case["peak_gpu_memory_mb"] > 0
    _check_case(case, 2, (64, 36), 4)


# -- the pipeline's CPU infer workers, which the bench's infer stage measures ------------------------
def _pipeline(weights: Path, threads: int = 2) -> Pipeline:
    return Pipeline(load_config(None, {"model.name": "espcn-fast", "model.scale": 2, "model.weights": str(weights),
                                       "device": "cpu", "threads": threads, "encoder.preset": "ultrafast"}))


def test_cpu_workers_keep_frames_and_packets_in_order(tmp_path: Path, random_weights) -> None:
    from media_utils import make_clip, probe

    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=24, audio={"channels": 1})
    pipe = _pipeline(random_weights("espcn-fast", 2))
    assert (pipe.cpu_workers, pipe.cpu_worker_threads) == (2, 1)
    threads_before = torch.get_num_threads()
    order: list[int] = []
    real = Pipeline._upscale_batch

    def slow_on_even(self: Pipeline, jobs: list) -> None:  # even frames finish after the odd ones
        if jobs[0].index % 2 == 0:
            time.sleep(0.02)
        real(self, jobs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Pipeline, "_upscale_batch", slow_on_even)
        real_compose = Pipeline._compose

        def spy(self: Pipeline, writer, job):  # type: ignore[no-untyped-def]
            order.append(job.index)
            return real_compose(self, writer, job)

        mp.setattr(Pipeline, "_compose", spy)
        report = pipe.run(src, tmp_path / "out.mp4")
    assert order == list(range(24))
    assert report.frames == 24 and probe(tmp_path / "out.mp4")["streams"] == ["video", "audio"]
    assert torch.get_num_threads() == threads_before  # the workers' setting does not leak
    # Same pixels as one frame at a time.
    serial = _pipeline(random_weights("espcn-fast", 2), threads=1)
    assert serial.cpu_workers == 1
    serial.run(src, tmp_path / "serial.mp4")
    assert probe(tmp_path / "serial.mp4")["frames"] == 24


def test_a_worker_error_stops_the_run_and_leaves_no_output(tmp_path: Path, random_weights, monkeypatch) -> None:
    from media_utils import make_clip

    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=12)
    real = Pipeline._upscale_batch

    def fail_at_five(self: Pipeline, jobs: list) -> None:
        if jobs[0].index == 5:
            raise RuntimeError("boom in a worker")
        real(self, jobs)

    monkeypatch.setattr(Pipeline, "_upscale_batch", fail_at_five)
    with pytest.raises(PipelineError, match="infer stage failed: RuntimeError: boom in a worker"):
        _pipeline(random_weights("espcn-fast", 2)).run(src, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


def test_bench_realtime_measures_what_vsr_run_realtime_chooses(tmp_path: Path) -> None:
    options = BenchOptions(cases=(BenchCase(width=64, height=36, scale=2),), device="cpu", frames=4, repeats=1,
                           peers=False, realtime=True)
    (case,) = run_bench(options)["cases"]
    chosen = case["realtime"]
    assert chosen is not None and chosen["tried"] and chosen["source_fps"] == pytest.approx(30.0)
    assert (case["model"], case["precision"], case["encoder_preset"]) == (
        chosen["model"], chosen["precision"], chosen["preset"])
    _check_case(case, 2, (64, 36), 4)
    with pytest.raises(ConfigError, match="--realtime"):
        BenchOptions(realtime=True, fused=False)
