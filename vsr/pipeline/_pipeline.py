"""The file pipeline: :class:`Pipeline` upscales one video file with three overlapped stages."""

from __future__ import annotations

import logging
import queue
import threading
import time
from array import array
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import torch

from ..config import PipelineConfig
from ..engine import LumaUpscaler, upscaler_from_config
from ..errors import PipelineError, UnsupportedMediaError, VsrError
from ..media import VideoReader, VideoWriter, frame_planes, new_frame, resize_plane
from ..media._hwcodec import choose_encoder
from ._flow import _END, _Clock, _Control, _Job, _luma_tensor, _Stopped
from ._reports import Progress, RunReport
from ._runners import _CpuRunner, _CudaRunner, _cpu_worker_split

log = logging.getLogger("vsr")


def default_output_path(src: str | Path, config: PipelineConfig) -> Path:
    src = Path(src)
    name = config.output.pattern.format(stem=src.stem, scale=config.model.scale, suffix=src.suffix or ".mkv")
    return src.with_name(name)

class Pipeline:
    """Loads the model once; :meth:`run` upscales one video file (call it for each file)."""

    def __init__(self, config: PipelineConfig | None = None, *, upscaler: LumaUpscaler | None = None) -> None:
        """``upscaler``: one already loaded for ``config``'s model, device and precision (default: load it)."""
        self.config = config = config or PipelineConfig()
        self.upscaler = upscaler if upscaler is not None else upscaler_from_config(config)
        self.device, self.dtype = self.upscaler.device, self.upscaler.dtype
        self.cpu_workers, self.cpu_worker_threads = _cpu_worker_split(config.threads or torch.get_num_threads())
        self.scale = config.model.scale

    @property
    def precision(self) -> str:
        return self.upscaler.precision

    # -- the three stages ------------------------------------------------------------------
    def _decode(self, reader: VideoReader, out: queue.Queue, ctl: _Control, clock: _Clock) -> None:
        it = iter(reader)
        index = 0
        while True:
            t0 = time.perf_counter()
            item = next(it, _END)
            t1 = time.perf_counter()
            clock.busy += t1 - t0
            if item is _END:
                break
            if isinstance(item, av.VideoFrame):
                clock.frames += 1
                item = _Job(index, item, t1)
                index += 1
            ctl.put(out, item)
        ctl.put(out, _END)

    def _infer(self, src: queue.Queue, out: queue.Queue, ctl: _Control, clock: _Clock) -> None:
        batch: list[_Job] = []
        runner: _CudaRunner | _CpuRunner | None = None
        if self.device.type == "cuda":
            runner = _CudaRunner(self.upscaler, ctl, out, clock)
        elif self.cpu_workers > 1:
            runner = _CpuRunner(self._upscale_batch, self.cpu_workers, self.cpu_worker_threads, ctl, out, clock)
        try:
            self._infer_loop(src, out, ctl, clock, batch, runner)
        finally:
            if runner is not None:
                runner.close()

    def _infer_loop(self, src: queue.Queue, out: queue.Queue, ctl: _Control, clock: _Clock,
                    batch: list[_Job], runner: _CudaRunner | _CpuRunner | None) -> None:
        """Gather frames into batches; packets of copied streams never cut a batch short or wait for one.

        A packet that arrives while a batch is being gathered waits behind that batch (so
        it leaves at most ``batch - 1`` frames later than in demux order, which the muxer's
        interleaving by timestamp absorbs); the runners hand it on after the batches before
        it, without draining them.
        """
        held: list[Any] = []  # packets that arrived behind the batch being gathered

        def pass_on(item: Any) -> None:
            if runner is not None:
                runner.passthrough(item)
            else:
                ctl.put(out, item)

        def flush() -> None:
            if batch:
                if runner is not None:
                    runner.submit(list(batch))
                else:
                    t0 = time.perf_counter()
                    self._upscale_batch(batch)
                    clock.busy += time.perf_counter() - t0
                    clock.frames += len(batch)
                    for job in batch:
                        ctl.put(out, job)
                batch.clear()
            for item in held:
                pass_on(item)
            held.clear()

        while True:
            item = ctl.get(src)
            if item is _END:
                break
            if isinstance(item, _Job):
                if batch and item.frame.format.name != batch[0].frame.format.name or (
                    batch and (item.frame.width, item.frame.height) != (batch[0].frame.width, batch[0].frame.height)
                ):
                    flush()
                batch.append(item)
                if len(batch) >= self.config.batch:
                    flush()
            elif batch:
                held.append(item)
            else:
                pass_on(item)
        flush()
        if runner is not None:
            runner.drain()
        ctl.put(out, _END)

    def _upscale_batch(self, jobs: list[_Job]) -> None:
        planes = [frame_planes(j.frame) for j in jobs]
        max_value = (1 << jobs[0].frame.format.components[0].bits) - 1
        x = torch.stack([_luma_tensor(p) for p in planes])[:, None]
        y = self.upscaler(x, max_value).cpu().numpy()
        for job, luma in zip(jobs, y):
            job.luma = luma[0]

    def _encode(
        self,
        writer: VideoWriter,
        src: queue.Queue,
        ctl: _Control,
        clock: _Clock,
        latencies: array,
        progress: Callable[[Progress], None] | None,
        total: int,
        t_start: float,
    ) -> None:
        size: tuple[int, int] | None = None
        while True:
            item = ctl.get(src)
            if item is _END:
                break
            t0 = time.perf_counter()
            if isinstance(item, _Job):
                frame = item.frame
                if size is None:
                    size = (frame.width, frame.height)
                elif size != (frame.width, frame.height):
                    raise UnsupportedMediaError(
                        f"{writer.reader.path}: frame size changes mid-stream at frame {item.index} "
                        f"({size[0]}x{size[1]} to {frame.width}x{frame.height})"
                    )
                writer.write(self._compose(writer, item))
                t1 = time.perf_counter()
                latencies.append((t1 - item.t_decoded) * 1000.0)
                clock.frames += 1
                clock.busy += t1 - t0
                if progress is not None:
                    progress(Progress(clock.frames, total, t1 - t_start))
            else:
                writer.write(item)
                clock.busy += time.perf_counter() - t0
        t0 = time.perf_counter()
        writer.close()
        clock.busy += time.perf_counter() - t0

    def _compose(self, writer: VideoWriter, job: _Job) -> av.VideoFrame:
        """The output frame: model luma, bicubic chroma, the input's timestamps and colour tags."""
        src = job.frame
        r = self.scale
        width, height = src.width * r, src.height * r
        fmt = writer.output_format(width, height, src.format.name)
        out, planes = new_frame(width, height, fmt)
        in_planes = frame_planes(src)
        planes[0][...] = job.luma
        for i in range(1, len(planes)):
            resize_plane(in_planes[i], planes[i])
        out.pts = src.pts
        out.time_base = src.time_base
        for attr in ("color_range", "colorspace", "color_primaries", "color_trc"):
            value = getattr(src, attr, None)
            if value:
                setattr(out, attr, value)
        return out

    # -- running -----------------------------------------------------------------------------
    def run(
        self,
        src: str | Path,
        dst: str | Path | None = None,
        *,
        overwrite: bool | None = None,
        progress: Callable[[Progress], None] | None = None,
        format: str | None = None,
        resume: bool = False,
    ) -> RunReport:
        """Upscale ``src`` into ``dst`` (default: ``output.pattern`` beside ``src``).

        ``resume``: encode in segments kept beside ``dst`` until the end, and continue an
        interrupted run of the same job from its last finished segment (:mod:`vsr.resume`).

        ``src`` and ``dst`` may be ``"-"``: standard input and output. ``format`` names the
        output container (``y4m``, ``mkv``, ``mp4``... or any FFmpeg muxer); None: from
        ``dst``'s extension, matroska on standard output.
        """
        cfg = self.config
        dst = default_output_path(src, cfg) if dst is None else dst
        overwrite = cfg.output.overwrite if overwrite is None else overwrite
        gpu = self._gpu_index()
        reader = VideoReader(src, nvdec=gpu)
        choice = choose_encoder(cfg.encoder, gpu=gpu, pix_fmt=reader.info.pix_fmt)
        try:
            if resume:
                from ..resume import SegmentedWriter, run_settings

                writer = SegmentedWriter(dst, reader, encoder=choice.encoder, overwrite=overwrite, format=format,
                                         settings=run_settings(cfg, str(self.device), self.precision),
                                         segment_seconds=cfg.resume_segment)
                if writer.start is not None:
                    reader.start_at(writer.start)
            else:
                writer = VideoWriter(dst, reader, encoder=choice.encoder, overwrite=overwrite, format=format)
        except BaseException:
            reader.close()
            raise
        said = choice.note if choice.note and not getattr(writer, "y4m", False) else None  # Y4M: raw frames
        if said:
            log.info("%s", said)  # the one line saying which encoder a CUDA run uses
        run_notes = [*reader.notes, *([said] if said else [])]
        return self.run_streams(reader, writer, src=src, dst=dst, progress=progress,
                                total=max(0, reader.info.frames - getattr(writer, "kept_frames", 0)),
                                notes=run_notes)

    def run_streams(
        self,
        reader: VideoReader,
        writer: Any,
        *,
        src: str | Path,
        dst: str | Path,
        progress: Callable[[Progress], None] | None = None,
        total: int | None = None,
        notes: list[str] | None = None,
    ) -> RunReport:
        """Run the three stages from an open ``reader`` into an open ``writer``; both are closed here.

        For callers that set the reader and writer up themselves (:mod:`vsr.resume`'s
        segments: a reader limited to a window of the input, a video-only writer).
        ``total``: the frames expected, for progress (None: the container's count);
        ``notes``: what the report says besides the writer's notes (None: the reader's).
        """
        cfg = self.config
        total = reader.info.frames if total is None else total
        run_notes = list(reader.notes) if notes is None else notes
        ctl = _Control()
        clocks = {"decode": _Clock(), "infer": _Clock(), "encode": _Clock()}
        q_decoded: queue.Queue = queue.Queue(cfg.queue_depth)
        q_upscaled: queue.Queue = queue.Queue(cfg.queue_depth)
        latencies = array("d")
        t_start = time.perf_counter()

        def guard(name: str, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
            def body() -> None:
                try:
                    fn(*args)
                except _Stopped:
                    pass
                except BaseException as exc:  # handed to the main thread
                    ctl.fail(name, exc)

            return body

        stages = [
            threading.Thread(target=guard("decode", self._decode, reader, q_decoded, ctl, clocks["decode"]),
                             name="vsr-decode", daemon=True),
            threading.Thread(target=guard("infer", self._infer, q_decoded, q_upscaled, ctl, clocks["infer"]),
                             name="vsr-infer", daemon=True),
            threading.Thread(
                target=guard("encode", self._encode, writer, q_upscaled, ctl, clocks["encode"], latencies,
                             progress, total, t_start),
                name="vsr-encode", daemon=True),
        ]
        try:
            for t in stages:
                t.start()
            for t in stages:
                while t.is_alive():
                    t.join(timeout=0.1)
        except BaseException:  # Ctrl-C / SIGTERM: stop every stage, keep the destination as it was
            ctl.stop.set()
            for t in stages:
                t.join(timeout=5)
            writer.abort()
            reader.close()
            raise
        reader.close()
        if ctl.error is not None:
            writer.abort()
            exc = ctl.error
            if isinstance(exc, VsrError):
                raise exc
            raise PipelineError(f"{ctl.stage} stage failed: {type(exc).__name__}: {exc}") from exc
        wall = time.perf_counter() - t_start
        return self._report(reader, writer, src, dst, clocks, wall, latencies, run_notes)

    def _gpu_index(self) -> int | None:
        """The CUDA device index of this run (for NVENC/NVDEC); None on CPU."""
        if self.device.type != "cuda":
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _report(self, reader: VideoReader, writer: VideoWriter, src: Any, dst: Any,
                clocks: dict[str, _Clock], wall: float, latencies: array, run_notes: list[str]) -> RunReport:
        info = reader.info
        frames = clocks["encode"].frames
        fps = frames / wall if wall > 0 else 0.0
        lat = np.frombuffer(latencies, dtype=np.float64) if len(latencies) else np.zeros(1)
        stages = {name: c.report(wall) for name, c in clocks.items()}
        notes = [*run_notes, *writer.notes]
        if self.device.type == "cuda" and frames:
            # On a GPU the stages run side by side: the busiest one sets the pace.
            bound = max(stages, key=lambda name: stages[name].busy_fraction)
            notes.append(f"{bound} is the bound: busy {stages[bound].busy_fraction:.0%} of the run "
                         f"({stages[bound].fps:.1f} fps of busy time; encoder {writer.video_codec}, "
                         f"decoder {reader.decoder})")
        if reader.lost_packets:
            log.info("%s: %d damaged packet(s) could not be decoded", info.path, reader.lost_packets)
        if reader.missing_frames:
            total = reader.frames_decoded + reader.missing_frames
            notes.append(f"{info.path}: input ends early (truncated file?): {reader.missing_frames} of {total} "
                         f"frames could not be read; the output holds the first {reader.frames_decoded}")
            log.warning("%s", notes[-1])
        return RunReport(
            input=str(src),
            output=str(dst),
            frames=frames,
            elapsed_s=wall,
            fps=fps,
            source_fps=info.fps,
            realtime_factor=fps / info.fps if info.fps else None,
            device=str(self.device),
            precision=self.precision,
            model=self.config.model.name,
            scale=self.scale,
            input_size=(info.width, info.height),
            output_size=(info.width * self.scale, info.height * self.scale),
            stages=stages,
            latency_ms={"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))},
            lost_packets=reader.lost_packets,
            notes=tuple(notes),
            streams=tuple(writer.carry.to_report()),
            encoder=writer.encoder_settings,
        )
