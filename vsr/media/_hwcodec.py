"""Hardware video on NVIDIA GPUs: NVENC encoding and NVDEC decoding through PyAV, each probed once.

``encoder.codec: auto`` is libx264 on a CPU run. On a CUDA run it is ``h264_nvenc`` when
the GPU has an encoder (probed by opening it once) and the frames' pixel format suits it,
with ``crf``/``preset`` mapped onto NVENC's constant quality (``rc=vbr``, ``cq``, no target
bitrate) and its ``p1``-``p7`` presets; otherwise libx264 on all CPU cores, with a note.
Data-centre GPUs (A100, H100, H200) have NVDEC but **no NVENC**: there the CPU encoder is
usually what bounds a run. An explicit codec is always honoured as given.

Decoding: on a CUDA run, large frames (:data:`NVDEC_MIN_PIXELS`) of a codec that NVDEC
decodes are decoded by FFmpeg's own decoder with the ``cuda`` hwaccel and downloaded to
system memory, so frames and timestamps are those of CPU decoding (the same decoder
orders them; H.264/HEVC decoding is bit-exact by the standard). NVDEC hands out
semi-planar frames (NV12, P010), turned into the planar format of the same depth. When
the device cannot be opened the file is decoded on the CPU, with a note.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av

from ..config import EncoderConfig

log = logging.getLogger("vsr")

__all__ = ["EncoderChoice", "choose_encoder", "encoder_opens", "hardware_encoder", "nvenc_options",
           "open_for_decoding", "planar_twin"]

AUTO = "auto"
CPU_DEFAULT = "libx264"  # what auto means without a GPU encoder
AUTO_NVENC = "h264_nvenc"

# x264's presets, fastest first, onto NVENC's p1 (fastest) .. p7 (best).
_PRESETS = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p3", "faster": "p3", "fast": "p4",
            "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}

# FFmpeg decoders whose streams NVDEC decodes (as the cuda hwaccel of the native decoder).
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "vp8", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "mjpeg"})
# NVDEC is used from this many pixels per frame (1080p). Below it the CPU decoder keeps up with
# the pipeline and the download plus the NV12 -> planar copy eat the gain. Not measured yet:
# tools/gpu_check.py times both on a GPU.
NVDEC_MIN_PIXELS = 1920 * 1080

# Semi-planar formats (what NVDEC downloads) -> the planar format of the same depth and subsampling.
_PLANAR = {"nv12": "yuv420p", "nv21": "yuv420p", "p010le": "yuv420p10le", "p012le": "yuv420p12le",
           "p016le": "yuv420p16le", "nv16": "yuv422p", "p210le": "yuv422p10le", "p216le": "yuv422p16le",
           "nv24": "yuv444p", "nv42": "yuv444p", "p410le": "yuv444p10le", "p416le": "yuv444p16le"}


def planar_twin(pix_fmt: str) -> str | None:
    """The planar format a semi-planar one (NV12, P010, ...) converts to without loss; None for others."""
    return _PLANAR.get(pix_fmt)


def hardware_encoder(codec: str) -> bool:
    return codec.endswith("_nvenc")


def nvenc_options(crf: int | None, preset: str | None, gpu: int | None = None) -> dict[str, str]:
    """vsr's ``crf``/``preset`` as NVENC codec options (PyAV ``codec_context.options``).

    ``crf`` becomes constant quality ``cq`` (NVENC's scale is QP-like, 0-51; about x264's CRF
    at the same number) under ``rc=vbr`` with no target bitrate (``b=0``), as
    ``-rc vbr -cq N -b:v 0`` does; None leaves NVENC's default rate control. ``preset``: an
    x264 name maps to p1-p7 (medium -> p5); p1-p7 pass through; ``tune=hq``.
    """
    options: dict[str, str] = {"tune": "hq"}
    if crf is not None:
        options.update(rc="vbr", cq=str(min(51, max(1, crf))), b="0")
    if preset is not None:
        p = preset.lower()
        if p in _PRESETS.values() or p in ("p1", "p2", "p3", "p4", "p5", "p6", "p7"):
            options["preset"] = p
        elif p in _PRESETS:
            options["preset"] = _PRESETS[p]
        else:
            raise ValueError(f"preset {preset!r} has no NVENC counterpart; use p1-p7 or an x264 preset name")
    if gpu is not None:
        options["gpu"] = str(gpu)
    return options


@functools.lru_cache(maxsize=None)
def encoder_opens(codec: str, gpu: int | None = None, pix_fmt: str = "yuv420p") -> bool:
    """Whether ``codec`` opens here (NVENC: a GPU with an encoder and its driver): opened once, cached."""
    if codec not in av.codecs_available:
        return False
    try:
        cc = av.CodecContext.create(codec, "w")
        cc.width, cc.height, cc.pix_fmt = 256, 256, pix_fmt
        cc.time_base = Fraction(1, 25)
        if hardware_encoder(codec) and gpu is not None:
            cc.options = {"gpu": str(gpu)}
        cc.open()
    except (av.FFmpegError, OSError, ValueError) as exc:
        log.debug("encoder %s does not open here: %s", codec, exc)
        return False
    return True


@dataclass(frozen=True)
class EncoderChoice:
    encoder: EncoderConfig  # with a concrete codec (never "auto")
    note: str | None  # one line for the run's report; None when there is nothing to say


def choose_encoder(encoder: EncoderConfig, *, gpu: int | None, pix_fmt: str) -> EncoderChoice:
    """Resolve ``encoder.codec: auto`` for a run on CUDA device ``gpu`` (None: a CPU run).

    ``pix_fmt``: the format frames will be encoded in (the input's, or ``encoder.pix_fmt``).
    """
    if encoder.codec != AUTO:
        return EncoderChoice(encoder, None)
    cpu = replace(encoder, codec=CPU_DEFAULT)
    if gpu is None:
        return EncoderChoice(cpu, None)
    fmt = encoder.pix_fmt if encoder.pix_fmt != AUTO else pix_fmt
    accepted = {f.name for f in av.codec.Codec(AUTO_NVENC, "w").video_formats or []} \
        if AUTO_NVENC in av.codecs_available else set()
    if not encoder_opens(AUTO_NVENC):
        return EncoderChoice(cpu, f"encoder: {CPU_DEFAULT} on all CPU cores: this GPU has no NVENC "
                                  "(data-centre GPUs such as the H100/H200 have none); encoding is likely the bound")
    if fmt not in accepted:
        return EncoderChoice(cpu, f"encoder: {CPU_DEFAULT} on all CPU cores: NVENC ({AUTO_NVENC}) cannot take "
                                  f"{fmt} frames")
    quality = f"cq {min(51, max(1, encoder.crf))}" if encoder.crf is not None else "its default rate control"
    preset = nvenc_options(None, encoder.preset).get("preset", "default")
    return EncoderChoice(replace(encoder, codec=AUTO_NVENC),
                         f"encoder: {AUTO_NVENC} on GPU {gpu} (NVENC, constant quality {quality}, preset {preset})")


def open_for_decoding(path: str, *, gpu: int | None, codec: str, width: int, height: int
                      ) -> tuple[Any, str | None]:
    """A container whose video decodes on NVDEC (GPU ``gpu``) when it helps; (None, note) when it cannot.

    None for ``gpu`` (a CPU run), small frames, codecs NVDEC does not decode, pipes, or an
    FFmpeg without the cuda hwaccel: (None, None) then, and the caller decodes on the CPU.
    """
    if gpu is None or codec not in NVDEC_CODECS or width * height < NVDEC_MIN_PIXELS:
        return None, None
    if path == "-" or path.startswith("pipe:"):
        return None, None
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:  # pragma: no cover - PyAV < 14
        return None, None
    if "cuda" not in hwdevices_available():
        return None, None
    try:
        accel = HWAccel(device_type="cuda", device=str(gpu), allow_software_fallback=True)
        return av.open(path, "r", hwaccel=accel), None
    except (av.FFmpegError, OSError, ValueError) as exc:
        return None, f"decoder: {codec} on the CPU: NVDEC could not be opened ({exc.__class__.__name__})"
