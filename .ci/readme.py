"""README's two commands, run as a new user runs them, for .ci/run.

A package this machine happens to have must never hide one that setup.py fails to declare,
so the commands run in a fresh virtual environment made without the system's site-packages
(in a temporary folder, removed afterwards), with no PYTHONPATH, and exactly as README.md
writes them: they are read from README.md itself (the ``sh`` block after the paragraph that
begins "Run a sample", and the one after "Run the tests"), so CI and README cannot drift.

1. "Run a sample": installs vsr without its extras and upscales the bundled clip; its output
   is then checked (a whole video, 3× the clip's size, every frame, audio kept). A previous
   output is removed first (it is git-ignored; `vsr run` would refuse to replace it).
2. "Run the tests": installs the ``dev`` extra into the same environment and runs pytest, whose
   exit status is this script's and whose closing summary line is the last line printed.

Standard library only: it runs on the machine's python3 before anything is installed
(``check`` runs inside the new environment, where vsr's own dependencies are).

    python3 .ci/readme.py run       # what .ci/run does
    python3 .ci/readme.py plan      # print the steps without running them
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_LEAD, TESTS_LEAD = "Run a sample", "Run the tests"
SAMPLE_INPUT = "samples/stream-of-water.mp4"
SAMPLE_OUTPUT = "samples/stream-of-water_x3.mp4"  # vsr run's default name at the default scale, 3
SAMPLE_SCALE = 3


def readme_command(text: str, lead: str) -> str:
    """The command in the first fenced ``sh`` block after the line that begins with ``lead``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(lead)), None)
    if start is None:
        raise SystemExit(f"ci: README.md has no paragraph beginning {lead!r}")
    try:
        fence = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
    except StopIteration:
        raise SystemExit(f"ci: README.md has no closed code block after {lead!r}") from None
    command = "\n".join(lines[fence + 1:end]).strip()
    if lines[fence].strip() != "```sh" or not command:
        raise SystemExit(f"ci: the block after {lead!r} in README.md is not a non-empty ```sh block")
    return command


@dataclass(frozen=True)
class Step:
    title: str
    argv: list[str]


def plan(venv: Path, readme: str) -> list[Step]:
    """What .ci/run runs, in order; the last step's exit status is the run's."""
    python = str(venv / "bin" / "python")
    return [
        Step("a fresh virtual environment, without the system's site-packages",
             [sys.executable, "-m", "venv", str(venv)]),
        Step(f"README, {SAMPLE_LEAD!r}", ["bash", "-c", readme_command(readme, SAMPLE_LEAD)]),
        Step("the sample's output is a whole video", [python, str(Path(__file__).resolve()), "check"]),
        Step(f"README, {TESTS_LEAD!r}", ["bash", "-c", readme_command(readme, TESTS_LEAD)]),
    ]


def activated(venv: Path) -> dict[str, str]:
    """The environment ``source VENV/bin/activate`` gives, less PYTHONPATH and PYTHONHOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def interruptible() -> None:
    """Let the steps' processes be interrupted, however this script was started.

    A shell without job control starts a background command (``bash .ci/run &``, nohup)
    with SIGINT ignored, and every child inherits that: Python then installs no
    KeyboardInterrupt handler, and the tests that interrupt ``vsr run`` see it run to the
    end. A handled signal is reset to its default across exec, an ignored one is not.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(repo: Path = REPO, runner=subprocess.run) -> int:
    """Run :func:`plan` in ``repo`` (``runner`` is :func:`subprocess.run`, or a stand-in in tests)."""
    interruptible()
    readme = (repo / "README.md").read_text(encoding="utf-8")
    venv = Path(tempfile.mkdtemp(prefix="vsr-ci-")) / "venv"
    try:
        steps = plan(venv, readme)  # README read before anything runs
        output = repo / SAMPLE_OUTPUT
        if output.exists():
            print(f"ci: removing {SAMPLE_OUTPUT} left by an earlier run", flush=True)
            output.unlink()
        for step in steps:
            shown = step.argv[-1] if step.argv[:2] == ["bash", "-c"] else shlex.join(step.argv)
            print(f"ci: {step.title}\n+ {shown}", flush=True)
            code = runner(step.argv, cwd=repo, env=activated(venv), stdin=subprocess.DEVNULL).returncode
            if code != 0:
                if step is not steps[-1]:  # after the tests, pytest's summary stays the last line
                    print(f"ci: failed ({step.title}), exit status {code}", flush=True)
                return code
        return 0
    finally:
        shutil.rmtree(venv.parent, ignore_errors=True)


def check(source: Path = REPO / SAMPLE_INPUT, output: Path = REPO / SAMPLE_OUTPUT, scale: int = SAMPLE_SCALE) -> str:
    """Whether ``output`` is ``source`` upscaled: every frame decodes, at ``scale``× its size, with its audio.

    Returns a one-line summary; raises SystemExit with a one-line reason otherwise.
    """
    import av  # in the new environment, installed with vsr

    def describe(path: Path) -> tuple[int, int, int, list[str]]:
        try:
            with av.open(str(path)) as c:
                v = c.streams.video[0]
                frames = sum(1 for _ in c.decode(v))
                return v.codec_context.width, v.codec_context.height, frames, [s.type for s in c.streams.audio]
        except (av.FFmpegError, IndexError) as exc:
            raise SystemExit(f"ci: {path}: not a whole video ({exc})") from None

    if not output.is_file():
        raise SystemExit(f"ci: {output}: not written")
    w, h, n, audio = describe(source)
    got = describe(output)
    if got != (scale * w, scale * h, n, audio):
        raise SystemExit(f"ci: {output}: {got[0]}x{got[1]}, {got[2]} frames, audio {got[3]}; "
                         f"expected {scale * w}x{scale * h}, {n} frames, audio {audio}")
    return f"ci: {output.name}: {got[0]}x{got[1]}, {n} frames, {len(audio)} audio stream(s): ok"


def main(argv: list[str]) -> int:
    if argv == ["run"]:
        return run()
    if argv == ["plan"]:
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        for step in plan(Path(tempfile.gettempdir()) / "vsr-ci-XXXX" / "venv", readme):
            print(f"{step.title}: {shlex.join(step.argv)}")
        return 0
    if argv == ["check"]:
        print(check(), flush=True)
        return 0
    print("usage: python3 .ci/readme.py run|plan|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
