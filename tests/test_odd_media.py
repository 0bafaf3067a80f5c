"""Odd media: each property either works (frames, timestamps, audio, tags exact) or is refused by name.

Extends tests/test_pipeline.py (odd size via ffv1, full range/rotation/aspect and VFR in
Matroska, 4:2:2/4:4:4/gray/10-bit in FFV1, one mono audio track) to the cases below.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from media_utils import SUBTITLE_CUES, make_clip, probe, stream_packets
from vsr.config import load_config
from vsr.errors import UnsupportedMediaError
from vsr.pipeline import Pipeline


def run(src: Path, dst: Path, weights_of, scale: int = 2, **overrides: Any):
    base = {"model.name": "espcn-fast", "model.scale": scale, "model.weights": str(weights_of("espcn-fast", scale)),
            "device": "cpu", "encoder.preset": "ultrafast"}
    return Pipeline(load_config(None, {**base, **overrides})).run(src, dst)


def assert_same_frames(a: dict, b: dict) -> None:
    assert b["frames"] == a["frames"]
    assert b["times"] == pytest.approx(a["times"], abs=1e-6)


def assert_audio_in_sync(src: Path, dst: Path, frame_s: float) -> None:
    """Every audio track kept, in order, each starting and ending within one video frame of the input's."""
    a, b = stream_packets(src, "audio"), stream_packets(dst, "audio")
    assert len(b) == len(a)
    va, vb = probe(src)["times"][0], probe(dst)["times"][0]
    for ta, tb in zip(a, b):
        assert abs((tb[0][0] - vb) - (ta[0][0] - va)) <= frame_s
        end_a, end_b = ta[-1][0] + ta[-1][1] - va, tb[-1][0] + tb[-1][1] - vb
        assert abs(end_b - end_a) <= frame_s
        assert [p[2] for p in tb] == [p[2] for p in ta]  # copied, not re-encoded: same packets


@pytest.mark.parametrize(
    "width, height, codec, pix_fmt, scale, out_fmt",
    [
        (1, 1, "ffv1", "yuv444p", 2, "yuv444p"),
        (1, 1, "ffv1", "yuv420p", 2, "yuv420p"),  # 2x2 out holds 4:2:0
        (1, 1, "ffv1", "yuv420p", 3, "yuv444p"),  # 3x3 out cannot: 4:4:4
        (2, 2, "libx264", "yuv420p", 2, "yuv420p"),
        (2, 2, "libx264", "yuv420p", 3, "yuv420p"),
        (3, 5, "libx264", "yuv444p", 2, "yuv444p"),
        (1, 1, "libx264", "yuv444p", 2, "yuv444p"),
        (5, 3, "libx264", "yuv444p", 3, "yuv444p"),
    ],
)
def test_tiny_frames(width: int, height: int, codec: str, pix_fmt: str, scale: int, out_fmt: str,
                     tmp_path: Path, random_weights) -> None:
    ext = "mkv" if codec == "ffv1" else "mp4"
    src = make_clip(tmp_path / f"tiny.{ext}", width=width, height=height, frames=6, codec=codec, pix_fmt=pix_fmt)
    dst = tmp_path / f"out.{ext}"
    report = run(src, dst, random_weights, scale)
    a, b = probe(src), probe(dst)
    assert_same_frames(a, b)
    assert (b["width"], b["height"], b["pix_fmt"]) == (width * scale, height * scale, out_fmt)
    assert report.frames == 6
    assert any("odd" in n for n in report.notes) == (out_fmt != pix_fmt)


def test_very_large_frames(tmp_path: Path, random_weights) -> None:
    """1080p in, 2160p out, in tiles: the writer and the chroma path cope with large planes."""
    src = make_clip(tmp_path / "big.mp4", width=1920, height=1080, frames=2)
    dst = tmp_path / "out.mp4"
    run(src, dst, random_weights, 2, tile=512)
    a, b = probe(src), probe(dst)
    assert_same_frames(a, b)
    assert (b["width"], b["height"]) == (3840, 2160)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_mp4_tags_kept(rotation: int, tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=6, pix_fmt="yuvj420p", color_range=2, rotation=rotation,
                    sample_aspect_ratio=Fraction(16, 11), colorspace=5, color_primaries=5, color_trc=6)
    dst = tmp_path / "out.mp4"
    run(src, dst, random_weights)
    a, b = probe(src), probe(dst)
    assert_same_frames(a, b)
    assert b["rotation"] % 360 == a["rotation"] % 360 == rotation
    for tag in ("pix_fmt", "color_range", "colorspace", "color_primaries", "color_trc", "sample_aspect_ratio"):
        assert b[tag] == a[tag], tag


def test_variable_frame_rate_mp4_with_audio(tmp_path: Path, random_weights) -> None:
    pts = [0, 40, 100, 110, 200, 260, 400, 433, 500, 640]
    src = make_clip(tmp_path / "vfr.mp4", frames=len(pts), pts=pts, time_base=Fraction(1, 1000),
                    audio={"channels": 2, "rate": 48000})
    dst = tmp_path / "out.mp4"
    run(src, dst, random_weights)
    assert probe(dst)["times"] == pytest.approx([t / 1000 for t in pts], abs=1e-6)
    assert_audio_in_sync(src, dst, frame_s=0.01)  # the clip's shortest frame


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv420p10le", "yuv422p10le", "gray10le"])
def test_x264_formats_in_mp4(pix_fmt: str, tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=4, pix_fmt=pix_fmt, codec="ffv1")
    dst = tmp_path / "out.mp4"
    run(src, dst, random_weights)
    a, b = probe(src), probe(dst)
    assert_same_frames(a, b)
    # FFmpeg's H.264 decoder reports 4:0:0 streams as 4:2:0 of the same depth.
    assert b["pix_fmt"] == {"gray10le": "yuv420p10le"}.get(pix_fmt, pix_fmt)


