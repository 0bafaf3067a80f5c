"""The Python API: :class:`Upscaler` for frames in memory, :func:`upscale_video` for files.

Both run the same :class:`vsr.engine.LumaUpscaler` as ``vsr run``: luma through the
network, chroma bicubic. Threads live in :mod:`vsr.pipeline`; this module only says
what each step does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar, Union

import av
import numpy as np
import torch
import torch.nn.functional as F

from .config import load_config_and_keys
from .engine import LumaUpscaler, int8_model, resolve_device, resolve_precision
from .errors import ConfigError, UnsupportedMediaError
from .media import frame_planes, native_format, new_frame, resize_plane, resolve_container_format
from .models import create_model, list_models
from .pipeline import Progress, RunReport, overlapped_map
from .realtime import pipeline_for, with_choice

__all__ = ["Upscaler", "upscale_video"]

log = logging.getLogger("vsr")

Frame = Union[np.ndarray, av.VideoFrame, torch.Tensor]
F_ = TypeVar("F_", np.ndarray, av.VideoFrame, torch.Tensor)

# ITU-R BT.601 in studio range, as MATLAB's rgb2ycbcr: for R, G, B in [0, 1],
# Y in [16, 235] / 255 and Cb, Cr in [16, 240] / 255 (offsets 16 and 128 over 255).
_RGB_TO_YCBCR = torch.tensor([[65.481, 128.553, 24.966],
                              [-37.797, -74.203, 112.0],
                              [112.0, -93.786, -18.214]], dtype=torch.float64) / 255.0
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)

_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@dataclass
class _Work:
    """One frame on its way through prepare → infer → finish."""

    kind: str  # "rgb-numpy", "rgb-tensor", "planes"
    source: Any  # what the caller gave
    luma: torch.Tensor  # (N, 1, h, w): float in [0, 1] on the device, or integer planes
    chroma: torch.Tensor | None = None  # (N, 2, h, w) float, rgb kinds only
    frame: av.VideoFrame | None = None  # planar frame, "planes" kind
    max_value: int = 255
    restore: str | None = None  # pixel format to convert the result back to
    out: torch.Tensor | None = None  # upscaled luma


class Upscaler:
    """Upscales frames in memory ``scale`` times with an ESPCN: ``up(frame)``, ``up.stream(frames)``.

    A frame is one of:

    * an ``(H, W, 3)`` ``uint8`` RGB numpy array → ``(rH, rW, 3)`` ``uint8``;
    * a :class:`torch.Tensor` ``(3, H, W)`` or ``(N, 3, H, W)``, ``uint8`` (0-255) or float
      (RGB in [0, 1]) → the same dtype, layout and device, ``r`` times larger;
    * a PyAV :class:`av.VideoFrame` → a VideoFrame of the same pixel format, with the
      input's ``pts``, ``time_base`` and colour tags. Planar YUV and gray frames are
      upscaled in their own planes, exactly as ``vsr run`` does (luma through the model,
      chroma bicubic); other formats are converted to planar YUV and back.

    RGB input is converted to Y'CbCr with the ITU-R BT.601 matrix in studio range (Y in
    16-235: MATLAB's ``rgb2ycbcr``) because that is the luma the shipped weights were
    trained and evaluated on (``vsr.metrics.rgb2y``); the conversion, the network and
    the bicubic chroma run in floating point, so the 8-bit round trip happens once, at the
    end. Results are clamped to the valid range.

    Options are keyword-only and checked here, not at the first frame: ``scale`` (2, 3
    or 4), ``model`` (a registered name), ``weights`` (a file; None: the shipped weights),
    ``device`` (auto, cpu, cuda, cuda:N), ``precision`` (auto, fp32, bf16, fp16, int8), ``tile``
    (LR tile size for huge frames; 0: whole frames) and ``queue_depth`` (frames in flight
    between the overlapped steps of :meth:`stream`).
    """

    def __init__(
        self,
        *,
        scale: Literal[2, 3, 4] = 3,
        model: str = "espcn",
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto",
        tile: int = 0,
        queue_depth: int = 4,
    ) -> None:
        if isinstance(scale, bool) or scale not in (2, 3, 4):
            raise ConfigError(f"scale must be 2, 3 or 4, got {scale!r}")
        if not isinstance(model, str):
            raise ConfigError(f"model must be a model name ({', '.join(list_models())}), got {model!r}")
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise ConfigError(f"weights must be a file path or None (the shipped weights), got {weights!r}")
        if not isinstance(device, str):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        if precision not in _PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
        _check_int("tile", tile, 0)
        if 0 < tile < 16:
            raise ConfigError(f"tile must be 0 (whole frames) or at least 16 pixels, got {tile}")
        self.queue_depth = _check_int("queue_depth", queue_depth, 1)
        self.scale: int = scale
        self.model_name = model
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        path = os.fspath(weights) if weights is not None else None
        int8 = int8_model(precision, self.device, model, scale, path)
        network = int8 if int8 is not None else create_model(model, scale=scale, weights=path or "shipped")
        self.engine = LumaUpscaler(network, device=self.device, dtype=self.dtype, tile=tile, int8=int8 is not None)

    def __repr__(self) -> str:
        return (f"Upscaler(scale={self.scale}, model={self.model_name!r}, device={str(self.device)!r}, "
                f"precision={self.precision!r}, tile={self.engine.tile})")

    @property
    def precision(self) -> str:
        return self.engine.precision

    # -- the public calls -------------------------------------------------------------------
    def __call__(self, frame: F_) -> F_:
        """The frame upscaled ``scale`` times, of the same kind (see the class docstring)."""
        return self._finish(self._infer(self._prepare(frame)))

    def stream(self, frames: Iterable[F_]) -> Iterator[F_]:
        """``self(frame)`` for each frame, in order, with reading, preparing, the network and
        finishing overlapped in threads (see :func:`vsr.pipeline.overlapped_map`).

        Results equal those of ``self(frame)``. Frames may mix kinds and sizes. Up to a few
        ``queue_depth`` frames are read ahead of the one being returned, so an iterable that
        refills one buffer in place (some camera APIs) must yield copies.
        """
        return overlapped_map(frames, self._prepare, self._infer, self._finish, depth=self.queue_depth,
                              device=self.device)

    # -- the three steps --------------------------------------------------------------------
    def _prepare(self, frame: Frame) -> _Work:
        if isinstance(frame, np.ndarray):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise UnsupportedMediaError(
                    f"a numpy frame must be an (H, W, 3) uint8 RGB array, got shape {frame.shape} {frame.dtype}"
                )
            x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
            return self._prepare_rgb("rgb-numpy", frame, x.to(self.device).float().div_(255.0))
        if isinstance(frame, torch.Tensor):
            return self._prepare_tensor(frame)
        if isinstance(frame, av.VideoFrame):
            return self._prepare_video_frame(frame)
        raise UnsupportedMediaError(
            f"cannot upscale a {type(frame).__name__}: give an (H, W, 3) uint8 RGB numpy array, "
            "a torch tensor (3, H, W) or (N, 3, H, W), or an av.VideoFrame"
        )

    def _prepare_tensor(self, t: torch.Tensor) -> _Work:
        if t.ndim not in (3, 4) or t.shape[-3] != 3 or t.shape[-1] == 0 or t.shape[-2] == 0:
            raise UnsupportedMediaError(
                f"a tensor frame must be (3, H, W) or (N, 3, H, W) RGB, got shape {tuple(t.shape)}"
            )
        if t.dtype == torch.uint8:
            x = t.to(self.device).float().div_(255.0)
        elif t.is_floating_point():
            x = t.to(self.device, torch.float32)
        else:
            raise UnsupportedMediaError(f"a tensor frame must be uint8 (0-255) or float (0-1), got {t.dtype}")
        return self._prepare_rgb("rgb-tensor", t, x if x.ndim == 4 else x[None])

    def _prepare_rgb(self, kind: str, source: Any, rgb: torch.Tensor) -> _Work:
        """``rgb``: (N, 3, H, W) float32 in [0, 1] on the device → luma and chroma in [0, 1]."""
        m = _RGB_TO_YCBCR.to(rgb.device, torch.float32)
        ycc = torch.einsum("ij,njhw->nihw", m, rgb) + _YCBCR_OFFSET.to(rgb.device, torch.float32)[:, None, None]
        return _Work(kind, source, luma=ycc[:, :1].contiguous(), chroma=ycc[:, 1:].contiguous())

    def _prepare_video_frame(self, frame: av.VideoFrame) -> _Work:
        restore = None
        if frame.format.name == "rgb24":
            rgb = torch.from_numpy(frame.to_ndarray()).permute(2, 0, 1)[None]
            return self._prepare_rgb("rgb-frame", frame, rgb.to(self.device).float().div_(255.0))
        if not native_format(frame.format.name):
            # Same conversion as the file reader's: planar YUV, 4:4:4 for RGB or odd sizes.
            restore = frame.format.name
            odd = frame.width % 2 or frame.height % 2
            converted = frame.reformat(format="yuv444p" if frame.format.is_rgb or odd else "yuv420p")
            _copy_frame_props(frame, converted)
            frame = converted
        planes = frame_planes(frame)
        y = planes[0]
        luma = torch.from_numpy(np.ascontiguousarray(y) if y.dtype == np.uint8 else y.astype(np.int32))
        max_value = (1 << frame.format.components[0].bits) - 1
        return _Work("planes", frame, luma=luma[None, None], frame=frame, max_value=max_value, restore=restore)

    def _infer(self, work: _Work) -> _Work:
        if work.kind == "planes":
            work.out = self.engine(work.luma, work.max_value).cpu()
        else:
            work.out = self.engine.forward_float(work.luma).float()
        return work

    def _finish(self, work: _Work) -> Any:
        if work.kind == "planes":
            return self._finish_planes(work)
        assert work.out is not None and work.chroma is not None
        chroma = F.interpolate(work.chroma, scale_factor=self.scale, mode="bicubic", align_corners=False)
        ycc = torch.cat([work.out.to(chroma.device), chroma], dim=1) - _YCBCR_OFFSET.to(
            chroma.device, torch.float32)[:, None, None]
        rgb = torch.einsum("ij,njhw->nihw", _YCBCR_TO_RGB.to(chroma.device, torch.float32), ycc).clamp_(0.0, 1.0)
        if work.kind == "rgb-tensor":
            src: torch.Tensor = work.source
            out = rgb.mul(255.0).round_().to(torch.uint8) if src.dtype == torch.uint8 else rgb.to(src.dtype)
            out = out.to(src.device)
            return out if src.ndim == 4 else out[0]
        array = rgb[0].mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
        if work.kind == "rgb-numpy":
            return array
        frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        _copy_frame_props(work.source, frame)
        return frame

    def _finish_planes(self, work: _Work) -> av.VideoFrame:
        src = work.frame
        assert src is not None and work.out is not None
        r = self.scale
        out, planes = new_frame(src.width * r, src.height * r, src.format.name)
        in_planes = frame_planes(src)
        planes[0][...] = work.out[0, 0].numpy()
        for i in range(1, len(planes)):
            resize_plane(in_planes[i], planes[i])
        _copy_frame_props(src, out)
        if work.restore is not None:
            restored = out.reformat(format=work.restore)
            _copy_frame_props(out, restored)
            return restored
        return out


def _copy_frame_props(src: av.VideoFrame, dst: av.VideoFrame) -> None:
    """Timestamps and colour tags, as the pipeline's output frames carry them."""
    dst.pts = src.pts
    if src.time_base is not None:
        dst.time_base = src.time_base
    for attr in ("color_range", "colorspace", "color_primaries", "color_trc"):
        value = getattr(src, attr, None)
        if value:
            setattr(dst, attr, value)


