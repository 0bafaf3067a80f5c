"""The driver of a cluster job: plan every input into segments, hand them to workers, join what comes back.

Faults: a worker that dies (its process, or its whole node) fails the call it was
running with a Ray actor error; the driver reruns that segment on another worker (up to
``executor.max_retries`` times) and starts a replacement worker, which takes work only
once it has loaded its model. A segment is recorded once, by the driver, when its
result arrives with the frame count its plan says; a second result for the same
segment (a rerun that raced the first) is dropped, and a file is joined only when every
segment of its plan is recorded exactly once. A segment that fails with a vsr error
(a damaged input) fails its file only; the others go on.
"""

from __future__ import annotations

import collections
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import PipelineConfig
from ..errors import ConfigError, MediaError, OutputExistsError, PipelineError, VsrError
from ..media import VideoReader, VideoWriter
from ..pipeline import Progress, RunReport, StageReport
from ..resume import Segment, SegmentStore, join_segments, plan_segments, run_settings, work_folder
from . import _storage

log = logging.getLogger("vsr")

# With work waiting and no worker able to take it for this long, the job gives up.
NO_WORKER_TIMEOUT_S = 120.0


@dataclass
class FileJob:
    """One input of the job: where it is, where it goes, its plan and what came back."""

    src: str
    dst: str
    format: str | None = None
    error: str | None = None
    local_src: Path | None = None  # the driver's copy of a URL input, else the path itself
    identity: dict[str, Any] | None = None
    plan: list[Segment] = field(default_factory=list)
    store: SegmentStore | None = None
    staging: str | None = None  # URL prefix of the segments of a URL output
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # segment index -> its worker's result
    lost: dict[int, int] = field(default_factory=dict)  # segment index -> attempts lost with their worker
    retries: int = 0
    join_s: float = 0.0  # the driver's time to join the segments into the output
    report: RunReport | None = None
    t_start: float | None = None

    @property
    def done(self) -> bool:
        return self.report is not None or self.error is not None


@dataclass
class _Worker:
    actor: Any
    resources: dict[str, float]
    ready_ref: Any = None
    node: str = "?"
    busy: bool = False
    progress_ref: Any = None  # an unanswered progress() call
    partial: tuple[str | None, int] = (None, 0)  # its last answer: (segment key, frames done)


