"""Resume: ``vsr run --resume`` continues an interrupted job from its last finished segment.

The joined result has exactly the frames, timestamps, audio and tags of an uninterrupted
run (the video bits differ: each segment is its own encode and starts with a keyframe).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from media_utils import make_clip, probe, stream_packets
from vsr.cli import main as vsr_main
from vsr.config import load_config
from vsr.errors import ConfigError, PipelineError
from vsr.pipeline import Pipeline, Progress
from vsr.resume import MANIFEST, work_folder

REPO = Path(__file__).resolve().parents[1]


class _Crash(Exception):
    """Stands for anything that stops a run half-way (a crash, a power cut: the folder stays)."""


def pipeline(weights: Path, **overrides: Any) -> Pipeline:
    base = {"model.name": "espcn-fast", "model.scale": 2, "model.weights": str(weights), "device": "cpu",
            "encoder.preset": "medium", "resume_segment": 1}  # medium: B-frames, reordered decode times
    return Pipeline(load_config(None, {**base, **overrides}))


def interrupted_run(p: Pipeline, src: Path, dst: Path, after: int) -> None:
    def crash(progress: Progress) -> None:
        if progress.frames == after:
            raise _Crash

    with pytest.raises(PipelineError, match="_Crash"):
        p.run(src, dst, resume=True, progress=crash)


def manifest(dst: Path) -> dict[str, Any]:
    return json.loads((work_folder(dst) / MANIFEST).read_text())


def assert_same_result(plain: Path, resumed: Path) -> None:
    a, b = probe(plain), probe(resumed)
    assert b["frames"] == a["frames"]
    assert b["times"] == pytest.approx(a["times"], abs=1e-9)
    # The last frame's duration is what the decoder makes of B-frame packets: within a frame, as without resume.
    step = min(y - x for x, y in zip(a["times"], a["times"][1:]))
    assert abs(b["duration"] - a["duration"]) <= step + 1e-9
    for key in ("streams", "width", "height", "pix_fmt", "rotation", "sample_aspect_ratio", "time_base"):
        assert b[key] == a[key], key
    assert stream_packets(resumed, "audio") == stream_packets(plain, "audio")
    assert stream_packets(resumed, "subtitle") == stream_packets(plain, "subtitle")
    with av.open(str(resumed)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
        dts = [p.dts for p in packets if p.dts is not None]
        assert dts == sorted(set(dts))  # decode times strictly increase across the joins
        assert all(p.dts is None or p.dts <= p.pts for p in packets)


def leftovers(folder: Path) -> list[str]:
    """Temporary files of the destination (the work folder is not one)."""
    return sorted(p.name for p in folder.iterdir() if ".vsr-" in p.name and not p.name.endswith(".vsr-resume"))


@pytest.mark.parametrize("ext, vfr", [("mp4", False), ("mkv", False), ("mp4", True)])
def test_interrupted_then_resumed_equals_uninterrupted(ext: str, vfr: bool, tmp_path: Path, random_weights) -> None:
    if vfr:  # frames 30 to 70 ms apart, in milliseconds
        pts = [sum(30 + 10 * (i % 5) for i in range(n)) for n in range(90)]
        src = make_clip(tmp_path / f"in.{ext}", frames=90, pts=pts, time_base=Fraction(1, 1000),
                        audio={"channels": 2})
    else:
        src = make_clip(tmp_path / f"in.{ext}", frames=96, audio={"channels": 2}, rotation=90,
                        sample_aspect_ratio=Fraction(4, 3), subtitles=True)
    total = probe(src)["frames"]
    p = pipeline(random_weights("espcn-fast", 2))
    plain, dst = tmp_path / f"plain.{ext}", tmp_path / f"out.{ext}"
    p.run(src, plain)
    assert not work_folder(plain).exists()  # without --resume nothing is kept on the side

    interrupted_run(p, src, dst, after=60)
    assert not dst.exists() and leftovers(tmp_path) == []
    done = manifest(dst)["segments"]
    kept = sum(s["frames"] for s in done)
    assert len(done) >= 1 and 0 < kept < 60
    assert [s["index"] for s in done] == list(range(len(done)))
    assert sorted(x.name for x in work_folder(dst).iterdir()) == sorted([MANIFEST, *(s["file"] for s in done)])

    report = p.run(src, dst, resume=True)
    assert report.frames == total - kept  # started where it stopped, not over
    assert any(f"{kept} frames in {len(done)} finished segment(s) kept" in n for n in report.notes)
    assert_same_result(plain, dst)
    assert not work_folder(dst).exists() and leftovers(tmp_path) == []


def test_resume_without_interruption_and_twice(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=72, audio={"channels": 1})
    p = pipeline(random_weights("espcn-fast", 2))
    p.run(src, tmp_path / "plain.mkv")
    dst = tmp_path / "out.mkv"
    interrupted_run(p, src, dst, after=30)
    first = manifest(dst)["segments"]
    interrupted_run(p, src, dst, after=30)  # interrupted again, further on
    second = manifest(dst)["segments"]
    assert len(second) > len(first) and second[: len(first)] == first
    report = p.run(src, dst, resume=True)
    assert report.frames == 72 - sum(s["frames"] for s in second)
    assert_same_result(tmp_path / "plain.mkv", dst)
    # A --resume run with nothing to resume is an ordinary run, and leaves nothing behind.
    report = p.run(src, tmp_path / "fresh.mkv", resume=True)
    assert report.frames == 72
    assert_same_result(tmp_path / "plain.mkv", tmp_path / "fresh.mkv")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["fresh.mkv", "in.mkv", "out.mkv", "plain.mkv"]


@pytest.mark.parametrize("change", ["input", "settings"])
def test_changed_input_or_settings_start_over(change: str, tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=72)
    p = pipeline(random_weights("espcn-fast", 2))
    dst = tmp_path / "out.mp4"
    interrupted_run(p, src, dst, after=40)
    assert manifest(dst)["segments"]
    if change == "input":
        make_clip(src, frames=48)  # another video under the same name
    else:
        p = pipeline(random_weights("espcn-fast", 2), **{"encoder.crf": 30})
    (work_folder(dst) / ".seg-000001.vsr-deadbeef.mp4").write_bytes(b"half-written by a killed run")
    report = p.run(src, dst, resume=True)
    assert report.frames == probe(src)["frames"]  # everything redone
    assert any("changed since the interrupted run; starting over" in n for n in report.notes)
    assert probe(dst)["times"] == probe(src)["times"]
    assert not work_folder(dst).exists()


def test_half_written_segment_is_discarded(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=72)
    p = pipeline(random_weights("espcn-fast", 2))
    dst = tmp_path / "out.mp4"
    interrupted_run(p, src, dst, after=40)
    folder = work_folder(dst)
    junk = folder / ".seg-000002.vsr-deadbeef.mp4"
    junk.write_bytes(b"half-written by a killed run")
    done = manifest(dst)["segments"]
    (folder / done[-1]["file"]).unlink()  # a finished segment lost: resume from before it
    report = p.run(src, dst, resume=True)
    assert report.frames == 72 - sum(s["frames"] for s in done[:-1])
    assert probe(dst)["times"] == probe(src)["times"]
    assert not folder.exists()


def test_resume_needs_an_output_file(tmp_path: Path, random_weights, capsys) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=3)
    with pytest.raises(ConfigError, match="--resume .* cannot write to standard output"):
        pipeline(random_weights("espcn-fast", 2)).run(src, "-", resume=True)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    code = vsr_main(["run", str(src), "-o", str(dst), "--resume", "--weights", str(random_weights("espcn-fast", 2)),
                     "--model", "espcn-fast", "--scale", "2", "--device", "cpu", "-q"])
    assert code == 1 and "exists; pass -y/--overwrite" in capsys.readouterr().err
    assert dst.read_bytes() == b"precious" and not work_folder(dst).exists()


def test_sigint_then_resume_on_the_command_line(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", width=160, height=120, frames=240, audio={"channels": 2})
    dst = tmp_path / "out.mp4"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("resume_segment: 1\n")
    cmd = [sys.executable, "-m", "vsr", "run", str(src), "-o", str(dst), "--resume", "--config", str(cfg),
           "--weights", str(random_weights("espcn", 2)), "--model", "espcn", "--scale", "2", "--device", "cpu",
           "--preset", "ultrafast", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ((work_folder(dst) / MANIFEST).is_file() and manifest(dst)["segments"]):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert not dst.exists() and leftovers(tmp_path) == []
    kept = sum(s["frames"] for s in manifest(dst)["segments"])
    assert 0 < kept < 240
    report = tmp_path / "report.json"
    done = subprocess.run([*cmd, "--report", str(report)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["frames"] == 240 - kept
    a, b = probe(src), probe(dst)
    assert b["frames"] == 240 and b["times"] == pytest.approx(a["times"], abs=1e-9)
    assert stream_packets(dst, "audio") == stream_packets(src, "audio")
    assert not work_folder(dst).exists()
    assert os.listdir(tmp_path) and leftovers(tmp_path) == []


def test_interrupted_while_joining_only_joins_again(tmp_path: Path, random_weights, monkeypatch) -> None:
    from vsr.resume import SegmentedWriter

    src = make_clip(tmp_path / "in.mp4", frames=60, audio={"channels": 1})
    p = pipeline(random_weights("espcn-fast", 2))
    p.run(src, tmp_path / "plain.mp4")
    dst = tmp_path / "out.mp4"
    real_join = SegmentedWriter._join

    def crash_while_joining(self: SegmentedWriter) -> None:
        raise _Crash

    monkeypatch.setattr(SegmentedWriter, "_join", crash_while_joining)
    with pytest.raises(PipelineError, match="_Crash"):
        p.run(src, dst, resume=True)
    assert not dst.exists() and leftovers(tmp_path) == []
    assert sum(s["frames"] for s in manifest(dst)["segments"]) == 60  # every segment finished
    monkeypatch.setattr(SegmentedWriter, "_join", real_join)
    report = p.run(src, dst, resume=True)
    assert report.frames == 0  # nothing upscaled again
    assert_same_result(tmp_path / "plain.mp4", dst)
    assert not work_folder(dst).exists()


def test_second_resume_of_the_same_destination_is_refused(tmp_path: Path, random_weights, capsys) -> None:
    """Two --resume runs must not share a work folder: the second one is refused until the first ends."""
    from vsr.config import EncoderConfig
    from vsr.media import VideoReader
    from vsr.resume import SegmentedWriter

    weights = random_weights("espcn-fast", 2)
    src = make_clip(tmp_path / "in.mp4", frames=6)
    dst = tmp_path / "out.mp4"
    with VideoReader(src) as reader:
        first = SegmentedWriter(dst, reader, encoder=EncoderConfig(), overwrite=False, settings={}, segment_seconds=1)
        code = vsr_main(["run", str(src), "-o", str(dst), "--resume", "--weights", str(weights),
                         "--model", "espcn-fast", "--scale", "2", "--device", "cpu", "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and "another 'vsr run --resume' is writing it" in err[0], err
        assert (work_folder(dst) / MANIFEST).is_file()  # the first run's folder is untouched
        assert not dst.exists()
        first.abort()
    assert vsr_main(["run", str(src), "-o", str(dst), "--resume", "--weights", str(weights),
                     "--model", "espcn-fast", "--scale", "2", "--device", "cpu", "-q"]) == 0
    assert probe(dst)["frames"] == 6
    assert not work_folder(dst).exists() and leftovers(tmp_path) == []
