"""The Ray executor (``vsr run --executor ray``) on a real two-node Ray cluster on this machine.

Every node listens on loopback only (``node_ip_address="127.0.0.1"`` and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set before Ray is imported), with a small object
store and no dashboard. One cluster serves the whole module; clips are tiny and cut into
one-second segments at keyframes, so that every file spans several workers.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported, anywhere
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # and no usage report leaves the machine

import re
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from media_utils import make_clip, probe, stream_packets
from vsr.cli import main as vsr_main
from vsr.config import config_from_dict, load_config
from vsr.errors import ConfigError
from vsr.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from vsr import cluster as vsr_cluster  # noqa: E402
from vsr.cluster import _job  # noqa: E402

NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 * 1024 * 1024,
        "include_dashboard": False}
# x264 'medium' writes B-frames, so decode times are reordered and the joins must fix them.
BFRAMES = {"preset": "medium", "crf": "18"}


@pytest.fixture(scope="module")
def s3_server():
    """A local S3 (moto's server mode) on 127.0.0.1, started before the cluster so that its nodes see its address."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"FSSPEC_S3_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    pytest.importorskip("s3fs")
    import fsspec.config

    fsspec.config.set_conf_env(fsspec.config.conf)  # fsspec reads its environment once, at import
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def ray_cluster(request):
    try:  # the S3 server's address must be in the environment the nodes inherit
        request.getfixturevalue("s3_server")
    except pytest.skip.Exception:
        pass
    c = Cluster(initialize_head=True, head_node_args=dict(NODE))
    c.add_node(**NODE)
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    vfr_pts = list(np.cumsum([0] + [30 + 20 * (i % 3) for i in range(79)]))  # 30 to 70 ms apart
    return {
        "bframes": make_clip(d / "bframes.mp4", frames=72, gop=24, encoder_options=BFRAMES,
                             audio={"channels": 1}, subtitles=True),
        "vfr": make_clip(d / "vfr.mkv", frames=80, gop=10, pts=[int(p) for p in vfr_pts],
                         time_base=Fraction(1, 1000), encoder_options=BFRAMES, subtitles=True),
        "long": make_clip(d / "long.mp4", frames=144, gop=24, encoder_options=BFRAMES),
    }


def config(weights: Path, **overrides: Any):
    base = {"model.name": "espcn-fast", "model.scale": 2, "model.weights": str(weights), "device": "cpu",
            "precision": "fp32", "encoder.codec": "ffv1", "executor.segment_seconds": 1,
            "executor.cpus_per_worker": 1, "progress": "never"}
    return load_config(None, {**base, **overrides})


def decoded(path: Path) -> list[tuple[int, list[bytes]]]:
    with av.open(str(path)) as c:
        return [(f.pts, [bytes(p) for p in f.planes]) for f in c.decode(video=0)]


def assert_same(local: Path, remote: Path) -> None:
    """Frames bit-identical (lossless codec), timestamps, duration, audio and subtitles as the local run."""
    a, b = probe(local), probe(remote)
    for key in ("frames", "times", "streams", "width", "height", "pix_fmt", "time_base"):
        assert b[key] == a[key], key
    # The last frame's duration is what the muxer stores for the last packet: within one frame, as with --resume.
    step = max(y - x for x, y in zip(a["times"], a["times"][1:]))
    assert abs(b["duration"] - a["duration"]) <= step + 1e-9
    assert decoded(remote) == decoded(local)
    # Audio: the same packets at the same times. One known difference, shared with --resume's join: an AAC
    # priming packet (negative time in MP4) written to Matroska keeps its duration field in the join, while
    # the streaming run's muxer leaves it out (0); the payload and time are the same.
    ra, la = stream_packets(remote, "audio"), stream_packets(local, "audio")
    assert [[(t, data) for t, _, data in s] for s in ra] == [[(t, data) for t, _, data in s] for s in la]
    assert [[d for _, d, _ in s[1:]] for s in ra] == [[d for _, d, _ in s[1:]] for s in la]
    assert stream_packets(remote, "subtitle") == stream_packets(local, "subtitle")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def vsr_actors() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("vsr-")]


def wait_no_actors(timeout: float = 20.0) -> list[str]:
    end = time.monotonic() + timeout
    while vsr_actors() and time.monotonic() < end:
        time.sleep(0.2)
    return vsr_actors()


