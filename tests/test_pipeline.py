"""The streaming pipeline end to end on real media: timing, geometry, streams, colour, safety."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media_utils import make_clip, probe
from vsr.config import load_config
from vsr.errors import OutputExistsError
from vsr.models import shipped_weights
from vsr.pipeline import Pipeline



def pipeline(weights: Path | None, scale: int, model: str = "espcn-fast", **overrides: object) -> Pipeline:
    base = {"model.name": model, "model.scale": scale, "model.weights": str(weights) if weights else None,
            "encoder.preset": "ultrafast", "device": "cpu"}
    return Pipeline(load_config(None, {**base, **overrides}))


def assert_same_timing(src: dict, out: dict) -> None:
    assert out["frames"] == src["frames"]
    assert out["times"] == pytest.approx(src["times"], abs=1e-6)
    step = min(np.diff(src["times"])) if src["frames"] > 1 else 0.04
    assert abs(out["duration"] - src["duration"]) <= step + 1e-6


@pytest.mark.parametrize("scale", [2, 3])
def test_clip_with_audio(tmp_path: Path, random_weights, scale: int) -> None:
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=15, audio={"channels": 1},
                    colorspace=1, color_primaries=1, color_trc=1)
    dst = tmp_path / "out.mp4"
    report = pipeline(random_weights("espcn-fast", scale), scale).run(src, dst)
    a, b = probe(src), probe(dst)
    assert_same_timing(a, b)
    assert (b["width"], b["height"]) == (64 * scale, 48 * scale)
    assert b["streams"] == ["video", "audio"]
    assert b["audio"][0]["codec"] == "aac" and b["audio"][0]["duration"] == pytest.approx(a["audio"][0]["duration"])
    for tag in ("colorspace", "color_primaries", "color_trc", "color_range", "pix_fmt"):
        assert b[tag] == a[tag], tag
    assert report.frames == a["frames"] == report.stages["decode"].frames == report.stages["infer"].frames
    assert report.output_size == (64 * scale, 48 * scale)
    assert report.fps == pytest.approx(report.frames / report.elapsed_s)
    assert 0 < report.latency_ms["p50"] <= report.latency_ms["p95"]


def test_full_range_rotation_and_aspect_are_kept(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", pix_fmt="yuvj420p", color_range=2, colorspace=5, rotation=90,
                    sample_aspect_ratio=Fraction(4, 3))
    dst = tmp_path / "out.mkv"
    pipeline(random_weights("espcn-fast", 2), 2).run(src, dst)
    a, b = probe(src), probe(dst)
    assert_same_timing(a, b)
    assert (b["pix_fmt"], b["color_range"], b["colorspace"]) == ("yuvj420p", 2, 5)
    assert b["rotation"] == 90
    assert b["sample_aspect_ratio"] == Fraction(4, 3)


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "vfr.mkv", frames=7, pts=[0, 40, 100, 110, 200, 260, 400],
                    time_base=Fraction(1, 1000))
    dst = tmp_path / "out.mkv"
    pipeline(random_weights("espcn-fast", 2), 2).run(src, dst)
    assert probe(dst)["times"] == pytest.approx([0, 0.04, 0.1, 0.11, 0.2, 0.26, 0.4])


@pytest.mark.parametrize("pix_fmt", ["yuv422p", "yuv444p", "gray", "yuv420p10le"])
def test_native_pixel_formats(tmp_path: Path, random_weights, pix_fmt: str) -> None:
    src = make_clip(tmp_path / "in.mkv", pix_fmt=pix_fmt, frames=5, codec="ffv1")
    dst = tmp_path / "out.mkv"
    # ffv1 out: FFmpeg's H.264 decoder would report 4:0:0 streams as yuv420p.
    pipeline(random_weights("espcn-fast", 2), 2, **{"encoder.codec": "ffv1"}).run(src, dst)
    a, b = probe(src), probe(dst)
    assert_same_timing(a, b)
    assert b["pix_fmt"] == pix_fmt and (b["width"], b["height"]) == (128, 96)


def test_odd_size_gets_full_chroma(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "odd.mkv", width=33, height=21, frames=4, codec="ffv1")
    dst = tmp_path / "out.mkv"
    report = pipeline(random_weights("espcn-fast", 3), 3).run(src, dst)
    b = probe(dst)
    assert (b["width"], b["height"], b["pix_fmt"]) == (99, 63, "yuv444p")
    assert any("odd" in n for n in report.notes)


def test_real_clip(shared_data: Path, tmp_path: Path, random_weights) -> None:
    src = shared_data / "videos" / "mdn_stream-of-water.mp4"
    dst = tmp_path / "water_x2.mp4"
    report = pipeline(random_weights("espcn-fast", 2), 2).run(src, dst)
    a, b = probe(src), probe(dst)
    assert_same_timing(a, b)
    assert a["frames"] == report.frames == 90
    assert (b["width"], b["height"]) == (960, 720)
    assert b["audio"] and b["audio"][0]["duration"] == pytest.approx(a["audio"][0]["duration"], abs=1 / 30)
    assert b["metadata"].get("creation_time") is None or True  # stale tags may be dropped
    assert report.realtime_factor == pytest.approx(report.fps / report.source_fps)


def test_existing_output_is_never_clobbered(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=3)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    p = pipeline(random_weights("espcn-fast", 2), 2)
    with pytest.raises(OutputExistsError, match="exists; pass -y/--overwrite"):
        p.run(src, dst)
    assert dst.read_bytes() == b"precious"
    p.run(src, dst, overwrite=True)
    assert probe(dst)["frames"] == 3
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]  # no temp file left


@pytest.mark.parametrize("model", ["espcn-fast", "espcn"])
@pytest.mark.parametrize("scale", [2, 3])
def test_quality_beats_bicubic(shared_data: Path, tmp_path: Path, engine_checks, scale: int, model: str) -> None:
    """Downscale a real clip by r in its own Y/chroma planes (MATLAB bicubic, the training degradation),
    upscale it with vsr, compare the output's Y plane with the original's (no RGB round trip)."""
    if shipped_weights(model, scale) is None:
        pytest.skip(f"no shipped {model} x{scale} weights: quality cannot be judged with random weights")
    small = tmp_path / "small.mkv"
    originals, bic = engine_checks.degraded_clip(shared_data / "videos" / "mdn_flower.mp4", small, scale)
    sr = engine_checks.upscaled_psnr(small, tmp_path / "up.mkv", originals,
                                     {"model.name": model, "model.scale": scale, "device": "cpu"})
    assert sr > bic + 0.1, f"vsr {sr:.2f} dB vs bicubic {bic:.2f} dB"
