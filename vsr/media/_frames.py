"""Pixel planes of PyAV frames as numpy views, and the bicubic plane resize used for chroma."""

from __future__ import annotations

import av
import numpy as np

def native_format(pix_fmt: str) -> bool:
    """Whether vsr works on this pixel format's own planes: planar YUV or gray, 8 to 16 bit, little-endian."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return False
    comps = fmt.components
    return (
        (fmt.is_planar or len(comps) == 1)  # FFmpeg does not flag one-plane gray as planar
        and not fmt.is_rgb
        and not fmt.is_bayer
        and not fmt.has_palette
        and not fmt.is_big_endian
        and len(comps) in (1, 3)
        and len({c.plane for c in comps}) == len(comps)  # not semi-planar (NV12, P010: what NVDEC gives)
        and not any(c.is_alpha for c in comps)
        and all(c.bits == comps[0].bits for c in comps)
        and comps[0].bits <= 16
    )


def _dtype(fmt: av.VideoFormat) -> type[np.generic]:
    return np.uint8 if fmt.components[0].bits <= 8 else np.uint16


def frame_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """Views of a planar frame's planes, cropped to their visible size (no copy).

    The views are writable; they alias the frame's buffers and live as long as it does.
    """
    dtype = _dtype(frame.format)
    size = np.dtype(dtype).itemsize
    out = []
    for plane in frame.planes:
        buf = np.frombuffer(memoryview(plane), dtype=dtype)
        out.append(buf.reshape(plane.height, plane.line_size // size)[:, : plane.width])
    return out


def new_frame(width: int, height: int, pix_fmt: str) -> tuple[av.VideoFrame, list[np.ndarray]]:
    """A new frame and writable views of its planes."""
    frame = av.VideoFrame(width, height, pix_fmt)
    return frame, frame_planes(frame)



def resize_plane(src: np.ndarray, dst: np.ndarray) -> None:
    """Bicubic resize of one pixel plane into ``dst`` (used for chroma; luma goes through the model)."""
    import cv2

    h, w = dst.shape
    if src.shape == dst.shape:
        dst[...] = src
    else:
        dst[...] = cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC)
