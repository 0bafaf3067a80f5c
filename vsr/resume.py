"""Segments: the video encoded in pieces kept beside the destination, then joined.

Two users share this module: resumable runs (``vsr run --resume``, :class:`SegmentedWriter`,
one process writing segments in order) and the Ray executor (:mod:`vsr.cluster`, which
encodes the segments of :func:`plan_segments` in parallel with :func:`encode_segment` and
joins them with :class:`SegmentStore` and :func:`join_segments`). Both keep the same
work folder, manifest and join, so a cluster run can be resumed like a local one.

A work folder ``.<destination name>.vsr-resume/`` beside the destination holds
``manifest.json`` and one file per finished segment, in the destination's own container
and holding video only. Segment *k* holds the frames shown in [k·S, (k+1)·S) seconds
(S = ``resume_segment``); each is a run of its own encoder, so it starts with a keyframe.
A segment enters the manifest only once its file is complete (it is written under a
temporary name and renamed), so an interruption at any moment loses at most the segment
in progress.

A later ``--resume`` run for the same destination keeps the finished segments when the
manifest was made for the same input (path, size, modification time) and the same
settings (model, weights, precision, device type, encoder, segment length); otherwise it
starts over. Decoding seeks to the first unfinished segment.
The Ray executor's segments are cut at keyframes instead (:func:`plan_segments`: the first
keyframe at least S seconds after the previous cut), so that each decodes on its own
without decoding frames of another; its manifest also records that plan. At the end the segments'
packets are joined, in order, with the input's audio, subtitles and data, copied or
re-encoded from the whole input exactly as without ``--resume``, into a temporary file that
replaces the destination; then the work folder is removed. Segments hold video alone
(``carry=False``); the join's writer carries the rest (cover art, attachments, chapters,
timecode, tags) by the same :class:`~vsr.media.CarryPlan` as a plain run. Without ``--resume`` none of this runs.

One run at a time per destination: a run holds an exclusive lock (``flock``) on
``.<destination name>.vsr-resume.lock`` for as long as it lives, and a second ``--resume``
run for the same destination is refused with a one-line error instead of sharing the
work folder. The kernel drops the lock when a process dies, even by SIGKILL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import logging
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import av

from . import _filelock
from .config import EncoderConfig, PipelineConfig
from .errors import ConfigError, EncodeError, OutputExistsError, UnsupportedMediaError
from .media import Item, VideoReader, VideoWriter
from .models import shipped_weights

if TYPE_CHECKING:
    from .pipeline import Pipeline, Progress, RunReport

__all__ = ["Segment", "SegmentStore", "SegmentedWriter", "encode_segment", "join_segments", "plan_segments",
           "run_settings", "work_folder"]

log = logging.getLogger("vsr")

MANIFEST = "manifest.json"
_VERSION = 1


def work_folder(dest: str | os.PathLike[str]) -> Path:
    """The hidden folder beside ``dest`` where a resumable run keeps its segments."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.vsr-resume")


class _JobLock:
    """The exclusive lock of a destination's resumable job (see the module's docstring)."""

    def __init__(self, dest: Path) -> None:
        self.path = dest.with_name(f".{dest.name}.vsr-resume.lock")
        self.fd = _filelock.lock(self.path, create=True) if _filelock.AVAILABLE else None
        if _filelock.AVAILABLE and self.fd is None:
            raise OutputExistsError(
                f"{dest}: another 'vsr run --resume' is writing it; wait for that run to end, "
                "or choose another output"
            )

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            _filelock.unlock(self.fd)
            self.fd = None


def _file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_settings(config: PipelineConfig, device: str, precision: str, *,
                 segment_seconds: int | None = None, cut: str = "time") -> dict[str, Any]:
    """Everything that changes the encoded video: a resumed run must match the first one in all of it.

    ``cut``: how segments are cut, ``time`` (every S seconds, :class:`SegmentedWriter`) or
    ``keyframe`` (:func:`plan_segments`); folders made one way are not resumed the other.
    """
    m = config.model
    weights = m.weights or shipped_weights(m.name, m.scale)
    return {
        "model": m.name,
        "scale": m.scale,
        "weights": _file_identity(weights) if weights else None,
        "device": device.split(":")[0],
        "precision": precision,
        "encoder": dataclasses.asdict(config.encoder),
        "segment_seconds": config.resume_segment if segment_seconds is None else segment_seconds,
        "cut": cut,
    }


def _digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]



