"""Faults: signals mid-run, a full disk, an unwritable destination, a failing stage — never a partial
file, never a clobbered destination, never a hang."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from media_utils import make_clip
from vsr.config import load_config
from vsr.errors import EncodeError, MediaError, PipelineError
from vsr.media import VideoReader, VideoWriter
from vsr.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]


def cli(src: Path, dst: Path, weights: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vsr", "run", str(src), "-o", str(dst), "--weights", str(weights),
            "--model", "espcn", "--scale", "2", "--device", "cpu", "--preset", "ultrafast", "-q", *extra]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".vsr-" in p.name)


def wait_until_mid_run(proc: subprocess.Popen, folder: Path) -> None:
    """Until the run's temporary file for ``out.*`` exists and holds encoded frames."""
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 20_000 for p in folder.glob(".out.vsr-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough (many seconds of CPU work) that a signal always lands mid-run."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", width=320, height=240, frames=300,
                     audio={"channels": 2})


@pytest.mark.parametrize("sig, code, existing", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)])
def test_signal_mid_run_leaves_no_partial_file(
    sig: int, code: int, existing: bool, long_clip: Path, tmp_path: Path, random_weights
) -> None:
    dst = tmp_path / "out.mp4"
    if existing:
        dst.write_bytes(b"precious")
    proc = subprocess.Popen(cli(long_clip, dst, random_weights("espcn", 2), *(["-y"] if existing else [])),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_mid_run(proc, tmp_path)
        t_signal = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - t_signal
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip() in ("vsr: interrupted", "vsr: terminated"), err
    assert stopped_in < 10
    assert leftovers(tmp_path) == []
    if existing:
        assert dst.read_bytes() == b"precious"
    else:
        assert not dst.exists()


def test_file_size_limit_is_a_clear_error(tmp_path: Path, random_weights) -> None:
    """A full disk, as the kernel reports a file-size limit: EFBIG on write (RLIMIT_FSIZE)."""
    src = make_clip(tmp_path / "in.mp4", width=96, height=64, frames=48)
    dst = tmp_path / "out.mp4"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    proc = subprocess.run(cli(src, dst, random_weights("espcn", 2), "--crf", "0"), cwd=REPO, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("vsr: error: ") and str(dst) in lines[0], proc.stderr
    assert "File too large" in lines[0]
    assert leftovers(tmp_path) == [] and not dst.exists()


class _FullDisk:
    """An output container whose disk fills after ``packets`` muxed packets (or at the trailer)."""

    def __init__(self, container: Any, packets: int | None) -> None:
        self._c, self._left, self._closing_fails = container, packets, packets is None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)

    def mux(self, packets: Any) -> None:
        if self._left is not None:
            self._left -= 1
            if self._left < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._c.mux(packets)

    def close(self) -> None:
        if self._closing_fails:
            self._closing_fails = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._c.close()


def pipeline(weights: Path, **overrides: Any) -> Pipeline:
    base = {"model.name": "espcn-fast", "model.scale": 2, "model.weights": str(weights), "device": "cpu",
            "encoder.preset": "ultrafast"}
    return Pipeline(load_config(None, {**base, **overrides}))


@pytest.mark.parametrize("packets", [10, None], ids=["while-writing", "at-the-trailer"])
def test_disk_full_removes_the_temporary_file(packets: int | None, tmp_path: Path, random_weights,
                                              monkeypatch) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=30, audio={"channels": 1})
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    real_init = VideoWriter.__init__

    def init(self: VideoWriter, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self.container = _FullDisk(self.container, packets)

    monkeypatch.setattr(VideoWriter, "__init__", init)
    with pytest.raises(EncodeError, match=r"out\.mp4: cannot (write|finish the file) \(No space left on device\)"):
        pipeline(random_weights("espcn-fast", 2)).run(src, dst, overwrite=True)
    assert leftovers(tmp_path) == []
    assert dst.read_bytes() == b"precious"


def test_unwritable_destination(tmp_path: Path, random_weights) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=5)
    p = pipeline(random_weights("espcn-fast", 2))
    # procfs refuses new files even to root, so this holds whoever runs the tests.
    with pytest.raises(EncodeError, match=r"/proc/vsr-test-out\.mp4: cannot (write|create)"):
        p.run(src, "/proc/vsr-test-out.mp4")
    assert not any(".vsr-" in name for name in os.listdir("/proc"))
    with pytest.raises(EncodeError, match="folder .* does not exist"):
        p.run(src, tmp_path / "no" / "such" / "out.mp4")
    if os.geteuid() != 0:  # root writes anywhere: the permission check can only be seen as a user
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(EncodeError, match="is not writable"):
            p.run(src, ro / "out.mp4")
    assert leftovers(tmp_path) == []


# -- a failing stage stops everything, promptly ------------------------------------------------