# -- same result ---------------------------------------------------------------------------------
def test_same_output_as_a_local_run(ray_cluster, clips, tmp_path: Path, random_weights) -> None:
    """B-frames (MP4, audio, subtitles) and variable frame rate (Matroska) in one job: as local runs, bit for bit."""
    cfg = config(random_weights("espcn-fast", 2))
    pairs = [(clips[k], tmp_path / f"{k}.ray.mkv") for k in ("bframes", "vfr")]
    for src, _ in pairs:
        Pipeline(cfg).run(src, tmp_path / f"{src.stem}.local.mkv")
    result = vsr_cluster.run(pairs, cfg)
    assert result.workers == 2  # one per node (one core each, cpus_per_worker 1)
    for f, (src, remote) in zip(result.files, pairs):
        assert f.error is None and f.segments >= 3  # cut at keyframes, about a second each
        assert_same(tmp_path / f"{src.stem}.local.mkv", remote)
    assert sum(n["segments"] for n in result.nodes.values()) == sum(f.segments for f in result.files)
    assert leftovers(tmp_path) == [] and wait_no_actors() == []


def test_progress_counts_every_frame_once(ray_cluster, clips, tmp_path: Path, random_weights) -> None:
    """The job's bar on a real cluster: frames never go back and end at the total of every segment
    (how segments in flight are counted: test_cluster_cli's driver test and the worker test below)."""
    cfg = config(random_weights("espcn-fast", 2))
    seen: list[tuple[int, int]] = []
    result = vsr_cluster.run([(clips["long"], tmp_path / "long.mkv"), (clips["vfr"], tmp_path / "vfr.mkv")], cfg,
                             progress=lambda p: seen.append((p.frames, p.total)))
    assert not result.failed and seen
    frames = [f for f, _ in seen]
    assert frames == sorted(frames) and frames[-1] == seen[-1][1] == 144 + 80
    assert {t for _, t in seen} == {144 + 80}


def test_a_worker_says_how_far_its_segment_is(ray_cluster, clips, tmp_path: Path, random_weights) -> None:
    """What the driver's progress polls read: (segment key, frames done) while encoding, (None, 0) after."""
    import threading

    from vsr.cluster._worker import SegmentWorker
    from vsr.resume import plan_segments

    cfg = config(random_weights("espcn-fast", 2), **{"executor.segment_seconds": 100})
    [segment] = plan_segments(clips["long"], 100)
    worker = SegmentWorker(dataclasses.asdict(cfg))
    task = {"key": "k:0", "src": str(clips["long"]), "segment": segment.to_dict(), "out": str(tmp_path / "s.mkv"),
            "suffix": ".mkv"}
    assert worker.progress() == (None, 0)
    out: dict[str, Any] = {}
    run = threading.Thread(target=lambda: out.update(worker.encode(task)))
    run.start()
    polled = []
    while run.is_alive():
        polled.append(worker.progress())
        time.sleep(0.001)
    run.join()
    assert out["frames"] == segment.frames == 144 and worker.progress() == (None, 0)
    during = [n for key, n in polled if key is not None]
    assert all(key in (None, "k:0") for key, _ in polled) and during == sorted(during)
    assert during and 0 <= during[0] and during[-1] <= 144
    worker.cleanup()


# -- faults --------------------------------------------------------------------------------------
def _on_first_dispatch(monkeypatch, action) -> dict[str, Any]:
    """Run ``action(worker)`` once, right after a segment was handed to a worker that loaded its model."""
    state: dict[str, Any] = {"done": False}
    real = _job.ClusterJob._dispatch

    def dispatch(self, pending, inflight) -> None:
        real(self, pending, inflight)
        if not state["done"] and inflight:
            w = next(iter(inflight.values()))[0]
            state["done"] = True
            state["node"] = w.node
            action(self, w)

    monkeypatch.setattr(_job.ClusterJob, "_dispatch", dispatch)
    return state