@dataclass(frozen=True)
class Segment:
    """Segment ``index`` of an input: the frames shown in [start, end) seconds."""

    index: int
    start: Fraction
    end: Fraction | None  # None: to the end of the input
    seek: Fraction | None = None  # where decoding starts (a keyframe's decode time); None: start - 1 s
    frames: int | None = None  # frames the input holds in the window, when its packets say

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "start": str(self.start), "end": None if self.end is None else str(self.end),
                "seek": None if self.seek is None else str(self.seek), "frames": self.frames}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Segment":
        def frac(v: Any) -> Fraction | None:
            return None if v is None else Fraction(v)

        return cls(int(d["index"]), Fraction(d["start"]), frac(d["end"]), frac(d["seek"]), d["frames"])


def plan_segments(path: str | os.PathLike[str], seconds: int) -> list[Segment]:
    """Cut an input into segments at keyframes, each about ``seconds`` long (at least that, but the last).

    Reads packets only (no decoding). A cut is made at the first keyframe shown at least
    ``seconds`` after the previous cut; a file with one keyframe is one segment. Each
    segment knows how many frames it holds, so that its worker's count can be checked.
    """
    from .media._reader import _one_line

    keys: list[tuple[Fraction, Fraction]] = []  # (shown at, decoded at) of each keyframe, seconds
    times: list[Fraction] = []
    try:
        with av.open(os.fspath(path)) as c:
            v = c.streams.video[0]
            tb = v.time_base
            for packet in c.demux(v):
                if packet.pts is None or not packet.size:
                    continue
                t = packet.pts * tb
                times.append(t)
                if packet.is_keyframe:
                    keys.append((t, (packet.dts if packet.dts is not None else packet.pts) * tb))
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise UnsupportedMediaError(f"{path}: cannot be cut into segments ({_one_line(exc)})") from None
    if not times:
        raise UnsupportedMediaError(f"{path}: its video packets carry no timestamps; run it with --executor local")
    keys.sort()
    cuts: list[tuple[Fraction, Fraction | None]] = [(min(times), None)]
    for shown, decoded in keys:
        if shown >= cuts[-1][0] + seconds:
            cuts.append((shown, decoded))
    times.sort()
    segments = []
    for i, (start, seek) in enumerate(cuts):
        end = cuts[i + 1][0] if i + 1 < len(cuts) else None
        n = sum(1 for t in times if t >= start and (end is None or t < end))
        segments.append(Segment(i, start if i else Fraction(0), end, seek, n))
    return segments


class SegmentStore:
    """The work folder of a destination: its lock, manifest and finished segment files.

    ``fresh``: discard what an earlier run left (a run without ``--resume``). ``contiguous``: keep only an unbroken run of finished segments from the first (a
    sequential writer resumes after it); otherwise keep every finished one (segments
    encoded in parallel finish in any order). ``plan``: recorded in the manifest; a
    folder made with another plan is started over.
    """

    def __init__(self, dest: Path, *, input: Any, settings: Mapping[str, Any], contiguous: bool,
                 plan: list[Segment] | None = None, notes: list[str] | None = None, fresh: bool = False) -> None:
        self.dest = dest
        self.folder = work_folder(dest)
        self.notes = notes if notes is not None else []
        self._contiguous = contiguous
        self._fresh = fresh
        self.manifest: dict[str, Any] = {
            "version": _VERSION,
            "input": input,
            "settings": _digest(settings),
            "plan": [s.to_dict() for s in plan] if plan is not None else None,
            "segments": [],  # {"index": k, "file": name, "frames": n}, in order of index
        }
        self._lock: _JobLock | None = _JobLock(dest)
        try:
            self._load()
        except BaseException:
            self.release()
            raise

    @property
    def segments(self) -> list[dict[str, Any]]:
        return self.manifest["segments"]

    @property
    def frames(self) -> int:
        return sum(seg["frames"] for seg in self.segments)

    def done(self) -> set[int]:
        return {seg["index"] for seg in self.segments}

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.info("%s", message)

    def _load(self) -> None:
        """Keep the finished segments of an earlier run of this job."""
        path = self.folder / MANIFEST
        old: dict[str, Any] | None = None
        if path.is_file() and not self._fresh:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
        kept: list[dict[str, Any]] = []
        if old is not None:
            same = all(old.get(k) == self.manifest[k] for k in ("version", "input", "settings", "plan"))
            if not same:
                self._note(f"{self.folder.name}: the input or the settings changed since the interrupted run; "
                           "starting over")
            else:
                for seg in old.get("segments", []):
                    if not (self.folder / seg["file"]).is_file():
                        if self._contiguous:
                            break  # keep only an unbroken run of finished segments
                        continue
                    kept.append(seg)
        if kept:
            self.manifest["segments"] = kept
            self.tidy()
        elif self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(exist_ok=True)
        self.manifest["segments"] = kept
        self._save()

    def tidy(self) -> None:
        """Remove what an interrupted run left beside the finished segments (half-written files)."""
        if not self.folder.is_dir():
            return
        names = {seg["file"] for seg in self.segments} | {MANIFEST}
        for p in self.folder.iterdir():
            if p.name in names:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _save(self) -> None:
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / MANIFEST)

    def path(self, index: int) -> Path:
        return self.folder / f"seg-{index:06d}{self.dest.suffix}"

    def add(self, index: int, frames: int) -> None:
        """Record segment ``index`` as finished (its file is complete under :meth:`path`)."""
        entry = {"index": index, "file": self.path(index).name, "frames": frames}
        self.manifest["segments"] = sorted([s for s in self.segments if s["index"] != index] + [entry],
                                           key=lambda s: s["index"])
        self._save()

    def files(self) -> list[Path]:
        return [self.folder / seg["file"] for seg in self.segments]

    def remove(self) -> None:
        """The job is done (or abandoned): remove the folder and release the lock."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def segment_encoder(encoder: EncoderConfig) -> EncoderConfig:
    """Segments hold video only: the input's other streams are taken once, at the join."""
    return dataclasses.replace(encoder, audio="drop", subtitles="drop")


