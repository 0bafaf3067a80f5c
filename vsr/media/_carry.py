"""What a run carries from its input to its output besides the picture: one :class:`CarryPlan`.

Every writer (a plain run, stdout, each resume segment and the resume join) asks the same
plan what to do with each thing the input holds besides the upscaled video:

========================  =====================================================================
item                      carried as
========================  =====================================================================
audio, subtitle streams   packets copied (audio re-encoded where the container cannot hold it)
data streams              packets copied where the output container takes their codec
cover art (attached_pic)  the picture copied, not upscaled: a ``covr`` picture in MP4, an
                          image attachment in Matroska
attachments (fonts, ...)  copied (Matroska only)
chapters                  times and titles
timecode                  the ``timecode`` tag; MOV/MP4 muxers also write it as a ``tmcd`` track
global metadata           the container's tags, less those that describe the old file
stream tags, disposition  language, title, default, forced, hearing-impaired... on every
                          stream written, the upscaled video's included
========================  =====================================================================

What the output container cannot hold is dropped with one note naming the item and a
container that keeps it. :attr:`CarryPlan.items` lists each item with its action (copy,
re-encode, drop) and the reason: ``vsr run --report`` writes them as ``streams``.

Streams the demuxer itself hides (a QuickTime chapter text track) and ``tmcd`` tracks are
not items of their own: they are how the chapters and the timecode are stored, and the
muxer writes them again from those.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import av

if TYPE_CHECKING:
    from ..config import EncoderConfig

log = logging.getLogger("vsr")

COPY, REENCODE, DROP = "copy", "re-encode", "drop"

# Container-level tags that describe the old file, not the new one.
STALE_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "creation_time"})
# Stream tags that describe the old encode (a re-encoded stream drops them; a copy keeps its own).
_STALE_STREAM_TAG = re.compile(r"(?i)(encoder|duration|bps|number_of_frames|number_of_bytes|_statistics_\w+)(-\w+)?")

# What each kind of item needs of the muxer (FFmpeg muxer names).
_CHAPTERS = frozenset({"matroska", "webm", "mp4", "mov", "ipod", "ismv", "nut", "ogg", "ffmetadata"})
_TAGS = frozenset({"matroska", "webm", "mp4", "mov", "ipod", "ismv", "3gp", "3g2", "nut", "ogg", "avi", "flv"})
_TMCD = frozenset({"mp4", "mov"})  # the muxer turns the video's timecode tag into a tmcd track
_ATTACHMENTS = frozenset({"matroska"})
_COVER = frozenset({"mp4", "ipod", "matroska"})  # cover art: MP4 covr atoms; Matroska image attachments
# Dispositions each muxer writes (what FFmpeg's muxer and demuxer round-trip); others: not known, not noted.
_D = av.stream.Disposition
_MKV_DISPOSITIONS = (_D.default | _D.dub | _D.original | _D.comment | _D.forced | _D.hearing_impaired
                     | _D.visual_impaired)
_MP4_DISPOSITIONS = (_D.default | _D.dub | _D.comment | _D.forced | _D.hearing_impaired | _D.visual_impaired
                     | _D.captions | _D.descriptions)
_DISPOSITIONS = {"matroska": _MKV_DISPOSITIONS, "webm": _MKV_DISPOSITIONS, "mp4": _MP4_DISPOSITIONS,
                 "ipod": _MP4_DISPOSITIONS, "mov": _D.default,
                 "nut": _D.default | _D.dub | _D.original | _D.comment | _D.lyrics | _D.karaoke}
_COVER_CODECS = {"mjpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png"), "bmp": ("bmp", "image/bmp")}
# Where a dropped item could be kept, in the order a note suggests them (muxer, what a user types).
_KEEPERS = (("matroska", ".mkv"), ("mp4", ".mp4"), ("mov", ".mov"), ("nut", ".nut"), ("mpegts", ".ts"))
_SUFFIX = dict(_KEEPERS)


@dataclass(frozen=True)
class CarryItem:
    """One thing of the input besides the picture, and what the output does with it."""

    item: str  # as notes name it: "audio stream 1 (aac, fra)", "chapters (2)", "timecode 01:02:03:04"
    kind: str  # video, audio, subtitle, data, cover, attachment, chapters, timecode, metadata
    action: str  # copy, re-encode or drop
    reason: str
    stream: int | None = None  # the input stream's index

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CarryPlan:
    """What one output does with everything of one input that is not the picture.

    Built by :func:`plan_carry` when the output container is open; the writer then calls
    :meth:`dress_video` on its video stream, :meth:`add_streams` once the video stream
    exists, and :meth:`mux_covers` after that.
    """

    items: list[CarryItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    global_metadata: dict[str, str] = field(default_factory=dict)
    chapters: list[dict[str, Any]] = field(default_factory=list)
    timecode: str | None = None
    _video: av.video.stream.VideoStream | None = None
    _copy: list[av.stream.Stream] = field(default_factory=list)  # packet-copied streams
    _reencode: list[av.stream.Stream] = field(default_factory=list)  # audio to re-encode
    _attachments: list[av.stream.Stream] = field(default_factory=list)
    _covers: list[tuple[av.stream.Stream, bytes]] = field(default_factory=list)
    _cover_as_attachment: bool = False
    _cover_streams: list[tuple[av.stream.Stream, bytes]] = field(default_factory=list)  # output streams

    def dress_video(self, stream: av.stream.Stream) -> None:
        """Give the output's video stream the input video's tags, disposition and timecode."""
        if self._video is None:
            return
        stream.metadata.update(_stream_tags(self._video, fresh=True))
        if self.timecode is not None:
            stream.metadata["timecode"] = self.timecode
        stream.disposition = self._video.disposition
        cc = stream.codec_context
        rate = self._video.average_rate or self._video.guessed_rate
        if cc is not None and rate and cc.framerate != rate:  # a copied stream (resume's join) has 1/time base,
            cc.framerate = rate  # but the muxer's timecode track needs the real rate

    def add_streams(self, container: av.container.OutputContainer
                    ) -> tuple[dict[int, av.stream.Stream], dict[int, av.stream.Stream]]:
        """Add the copied, re-encoded, attachment and cover streams and the chapters; call after the video.

        Returns the output streams of packet-copied and of re-encoded input streams, by input index.
        """
        copies, reencode = {}, {}
        for s in self._copy:
            out = container.add_stream_from_template(s)
            out.metadata.update(_stream_tags(s, fresh=False))
            out.disposition = s.disposition
            copies[s.index] = out
        for s in self._reencode:
            out = container.add_stream(container.default_audio_codec, rate=s.codec_context.sample_rate)
            if s.codec_context.layout is not None:
                out.layout = s.codec_context.layout
            out.metadata.update(_stream_tags(s, fresh=True))
            out.disposition = s.disposition
            reencode[s.index] = out
        for s in self._attachments:
            out = container.add_stream_from_template(s)
            out.metadata.update(s.metadata)
        if self._cover_as_attachment:
            for n, (s, data) in enumerate(self._covers):
                ext, mime = _COVER_CODECS[s.codec_context.name]
                name = s.metadata.get("filename") or f"cover{n or ''}.{ext}"
                container.add_attachment(name, s.metadata.get("mimetype", mime), data)
        else:
            for s, data in self._covers:
                out = container.add_stream_from_template(s)
                out.metadata.update({k: v for k, v in s.metadata.items() if k not in ("filename", "mimetype")})
                out.disposition = s.disposition
                self._cover_streams.append((out, data))
        if self.chapters:
            container.set_chapters(self.chapters)
        return copies, reencode

    def mux_covers(self, container: av.container.OutputContainer) -> None:
        """Write the cover pictures (one packet each, without timestamps); call after :meth:`add_streams`."""
        for out, data in self._cover_streams:
            packet = av.Packet(data)
            packet.stream = out
            container.mux(packet)

    def to_report(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.items]


def carried_streams(container: av.container.InputContainer, video: av.stream.Stream) -> list[av.stream.Stream]:
    """The input streams whose packets a run passes on: audio, subtitles and data, less what is hidden."""
    return [s for s in container.streams if s is not video and _passes(s)]


def main_video(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream to upscale: the first that is not cover art."""
    streams = list(container.streams.video)
    moving = [s for s in streams if not s.disposition & av.stream.Disposition.attached_pic]
    return (moving or streams or [None])[0]