def test_a_killed_worker_has_its_segment_rerun(ray_cluster, clips, tmp_path: Path, random_weights,
                                               monkeypatch) -> None:
    cfg = config(random_weights("espcn-fast", 2))
    Pipeline(cfg).run(clips["long"], tmp_path / "local.mkv")

    def kill(job, w) -> None:
        os.kill(ray.get(w.actor.pid.remote()), signal.SIGKILL)

    state = _on_first_dispatch(monkeypatch, kill)
    result = vsr_cluster.run([(clips["long"], tmp_path / "ray.mkv")], cfg)
    assert state["done"]
    [f] = result.files
    assert f.error is None and f.retries >= 1
    assert sum(n["retries"] for n in result.nodes.values()) == f.retries
    assert_same(tmp_path / "local.mkv", tmp_path / "ray.mkv")
    assert wait_no_actors() == []


def test_a_node_removed_mid_job(ray_cluster, clips, tmp_path: Path, random_weights, monkeypatch) -> None:
    """A third node joins, takes a segment and is removed while on it: the job completes, correctly."""
    extra = ray_cluster.add_node(**NODE)
    ray_cluster.wait_for_nodes()
    victim = extra.node_id[:8]
    cfg = config(random_weights("espcn-fast", 2))
    Pipeline(cfg).run(clips["long"], tmp_path / "local.mkv")
    removed: list[bool] = []
    real = _job.ClusterJob._dispatch
    t0 = time.monotonic()

    def dispatch(self, pending, inflight) -> None:
        # Until the third node's worker has a segment, the other workers are held back (marked busy).
        held = [] if removed or time.monotonic() - t0 > 120 else \
            [w for w in self.workers if not w.busy and not w.node.endswith(victim)]
        for w in held:
            w.busy = True
        real(self, pending, inflight)
        for w in held:
            w.busy = False
        if not removed and any(w.node.endswith(victim) for w, _, _ in inflight.values()):
            removed.append(True)
            ray_cluster.remove_node(extra)

    monkeypatch.setattr(_job.ClusterJob, "_dispatch", dispatch)
    result = vsr_cluster.run([(clips["long"], tmp_path / "ray.mkv")], cfg)
    assert removed, "no segment ever reached the third node"
    [f] = result.files
    assert f.error is None and f.retries >= 1
    assert_same(tmp_path / "local.mkv", tmp_path / "ray.mkv")
    assert leftovers(tmp_path) == [] and wait_no_actors() == []


