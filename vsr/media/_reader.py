"""Demux → decode: :class:`VideoReader` and what it tells of an input."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Union

import av

from ..errors import MediaError
from . import _hwcodec
from ._carry import carried_streams, main_video
from ._frames import native_format

log = logging.getLogger("vsr")

Item = Union[av.VideoFrame, av.Packet]


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:  # without the errno and the file name again
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__



@dataclass(frozen=True)
class VideoInfo:
    """What vsr needs to know of an input's video stream."""

    path: str
    width: int
    height: int
    pix_fmt: str
    codec: str
    time_base: Fraction
    frame_rate: Fraction | None  # average rate; None when the container does not say
    frames: int  # container's count, or an estimate from duration; 0 when unknown
    duration: float | None  # seconds
    sample_aspect_ratio: Fraction | None
    interlaced: bool

    @property
    def fps(self) -> float | None:
        return float(self.frame_rate) if self.frame_rate else None


class VideoReader:
    """Demuxes an input, decodes its first video stream, and passes other packets through.

    Iterating yields, in demux order, decoded :class:`av.VideoFrame` objects (in a
    planar format vsr handles natively) and the :class:`av.Packet` objects of the
    ``passthrough`` streams (audio, subtitles, data; see :mod:`vsr.media._carry`).

    ``nvdec``: the CUDA device index of a GPU run; large frames are then decoded with NVDEC
    where it opens (:func:`vsr.media._hwcodec.open_for_decoding`; same frames and timestamps).
    """

    def __init__(self, path: str | os.PathLike[str], *, decoder_threads: int = 0, nvdec: int | None = None) -> None:
        self.path = os.fspath(path)
        self.lost_packets = 0
        self.frames_decoded = 0
        self.missing_frames = 0  # frames the container announces but the file does not hold (set at the end)
        self._presented = 0  # frames the container says it shows; 0 when it does not count them (set by _probe)
        self._video_start: float | None = None  # time of the first decoded frame, seconds
        self._start: Fraction | None = None  # see start_at()
        self._stop: Fraction | None = None  # see stop_at()
        self._video_end: float | None = None  # end time of the last decoded frame, seconds
        self.rotation = 0  # display rotation in degrees, from the first frame's display matrix
        self._converted_from: str | None = None
        check_input_path(self.path)
        try:
            self.container = av.open(self.path if self.path != "-" else "pipe:0", "r")
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path}: not a readable video file ({_one_line(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(f"{self.path}: has no video stream")
        self.video = main_video(self.container)  # the first that is not cover art
        cc = self.video.codec_context
        if cc.width <= 0 or cc.height <= 0:
            self.container.close()
            raise MediaError(f"{self.path}: video stream has no frame size (unreadable stream)")
        self.decoder = "cpu"
        self.notes: list[str] = []
        if nvdec is not None:
            self._use_nvdec(nvdec)
            cc = self.video.codec_context
        self.video.thread_type = "AUTO"
        cc.thread_count = decoder_threads
        self.passthrough = carried_streams(self.container, self.video)  # audio, subtitles, data
        self.info = self._probe()

    def _use_nvdec(self, gpu: int) -> None:
        cc = self.video.codec_context
        hw, note = _hwcodec.open_for_decoding(self.path, gpu=gpu, codec=cc.name, width=cc.width, height=cc.height)
        if note:
            self.notes.append(note)
            log.info("%s: %s", self.path, note)
        if hw is not None:
            self.container.close()
            self.container = hw
            self.video = main_video(hw)
            self.decoder = "nvdec"
            log.info("%s: decoder: %s on NVDEC (GPU %d)", self.path, cc.name, gpu)

    def _probe(self) -> VideoInfo:
        s = self.video
        cc = s.codec_context
        rate = s.average_rate or s.guessed_rate or None
        # The video's own length: Matroska writes it in a DURATION tag (its demuxer may give the
        # whole segment's length, subtitles and audio included, as the stream's duration).
        own = _tag_seconds(s.metadata.get("DURATION"))
        if own is None and s.duration is not None and s.time_base and "matroska" not in self.container.format.name:
            own = float(s.duration * s.time_base)
        self._own_duration = own
        duration = own
        if duration is None and self.container.duration:
            duration = self.container.duration / av.time_base
        self._presented = _presented_frames(self.container, s)
        frames = self._presented or (round(duration * float(rate)) if duration and rate else 0)
        pix_fmt = cc.pix_fmt or "unknown"
        return VideoInfo(
            path=self.path,
            width=cc.width,
            height=cc.height,
            pix_fmt=pix_fmt,
            codec=cc.name,
            time_base=s.time_base or Fraction(1, 90000),
            frame_rate=Fraction(rate) if rate else None,
            frames=int(frames),
            duration=duration,
            sample_aspect_ratio=s.sample_aspect_ratio,
            interlaced=_interlaced(cc.field_order),
        )

    def _planar(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Return the frame in a format vsr works on natively, converting once-noted formats."""
        name = frame.format.name
        if native_format(name):
            return frame
        twin = _hwcodec.planar_twin(name)  # NVDEC's NV12/P010: the planar format of the same depth
        target = twin or ("yuv444p" if frame.format.is_rgb else "yuv420p")
        if frame.width % 2 or frame.height % 2:
            target = twin.replace("420", "444").replace("422", "444") if twin else "yuv444p"
        if self._converted_from is None:
            self._converted_from = name
            log.info("%s: pixel format %s is converted to %s for processing", self.path, name, target)
        return frame.reformat(format=target)

    def __iter__(self) -> Iterator[Item]:
        wanted = [self.video, *self.passthrough]
        try:
            for packet in self.container.demux(wanted):
                if packet.stream is self.video:
                    try:
                        frames = packet.decode()
                    except av.InvalidDataError:
                        self.lost_packets += 1
                        continue
                    for frame in frames:
                        if self.frames_decoded == 0:
                            self.rotation = frame.rotation
                        if self._start is not None and _before(frame, self._start):
                            continue
                        if self._stop is not None and not _before(frame, self._stop):
                            return  # the end of a segment (see stop_at)
                        self.frames_decoded += 1
                        if frame.pts is not None and frame.time_base:
                            if self._video_start is None:
                                self._video_start = float(frame.pts * frame.time_base)
                            self._video_end = float((frame.pts + (frame.duration or 0)) * frame.time_base)
                        yield self._planar(frame)
                elif packet.dts is not None and packet.size:
                    if self._start is None or not _before(packet, self._start):
                        yield packet
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"{self.path}: cannot read past this point ({_one_line(exc)})") from None
        if self._start is None:  # a run that started mid-way cannot count what the file lacks
            self.missing_frames = self._shortfall()

    def start_at(self, seconds: Fraction, *, seek: Fraction | None = None) -> None:
        """Begin at the first video frame shown at or after ``seconds`` (to resume a job); call before iterating.

        Seeks to the keyframe at or before ``seek`` seconds (default: a second before
        ``seconds``, so that copied streams' packets stored near it are not missed), then
        skips what is shown earlier. A segment that starts at a keyframe seeks to that
        keyframe's decode time, which is at or before the frame in every container.
        """
        self._start = Fraction(seconds)
        target = self._start - 1 if seek is None else Fraction(seek)
        s = self.video
        if seconds > 0 and s.time_base:
            try:
                self.container.seek(int(target / s.time_base), stream=s, backward=True)
            except av.FFmpegError as exc:
                raise MediaError(f"{self.path}: cannot seek to {float(seconds):.3f} s ({_one_line(exc)})") from None

    def stop_at(self, seconds: Fraction | None) -> None:
        """End before the first video frame shown at or after ``seconds`` (None: at the end of the input)."""
        self._stop = None if seconds is None else Fraction(seconds)

    def _shortfall(self) -> int:
        """Frames the container announces beyond those decoded: a truncated file's loss.

        Exact where the container indexes every frame (MP4/MOV; see :func:`_presented_frames`);
        otherwise estimated from the stream's announced duration, counted only when more than a
        frame is missing.
        """
        info = self.info
        if self._presented:
            return max(0, self._presented - self.frames_decoded)
        if not (self._own_duration and info.frame_rate and self._video_end is not None):
            return 0
        gap = (self._video_start or 0.0) + self._own_duration - self._video_end
        return round(gap * float(info.frame_rate)) if gap * float(info.frame_rate) > 1.5 else 0

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _presented_frames(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """The frames a stream shows, as its container counts them; 0 when it does not.

    An MP4/MOV edit list shows only part of what is stored: a file trimmed without
    re-encoding (``ffmpeg -ss 0.7 -i in.mp4 -c copy``, phone editors) keeps the frames from
    the keyframe before the edit point, which are decoded but never shown, and may stop
    showing before its last sample. The stream's ``frames`` counts every stored sample;
    FFmpeg's index marks those outside the edit with a discard flag (their decoded frames
    are dropped) and leaves out those after its end, so the index, less the discarded
    entries, counts what is shown. Elsewhere the index may hold only keyframes (Matroska's
    cues), so the stream's own count is taken as it is.
    """
    if not stream.frames:
        return 0
    entries = getattr(stream, "index_entries", None)  # absent in older PyAV: every sample counts
    if "mov" not in container.format.name.split(",") or not entries:
        return stream.frames
    return sum(1 for entry in entries if not entry.is_discard)


def _before(item: av.VideoFrame | av.Packet, seconds: Fraction) -> bool:
    """Whether a frame or packet is shown before ``seconds`` (False when it has no timestamp)."""
    return item.pts is not None and bool(item.time_base) and item.pts * item.time_base < seconds


def _tag_seconds(value: str | None) -> float | None:
    """``HH:MM:SS.fraction`` (a Matroska DURATION tag) in seconds; None when absent or malformed."""
    try:
        h, m, sec = (value or "").split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _interlaced(field_order: int | str | None) -> bool:
    """Whether a codec context's field order says interlaced (PyAV gives FFmpeg's integer, older ones a name)."""
    if isinstance(field_order, int):
        return field_order >= 2  # AV_FIELD_UNKNOWN 0, PROGRESSIVE 1, then TT, BB, TB, BT
    return field_order not in (None, "progressive", "unknown")


def check_input_path(path: str | os.PathLike[str]) -> None:
    """Refuse, with a one-line reason, a local path that cannot be a video (pipes and URLs pass)."""
    path = os.fspath(path)
    if path == "-" or path.startswith(("pipe:", "/dev/")) or "://" in path:
        return
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{path}: no such file")
    if p.is_dir():
        raise MediaError(f"{path}: is a directory, not a video file")
    if not os.access(p, os.R_OK):
        raise MediaError(f"{path}: permission denied")
    if p.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")
