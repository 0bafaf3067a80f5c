""".ci/run runs README's two commands exactly as README.md writes them, in a fresh virtual
environment without the system's site-packages, and its exit status is pytest's.

The commands themselves run for real on every submission (that is CI); these tests pin the
plumbing: what is run, in which order and environment, how failures propagate, and the check
of the sample's output.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from media_utils import make_clip
from vsr.cli import main as vsr_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ci():
    spec = importlib.util.spec_from_file_location("vsr_ci_readme", REPO / ".ci" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vsr_ci_readme"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def readme_blocks() -> dict[str, str]:
    """README's paragraphs that begin "Run ...", each with the ```sh block that follows it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return {lead: command.strip() for lead, command in
            re.findall(r"^(Run a sample|Run the tests)\b[^\n]*\n\n```sh\n(.*?)\n```", text, re.M | re.S)}


def test_the_plan_is_readmes_two_commands_in_a_fresh_venv(ci, tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert set(blocks) == {"Run a sample", "Run the tests"}
    venv = tmp_path / "venv"
    steps = ci.plan(venv, (REPO / "README.md").read_text(encoding="utf-8"))
    assert [s.argv for s in steps] == [
        [sys.executable, "-m", "venv", str(venv)],  # no --system-site-packages
        ["bash", "-c", blocks["Run a sample"]],
        [str(venv / "bin" / "python"), str(REPO / ".ci" / "readme.py"), "check"],
        ["bash", "-c", blocks["Run the tests"]],  # last: its status is CI's
    ]
    # The sample runs before the dev extra is installed: vsr run must work with the core alone.
    assert "[dev]" not in blocks["Run a sample"] and "[dev]" in blocks["Run the tests"]
    assert f"vsr run {ci.SAMPLE_INPUT}" in blocks["Run a sample"]
    assert f"`{ci.SAMPLE_OUTPUT}`" in (REPO / "README.md").read_text(encoding="utf-8")
    assert blocks["Run the tests"].endswith("python3 -m pytest -q")


def test_ci_run_hands_over_to_the_plan(ci) -> None:
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == "python3 .ci/readme.py run"
    assert not any(re.search(r"\bpip3?\b|\bpytest\b", line) for line in lines)  # nothing installed or tested beside


def test_readme_command_refuses_a_missing_or_odd_block(ci) -> None:
    assert ci.readme_command("Run it:\n\n```sh\nmake  \n```\n", "Run it") == "make"
    for text in ("Nothing here\n", "Run it:\n\n```sh\nmake\n", "Run it:\n\n```python\nx\n```\n",
                 "Run it:\n\n```sh\n\n```\n"):
        with pytest.raises(SystemExit, match="README.md"):
            ci.readme_command(text, "Run it")


class Recorder:
    """A stand-in for subprocess.run: records each call, fails the one numbered ``fail_at``."""

    def __init__(self, fail_at: int | None = None, code: int = 3) -> None:
        self.calls: list[dict] = []
        self.fail_at, self.code = fail_at, code

    def __call__(self, argv, **kwargs):
        self.calls.append({"argv": argv, **kwargs})
        failed = len(self.calls) - 1 == self.fail_at
        return subprocess.CompletedProcess(argv, self.code if failed else 0)


def fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "samples").mkdir(parents=True)
    (repo / "README.md").write_text((REPO / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    return repo


def test_run_executes_the_plan_in_the_venv_and_returns_pytests_status(
    ci, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "elsewhere"))
    repo = fake_repo(tmp_path)
    stale = repo / ci.SAMPLE_OUTPUT
    stale.write_bytes(b"an earlier run's output")
    runner = Recorder(fail_at=3, code=5)
    assert ci.run(repo, runner) == 5  # pytest's status, whatever it is
    assert not stale.exists()  # vsr run would refuse to replace it
    venv = Path(runner.calls[0]["argv"][-1])
    assert [c["argv"] for c in runner.calls] == [s.argv for s in ci.plan(venv, (repo / "README.md").read_text())]
    for call in runner.calls:
        assert call["cwd"] == repo and call["stdin"] == subprocess.DEVNULL
        assert call["env"]["PATH"].startswith(f"{venv / 'bin'}:") and call["env"]["VIRTUAL_ENV"] == str(venv)
        assert "PYTHONPATH" not in call["env"]
    assert not venv.parent.exists()  # the environment is removed afterwards
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"+ {readme_blocks()['Run the tests']}"  # then pytest's own lines close the log


def test_a_failing_step_stops_the_run_with_its_status(ci, tmp_path: Path, capsys) -> None:
    runner = Recorder(fail_at=1, code=7)  # README's sample command
    assert ci.run(fake_repo(tmp_path), runner) == 7
    assert len(runner.calls) == 2
    assert "exit status 7" in capsys.readouterr().out


def test_check_accepts_only_a_whole_x3_upscale_with_the_audio(ci, tmp_path: Path, capsys, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=8, audio={"channels": 1})
    outputs = {}
    for scale in (3, 2):
        outputs[scale] = tmp_path / f"x{scale}.mp4"
        code = vsr_main(["run", str(src), "-o", str(outputs[scale]), "--weights", str(random_weights("espcn-fast", scale)),
                         "--model", "espcn-fast", "--scale", str(scale), "--device", "cpu", "--preset", "ultrafast", "-q"])
        assert code == 0, capsys.readouterr().err
    assert ci.check(src, outputs[3], 3).endswith("192x144, 8 frames, 1 audio stream(s): ok")
    with pytest.raises(SystemExit, match="expected 192x144, 8 frames"):
        ci.check(src, outputs[2], 3)
    with pytest.raises(SystemExit, match="not written"):
        ci.check(src, tmp_path / "missing.mp4", 3)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(outputs[3].read_bytes()[:2000])
    with pytest.raises(SystemExit, match="cut.mp4"):
        ci.check(src, cut, 3)


def test_steps_can_be_interrupted_even_when_ci_starts_with_sigint_ignored(ci) -> None:
    """As a background job of a shell without job control is (then test_faults' SIGINT cases would fail)."""
    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "False"  # inherited
        ci.interruptible()
        assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "True"
    finally:
        signal.signal(signal.SIGINT, before)
