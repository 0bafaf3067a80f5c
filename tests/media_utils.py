"""Small real media made in tests with PyAV: clips with chosen size, format, audio, tags."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def pattern(width: int, height: int, i: int) -> np.ndarray:
    """An RGB frame with edges, gradients and motion, so that codecs and SR have work to do."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin((xx + 3 * i) / 5.0) * np.cos(yy / 7.0)
    g = (xx * 255.0 / max(1, width - 1) + 4 * i) % 256
    b = np.where(((xx // 8 + yy // 8 + i) % 2) == 0, 40, 215)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


# Subtitle cues every clip with subtitles holds: (start, duration) in milliseconds, text.
SUBTITLE_CUES: list[tuple[int, int, str]] = [(100, 400, "hello"), (600, 300, "world")]

_ASS_HEADER = """[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, \
Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, \
MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""  # (a backslash at a line end continues the line)


def _subtitle_payload(codec: str, index: int, text: str) -> bytes:
    if codec == "mov_text":
        return struct.pack(">H", len(text.encode())) + text.encode()
    if codec in ("ass", "ssa"):
        return f"{index},0,Default,,0,0,0,,{text}".encode()
    return text.encode()


def make_clip(
    path: str | Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 12,
    rate: int | Fraction = 24,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    audio: dict[str, Any] | None = None,
    extra_audio: list[dict[str, Any]] | None = None,
    subtitles: bool | str = False,
    color_range: int | None = None,
    colorspace: int | None = None,
    color_primaries: int | None = None,
    color_trc: int | None = None,
    rotation: int | None = None,
    sample_aspect_ratio: Fraction | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    interlaced: bool = False,
    gop: int | None = None,
    encoder_options: dict[str, str] | None = None,
) -> Path:
    """Write a clip; ``audio={"channels": 1, "rate": 44100}`` adds an AAC track of the same duration.

    Audio specs may also give ``layout`` ("5.1"), ``language`` and ``title``. ``pts`` (in
    ``time_base``) makes variable frame rate clips. ``subtitles`` (True: the container's
    usual text codec, or a codec name: subrip, ass, mov_text) adds a track with
    :data:`SUBTITLE_CUES`. ``interlaced`` encodes top-field-first interlaced H.264.
    """
    path = Path(path)
    out = av.open(str(path), "w")
    v = out.add_stream(codec, rate=rate)
    v.width, v.height, v.pix_fmt = width, height, pix_fmt
    tb = time_base or Fraction(1, int(rate) if Fraction(rate).denominator == 1 else 90000)
    v.time_base = tb
    v.codec_context.time_base = tb
    if codec == "libx264":
        v.codec_context.options = {"preset": "ultrafast", "crf": "18",
                                   **({"x264-params": "interlaced=1:tff=1"} if interlaced else {})}
    if encoder_options is not None:
        v.codec_context.options = encoder_options
    if gop is not None:
        v.codec_context.gop_size = gop
        if codec == "libx264":
            v.codec_context.options = {**v.codec_context.options, "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    if interlaced:
        v.codec_context.field_order = 2  # AV_FIELD_TT
    for attr, value in (("color_range", color_range), ("colorspace", colorspace),
                        ("color_primaries", color_primaries), ("color_trc", color_trc)):
        if value is not None:
            setattr(v.codec_context, attr, value)
    if sample_aspect_ratio is not None:
        v.codec_context.sample_aspect_ratio = sample_aspect_ratio
    if rotation is not None:
        v.set_display_rotation(rotation)
    audio_streams = []
    for spec in ([audio] if audio else []) + list(extra_audio or []):
        a = out.add_stream("aac", rate=spec.get("rate", 44100))
        a.layout = spec.get("layout", "mono" if spec.get("channels", 1) == 1 else "stereo")
        for key in ("language", "title"):
            if key in spec:
                a.metadata[key] = spec[key]
        audio_streams.append(a)
    sub = None
    if subtitles:
        sub_codec = subtitles if isinstance(subtitles, str) else (
            "mov_text" if path.suffix in (".mp4", ".mov") else "subrip")
        sub = out.add_stream(sub_codec)
        sub.codec_context.subtitle_header = _ASS_HEADER.encode()
        if sub_codec == "ass":
            sub.codec_context.extradata = _ASS_HEADER.encode()
        sub.time_base = Fraction(1, 1000)
    step = 1 / float(rate)
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(pattern(width, height, i), format="rgb24")
        if color_range is not None:
            frame.color_range = color_range
        if colorspace is not None:
            frame.colorspace = colorspace
        frame = frame.reformat(format=pix_fmt)
        frame.pts = pts[i] if pts is not None else round(i * step / tb)
        frame.time_base = tb
        for packet in v.encode(frame):
            out.mux(packet)
    for packet in v.encode(None):
        out.mux(packet)
    duration = (pts[-1] * tb + step) if pts is not None else frames * step
    for a in audio_streams:
        sr = a.codec_context.sample_rate
        channels = a.codec_context.layout.nb_channels
        total = int(float(duration) * sr)
        t = np.arange(total) / sr
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        data = np.tile(tone, (channels, 1))
        for start in range(0, total, 1024):
            chunk = np.ascontiguousarray(data[:, start : start + 1024])
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=a.layout.name)
            af.sample_rate = sr
            af.pts = start
            af.time_base = Fraction(1, sr)
            for packet in a.encode(af):
                out.mux(packet)
        for packet in a.encode(None):
            out.mux(packet)
    if sub is not None:
        for index, (start, length, text) in enumerate(SUBTITLE_CUES):
            packet = av.Packet(_subtitle_payload(sub.codec_context.name, index, text))
            packet.stream, packet.time_base = sub, Fraction(1, 1000)
            packet.pts = packet.dts = start
            packet.duration = length
            out.mux(packet)
    out.close()
    return path


def stream_packets(path: str | Path, kind: str) -> list[list[tuple[float, float, bytes]]]:
    """Per stream of ``kind`` (audio, subtitle): its non-empty packets as (start s, duration s, payload)."""
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        if not streams:  # demux([]) would read every stream
            return []
        out: list[list[tuple[float, float, bytes]]] = [[] for _ in streams]
        index = {s.index: i for i, s in enumerate(streams)}
        for packet in c.demux(streams):
            if packet.size and packet.pts is not None:
                tb = packet.time_base
                out[index[packet.stream.index]].append(
                    (float(packet.pts * tb), float((packet.duration or 0) * tb), bytes(packet)))
        return out


def probe(path: str | Path) -> dict[str, Any]:
    """Decode a file fully and describe it: streams, frame timestamps, sizes, tags."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info: dict[str, Any] = {
            "streams": [s.type for s in c.streams],
            "audio": [
                {
                    "codec": s.codec_context.name,
                    "channels": s.codec_context.layout.nb_channels,
                    "duration": float(s.duration * s.time_base) if s.duration else None,
                }
                for s in c.streams.audio
            ],
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "pix_fmt": v.codec_context.pix_fmt,
            "time_base": v.time_base,
            "color_range": v.codec_context.color_range,
            "colorspace": v.codec_context.colorspace,
            "color_primaries": v.codec_context.color_primaries,
            "color_trc": v.codec_context.color_trc,
            "sample_aspect_ratio": v.sample_aspect_ratio,
            "metadata": dict(c.metadata),
        }
        frames = list(c.decode(v))
        info["times"] = [float(f.pts * f.time_base) for f in frames]
        info["frames"] = len(frames)
        info["rotation"] = frames[0].rotation if frames else 0
        info["luma"] = [f.to_ndarray(format="gray") for f in frames[:3]]
        last = frames[-1] if frames else None
        info["duration"] = (
            float((last.pts + (last.duration or 0)) * last.time_base) - info["times"][0] if last else 0.0
        )
    return info
