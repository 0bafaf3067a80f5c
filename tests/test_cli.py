"""The ``vsr`` command's shell: version, help, unknown commands, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import vsr
from vsr.cli import COMMANDS, main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vsr", *args], capture_output=True, text=True, timeout=120)


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"vsr {vsr.__version__}"


def test_help_lists_every_subcommand() -> None:
    r = run("--help")
    assert r.returncode == 0
    for name, _, _ in COMMANDS:
        assert name in r.stdout


def test_unknown_subcommand_is_one_clear_line() -> None:
    r = run("upscale", "x.mp4")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice: 'upscale'" in lines[0] and "vsr --help" in lines[0]


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "text.mp4").write_text("hello") and d / "text.mp4", "not a readable video file"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "file is empty"),
    ],
)
def test_bad_inputs_get_one_line_and_exit_1(tmp_path, make, message: str) -> None:
    path = make(tmp_path)
    r = run("run", str(path), "-o", str(tmp_path / "out.mp4"))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsr: error: ") and message in lines[0], r.stderr
    assert str(path) in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_debug_shows_the_traceback(tmp_path) -> None:
    r = run("--debug", "run", str(tmp_path / "text.mp4"))
    assert r.returncode == 1 and "vsr: error:" in r.stderr
    (tmp_path / "t.mp4").write_text("x")
    r = run("run", "--debug", str(tmp_path / "t.mp4"), "--weights", str(tmp_path / "none.safetensors"))
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_bad_option_value_names_the_option(tmp_path) -> None:
    r = run("run", str(tmp_path / "x.mp4"), "--crf", "99")
    assert r.returncode == 1 and "encoder.crf must be between 0 and 63, got 99" in r.stderr
