"""Edit lists: an MP4 trimmed without re-encoding shows only part of what it stores.

``ffmpeg -ss 0.7 -i in.mp4 -c copy out.mp4`` (and phone editors) keep the frames from the
keyframe before the edit point: they are decoded but never shown. An edit list may also stop
before the last stored frame. vsr upscales what the container shows: those frames, with their
timestamps, the audio as the input aligns it, and no truncation warning; a file so trimmed and
then cut off still warns, counting the frames it shows.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from media_utils import probe, stream_packets
from vsr.cli import main as vsr_main
from vsr.media import VideoReader

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "stream-of-water.mp4"  # 90 frames, with audio

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg binary is not installed")


def trim(dst: Path, *options: str) -> Path:
    """``ffmpeg -ss 0.7 -i SAMPLE -c copy dst``: an edit list whose start is not a keyframe."""
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-ss", "0.7", "-i", str(SAMPLE), "-c", "copy",
                    *options, str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trim(tmp_path_factory.mktemp("edit") / "trimmed.mp4")


def stored_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return c.streams.video[0].frames


def _children(data: bytes | bytearray, start: int, end: int):
    """The ISO BMFF boxes directly inside ``data[start:end]``, as (type, start, end)."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if size < 8:
            raise ValueError("unexpected box size (64-bit or to-end boxes are not handled here)")
        yield kind, start, start + size
        start += size


def shorten_video_edit(src: Path, dst: Path, seconds: float) -> Path:
    """Copy ``src`` with its video edit list shown for ``seconds`` only (an end trim, as editors write)."""
    data = bytearray(src.read_bytes())
    moov = next((s, e) for k, s, e in _children(data, 0, len(data)) if k == b"moov")
    timescale = None
    for kind, s, e in _children(data, moov[0] + 8, moov[1]):
        if kind == b"mvhd":  # version 0: version/flags, creation, modification, then the timescale
            timescale = struct.unpack(">I", data[s + 20:s + 24])[0]
        if kind != b"trak":
            continue
        boxes = {k: (bs, be) for k, bs, be in _children(data, s + 8, e)}
        mdia = {k: (bs, be) for k, bs, be in _children(data, boxes[b"mdia"][0] + 8, boxes[b"mdia"][1])}
        if data[mdia[b"hdlr"][0] + 16:mdia[b"hdlr"][0] + 20] != b"vide":
            continue
        elst = next(bs for k, bs, _ in _children(data, boxes[b"edts"][0] + 8, boxes[b"edts"][1]) if k == b"elst")
        assert data[elst + 8] == 0 and struct.unpack(">I", data[elst + 12:elst + 16])[0] == 1  # v0, one entry
        data[elst + 16:elst + 20] = struct.pack(">I", round(seconds * timescale))  # segment_duration
        dst.write_bytes(data)
        return dst
    raise AssertionError("no video track with an edit list")


def run(src: Path, dst: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``vsr run`` with the shipped espcn-fast x2 weights (the output must look like the input)."""
    code = vsr_main(["run", str(src), "-o", str(dst), "--model", "espcn-fast", "--scale", "2",
                     "--device", "cpu", "--preset", "ultrafast", "-q"])
    return code, capsys.readouterr().err


def lumas(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray").astype(np.float32) for f in c.decode(video=0)]


def audio_span(path: Path) -> tuple[float, float]:
    """The audio stream's start and duration in seconds, as the container presents them."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return float(a.start_time * a.time_base), float(a.duration * a.time_base)


def test_trimmed_mp4_upscales_the_frames_it_shows(trimmed: Path, tmp_path: Path, capsys) -> None:
    shown = probe(trimmed)
    hidden = stored_frames(trimmed) - shown["frames"]
    assert hidden > 0 and shown["frames"] > 0  # the fixture has frames decoded only to be discarded
    with VideoReader(trimmed) as reader:
        assert reader.info.frames == shown["frames"]  # the progress total

    dst = tmp_path / "out.mp4"
    code, err = run(trimmed, dst, capsys)
    assert code == 0, err
    assert "truncated" not in err and "ends early" not in err, err
    got = probe(dst)
    assert (got["width"], got["height"]) == (2 * shown["width"], 2 * shown["height"])
    assert got["frames"] == shown["frames"]
    assert got["times"] == pytest.approx(shown["times"], abs=1e-6)
    # Audio as the input presents it: same span, same packets at the same times.
    assert audio_span(dst) == pytest.approx(audio_span(trimmed), abs=1e-3)
    assert stream_packets(dst, "audio") == stream_packets(trimmed, "audio")
    # The right pictures: each output frame, scaled back, is nearest to the sample's frame
    # `hidden` places on (the first shown one is the sample's frame `hidden`).
    sample = lumas(SAMPLE)
    out = lumas(dst)
    for i in (0, len(out) // 2, len(out) - 1):
        small = cv2.resize(out[i], (shown["width"], shown["height"]), interpolation=cv2.INTER_AREA)
        errors = [float(np.abs(small - frame).mean()) for frame in sample]
        assert int(np.argmin(errors)) == i + hidden, (i, errors)


def test_edit_list_ending_before_the_last_frame(trimmed: Path, tmp_path: Path, capsys) -> None:
    both = shorten_video_edit(trimmed, tmp_path / "both.mp4", 1.0)
    shown, full = probe(both), probe(trimmed)
    assert 0 < shown["frames"] < full["frames"] and stored_frames(both) == stored_frames(trimmed)
    dst = tmp_path / "out.mp4"
    code, err = run(both, dst, capsys)
    assert code == 0, err
    assert "truncated" not in err and "ends early" not in err, err
    got = probe(dst)
    assert got["frames"] == shown["frames"]
    assert got["times"] == pytest.approx(shown["times"], abs=1e-6)


def test_trimmed_mp4_cut_off_still_warns(tmp_path: Path, capsys) -> None:
    whole = trim(tmp_path / "trimmed.mp4", "-movflags", "+faststart")  # index first: a cut keeps it
    shown = probe(whole)["frames"]
    assert stored_frames(whole) > shown
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    dst = tmp_path / "out.mp4"
    code, err = run(cut, dst, capsys)
    assert code == 0, err
    got = probe(dst)
    assert 0 < got["frames"] < shown
    assert got["times"] == pytest.approx(probe(whole)["times"][: got["frames"]], abs=1e-6)
    warnings = [line for line in err.splitlines() if "ends early" in line]
    assert len(warnings) == 1, err
    assert f"{shown - got['frames']} of {shown} frames" in warnings[0], warnings[0]