def test_a_bad_input_among_good_ones(ray_cluster, clips, tmp_path: Path, random_weights, capsys) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 100)
    out = tmp_path / "out"
    weights = random_weights("espcn-fast", 2)
    code = vsr_main(["run", str(clips["bframes"]), str(bad), str(clips["vfr"]), "-o", str(out),
                     "--executor", "ray", "--model", "espcn-fast", "--scale", "2", "--weights", str(weights),
                     "--device", "cpu", "--report", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.mp4" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["bframes_x2.mp4", "vfr_x2.mkv"]
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert [f["status"] for f in report["files"]] == ["ok", "failed", "ok"]
    assert report["files"][0]["encoder"] == {"codec": "libx264", "preset": "medium", "crf": 18}  # the segments'
    assert report["total"]["failed"] == 1 and report["failed"] == [str(bad)]
    node = next(iter(report["nodes"].values()))
    assert {"frames", "segments", "busy_s", "retries", "fps"} <= set(node)
    assert sum(n["frames"] for n in report["nodes"].values()) == report["total"]["frames"] == 72 + 80
    assert leftovers(out) == []


def test_resume_reuses_finished_segments(ray_cluster, clips, tmp_path: Path, random_weights,
                                         monkeypatch) -> None:
    """Also the lossy path: H.264 with B-frames into MP4, whose joined decode times must strictly increase."""
    from test_resume import assert_same_result
    from vsr.resume import MANIFEST, work_folder

    cfg = config(random_weights("espcn-fast", 2), **{"encoder.codec": "libx264", "encoder.preset": "medium"})
    src, dst = clips["bframes"], tmp_path / "ray.mp4"
    Pipeline(cfg).run(src, tmp_path / "local.mp4")
    real = _job.ClusterJob._finished

    def interrupt_after_two(self, ref, entry, pending) -> None:
        real(self, ref, entry, pending)
        if sum(len(j.results) for j in self.files) >= 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(_job.ClusterJob, "_finished", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        vsr_cluster.run([(src, dst)], cfg, resume=True)
    import json

    kept = json.loads((work_folder(dst) / MANIFEST).read_text())["segments"]
    assert len(kept) >= 2 and not dst.exists()
    monkeypatch.setattr(_job.ClusterJob, "_finished", real)
    result = vsr_cluster.run([(src, dst)], cfg, resume=True)
    [f] = result.files
    assert f.error is None
    encoded = sum(n["segments"] for n in result.nodes.values())
    assert encoded == f.segments - len(kept)  # the kept ones were not encoded again
    assert_same_result(tmp_path / "local.mp4", dst)
    assert not work_folder(dst).exists() and leftovers(tmp_path) == []


def test_ctrl_c_cancels_and_leaves_nothing(ray_cluster, clips, tmp_path: Path, random_weights) -> None:
    weights = random_weights("espcn-fast", 2)
    dst = tmp_path / "out.mkv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "vsr", "run", str(clips["long"]), "-o", str(dst), "--executor", "ray",
           "--ray-address", ray_cluster.address, "--model", "espcn", "--scale", "4", "--weights",
           str(random_weights("espcn", 4)), "--device", "cpu", "--codec", "ffv1"]
    del weights
    config_file = tmp_path / "c.yaml"
    config_file.write_text("executor:\n  segment_seconds: 1\n  cpus_per_worker: 1\n")
    proc = subprocess.Popen([*cmd, "--config", str(config_file)], env=env, stderr=subprocess.PIPE, text=True)
    from vsr.resume import work_folder

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:  # wait until workers write segments
        folder = work_folder(dst)
        if folder.is_dir() and any(p.name.startswith(".seg-") or p.name.startswith("seg-")
                                   for p in folder.iterdir()):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not dst.exists() and leftovers(tmp_path) == []
    assert wait_no_actors() == []


def test_s3_input_and_output(ray_cluster, s3_server, clips, tmp_path: Path, random_weights) -> None:
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.mkdir("vsr-test")
    fs.put_file(str(clips["bframes"]), "vsr-test/in/clip.mp4")
    cfg = config(random_weights("espcn-fast", 2))
    Pipeline(cfg).run(clips["bframes"], tmp_path / "local.mp4")
    result = vsr_cluster.run([("s3://vsr-test/in/clip.mp4", "s3://vsr-test/out/clip.mp4")], cfg)
    [f] = result.files
    assert f.error is None and f.segments >= 3
    fs.get_file("vsr-test/out/clip.mp4", str(tmp_path / "ray.mp4"))
    assert_same(tmp_path / "local.mp4", tmp_path / "ray.mp4")
    assert fs.ls("vsr-test/out") == ["vsr-test/out/clip.mp4"]  # no staged segments left
    again = vsr_cluster.run([("s3://vsr-test/in/clip.mp4", "s3://vsr-test/out/clip.mp4")], cfg)
    assert "exists" in (again.files[0].error or "")  # never clobbered without -y


# -- checks before any work ----------------------------------------------------------------------
def test_a_node_that_cannot_see_the_files_is_named(ray_cluster, clips, tmp_path: Path) -> None:
    from vsr.cluster._nodes import check_paths

    st = clips["bframes"].stat()
    same = {"path": str(clips["bframes"]), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert ray.get(check_paths.remote([same], [str(tmp_path)])) == []
    other = {**same, "size": st.st_size + 1}
    gone = {**same, "path": str(tmp_path / "missing.mp4")}
    problems = ray.get(check_paths.remote([other, gone], [str(tmp_path / "nope")]))
    assert len(problems) == 3
    assert "sees another file" in problems[0] and "cannot see input" in problems[1]
    assert "output folder" in problems[2]


def test_everything_listens_on_loopback(ray_cluster) -> None:
    if shutil.which("ss") is None:
        pytest.skip("no ss here")
    out = subprocess.run(["ss", "-tlnp"], capture_output=True, text=True).stdout
    ray_lines = [line for line in out.splitlines() if re.search(r'"(raylet|gcs_server|ray::[^"]*)"', line)]
    assert ray_lines
    for line in ray_lines:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")), line


def test_nothing_outside_vsr_cluster_imports_ray() -> None:
    pattern = re.compile(r"^\s*(import ray|from ray\b)", re.M)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "vsr").rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8")) and "cluster" not in p.relative_to(REPO).parts]
    assert offenders == []