def _run_with_watchdog(fn: Callable[[], Any], timeout: float = 30.0) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it has not returned after ``timeout`` seconds."""
    outcome: list[BaseException | None] = []

    def body() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"the pipeline hung for more than {timeout} s after a stage failed"
    return outcome[0]


@pytest.mark.parametrize("stage", ["decode", "infer", "encode", "encode-bug"])
def test_failing_stage_stops_the_pipeline(stage: str, long_clip: Path, tmp_path: Path, random_weights,
                                          monkeypatch) -> None:
    frames_written: list[int] = []
    real_write, real_iter = VideoWriter.write, VideoReader.__iter__

    def write(self: VideoWriter, item: Any) -> None:
        real_write(self, item)
        frames_written.append(self.frames)
        if stage.startswith("encode") and self.frames == 5:
            if stage == "encode":
                raise EncodeError(f"{self.path}: cannot write (injected)")
            raise ZeroDivisionError("injected bug")

    def iterate(self: VideoReader):  # noqa: ANN202
        for item in real_iter(self):
            yield item
            if self.frames_decoded == 20:
                raise MediaError(f"{self.path}: cannot read past this point (injected)")

    monkeypatch.setattr(VideoWriter, "write", write)
    if stage == "decode":
        monkeypatch.setattr(VideoReader, "__iter__", iterate)
    p = pipeline(random_weights("espcn-fast", 2), queue_depth=2)
    if stage == "infer":
        calls = []
        real_batch = p._upscale_batch

        def upscale(jobs: list) -> None:
            calls.append(len(jobs))
            if len(calls) == 8:
                raise RuntimeError("injected inference failure")
            real_batch(jobs)

        monkeypatch.setattr(p, "_upscale_batch", upscale)
    dst = tmp_path / "out.mp4"
    t0 = time.monotonic()
    exc = _run_with_watchdog(lambda: p.run(long_clip, dst))
    elapsed = time.monotonic() - t0
    expected = {
        "decode": (MediaError, "cannot read past this point (injected)"),
        "infer": (PipelineError, "infer stage failed: RuntimeError: injected inference failure"),
        "encode": (EncodeError, "cannot write (injected)"),
        "encode-bug": (PipelineError, "encode stage failed: ZeroDivisionError: injected bug"),
    }[stage]
    assert isinstance(exc, expected[0]) and expected[1] in str(exc), repr(exc)
    assert max(frames_written, default=0) < 40  # stopped there, did not run on through 300 frames
    assert elapsed < 20
    assert not dst.exists() and leftovers(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("vsr-")]  # no stage left behind


@pytest.mark.parametrize("hard_links", [True, False])
def test_destination_that_appears_mid_run_is_never_replaced(
    hard_links: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program creates the destination while vsr writes: at close, vsr refuses to replace it."""
    from vsr.config import EncoderConfig
    from vsr.errors import OutputExistsError

    if not hard_links:  # a file system without hard links takes the check-then-rename path
        def no_link(*args: Any) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=6)
    dst = tmp_path / "out.mp4"
    with VideoReader(src) as reader:
        writer = VideoWriter(dst, reader, encoder=EncoderConfig(), overwrite=False)
        for item in reader:
            writer.write(item)
        dst.write_bytes(b"someone else's")
        with pytest.raises(OutputExistsError, match="appeared while vsr was writing"):
            writer.close()
    assert dst.read_bytes() == b"someone else's"
    assert leftovers(tmp_path) == []


def test_sigkill_leftover_is_removed_by_the_next_run(long_clip: Path, tmp_path: Path, random_weights) -> None:
    """SIGKILL gives no chance to clean up; the next run to that destination removes what it left."""
    dst = tmp_path / "out.mp4"
    weights = random_weights("espcn", 2)
    proc = subprocess.Popen(cli(long_clip, dst, weights), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until_mid_run(proc, tmp_path)
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    left = leftovers(tmp_path)
    assert len(left) == 1 and not dst.exists()
    old = time.time() - 3600  # the leftover of a run killed an hour ago
    os.utime(tmp_path / left[0], (old, old))
    short = make_clip(tmp_path / "short.mp4", width=64, height=48, frames=4)
    done = subprocess.run(cli(short, dst, weights), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert dst.is_file() and leftovers(tmp_path) == []


def test_only_unlocked_old_temp_files_are_taken_for_stale(tmp_path: Path) -> None:
    from vsr import _filelock
    from vsr.media._writer import STALE_AFTER_S, remove_stale_temp_files

    dst = tmp_path / "out.mp4"
    old = time.time() - 10 * STALE_AFTER_S
    names = {
        "stale": ".out.vsr-deadbeef.mp4",  # old, nobody writing: removed
        "live": ".out.vsr-0123abcd.mp4",  # old, but a running writer holds its lock
        "young": ".out.vsr-cafe0123.mp4",  # nobody holds it yet: may be a writer about to lock it
        "other_output": ".other.vsr-deadbeef.mp4",
        "other_suffix": ".out.vsr-deadbeef.mkv",
        "not_ours": ".out.vsr-notahexid.mp4",
    }
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x")
        if key != "young":
            os.utime(tmp_path / name, (old, old))
    held = _filelock.lock(tmp_path / names["live"], create=False)
    try:
        removed = remove_stale_temp_files(dst)
    finally:
        _filelock.unlock(held)
    assert [p.name for p in removed] == [names["stale"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "stale")