class ClusterJob:
    """Runs :class:`FileJob` s on the connected Ray cluster; see the module docstring."""

    def __init__(self, ray: Any, config: PipelineConfig, files: list[FileJob], *, resume: bool = False,
                 progress: Callable[[Progress], None] | None = None) -> None:
        self.ray = ray
        self.config = config
        self.ex = config.executor
        self.files = files
        self.resume = resume
        self.progress = progress
        self.tmp = Path(tempfile.mkdtemp(prefix="vsr-driver-"))
        self.workers: list[_Worker] = []
        self.nodes: dict[str, dict[str, Any]] = collections.defaultdict(
            lambda: {"frames": 0, "segments": 0, "busy_s": 0.0, "retries": 0})
        self.gpu = False
        self.overhead_s: list[float] = []  # per segment: dispatch to result on the driver, less the worker's time
        self._dispatched: dict[Any, float] = {}
        self._started = 0  # workers started, replacements included
        self._max_started = 0
        self._to_join: list[FileJob] = []  # complete files, joined once the workers have their next segments

    # -- before any work -------------------------------------------------------------------
    def prepare(self) -> None:
        """Plan each input (a bad one fails alone), start the workers, check every node sees the files.

        The workers start (process, PyTorch, model: seconds) while the nodes are checked; they
        take no segment before the check has passed.
        """
        nodes = [n for n in self.ray.nodes() if n["Alive"]]
        self.gpu = self.config.device != "cpu" and any(n["Resources"].get("GPU", 0) >= 1 for n in nodes)
        for job in self.files:
            if job.error is None:
                try:
                    self._prepare_file(job)
                except VsrError as exc:
                    job.error = str(exc)
                    self._drop_store(job, keep=True)
        self._start_workers()
        self._check_nodes()

    def _prepare_file(self, job: FileJob) -> None:
        overwrite = self.config.output.overwrite
        if _storage.is_url(job.src):
            job.identity = _storage.identity(job.src)
            job.local_src = _storage.fetch(job.src, self.tmp / f"in-{id(job)}{Path(job.src).suffix}")
        else:
            job.local_src = Path(job.src)
        VideoReader(job.local_src).close()  # a file that is not a video fails here, alone
        if job.identity is None:
            st = job.local_src.stat()
            job.identity = {"path": str(job.local_src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        job.plan = plan_segments(job.local_src, self.ex.segment_seconds)
        if _storage.is_url(job.dst):
            if self.resume:
                raise ConfigError(f"{job.dst}: --resume keeps segments beside a file output; with an object-store "
                                  "output run without --resume")
            if _storage.exists(job.dst) and not overwrite:
                raise OutputExistsError(f"{job.dst} exists; pass -y/--overwrite to replace it")
            head, name = _storage.split_url(job.dst)
            job.staging = _storage.join_url(head, f".{name}.vsr-segments-{self.tmp.name}")
            dest = self.tmp / f"out-{id(job)}" / name
            dest.parent.mkdir()
        else:
            dest = Path(job.dst)
            if dest.exists() and not overwrite:
                raise OutputExistsError(f"{job.dst} exists; pass -y/--overwrite to replace it")
            if not dest.parent.is_dir():
                raise MediaError(f"{job.dst}: folder {str(dest.parent)!r} does not exist")
        settings = run_settings(self.config, "cuda" if self.gpu else "cpu", self.config.precision,
                                segment_seconds=self.ex.segment_seconds, cut="keyframe")
        job.store = SegmentStore(dest, input=job.identity, settings=settings, contiguous=False, plan=job.plan,
                                 fresh=not self.resume)
        if job.store.segments:
            log.info("%s: %d of %d segment(s) kept from an earlier run", job.src, len(job.store.segments),
                     len(job.plan))

    def _check_nodes(self) -> None:
        """Every alive node must see each path input as the driver does and write each output folder."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ._nodes import check_paths

        live = [j for j in self.files if j.error is None]
        inputs = [j.identity for j in live if not _storage.is_url(j.src) and j.identity]
        folders = sorted({str(j.store.folder) for j in live if j.store is not None and j.staging is None})
        if not inputs and not folders:
            return
        refs = [check_paths.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(inputs, folders) for n in self.ray.nodes() if n["Alive"]]
        try:
            problems = [p for found in self.ray.get(refs, timeout=60) for p in found]
        except self.ray.exceptions.GetTimeoutError:
            raise ConfigError("the cluster's nodes did not answer vsr's file check within 60 s "
                              "(a node is hanging or overloaded); check 'ray status'") from None
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ConfigError(f"{problems[0]}{more}: every node must see the inputs and the output folder at the "
                              "same paths (a shared file system), or use s3:// URLs; see docs/CLUSTER.md")

    def _pending(self) -> collections.deque:
        return collections.deque(
            (job, seg) for job in self.files if job.error is None and job.store is not None
            for seg in job.plan if seg.index not in job.store.done())

    def _start_workers(self) -> None:
        if self.workers or not self._pending():
            return
        shapes = self._worker_shapes()
        self._max_started = len(shapes) * (self.ex.max_retries + 1)
        for node, resources in shapes:
            self._start_worker(resources, node)

    def _worker_shapes(self) -> list[tuple[str, dict[str, float]]]:
        """(node id, resources) of each worker to start: one per GPU group, or one per cpus_per_worker cores."""
        nodes = [n for n in self.ray.nodes() if n["Alive"]]
        shapes = []
        for n in nodes:
            res = n["Resources"]
            if self.gpu:
                count = int(res.get("GPU", 0) // self.ex.gpus_per_worker)
                shapes += [(n["NodeID"], {"num_cpus": 1, "num_gpus": self.ex.gpus_per_worker})] * count
            else:
                cpus = res.get("CPU", 0)
                if cpus < 1:
                    continue
                per = min(self.ex.cpus_per_worker, int(cpus))
                shapes += [(n["NodeID"], {"num_cpus": per, "num_gpus": 0})] * max(1, int(cpus // per))
        return shapes[:max(1, len(self._pending()))]

    def _worker_config(self, resources: dict[str, float]) -> dict[str, Any]:
        import dataclasses

        data = dataclasses.asdict(self.config)
        data["executor"] = dataclasses.asdict(type(self.config.executor)())
        if resources["num_gpus"]:
            data["device"] = "cuda" if self.config.device in ("auto", "cpu") else self.config.device
        else:
            data["device"] = "cpu"
            data["threads"] = int(resources["num_cpus"])
        return data

    def _start_worker(self, resources: dict[str, float], node: str | None) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ._worker import worker_class

        strategy = NodeAffinitySchedulingStrategy(node, soft=True) if node else None
        cls = worker_class(name=f"vsr-worker-{self.tmp.name}-{self._started}", strategy=strategy, **resources)
        actor = cls.remote(self._worker_config(resources))
        self._started += 1
        self.workers.append(_Worker(actor, resources, ready_ref=actor.ready.remote()))

    # -- running ---------------------------------------------------------------------------
    def run(self) -> None:
        """Encode every pending segment, join each file as soon as its last segment arrives."""
        try:
            self._run()
        except BaseException:
            self.cancel()
            raise
        finally:
            self.close()

    def _run(self) -> None:
        ray = self.ray
        pending = self._pending()
        for job in self.files:  # everything was finished by an earlier run: join now
            if job.error is None and job.store is not None and not self._missing(job):
                self._join(job)
        if not pending:
            return
        self._start_workers()
        inflight: dict[Any, tuple[_Worker, FileJob, Segment]] = {}
        t0 = time.perf_counter()
        stalled_since: float | None = None
        last_progress = 0.0
        total = sum(seg.frames or 0 for _, seg in pending)
        while pending or inflight:
            self._dispatch(pending, inflight)
            if inflight or any(w.actor is not None and w.ready_ref is None for w in self.workers):
                stalled_since = None
            else:  # work waits, and no worker is up to take it
                stalled_since = stalled_since or time.perf_counter()
                if time.perf_counter() - stalled_since > NO_WORKER_TIMEOUT_S:
                    raise PipelineError("no Ray worker could be started for the remaining segments; "
                                        "add nodes or free resources, then run again with --resume")
            refs = list(inflight) + [w.ready_ref for w in self.workers if w.ready_ref is not None]
            if not refs:
                time.sleep(0.2)
                continue
            done, _ = ray.wait(refs, num_returns=1, timeout=0.25)
            for ref in done:
                if ref in inflight:
                    self._finished(ref, inflight.pop(ref), pending)
                else:
                    self._worker_ready(ref)
            if self._to_join:  # the workers first get their next segments, then the driver joins
                self._dispatch(pending, inflight)
                while self._to_join:
                    self._join(self._to_join.pop(0))
            now = time.perf_counter()
            if self.progress is not None and now - last_progress >= 0.25:
                last_progress = now
                self.progress(Progress(self._frames_done(inflight), total, now - t0))
        if self.progress is not None:
            self.progress(Progress(self._frames_done(inflight), total, time.perf_counter() - t0))

    def _dispatch(self, pending: collections.deque, inflight: dict) -> None:
        for w in self.workers:
            if not pending:
                return
            if w.busy or w.ready_ref is not None or w.actor is None:
                continue
            while pending and pending[0][0].done:
                pending.popleft()  # its file failed meanwhile
            if not pending:
                return
            job, seg = pending.popleft()
            if job.t_start is None:
                job.t_start = time.perf_counter()
            key = f"{id(job)}:{seg.index}"
            suffix = Path(job.store.dest).suffix
            out = (_storage.join_url(job.staging, f"seg-{seg.index:06d}{suffix}") if job.staging
                   else str(job.store.path(seg.index)))
            task = {"key": key, "src": job.src, "identity": job.identity, "segment": seg.to_dict(), "out": out,
                    "suffix": suffix, "format": job.format}
            w.busy = True
            ref = w.actor.encode.remote(task)
            inflight[ref] = (w, job, seg)
            self._dispatched[ref] = time.perf_counter()

    def _worker_ready(self, ref: Any) -> None:
        w = next(w for w in self.workers if w.ready_ref == ref)
        w.ready_ref = None
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, VsrError):
                raise cause  # the model cannot be loaded: no worker can run this job
            raise PipelineError(f"a Ray worker could not start: {type(cause).__name__}: {cause}") from None
        except self.ray.exceptions.RayActorError:
            w.actor = None  # died while starting (its node went away): replaced below
            self._replace(w)
            return
        w.node = info["node"]

    def _replace(self, dead: _Worker) -> None:
        """A worker died: start another, anywhere it fits (up to max_retries + 1 workers per first one)."""
        dead.actor, dead.busy, dead.ready_ref, dead.progress_ref = None, False, None, None
        if self._started < self._max_started:
            self._start_worker(dead.resources, None)

    def _finished(self, ref: Any, entry: tuple[_Worker, FileJob, Segment], pending: collections.deque) -> None:
        w, job, seg = entry
        w.busy = False
        ray = self.ray
        t_sent = self._dispatched.pop(ref, None)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, VsrError):
                self._fail(job, str(cause))
            else:
                name = type(cause).__name__ if cause is not None else "RayTaskError"
                self._fail(job, f"{job.src}: segment {seg.index} failed: {name}: {str(cause or exc).splitlines()[0]}")
            return
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
                ray.exceptions.NodeDiedError) as exc:
            self.nodes[w.node]["retries"] += 1
            job.retries += 1
            log.info("%s: segment %d lost with its worker on %s (%s); rerunning it", job.src, seg.index, w.node,
                     type(exc).__name__)
            self._replace(w)
            if job.done:
                return
            job.lost[seg.index] = job.lost.get(seg.index, 0) + 1
            if job.lost[seg.index] > self.ex.max_retries:
                self._fail(job, f"{job.src}: segment {seg.index} was lost {self.ex.max_retries + 1} times with its "
                                "worker; giving up on this file (run again with --resume)")
            else:
                pending.appendleft((job, seg))
            return
        if job.done or seg.index in job.results:
            return  # a file that failed meanwhile, or a second result for the same segment: dropped
        if result["frames"] != seg.frames and seg.frames is not None:
            self._fail(job, f"{job.src}: segment {seg.index} came back with {result['frames']} frames, "
                            f"its plan says {seg.frames}")
            return
        if job.staging is not None:
            _storage.fetch(_storage.join_url(job.staging, Path(job.store.path(seg.index)).name),
                           job.store.path(seg.index))
        if t_sent is not None:
            self.overhead_s.append(max(0.0, time.perf_counter() - t_sent - result["busy_s"]))
        job.results[seg.index] = result
        job.store.add(seg.index, result["frames"])
        node = self.nodes[result["node"]]
        node["frames"] += result["frames"]
        node["segments"] += 1
        node["busy_s"] += result["busy_s"]
        if not self._missing(job):
            self._to_join.append(job)

    def _missing(self, job: FileJob) -> list[int]:
        done = job.store.done() if job.store is not None else set()
        return [s.index for s in job.plan if s.index not in done]

    def _frames_done(self, inflight: dict) -> int:
        """Frames of recorded segments, plus how far each segment in flight was at the workers' last answer.

        Never waits: each busy worker is asked again once its previous answer is in, so a slow
        or dead worker holds back only its own figure.
        """
        finished = sum(r["frames"] for j in self.files for r in j.results.values())
        keys = {f"{id(job)}:{seg.index}" for _, job, seg in inflight.values()}
        asked = [w.progress_ref for w in self.workers if w.progress_ref is not None]
        answered, _ = self.ray.wait(asked, num_returns=len(asked), timeout=0) if asked else ([], [])
        for w in self.workers:
            if w.progress_ref is not None and w.progress_ref in answered:
                try:
                    w.partial = self.ray.get(w.progress_ref)
                except Exception:  # progress is a convenience; a lost worker is handled where its segment fails
                    w.partial = (None, 0)
                w.progress_ref = None
            if w.progress_ref is None and w.busy and w.actor is not None:
                w.progress_ref = w.actor.progress.remote()
        return finished + sum(w.partial[1] for w in self.workers if w.partial[0] in keys)

    def _fail(self, job: FileJob, message: str) -> None:
        if job.done:
            return
        job.error = message
        log.info("%s", message)
        self._drop_store(job, keep=self.resume)

    def _drop_store(self, job: FileJob, *, keep: bool) -> None:
        if job.store is None:
            return
        if keep:
            job.store.tidy()
            job.store.release()
        else:
            job.store.remove()
        if job.staging is not None:
            try:
                _storage.remove(job.staging, recursive=True)
            except MediaError:
                pass

    # -- joining ---------------------------------------------------------------------------
    def _join(self, job: FileJob) -> None:
        """Join the file's segments with its audio and subtitles into the destination (atomically)."""
        assert job.store is not None and job.local_src is not None
        missing = self._missing(job)
        if missing or len(job.store.done()) != len(job.plan):
            self._fail(job, f"{job.src}: segments {missing[:5]} never arrived; run again with --resume")
            return
        t0 = time.perf_counter()
        dest = job.store.dest
        try:
            with VideoReader(job.local_src) as reader:
                final = VideoWriter(dest, reader, encoder=self.config.encoder,
                                    overwrite=self.config.output.overwrite or job.staging is not None,
                                    format=job.format)
                try:
                    join_segments(job.store.files(), reader, final)
                except BaseException:
                    final.abort()
                    raise
                info = reader.info
                notes = list(final.notes)
            if job.staging is not None:
                _storage.put(dest, job.dst)
        except VsrError as exc:
            self._fail(job, str(exc))
            return
        frames = job.store.frames
        self._drop_store(job, keep=False)
        job.join_s = time.perf_counter() - t0
        job.report = self._file_report(job, info, frames, notes, job.join_s)

    def _file_report(self, job: FileJob, info: Any, frames: int, notes: list[str], join_s: float) -> RunReport:
        wall = time.perf_counter() - (job.t_start or time.perf_counter())
        results = list(job.results.values())
        stages = {}
        for name in ("decode", "infer", "encode"):
            n = sum(r["stages"][name][0] for r in results)
            busy = sum(r["stages"][name][1] for r in results)
            stages[name] = StageReport(n, busy, n / busy if busy > 0 else 0.0, busy / wall if wall > 0 else 0.0)
        p50 = sorted(r["latency_ms"]["p50"] for r in results)
        device = results[0]["device"] if results else ("cuda" if self.gpu else "cpu")
        precision = results[0]["precision"] if results else self.config.precision
        nodes = sorted({r["node"] for r in results})
        scale = self.config.model.scale
        fps = frames / wall if wall > 0 else 0.0
        notes = notes + [f"ray: {len(results)} segment(s) on {len(nodes)} node(s), {job.retries} rerun(s), "
                         f"join {join_s:.2f} s"]
        return RunReport(
            input=job.src, output=job.dst, frames=frames, elapsed_s=wall, fps=fps, source_fps=info.fps,
            realtime_factor=fps / info.fps if info.fps else None, device=f"ray ({device})", precision=precision,
            model=self.config.model.name, scale=scale, input_size=(info.width, info.height),
            output_size=(info.width * scale, info.height * scale), stages=stages,
            latency_ms={"p50": p50[len(p50) // 2] if p50 else 0.0,
                        "p95": max((r["latency_ms"]["p95"] for r in results), default=0.0)},
            notes=tuple(notes), encoder=results[0]["encoder"] if results else None)

    # -- stopping --------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ctrl-C or a fatal error: end every task, remove temporary files (finished segments stay with --resume)."""
        for job in self.files:
            if not job.done:
                job.error = job.error or "cancelled"
                self._drop_store(job, keep=self.resume)

    def close(self) -> None:
        """Stop the workers and remove the driver's temporary files (after :meth:`run`, or a failed :meth:`prepare`)."""
        self._stop_workers()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _stop_workers(self) -> None:
        ray = self.ray
        actors = [w.actor for w in self.workers if w.actor is not None]
        cleanups = [a.cleanup.remote() for a in actors]
        try:
            ray.wait(cleanups, num_returns=len(cleanups), timeout=5)
        except Exception:
            pass
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # gone already
                pass
        self.workers.clear()