def encode_segment(pipeline: "Pipeline", src: str | os.PathLike[str], dst: Path, segment: Segment, *,
                   format: str | None = None, progress: "Callable[[Progress], None] | None" = None) -> "RunReport":
    """Upscale one segment of ``src`` into the video-only file ``dst`` (atomically, replacing it).

    The frame count is checked against the plan's: a segment that came out short or
    long (a seek that missed, a damaged packet) is an error, never a silently wrong join.
    """
    from .media._hwcodec import choose_encoder

    gpu = pipeline._gpu_index()
    reader = VideoReader(src, nvdec=gpu)
    try:
        reader.passthrough = []
        if segment.index:
            reader.start_at(segment.start, seek=segment.seek)
        reader.stop_at(segment.end)
        choice = choose_encoder(pipeline.config.encoder, gpu=gpu, pix_fmt=reader.info.pix_fmt)
        writer = VideoWriter(dst, reader, encoder=segment_encoder(choice.encoder), overwrite=True,
                             format=format, carry=False)
    except BaseException:
        reader.close()
        raise
    report = pipeline.run_streams(reader, writer, src=src, dst=dst, progress=progress, total=segment.frames or 0)
    if segment.frames is not None and report.frames != segment.frames:
        dst.unlink(missing_ok=True)
        raise EncodeError(f"{src}: segment {segment.index} at {float(segment.start):.3f} s gave {report.frames} "
                          f"frames, its packets say {segment.frames}; the input may be damaged there")
    return report


def join_segments(files: list[Path], reader: VideoReader, final: VideoWriter) -> None:
    """Join the segment files' video packets, in order, with the input's audio and subtitles into ``final``.

    The other streams are copied (or re-encoded) from the whole input exactly as a plain
    run does, so the joined file matches one; ``final`` is closed (moved into place) here.
    """
    with av.open(str(files[0])) as first:
        template = first.streams.video[0]
        time_base = template.time_base
        dts = _join_dts(files, time_base)
        packets = heapq.merge(_video_packets(files, dts), _copied_packets(reader), key=_time)
        for packet in packets:
            if packet.stream.type == "video":  # from a segment; the input's video is never read here
                final.write_encoded(packet, template)
            else:
                final.write(packet)
        final.close()


def _video_packets(files: list[Path], dts: list[int] | None) -> Iterator[av.Packet]:
    i = 0
    for f in files:
        with av.open(str(f)) as c:
            v = c.streams.video[0]
            for packet in c.demux(v):
                if packet.dts is None and packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                if dts is not None:
                    packet.dts = dts[i]
                i += 1
                yield packet


def _copied_packets(reader: VideoReader) -> Iterator[av.Packet]:
    """The input's audio, subtitle and data packets, from the beginning, as the plain run copies them."""
    wanted = {s.index for s in reader.passthrough}
    if not wanted:
        return
    with av.open(reader.path) as c:
        for packet in c.demux([s for s in c.streams if s.index in wanted]):
            if packet.dts is not None and packet.size:
                yield packet


