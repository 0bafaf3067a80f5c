"""``vsr run`` on several inputs or a folder: one model load, per-file and total report, failures listed, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vsr.cli.run as run_module
from media_utils import make_clip, probe
from vsr.cli import main as vsr_main


@pytest.fixture
def count_model_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every Pipeline the command builds (each one loads the model)."""
    built: list[object] = []
    original = run_module.Pipeline

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kw: object) -> None:
            built.append(self)
            super().__init__(*args, **kw)

    monkeypatch.setattr(run_module, "Pipeline", Counting)
    return built


def args(weights: Path, *more: str) -> list[str]:
    return ["run", *more, "--weights", str(weights), "--model", "espcn-fast", "--scale", "2", "--device", "cpu",
            "--preset", "ultrafast"]


def test_batch_with_a_bad_file_goes_on_and_exits_1(tmp_path: Path, random_weights, capsys,
                                                    count_model_loads: list[object]) -> None:
    (tmp_path / "in").mkdir()
    good1 = make_clip(tmp_path / "in" / "one.mp4", frames=4)
    bad = tmp_path / "in" / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 but then nothing a decoder wants" * 20)
    good2 = make_clip(tmp_path / "in" / "two.mkv", frames=6, audio={"channels": 1})
    missing = tmp_path / "in" / "missing.mp4"
    out = tmp_path / "out" / "deeper"  # created, parents too
    report = tmp_path / "report.json"
    code = vsr_main(args(random_weights("espcn-fast", 2), str(good1), str(bad), str(missing), str(good2),
                         "-o", str(out), "--report", str(report)))
    err = capsys.readouterr().err
    assert code == 1
    assert len(count_model_loads) == 1  # one model load for the whole batch
    assert sorted(p.name for p in out.iterdir()) == ["one_x2.mp4", "two_x2.mkv"]  # no temp file of the bad one
    assert probe(out / "one_x2.mp4")["frames"] == 4 and probe(out / "two_x2.mkv")["streams"] == ["video", "audio"]
    assert f"failed: {bad}: not a readable video file" in err
    assert f"failed: {missing}: no such file" in err
    total = err.strip().splitlines()[-1]
    assert total.startswith("vsr: 2 of 4 file(s) upscaled, 10 frames") and "2 failed:" in total
    assert str(bad) in total and str(missing) in total
    data = json.loads(report.read_text())
    by_input = {Path(f["input"]).name: f for f in data["files"]}
    assert by_input["one.mp4"]["status"] == "ok" and by_input["one.mp4"]["frames"] == 4
    assert by_input["two.mkv"]["output"] == str(out / "two_x2.mkv") and "fps" in by_input["two.mkv"]
    assert by_input["broken.mp4"]["status"] == "failed" and "not a readable video file" in by_input["broken.mp4"]["error"]
    assert by_input["missing.mp4"]["status"] == "failed"
    assert data["total"]["files"] == 4 and data["total"]["succeeded"] == 2 and data["total"]["frames"] == 10
    assert sorted(Path(p).name for p in data["failed"]) == ["broken.mp4", "missing.mp4"]


def test_folder_input_writes_beside_each_file_and_skips_earlier_outputs(tmp_path: Path, random_weights, capsys,
                                                                       count_model_loads: list[object]) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "a.mp4", frames=3)
    make_clip(folder / "b.mkv", frames=3)
    (folder / "notes.txt").write_text("not a video")
    (folder / "sub").mkdir()
    make_clip(folder / "sub" / "c.mp4", frames=3)  # folders are not searched recursively
    weights = random_weights("espcn-fast", 2)
    code = vsr_main(args(weights, str(folder), "-q"))
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4", "a_x2.mp4", "b.mkv", "b_x2.mkv", "notes.txt", "sub"]
    # Again, with -y: the outputs beside their inputs are not taken for inputs (no a_x2_x2.mp4).
    code = vsr_main(args(weights, str(folder), "-y"))
    err = capsys.readouterr().err
    assert code == 0 and "skipping 2 file(s) named like vsr outputs" in err
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4", "a_x2.mp4", "b.mkv", "b_x2.mkv", "notes.txt", "sub"]
    assert "2 of 2 file(s) upscaled" in err and len(count_model_loads) == 2  # one per command
    # Outputs in another format (-f y4m: a_x2.y4m) are recognised too, on the run after.
    for _ in range(2):
        assert vsr_main(args(weights, str(folder), "-f", "y4m", "-y", "-q")) == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.glob("*.y4m")) == ["a_x2.y4m", "b_x2.y4m"]


def test_existing_output_fails_that_file_only(tmp_path: Path, random_weights, capsys) -> None:
    a = make_clip(tmp_path / "a.mp4", frames=3)
    b = make_clip(tmp_path / "b.mp4", frames=3)
    (tmp_path / "a_x2.mp4").write_bytes(b"precious")
    code = vsr_main(args(random_weights("espcn-fast", 2), str(a), str(b)))
    err = capsys.readouterr().err
    assert code == 1 and "a_x2.mp4 exists; pass -y/--overwrite" in err
    assert (tmp_path / "a_x2.mp4").read_bytes() == b"precious" and probe(tmp_path / "b_x2.mp4")["frames"] == 3


def test_two_inputs_with_one_output_name_are_caught_before_writing(tmp_path: Path, random_weights, capsys) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first = make_clip(tmp_path / "x" / "clip.mp4", frames=3)
    second = make_clip(tmp_path / "y" / "clip.mp4", frames=3)
    code = vsr_main(args(random_weights("espcn-fast", 2), str(first), str(second), "-o", str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert code == 1 and "would also be" in err and "rename one" in err
    assert probe(tmp_path / "out" / "clip_x2.mp4")["frames"] == 3


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: [str(d / "empty")], "is a directory with no video files"),
        (lambda d: [str(d / "a.mp4"), str(d / "nope.mp4")], "-o names a folder, and this is a file"),
        (lambda d: [str(d / "n1.mp4"), str(d / "n2.mp4")], "none of the 2 inputs can be read"),
        (lambda d: [str(d / "a.mp4"), "-"], "standard input (-) cannot be one of several inputs"),
    ],
)
def test_batch_usage_errors_are_one_line(tmp_path: Path, random_weights, capsys, setup, message: str) -> None:
    (tmp_path / "empty").mkdir()
    make_clip(tmp_path / "a.mp4", frames=2)
    target = tmp_path / "a.mp4" if "is a file" in message else tmp_path / "out"
    code = vsr_main(args(random_weights("espcn-fast", 2), *setup(tmp_path), "-o", str(target)))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("vsr: error:") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_single_input_report_is_unchanged(tmp_path: Path, random_weights, capsys) -> None:
    src = make_clip(tmp_path / "a.mp4", frames=3)
    report = tmp_path / "r.json"
    assert vsr_main(args(random_weights("espcn-fast", 2), str(src), "--report", str(report), "-q")) == 0
    data = json.loads(report.read_text())
    assert data["frames"] == 3 and data["input"] == str(src) and "files" not in data