def test_gray_stays_gray_through_x264(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=3, pix_fmt="gray", codec="ffv1")
    dst = tmp_path / "out.mp4"
    run(src, dst, random_weights)
    with av.open(str(dst)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 3
    for f in frames:
        planes = f.to_ndarray(format="yuv420p")
        chroma = planes[f.height:]
        assert np.all(np.abs(chroma.astype(int) - 128) <= 1)  # no colour appeared
        assert planes[: f.height].std() > 10  # the picture is there


def test_unencodable_format_is_named(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=2, pix_fmt="gray16le", codec="ffv1")
    with pytest.raises(UnsupportedMediaError, match=r"pixel format gray16le cannot be encoded by libx264.*encoder\."):
        run(src, tmp_path / "out.mp4", random_weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]
    run(src, tmp_path / "out.mkv", random_weights, **{"encoder.codec": "ffv1"})  # the fix the message names
    assert probe(tmp_path / "out.mkv")["pix_fmt"] == "gray16le"


def test_alpha_is_dropped_with_a_note(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=3, pix_fmt="yuva420p", codec="ffv1")
    dst = tmp_path / "out.mkv"
    run(src, dst, random_weights)
    a, b = probe(src), probe(dst)
    assert_same_frames(a, b)
    assert b["pix_fmt"] == "yuv420p"


def test_interlaced_is_processed_as_frames_with_a_note(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=8, interlaced=True)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.field_order == 2  # really flagged top field first
    dst = tmp_path / "out.mp4"
    report = run(src, dst, random_weights)
    assert_same_frames(probe(src), probe(dst))
    assert any("interlaced" in n and "deinterlace" in n for n in report.notes)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.field_order in (0, 1)  # not claimed interlaced any more


def test_no_audio(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=5)
    dst = tmp_path / "out.mp4"
    run(src, dst, random_weights)
    assert probe(dst)["streams"] == ["video"]


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_several_audio_tracks_and_5_1(ext: str, tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / f"in.{ext}", frames=24, rate=Fraction(30000, 1001),
                    audio={"channels": 6, "layout": "5.1", "rate": 48000, "language": "eng", "title": "surround"},
                    extra_audio=[{"channels": 2, "rate": 44100, "language": "fra"},
                                 {"channels": 1, "rate": 22050, "language": "deu"}])
    dst = tmp_path / f"out.{ext}"
    run(src, dst, random_weights)
    a, b = probe(src), probe(dst)
    assert_same_frames(a, b)
    assert b["streams"] == ["video", "audio", "audio", "audio"]
    assert [x["channels"] for x in b["audio"]] == [6, 2, 1]
    def tags(path: Path) -> list[tuple[str | None, str | None]]:
        with av.open(str(path)) as c:
            return [(s.metadata.get("language"), s.metadata.get("title")) for s in c.streams.audio]

    assert tags(dst) == tags(src)
    assert [lang for lang, _ in tags(dst)] == ["eng", "fra", "deu"]
    if ext == "mkv":  # MP4 keeps no per-track title
        assert tags(dst)[0][1] == "surround"
    assert_audio_in_sync(src, dst, frame_s=1001 / 30000)


@pytest.mark.parametrize("ext, codec", [("mkv", "subrip"), ("mkv", "ass"), ("mp4", "mov_text")])
def test_subtitles_are_copied(ext: str, codec: str, tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / f"in.{ext}", frames=24, subtitles=codec, audio={"channels": 1})
    dst = tmp_path / f"out.{ext}"
    run(src, dst, random_weights)
    a, b = probe(src), probe(dst)
    assert_same_frames(a, b)
    assert b["streams"] == ["video", "audio", "subtitle"]
    names = []
    for path in (src, dst):
        with av.open(str(path)) as c:
            names.append(c.streams.subtitles[0].codec_context.name)
    assert names[0] == names[1] == {"subrip": "srt", "ass": "ssa"}.get(codec, codec)
    sa, sb = stream_packets(src, "subtitle"), stream_packets(dst, "subtitle")
    assert sb == sa
    texts = [p[2] for p in sb[0] if len(p[2]) > 2]
    assert len(texts) == len(SUBTITLE_CUES) and all(c[2].encode() in t for c, t in zip(SUBTITLE_CUES, texts))
    assert_audio_in_sync(src, dst, frame_s=1 / 24)


def test_subtitles_dropped_when_the_container_cannot_hold_them(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=6, subtitles="ass")
    dst = tmp_path / "out.mp4"
    report = run(src, dst, random_weights)
    assert probe(dst)["streams"] == ["video"]
    assert any("subtitle stream" in n and "dropped" in n and "ssa" in n for n in report.notes)
    assert not any("truncated" in n for n in report.notes)  # cues past the video's end are not lost frames
