"""Bad input on the command line: one line naming the file and the problem, exit 1, no traceback.

A truncated file whose first part still decodes gives the frames it holds and a warning
that says how many were lost (the decision documented in README, "What vsr guarantees").
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from media_utils import make_clip, probe
from vsr.cli import main as vsr_main


def run_cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = vsr_main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def base_args(weights: Path, dst: Path) -> list[str]:
    return ["-o", str(dst), "--weights", str(weights), "--model", "espcn-fast", "--scale", "2",
            "--device", "cpu", "--preset", "ultrafast", "-q"]


def assert_one_line_error(err: str, path: Path, problem: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vsr: error: "), err
    assert str(path) in lines[0], err
    assert problem in lines[0], err
    assert "Traceback" not in err


def faststart_copy(src: Path, dst: Path) -> Path:
    """Remux an mp4 with its index (moov) first, as web videos are."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
        for start in range(0, 44100, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, start
            for p in a.encode(f):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    return path


def garbage_stream(src: Path, dst: Path) -> Path:
    """Keep the container header, replace the coded video with noise: a stream nothing decodes."""
    data = bytearray(src.read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, len(data) - 800, dtype=np.uint8).tobytes()
    data[600:-200] = noise
    dst.write_bytes(bytes(data))
    return dst


def make_bad(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A bad input of the given kind and the words its error must contain."""
    if kind == "missing":
        return tmp_path / "nope.mp4", "no such file"
    if kind == "directory":
        d = tmp_path / "folder.mp4"
        d.mkdir()
        return d, "is a directory"
    if kind == "text":
        p = tmp_path / "notes.mp4"
        p.write_text("this is not a video\n" * 20)
        return p, "not a readable video file"
    if kind == "empty":
        p = tmp_path / "empty.mp4"
        p.touch()
        return p, "file is empty"
    if kind == "truncated-moov-at-end":
        src = make_clip(tmp_path / "whole.mp4", frames=24)
        return truncate(src, tmp_path / "cut.mp4"), "not a readable video file"
    if kind == "audio-only":
        return audio_only(tmp_path / "song.m4a"), "has no video stream"
    if kind == "unreadable-stream":
        src = make_clip(tmp_path / "whole.mkv", frames=24)
        return garbage_stream(src, tmp_path / "noise.mkv"), "no video frame could be decoded"
    raise AssertionError(kind)


KINDS = ["missing", "directory", "text", "empty", "truncated-moov-at-end", "audio-only", "unreadable-stream"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_one_line_exit_1(kind: str, tmp_path: Path, capsys, random_weights) -> None:
    src, problem = make_bad(kind, tmp_path)
    dst = tmp_path / "out.mp4"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli(capsys, [str(src), *base_args(random_weights("espcn-fast", 2), dst)])
    assert code == 1
    assert out == ""
    assert_one_line_error(err, src, problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary file


def test_debug_shows_the_traceback(tmp_path: Path, capsys, random_weights) -> None:
    src, problem = make_bad("text", tmp_path)
    code = vsr_main(["--debug", "run", str(src), *base_args(random_weights("espcn-fast", 2), tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("vsr: error: ")
    assert problem in err


@pytest.mark.parametrize("container", ["faststart.mp4", "mkv"])
def test_truncated_file_gives_what_it_holds_and_says_what_was_lost(
    container: str, tmp_path: Path, capsys, random_weights
) -> None:
    whole = make_clip(tmp_path / f"whole.{container.split('.')[-1]}", frames=48, audio={"channels": 1})
    if container == "faststart.mp4":
        whole = faststart_copy(whole, tmp_path / "fast.mp4")
    cut = truncate(whole, tmp_path / f"cut{whole.suffix}")
    dst = tmp_path / f"out{whole.suffix}"
    code, out, err = run_cli(capsys, [str(cut), *base_args(random_weights("espcn-fast", 2), dst)])
    assert code == 0, err
    got = probe(dst)
    full = probe(whole)
    assert 0 < got["frames"] < 48
    assert got["times"] == pytest.approx(full["times"][: got["frames"]], abs=1e-6)  # a clean prefix
    lost = 48 - got["frames"]
    warnings = [line for line in err.splitlines() if "truncated" in line]
    assert len(warnings) == 1, err
    assert str(cut) in warnings[0] and f"{lost} of 48 frames" in warnings[0], warnings[0]
    assert "Traceback" not in err


def test_whole_file_has_no_loss_warning(tmp_path: Path, capsys, random_weights) -> None:
    for name in ("a.mkv", "b.mp4"):
        src = make_clip(tmp_path / name, frames=30, audio={"channels": 1})
        code, _, err = run_cli(capsys, [str(src), *base_args(random_weights("espcn-fast", 2), tmp_path / f"o_{name}")])
        assert code == 0 and "truncated" not in err and "lost" not in err, err
