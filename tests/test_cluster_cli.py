"""``--executor ray`` where no cluster runs: the executor block of the config, a missing extra, a bad address."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media_utils import make_clip
from vsr.cli import main as vsr_main
from vsr.config import config_from_dict, load_config
from vsr.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_executor_block_is_validated_like_the_rest() -> None:
    cfg = config_from_dict({"executor": {"kind": "ray", "address": "10.0.0.1:6379", "segment_seconds": 5,
                                         "cpus_per_worker": 4, "gpus_per_worker": 1, "max_retries": 0}})
    assert cfg.executor.kind == "ray" and cfg.executor.segment_seconds == 5
    with pytest.raises(ConfigError, match=r"executor\.kind must be one of local, ray"):
        config_from_dict({"executor": {"kind": "spark"}})
    with pytest.raises(ConfigError, match=r"unknown key executor\.workers"):
        config_from_dict({"executor": {"workers": 3}})
    with pytest.raises(ConfigError, match=r"executor\.segment_seconds must be an integer >= 1"):
        config_from_dict({"executor": {"segment_seconds": 0}})
    assert load_config(None, {"executor.kind": "ray"}).executor.kind == "ray"


def test_without_ray_one_line_says_how_to_install(tmp_path: Path, capsys, monkeypatch) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=4)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as without the extra
    code = vsr_main(["run", str(src), "--executor", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "pip install 'vsr[ray]'" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_unreachable_address_is_one_line_fast(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    src = make_clip(tmp_path / "in.mp4", frames=4)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vsr", "run", str(src), "--executor", "ray",
                           "--ray-address", "127.0.0.1:1"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert time.monotonic() - t0 < 30
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "127.0.0.1:1" in lines[0] and "no Ray cluster answers" in lines[0]


def test_standard_streams_need_the_local_executor(tmp_path: Path, capsys) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=4)
    assert vsr_main(["run", str(src), "-o", "-", "--executor", "ray"]) == 1
    assert "--executor local" in capsys.readouterr().err


def test_ray_sends_no_usage_report_unless_the_user_asks(monkeypatch) -> None:
    """Ray reports usage to its vendor over the internet by default; a Ray reached through vsr does not."""
    pytest.importorskip("ray")
    from vsr.cluster._connect import import_ray

    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    import_ray(None)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user's own choice stands
    import_ray("10.0.0.1:6379")
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


def test_a_cluster_that_refuses_the_driver_names_token_authentication(monkeypatch) -> None:
    """Ray's own error says only that it failed to connect; the line says what to set when the cluster wants a token."""
    from vsr.cluster import _connect

    class FakeRay:
        @staticmethod
        def is_initialized() -> bool:
            return False

        @staticmethod
        def init(**kwargs) -> None:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379.\nmore")

    monkeypatch.setattr(_connect, "import_ray", lambda address=None: FakeRay)
    monkeypatch.setattr(_connect, "_probe", lambda address: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(ConfigError) as err:
        _connect.connect("127.0.0.1:6379")
    message = str(err.value)
    assert "\n" not in message and "cannot join the Ray cluster (Failed to connect" in message
    assert "RAY_AUTH_MODE=token" in message
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # set already: no advice to set it
    with pytest.raises(ConfigError) as err:
        _connect.connect("127.0.0.1:6379")
    assert "RAY_AUTH_MODE" not in str(err.value)


def test_the_driver_counts_segments_in_flight_from_the_workers_last_answers() -> None:
    """ClusterJob._frames_done: recorded segments plus each busy worker's last answer, never waiting for one."""
    from types import SimpleNamespace

    from vsr.cluster._job import ClusterJob, FileJob, _Worker

    answers: dict[str, tuple[str | None, int]] = {}  # ref -> what the worker said; absent: not answered yet

    class FakeRay:
        @staticmethod
        def wait(refs, num_returns, timeout):
            assert timeout == 0  # never blocks the driver's loop
            return [r for r in refs if r in answers], [r for r in refs if r not in answers]

        @staticmethod
        def get(ref):
            return answers[ref]

    def actor(name: str):
        calls = iter(range(2, 100))
        return SimpleNamespace(progress=SimpleNamespace(remote=lambda: f"{name}{next(calls)}"))

    f = FileJob("in.mp4", "out.mkv")
    f.results = {0: {"frames": 100}}
    key = f"{id(f)}:"  # the driver's segment keys
    job = ClusterJob.__new__(ClusterJob)  # only the state _frames_done reads
    job.ray, job.files = FakeRay(), [f]
    busy = _Worker(actor("a"), {}, busy=True, progress_ref="a1")
    slow = _Worker(actor("b"), {}, busy=True, progress_ref="b1", partial=(key + "2", 7))
    job.workers = [busy, slow]
    inflight = {"r1": (busy, f, SimpleNamespace(index=1)), "r2": (slow, f, SimpleNamespace(index=2))}
    answers["a1"] = (key + "1", 30)  # a answered (30 frames of segment 1); b has not: its last answer stands
    assert job._frames_done(inflight) == 100 + 30 + 7
    assert busy.progress_ref == "a2" and slow.progress_ref == "b1"  # asked again only once answered
    busy.busy = False
    del inflight["r1"]
    f.results[1] = {"frames": 40}  # segment 1 recorded: its last partial no longer counts
    answers["a2"] = (key + "1", 40)
    assert job._frames_done(inflight) == 100 + 40 + 7