def plan_carry(source: Any, output: av.container.OutputContainer, encoder: EncoderConfig | None, *,
               video_only: bool = False) -> CarryPlan:
    """The plan for carrying what ``source`` (a :class:`~vsr.media.VideoReader`) holds into ``output``.

    ``video_only``: carry nothing but the video (resume segments); nothing is noted then.
    """
    muxer = output.format.name
    plan = CarryPlan()
    c, video = source.container, source.video
    plan._video = video
    plan.items.append(CarryItem(f"video stream {video.index} ({video.codec_context.name})", "video", REENCODE,
                                "upscaled; tags and disposition kept", video.index))
    if video_only:
        return plan
    y4m = muxer == "yuv4mpegpipe"
    dropped: list[CarryItem] = []  # for the one Y4M note

    def drop(item: str, kind: str, reason: str, keeper: str | None, stream: int | None = None) -> None:
        entry = CarryItem(item, kind, DROP, reason, stream)
        plan.items.append(entry)
        if y4m:
            dropped.append(entry)
        else:
            plan.notes.append(f"{item} dropped: {reason}" + (f"; {keeper} keeps it" if keeper else ""))

    def dispositions(label: str, s: av.stream.Stream) -> None:
        kept = _DISPOSITIONS.get(muxer)
        lost = s.disposition & ~_D.attached_pic & ~kept if kept is not None else 0
        if lost:
            names = "+".join(f.name for f in _D if f & lost)
            keeper = next((_SUFFIX[m] for m in ("matroska", "mp4", "nut")
                           if m != muxer and not lost & ~_DISPOSITIONS[m]), None)
            drop(f"{label}: disposition {names}", "disposition", f"{_container(muxer)} cannot hold it", keeper, s.index)

    if not y4m:
        dispositions(plan.items[0].item, video)
    supported = output.supported_codecs
    for s in carried_streams(c, video):
        name = s.codec_context.name if s.codec_context is not None else (getattr(s, "name", None) or "data")
        lang = s.language if s.language not in (None, "", "und") else None
        label = f"{s.type} stream {s.index} ({name}" + (f", {lang}" if lang else "") + ")"
        if y4m:
            drop(label, s.type, "Y4M holds only the picture", None, s.index)
            continue
        if s.type == "data":
            if _holds(muxer, s):
                plan._copy.append(s)
                plan.items.append(CarryItem(label, "data", COPY, "packets copied", s.index))
            else:
                drop(label, "data", f"{_container(muxer)} cannot hold {name} data", _keeper(s, muxer), s.index)
            continue
        policy = (encoder.audio if s.type == "audio" else encoder.subtitles) if encoder is not None else "copy"
        if policy == "drop":
            plan.items.append(CarryItem(label, s.type, DROP, f"encoder.{s.type if s.type == 'audio' else 'subtitles'}"
                                        " is drop", s.index))
        elif policy == "copy" and name in supported:
            plan._copy.append(s)
            plan.items.append(CarryItem(label, s.type, COPY, "packets copied", s.index))
            dispositions(label, s)
        elif s.type == "audio":
            codec = output.default_audio_codec
            if codec in (None, "none"):
                drop(label, "audio", "the output container takes no audio", _keeper(s, muxer), s.index)
                continue
            plan._reencode.append(s)
            why = f"{_container(muxer)} cannot hold {name}" if policy == "copy" else "encoder.audio is reencode"
            plan.items.append(CarryItem(label, "audio", REENCODE, f"as {codec}: {why}", s.index))
            dispositions(label, s)
            if policy == "copy":
                plan.notes.append(f"audio stream {s.index} ({name}) re-encoded as {codec}: "
                                  f"the output container cannot hold {name}")
        else:
            drop(label, "subtitle", f"the output container cannot hold {name}", _keeper(s, muxer), s.index)

    for s in c.streams:
        if s.type == "attachment":
            label = f"attachment {s.metadata.get('filename', s.index)}"
            if muxer in _ATTACHMENTS:
                plan._attachments.append(s)
                plan.items.append(CarryItem(label, "attachment", COPY, "attachment copied", s.index))
            else:
                drop(label, "attachment", f"{_container(muxer)} cannot hold attachments", ".mkv", s.index)
        elif s.type == "video" and s is not video and s.disposition & av.stream.Disposition.attached_pic:
            name = s.codec_context.name
            label = f"cover art (stream {s.index}, {name})"
            data = _cover_bytes(source.path, s.index)
            fragmented = "frag" in dict(output.container_options or {}).get("movflags", "")
            if fragmented:  # the moov, where MP4 keeps cover art, is written before any packet
                drop(label, "cover", "fragmented MP4 (as on a pipe) cannot hold cover art", "-f mkv", s.index)
            elif muxer in _COVER and name in _COVER_CODECS and data is not None:
                plan._covers.append((s, data))
                plan._cover_as_attachment = muxer == "matroska"
                how = "an image attachment" if muxer == "matroska" else "an attached picture"
                plan.items.append(CarryItem(label, "cover", COPY, f"copied as {how}, not upscaled", s.index))
            elif data is None:
                drop(label, "cover", "a picture in a stream that is read once (a pipe) cannot be copied", None,
                     s.index)
            else:
                what = f"{name} cover art" if muxer in _COVER else "cover art"
                drop(label, "cover", f"{_container(muxer)} cannot hold {what}", ".mp4 or .mkv", s.index)

    chapters = c.chapters()
    if chapters:
        titled = [ch for ch in chapters if ch.get("metadata", {}).get("title")]
        label = f"chapters ({len(chapters)}" + (f", {len(titled)} titled" if titled else "") + ")"
        if muxer in _CHAPTERS:
            plan.chapters = chapters
            plan.items.append(CarryItem(label, "chapters", COPY, "times and titles copied"))
        else:
            drop(label, "chapters", f"{_container(muxer)} cannot hold chapters", ".mkv, .mp4 or .mov")

    tc = input_timecode(c, video)
    if tc is not None:
        label = f"timecode {tc}"
        if muxer in _TMCD:
            plan.timecode = tc
            plan.items.append(CarryItem(label, "timecode", COPY, "as the video's timecode tag and a tmcd track"))
        elif muxer in _TAGS:
            plan.timecode = tc
            plan.items.append(CarryItem(label, "timecode", COPY, "as a timecode tag"))
        else:
            drop(label, "timecode", f"{_container(muxer)} cannot hold a timecode", ".mov, .mp4 or .mkv")

    tags = {("timecode" if k.lower() == "timecode" else k): v for k, v in c.metadata.items()
            if k.lower() not in STALE_TAGS}
    if tags:
        label = f"metadata ({len(tags)} tag{'s' if len(tags) > 1 else ''})"
        if muxer not in ("yuv4mpegpipe", "mpegts"):
            plan.global_metadata = tags
            plan.items.append(CarryItem(label, "metadata", COPY, "container tags copied"))
        else:
            drop(label, "metadata", f"{_container(muxer)} cannot hold these tags", ".mkv")
    if dropped:
        plan.notes.append("Y4M holds only the picture: " + ", ".join(d.item for d in dropped)
                          + " dropped; write -f mkv (or nut) to keep them")
    return plan