class SegmentedWriter:
    """Stands in for :class:`~vsr.media.VideoWriter` in a resumable run.

    Same interface as far as the pipeline uses it (``write``, ``close``, ``abort``,
    ``output_format``, ``notes``, ``frames``, ``reader``). :attr:`start` says where the
    reader must begin (None: at the beginning).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        reader: VideoReader,
        *,
        encoder: EncoderConfig,
        overwrite: bool,
        settings: Mapping[str, Any],
        segment_seconds: int,
        format: str | None = None,
    ) -> None:
        if os.fspath(path) in ("-", "pipe:1") or (format or "").lower() in ("y4m", "yuv4mpegpipe"):
            raise ConfigError("--resume keeps segments beside an output file: it cannot write to "
                              "standard output or Y4M; give an output file")
        # The destination's checks (exists, folder writable...) now; it is written at close().
        self.final = VideoWriter(path, reader, encoder=encoder, overwrite=overwrite, format=format)
        self.path = self.final.path
        self.reader = reader
        self.notes = self.final.notes
        self.carry = self.final.carry  # what the joined file carries besides the video
        self.frames = 0  # frames written in this run
        self.dest = Path(self.path)
        self.segment = Fraction(segment_seconds)
        self._format = format
        self._segment_encoder = segment_encoder(encoder)
        self._current: tuple[int, VideoWriter] | None = None
        self._closed = False
        try:
            self.store = SegmentStore(self.dest, input=_file_identity(reader.path), settings=settings,
                                      contiguous=True, notes=self.notes)
        except BaseException:
            self.final.abort()
            raise
        self.folder = self.store.folder
        self.kept_frames = self.store.frames
        kept = self.store.segments
        self.start: Fraction | None = None if not kept else (kept[-1]["index"] + 1) * self.segment
        if self.start is not None:
            self.store._note(f"resuming at {float(self.start):.3f} s: {self.kept_frames} frames in {len(kept)} "
                             f"finished segment(s) kept from an earlier run")

    # -- writing -------------------------------------------------------------------------------
    @property
    def video_codec(self) -> str:
        """The video encoder the segments are written with (the joined file copies their packets)."""
        return self.final.video_codec

    @property
    def encoder_settings(self) -> dict[str, Any]:
        """The segments' codec, preset and crf: the joined file's (it copies their packets)."""
        return self.final.encoder_settings

    def output_format(self, width: int, height: int, pix_fmt: str) -> str:
        return self.final.output_format(width, height, pix_fmt)

    def write(self, item: Item) -> None:
        """Encode a frame into its segment; copied streams' packets are taken from the input at the end."""
        if not isinstance(item, av.VideoFrame):
            return
        if item.pts is None or not item.time_base:
            raise UnsupportedMediaError(f"{self.reader.path}: frames without timestamps cannot be resumed; "
                                        "run without --resume")
        index = math.floor(item.pts * item.time_base / self.segment)
        if self._current is not None and self._current[0] != index:
            self._finish_segment()
        if self._current is None:
            writer = VideoWriter(self.store.path(index), self.reader, encoder=self._segment_encoder,
                                 overwrite=True, format=self._format, carry=False)
            self._current = (index, writer)
        self._current[1].write(item)
        self.frames += 1

    def _finish_segment(self) -> None:
        assert self._current is not None
        index, writer = self._current
        self._current = None
        writer.close()  # the segment's file is complete once it has its own name
        self.store.add(index, writer.frames)

    def close(self) -> None:
        """Finish the last segment, join all of them with the input's other streams, move into place."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._current is not None:
                self._finish_segment()
            if not self.store.segments:
                raise EncodeError(f"{self.reader.path}: no video frame could be decoded; nothing written")
            self._join()
        except BaseException:
            self.final.abort()
            self.store.release()
            raise
        self.store.remove()

    def abort(self) -> None:
        """Stop: the segment in progress and the destination's temporary file go; finished segments stay."""
        self._closed = True
        if self._current is not None:
            self._current[1].abort()
            self._current = None
        self.final.abort()
        self.store.release()

    def _join(self) -> None:
        join_segments(self.store.files(), self.reader, self.final)


def _time(packet: av.Packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None else 0.0


def _join_dts(files: list[Path], time_base: Fraction) -> list[int] | None:
    """Decode timestamps for the joined video where the segments' own would not increase; None: keep theirs.

    Each segment's encoder starts its decode times a few frames before its first frame;
    with reordered (B-) frames and variable frame rates that can overlap the previous
    segment's last ones, and some containers (Matroska) store no decode times at all.
    Then the joined stream gets decode times d_i = S[i-k] (S: all presentation times
    sorted, k: the smallest delay with d_i <= p_i), which is what an encoder with
    reordering depth k writes for the whole video.
    """
    pts: list[int] = []
    last = None
    monotonic = True
    for f in files:
        with av.open(str(f)) as c:
            v = c.streams.video[0]
            if v.time_base != time_base:
                raise EncodeError(f"{f}: segment time base {v.time_base} differs from {time_base}; "
                                  "delete the folder and run again")
            for packet in c.demux(v):
                if packet.dts is None and packet.size == 0:
                    continue
                pts.append(packet.pts)
                if packet.dts is None or (last is not None and packet.dts <= last):
                    monotonic = False
                last = packet.dts
    if monotonic:
        return None
    order = sorted(pts)
    rank = {p: r for r, p in enumerate(order)}
    k = max(0, max(i - rank[p] for i, p in enumerate(pts)))
    step = min((b - a for a, b in zip(order, order[1:])), default=1)
    return [order[i - k] if i >= k else order[0] - (k - i) * step for i in range(len(pts))]
