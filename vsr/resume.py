"""Resumable runs (``vsr run --resume``): the video is encoded in segments kept beside the destination.

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
starts over. Decoding seeks to the first unfinished segment. At the end the segments'
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
from typing import Any, Iterator, Mapping

import av

from . import _filelock
from .config import EncoderConfig, PipelineConfig
from .errors import ConfigError, EncodeError, OutputExistsError, UnsupportedMediaError
from .media import Item, VideoReader, VideoWriter
from .models import shipped_weights

__all__ = ["SegmentedWriter", "run_settings", "work_folder"]

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


def run_settings(config: PipelineConfig, device: str, precision: str) -> dict[str, Any]:
    """Everything that changes the encoded video: a resumed run must match the first one in all of it."""
    m = config.model
    weights = m.weights or shipped_weights(m.name, m.scale)
    return {
        "model": m.name,
        "scale": m.scale,
        "weights": _file_identity(weights) if weights else None,
        "device": device.split(":")[0],
        "precision": precision,
        "encoder": dataclasses.asdict(config.encoder),
        "segment_seconds": config.resume_segment,
    }


def _digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        self.folder = work_folder(self.dest)
        self.segment = Fraction(segment_seconds)
        self._format = format
        self._segment_encoder = dataclasses.replace(encoder, audio="drop", subtitles="drop")
        self._manifest: dict[str, Any] = {
            "version": _VERSION,
            "input": _file_identity(reader.path),
            "settings": _digest(settings),
            "segments": [],  # {"index": k, "file": name, "frames": n}, in order
        }
        self._current: tuple[int, VideoWriter] | None = None
        self._closed = False
        self._lock: _JobLock | None = None
        try:
            self._lock = _JobLock(self.dest)
            self.kept_frames = self._load()
        except BaseException:
            self.final.abort()
            if self._lock is not None:
                self._lock.release()
            raise
        last = self._manifest["segments"][-1]["index"] if self._manifest["segments"] else None
        self.start: Fraction | None = None if last is None else (last + 1) * self.segment
        if self.start is not None:
            n = len(self._manifest["segments"])
            self._note(f"resuming at {float(self.start):.3f} s: {self.kept_frames} frames in {n} finished "
                       f"segment(s) kept from an earlier run")

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.info("%s", message)

    # -- the manifest --------------------------------------------------------------------------
    def _load(self) -> int:
        """Keep the finished segments of an earlier run of this job; return their frame count."""
        path = self.folder / MANIFEST
        old: dict[str, Any] | None = None
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
        kept: list[dict[str, Any]] = []
        if old is not None:
            same = all(old.get(k) == self._manifest[k] for k in ("version", "input", "settings"))
            if not same:
                self._note(f"{self.folder.name}: the input or the settings changed since the interrupted run; "
                           "starting over")
            else:
                for seg in old.get("segments", []):
                    if not (self.folder / seg["file"]).is_file():
                        break  # keep only an unbroken run of finished segments
                    kept.append(seg)
        if kept:
            self._tidy(kept)
        elif self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(exist_ok=True)
        self._manifest["segments"] = kept
        self._save()
        return sum(seg["frames"] for seg in kept)

    def _tidy(self, kept: list[dict[str, Any]]) -> None:
        """Remove what an interrupted run left beside the kept segments (half-written files)."""
        names = {seg["file"] for seg in kept} | {MANIFEST}
        for p in self.folder.iterdir():
            if p.name in names:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _save(self) -> None:
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self._manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / MANIFEST)

    # -- writing -------------------------------------------------------------------------------
    def output_format(self, width: int, height: int, pix_fmt: str) -> str:
        return self.final.output_format(width, height, pix_fmt)

    def _segment_path(self, index: int) -> Path:
        return self.folder / f"seg-{index:06d}{self.dest.suffix}"

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
            writer = VideoWriter(self._segment_path(index), self.reader, encoder=self._segment_encoder,
                                 overwrite=True, format=self._format, carry=False)
            self._current = (index, writer)
        self._current[1].write(item)
        self.frames += 1

    def _finish_segment(self) -> None:
        assert self._current is not None
        index, writer = self._current
        self._current = None
        writer.close()  # the segment's file is complete once it has its own name
        self._manifest["segments"].append({"index": index, "file": self._segment_path(index).name,
                                           "frames": writer.frames})
        self._save()

    def close(self) -> None:
        """Finish the last segment, join all of them with the input's other streams, move into place."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._current is not None:
                self._finish_segment()
            if not self._manifest["segments"]:
                raise EncodeError(f"{self.reader.path}: no video frame could be decoded; nothing written")
            self._join()
        except BaseException:
            self.final.abort()
            self._release()
            raise
        shutil.rmtree(self.folder, ignore_errors=True)
        self._release()

    def abort(self) -> None:
        """Stop: the segment in progress and the destination's temporary file go; finished segments stay."""
        self._closed = True
        if self._current is not None:
            self._current[1].abort()
            self._current = None
        self.final.abort()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    # -- joining -------------------------------------------------------------------------------
    def _join(self) -> None:
        files = [self.folder / seg["file"] for seg in self._manifest["segments"]]
        with av.open(str(files[0])) as first:
            template = first.streams.video[0]
            time_base = template.time_base
            dts = _join_dts(files, time_base)
            packets = heapq.merge(self._video_packets(files, dts), self._copied_packets(), key=_time)
            for packet in packets:
                if packet.stream.type == "video":  # from a segment; the input's video is never read here
                    self.final.write_encoded(packet, template)
                else:
                    self.final.write(packet)
            self.final.close()

    def _video_packets(self, files: list[Path], dts: list[int] | None) -> Iterator[av.Packet]:
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

    def _copied_packets(self) -> Iterator[av.Packet]:
        """The input's audio, subtitle and data packets, from the beginning, as the plain run copies them."""
        wanted = {s.index for s in self.reader.passthrough}
        if not wanted:
            return
        with av.open(self.reader.path) as c:
            for packet in c.demux([s for s in c.streams if s.index in wanted]):
                if packet.dts is not None and packet.size:
                    yield packet


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