def input_timecode(container: av.container.InputContainer, video: av.stream.Stream) -> str | None:
    """The input's start timecode: the video's tag, the container's, or a tmcd track's."""
    candidates = [video.metadata, container.metadata,
                  *(s.metadata for s in container.streams if s.type == "data")]
    for tags in candidates:
        for k, v in tags.items():
            if k.lower() == "timecode" and v:
                return v
    return None


def _passes(s: av.stream.Stream) -> bool:
    """Whether a stream's packets are carried: audio/subtitles with a codec, data that is not a tmcd track."""
    if int(s.discard) >= 48:  # AVDISCARD_ALL: a track the demuxer keeps to itself (QuickTime chapters)
        return False
    if s.type in ("audio", "subtitle"):
        return s.codec_context is not None
    if s.type == "data":
        return getattr(s, "name", None) is not None and not any(k.lower() == "timecode" for k in s.metadata)
    return False


def _stream_tags(s: av.stream.Stream, *, fresh: bool) -> dict[str, str]:
    """An output stream's tags: the input stream's (less those of the old encode when ``fresh``: re-encoded).

    A QuickTime track's 'name' (how FFmpeg reads back the title it wrote) is written as the title.
    """
    tags = {k: v for k, v in s.metadata.items()
            if not (fresh and (_STALE_STREAM_TAG.fullmatch(k) or k.lower() == "timecode"))}
    if "name" in tags and "title" not in tags and "mov" in s.container.format.name:
        tags["title"] = tags.pop("name")
    return tags


