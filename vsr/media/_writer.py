"""Encode → mux: :class:`VideoWriter`, with atomic output through a temporary file, and Y4M/stdout."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .. import _filelock
from .._atomic import move_into_place
from ..config import EncoderConfig
from ..errors import ConfigError, EncodeError, OutputExistsError, UnsupportedMediaError
from . import _hwcodec
from ._carry import CarryPlan, plan_carry
from ._reader import Item, VideoReader, _one_line

log = logging.getLogger("vsr")


@dataclass(frozen=True, kw_only=True)
class SourceDescription:
    """What a :class:`VideoWriter` needs of its source when no :class:`VideoReader` is behind it.

    For frames that come from elsewhere (a camera in the live preview, generated frames):
    the writer then has no streams to copy and no tags to carry over. Frames are written
    with their own ``pts`` in ``time_base``; ``frame_rate`` is the nominal rate told to
    the encoder. Field names are those of :class:`VideoInfo`.
    """

    name: str  # the source as messages name it
    frame_rate: Fraction = Fraction(25)
    time_base: Fraction = Fraction(1, 1000)
    sample_aspect_ratio: Fraction | None = None
    rotation: int = 0  # display rotation in degrees

    def __post_init__(self) -> None:
        if self.frame_rate <= 0 or self.time_base <= 0:
            raise ValueError(f"frame_rate and time_base must be positive, got {self.frame_rate}, {self.time_base}")


# Short names people type for ``--format``; anything else is an FFmpeg muxer name.
_FORMAT_ALIASES = {"y4m": "yuv4mpegpipe", "mkv": "matroska", "ts": "mpegts", "m4v": "mp4"}
_Y4M = "yuv4mpegpipe"
# What FFmpeg's Y4M muxer writes (9- to 16-bit ones as 'unofficial' extensions that FFmpeg reads).
_Y4M_FORMATS = frozenset(
    ["gray", "gray10le", "gray12le", "gray16le", "yuv411p", "yuv420p", "yuv422p", "yuv444p", "yuvj420p",
     "yuvj422p", "yuvj444p"]
    + [f"yuv4{c}p{bits}le" for c in ("20", "22", "44") for bits in (9, 10, 12, 14, 16)]
)


def resolve_container_format(name: str | None, path: str | os.PathLike[str] = "") -> str | None:
    """The FFmpeg muxer for ``--format`` (aliases: y4m, mkv, ts); None lets FFmpeg pick from the file name.

    Standard output has no name to pick from: it gets matroska unless a format is given.
    """
    to_stdout = os.fspath(path) in ("-", "pipe:1")
    if name is None:
        return "matroska" if to_stdout else None
    muxer = _FORMAT_ALIASES.get(name.lower(), name.lower())
    try:
        av.format.ContainerFormat(muxer, "w")
    except (ValueError, av.FFmpegError):
        raise ConfigError(
            f"unknown output format {name!r}; use y4m, mkv, mp4, nut, webm, mpegts or another FFmpeg muxer name"
        ) from None
    return muxer


class _Y4MHeaderAspect(io.RawIOBase):
    """A write-only stream that sets the aspect field (``A``) of a Y4M stream header.

    FFmpeg's yuv4mpegpipe muxer takes the sample aspect ratio from the AVStream, which
    PyAV cannot set (only the codec context's, which Matroska or MP4 use), so it writes
    ``A0:0`` (unknown). The header is the stream's first line; the rest passes untouched.
    """

    def __init__(self, raw: io.BufferedIOBase | io.RawIOBase, aspect: Fraction | None, *, close_raw: bool) -> None:
        super().__init__()
        self._raw = raw
        self._aspect = aspect
        self._close_raw = close_raw
        self._head: bytes | None = b""  # None once the header went out

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        n = len(data)
        if self._head is None:
            self._raw.write(data)
            return n
        self._head += bytes(data)
        if b"\n" in self._head:
            line, rest = self._head.split(b"\n", 1)
            if self._aspect:
                field = f" A{self._aspect.numerator}:{self._aspect.denominator}".encode()
                line = re.sub(rb" A\d+:\d+", field, line) if re.search(rb" A\d+:\d+", line) else line + field
            self._raw.write(line + b"\n" + rest)
            self._head = None
        return n

    def close(self) -> None:
        if not self.closed:
            if self._head:  # no newline ever came: not a header to fix
                self._raw.write(self._head)
                self._head = None
            self._raw.flush()
            if self._close_raw:
                self._raw.close()
        super().close()


def _temp_path(dest: Path) -> Path:
    # The extension stays last so that FFmpeg picks the container from it.
    return dest.with_name(f".{dest.stem}.vsr-{uuid.uuid4().hex[:8]}{dest.suffix}")


# A temporary file younger than this is never taken for stale: its writer may not hold its lock yet.
STALE_AFTER_S = 10.0


def remove_stale_temp_files(dest: Path) -> list[Path]:
    """Remove the temporary files of ``dest`` that a killed run left behind; return them.

    Every writer holds a lock on its temporary file while it lives (:mod:`vsr._filelock`);
    a file of the temporary-name pattern that nobody holds, and that is older than
    :data:`STALE_AFTER_S`, belongs to a run that died without cleaning up (SIGKILL, power cut).
    """
    if not _filelock.AVAILABLE:
        return []
    pattern = re.compile(rf"\.{re.escape(dest.stem)}\.vsr-[0-9a-f]{{8}}{re.escape(dest.suffix)}")
    removed = []
    try:
        candidates = [p for p in dest.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []
    for path in candidates:
        try:
            if time.time() - path.lstat().st_mtime < STALE_AFTER_S or not path.is_file():
                continue
            fd = _filelock.lock(path, create=False)
        except OSError:
            continue
        if fd is None:  # a live run is writing it
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
        finally:
            _filelock.unlock(fd)
    return removed


class VideoWriter:
    """Encodes video frames and muxes them with the copied streams of a :class:`VideoReader`.

    ``reader`` may instead be a :class:`SourceDescription`, for frames without an input file.

    The video stream is set up from the first frame (size, format, colour tags,
    rotation), so streams' packets that arrive before it are held until then. Output
    goes to a temporary file beside ``path``; :meth:`close` renames it over ``path``,
    :meth:`abort` removes it. An existing ``path`` is refused unless ``overwrite``.

    What the input holds besides the picture (audio, subtitles, data, cover art,
    attachments, chapters, timecode, tags) is carried as :attr:`carry` plans
    (:mod:`vsr.media._carry`); ``carry=False`` writes the video alone (resume segments).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        reader: VideoReader | SourceDescription,
        *,
        encoder: EncoderConfig,
        overwrite: bool = False,
        format: str | None = None,
        carry: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self.reader = reader if isinstance(reader, VideoReader) else None
        self.source = reader
        self._source_name = reader.path if isinstance(reader, VideoReader) else reader.name
        self.encoder = encoder
        self.overwrite = overwrite
        self.frames = 0
        self._video: av.video.stream.VideoStream | None = None
        self._pending: list[av.Packet] = []
        self._format: str | None = None
        self._copied_video = False  # video packets come encoded (write_encoded), not as frames
        self._closed = False
        self._to_stdout = self.path in ("-", "pipe:1")
        self._tmp_lock: int | None = None
        if self._to_stdout:
            self.dest, self.tmp = None, None
            target = "pipe:1"
        else:
            self.dest = Path(self.path)
            if self.dest.is_dir():
                raise EncodeError(f"{self.path}: is a directory; give an output file name")
            if self.dest.exists() and not overwrite:
                raise OutputExistsError(f"{self.path} exists; pass -y/--overwrite to replace it")
            if not self.dest.parent.is_dir():
                raise EncodeError(f"{self.path}: folder {str(self.dest.parent)!r} does not exist")
            if not os.access(self.dest.parent, os.W_OK):
                raise EncodeError(f"{self.path}: folder {str(self.dest.parent)!r} is not writable")
            for stale in remove_stale_temp_files(self.dest):
                log.info("%s: removed %s, left by a run that was killed", self.path, stale.name)
            self.tmp = _temp_path(self.dest)
            try:  # created and locked before FFmpeg opens it, so that no other run takes it for stale
                self._tmp_lock = _filelock.lock(self.tmp, create=True)
            except OSError as exc:
                raise EncodeError(f"{self.path}: cannot create a file in {str(self.dest.parent)!r} "
                                  f"({exc.strerror or _one_line(exc)})") from None
            target = str(self.tmp)
        self._sink: _Y4MHeaderAspect | None = None
        self._y4m_start: Fraction | None = None  # the first frame's time, to tell a variable rate
        self._y4m_noted = False
        fmt = resolve_container_format(format, self.path)
        if fmt is None and self.dest is not None and self.dest.suffix.lower() == ".y4m":
            fmt = _Y4M  # what FFmpeg would pick from the name; known here to write it as Y4M
        self.y4m = fmt == _Y4M
        try:
            if self.y4m:
                # Raw frames in a Y4M stream: written through a filter that sets the aspect field;
                # 'unofficial' lets the muxer take 9- to 16-bit formats, which other tools read.
                raw = sys.stdout.buffer if self._to_stdout else open(target, "wb")
                sar = self.source.sample_aspect_ratio if self.reader is None else reader.info.sample_aspect_ratio
                self._sink = _Y4MHeaderAspect(raw, sar, close_raw=not self._to_stdout)
                self.container = av.open(self._sink, "w", format=fmt, container_options={"strict": "unofficial"})
            else:
                options = {}
                if self._to_stdout and fmt in ("mp4", "mov", "ipod", "ismv"):
                    options["movflags"] = "frag_keyframe+empty_moov"  # MP4 on a pipe: fragmented
                self.container = av.open(target, "w", format=fmt, container_options=options)
        except (av.FFmpegError, ValueError, OSError) as exc:
            if self._sink is not None:
                self._sink.close()
            self._remove_tmp()
            raise EncodeError(f"{self.path}: cannot create this kind of file ({_one_line(exc)})") from None
        self._copies: dict[int, av.stream.Stream] = {}
        self._reencode: dict[int, av.stream.Stream] = {}
        self.notes: list[str] = []
        self.carry = (plan_carry(reader, self.container, encoder, video_only=not carry)
                      if isinstance(reader, VideoReader) else CarryPlan())
        self.container.metadata.update(self.carry.global_metadata)
        for note in self.carry.notes:
            self._note(note)

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.info("%s", message)

    def output_format(self, width: int, height: int, pix_fmt: str) -> str:
        """The encoder's pixel format for frames of this size and format.

        The input's own format unless the user set one; 4:4:4 of the same depth when a
        subsampled format cannot hold an odd size. Callers build output frames in it, so
        chroma is resized once, straight to its final size.
        """
        if self._format is not None:
            return self._format
        codec = av.codec.Codec(self.video_codec, "w")
        accepted = [f.name for f in codec.video_formats or []]
        want = self.encoder.pix_fmt
        if want != "auto":
            if accepted and want not in accepted:
                raise EncodeError(
                    f"encoder {self.video_codec} cannot write pixel format {want}; it takes: {', '.join(accepted)}"
                )
            self._format = want
            return want
        fmt = av.VideoFormat(pix_fmt)
        name = fmt.name
        subsampled = fmt.chroma_width(width) != width or fmt.chroma_height(height) != height
        if (width % 2 or height % 2) and subsampled:
            name = name.replace("420", "444").replace("422", "444")
            self._note(f"output size {width}x{height} is odd: encoding {name} (4:2:0 and 4:2:2 need even sizes)")
        if accepted and name not in accepted:
            raise UnsupportedMediaError(
                f"{self._source_name}: pixel format {name} cannot be encoded by {self.video_codec} "
                f"(it takes: {', '.join(accepted)}); set encoder.pix_fmt or encoder.codec"
            )
        if self.y4m and name not in _Y4M_FORMATS:
            raise UnsupportedMediaError(
                f"{self._source_name}: pixel format {name} has no Y4M form; pass --pix-fmt yuv444p "
                "(or another of: " + ", ".join(sorted(_Y4M_FORMATS)[:8]) + ", ...) or another -f"
            )
        self._format = name
        return name

    @property
    def video_codec(self) -> str:
        """The video encoder: ``encoder.codec`` (``auto``: libx264), except raw frames in a Y4M stream.

        A run on CUDA resolves ``auto`` before (:func:`vsr.media._hwcodec.choose_encoder`).
        """
        if self.y4m:
            return "rawvideo"
        return _hwcodec.CPU_DEFAULT if self.encoder.codec == _hwcodec.AUTO else self.encoder.codec

    @property
    def encoder_settings(self) -> dict[str, Any]:
        """The video encoder as it runs, for a run's report: codec, preset, crf (None for raw Y4M frames)."""
        raw = self.y4m
        return {"codec": self.video_codec, "preset": None if raw else self.encoder.preset,
                "crf": None if raw else self.encoder.crf}

    def _open_video(self, frame: av.VideoFrame) -> av.video.stream.VideoStream:
        info = self.reader.info if self.reader is not None else self.source
        rotation = self.reader.rotation if self.reader is not None else self.source.rotation
        enc = self.encoder
        rate = info.frame_rate or Fraction(25)
        try:
            stream = self.container.add_stream(self.video_codec, rate=rate)
        except (av.FFmpegError, ValueError) as exc:
            raise EncodeError(f"encoder {self.video_codec!r} is not available ({_one_line(exc)})") from None
        stream.width, stream.height = frame.width, frame.height
        stream.pix_fmt = self.output_format(frame.width, frame.height, frame.format.name)
        # Y4M has no timestamps: its frame rate is the time base, frames follow one another.
        time_base = 1 / Fraction(rate) if self.y4m else info.time_base
        stream.time_base = time_base
        cc = stream.codec_context
        cc.time_base = time_base
        if getattr(info, "interlaced", False):
            self._note(f"{self._source_name}: interlaced video is upscaled as whole frames and written as "
                       "progressive; deinterlace it first (e.g. FFmpeg's bwdif filter) for the best result")
        cc.thread_type = "AUTO"
        for attr in ("color_range", "colorspace", "color_primaries", "color_trc"):
            value = getattr(frame, attr, None)
            if value:
                setattr(cc, attr, value)
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        if rotation:
            stream.set_display_rotation(rotation)
        if _hwcodec.hardware_encoder(self.video_codec):
            cc.options = self._hardware_options()
        else:
            options = {}
            opts = cc.supported_options
            supported = {o.name for o in (*opts.private, *opts.generic)}
            if enc.crf is not None and "crf" in supported:
                options["crf"] = str(enc.crf)
            if enc.preset is not None and "preset" in supported:
                options["preset"] = enc.preset
            cc.options = options
        self.carry.dress_video(stream)
        return stream

    def _hardware_options(self) -> dict[str, str]:
        """NVENC: crf/preset as constant quality and p1-p7; refused in one line where it cannot open."""
        codec = self.video_codec
        if not _hwcodec.encoder_opens(codec):
            raise EncodeError(f"encoder {codec} cannot be opened here: it needs an NVIDIA GPU with NVENC and its "
                              "driver (data-centre GPUs such as the H100/H200 have none); use --codec auto or libx264")
        try:
            return _hwcodec.nvenc_options(self.encoder.crf, self.encoder.preset)
        except ValueError as exc:
            raise EncodeError(f"encoder {codec}: {exc}") from None

    # -- writing -------------------------------------------------------------------------
    def write(self, item: Item) -> None:
        """Encode a video frame, or copy / re-encode a packet of a passthrough stream."""
        try:
            if isinstance(item, av.VideoFrame):
                if self._video is None:
                    self._start_streams(self._open_video(item))
                if self.y4m:
                    self._y4m_timing(item)
                self.container.mux(self._video.encode(item))
                self.frames += 1
            elif self._video is None:
                self._pending.append(item)
            else:
                self._mux_passthrough(item)
        except av.FFmpegError as exc:
            raise EncodeError(f"{self.path}: cannot write ({_one_line(exc)})") from None
        except OSError as exc:
            raise EncodeError(f"{self.path}: cannot write ({exc.strerror or _one_line(exc)})") from None

    def _start_streams(self, video: av.video.stream.VideoStream) -> None:
        self._video = video
        # After the video, so that video is stream 0; cover pictures first of all packets.
        self._copies, self._reencode = self.carry.add_streams(self.container)
        self.carry.mux_covers(self.container)
        for packet in self._pending:
            self._mux_passthrough(packet)
        self._pending.clear()

    def write_encoded(self, packet: av.Packet, template: av.video.stream.VideoStream) -> None:
        """Mux an already encoded video packet (from :mod:`vsr.resume`'s segments) instead of a frame.

        The first one makes the video stream a copy of ``template``'s parameters; don't mix
        with :meth:`write` of frames.
        """
        try:
            if self._video is None:
                stream = self.container.add_stream_from_template(template)
                self.carry.dress_video(stream)
                self._copied_video = True
                self._start_streams(stream)
            packet.stream = self._video
            self.container.mux(packet)
            self.frames += 1
        except av.FFmpegError as exc:
            raise EncodeError(f"{self.path}: cannot write ({_one_line(exc)})") from None
        except OSError as exc:
            raise EncodeError(f"{self.path}: cannot write ({exc.strerror or _one_line(exc)})") from None

    def _y4m_timing(self, frame: av.VideoFrame) -> None:
        """Number frames one after another at the stream's rate; note once if the input's times differ."""
        rate = 1 / self._video.time_base
        if frame.pts is not None and frame.time_base and not self._y4m_noted:
            t = frame.pts * frame.time_base
            if self._y4m_start is None:
                self._y4m_start = t
            if abs(float(t - self._y4m_start - self.frames / rate)) > 0.5 / float(rate):
                self._y4m_noted = True
                self._note(f"{self._source_name}: variable frame rate; Y4M holds one rate, so frames are "
                           f"written at {float(rate):.3f} fps from frame {self.frames} on")
        frame.pts = self.frames
        frame.time_base = self._video.time_base

    def _mux_passthrough(self, packet: av.Packet) -> None:
        index = packet.stream.index
        if index in self._copies:
            cc = packet.stream.codec_context
            if packet.size == 2 and cc is not None and cc.name == "mov_text" and bytes(packet) == b"\0\0":
                return  # an empty cue between two others: MP4 muxers write their own, so it would be doubled
            packet.stream = self._copies[index]
            self.container.mux(packet)
        elif index in self._reencode:
            out = self._reencode[index]
            for frame in packet.decode():
                frame.pts = None  # let the encoder number samples continuously
                self.container.mux(out.encode(frame))

    def close(self) -> None:
        """Flush the encoders, finish the file and move it into place."""
        if self._closed:
            return
        try:
            if self._video is None:
                raise EncodeError(f"{self._source_name}: no video frame could be decoded; nothing written")
            if not self._copied_video:
                self.container.mux(self._video.encode(None))
            for out in self._reencode.values():
                self.container.mux(out.encode(None))
            self.container.close()
            self._closed = True
        except av.FFmpegError as exc:
            self.abort()
            raise EncodeError(f"{self.path}: cannot finish the file ({_one_line(exc)})") from None
        except OSError as exc:
            self.abort()
            raise EncodeError(f"{self.path}: cannot finish the file ({exc.strerror or _one_line(exc)})") from None
        except BaseException:
            self.abort()
            raise
        if self.tmp is not None and self.dest is not None:
            try:
                self._move_into_place(self.tmp, self.dest)
            finally:
                self._unlock_tmp()

    def _move_into_place(self, tmp: Path, dest: Path) -> None:
        """Rename the finished file to ``dest`` (:func:`vsr._atomic.move_into_place`: no clobber without ``overwrite``)."""
        placed = move_into_place(tmp, dest, overwrite=self.overwrite)
        self._remove_tmp()  # the hard link's other name, or nothing after a rename
        if not placed:
            raise OutputExistsError(f"{self.path} appeared while vsr was writing; nothing replaced")

    def abort(self) -> None:
        """Stop writing and remove the temporary file; the destination stays as it was."""
        if not self._closed:
            self._closed = True
            try:
                self.container.close()
            except Exception:  # closing a half-written file may fail; it is removed anyway
                pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp is not None:
            try:
                self.tmp.unlink()
            except FileNotFoundError:
                pass
        self._unlock_tmp()

    def _unlock_tmp(self) -> None:
        _filelock.unlock(self._tmp_lock)
        self._tmp_lock = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