def upscale_video(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    scale: int | None = None,
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch: int | None = None,
    tile: int | None = None,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
    audio: str | None = None,
    format: str | None = None,
    overwrite: bool | None = None,
    speed: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
) -> RunReport:
    """Upscale one video file, as ``vsr run SRC -o DST`` does with the same options.

    ``executor="ray"`` (or ``executor.kind: ray`` in ``config``) upscales its segments in
    parallel on Ray (:mod:`vsr.cluster`; ``ray_address`` as ``--ray-address``); the result
    is the same file. ``resume``: as ``--resume``.

    ``src``/``dst`` may be ``"-"`` (standard input/output). ``dst`` None: ``output.pattern``
    beside ``src``. ``config``: a YAML file like ``pipeline.yaml``; the other options,
    when not None, override it (same names as ``vsr run``'s flags). ``format``: output
    container (``y4m``, ``mkv``, ``mp4``, ...; None: from ``dst``'s extension). Returns the
    run's :class:`~vsr.pipeline.RunReport`; raises :class:`~vsr.VsrError` subclasses.
    ``speed="realtime"`` (as ``vsr run --realtime``): the model, precision and encoder
    preset that keep up with the source, measured on its first frames, among those not
    given here or in ``config`` (:mod:`vsr.realtime`); the report's ``realtime`` says what.
    """
    overrides = {
        "model.scale": scale, "model.name": model, "model.weights": os.fspath(weights) if weights else None,
        "device": device, "precision": precision, "batch": batch, "tile": tile,
        "encoder.codec": codec, "encoder.crf": crf, "encoder.preset": preset, "encoder.pix_fmt": pix_fmt,
        "encoder.audio": audio, "output.overwrite": overwrite, "speed": speed,
        "executor.kind": executor, "executor.address": ray_address,
    }
    cfg, explicit = load_config_and_keys(config, overrides)
    if os.fspath(src) == "-" and dst is None:
        raise ConfigError("src '-' (standard input) needs a dst")
    resolve_container_format(format, dst if dst is not None else "")  # option errors before the model loads
    if cfg.executor.kind == "ray":
        from . import cluster
        from .errors import VsrError
        from .pipeline import default_output_path

        out = os.fspath(dst) if dst is not None else str(default_output_path(src, cfg))
        [done] = cluster.run([(src, out)], cfg, resume=resume, format=format, progress=progress).files
        if done.report is None:
            raise VsrError(done.error or f"{src}: failed")
        return done.report
    pipeline, choice = pipeline_for(os.fspath(src), cfg, explicit)  # speed: realtime chooses here (local runs)
    if choice is not None:
        log.info("%s", choice.line())
    return with_choice(pipeline.run(os.fspath(src), dst, progress=progress, format=format, resume=resume), choice)