def _holds(muxer: str, template: av.stream.Stream) -> bool:
    """Whether ``muxer`` takes a copy of ``template``: tried on a scratch container in memory."""
    out = None
    try:
        out = av.open(io.BytesIO(), "w", format=muxer)
        out.add_stream_from_template(template)
        out.start_encoding()
        return True
    except (ValueError, TypeError, av.FFmpegError):
        return False
    finally:
        if out is not None:
            try:
                out.close()
            except (ValueError, av.FFmpegError):
                pass


def _keeper(template: av.stream.Stream, muxer: str) -> str | None:
    """A container that would keep a copy of ``template``, as a user names it (.mkv, .mp4...)."""
    for name, suffix in _KEEPERS:
        if name != muxer and _holds(name, template):
            return suffix
    return None


def _container(muxer: str) -> str:
    return {"matroska": "Matroska", "mpegts": "MPEG-TS", "yuv4mpegpipe": "Y4M"}.get(muxer, muxer.upper())


def _cover_bytes(path: str, index: int) -> bytes | None:
    """The picture of an attached-picture stream (the demuxer's first packet); None for pipes."""
    if path == "-" or path.startswith(("pipe:", "/dev/")) or not os.path.isfile(path):
        return None
    try:
        with av.open(path) as c:
            for packet in c.demux(c.streams[index]):
                if packet.size:
                    return bytes(packet)
    except (av.FFmpegError, OSError):
        return None
    return None
