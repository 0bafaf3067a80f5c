"""Stage speeds measured apart: what ``vsr bench`` reports and what ``speed: realtime`` decides on.

Each figure goes through the same code as a run: the infer stage with its batching,
CPU workers or CUDA streams, and the encode stage's compose (bicubic chroma) and writer.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from ..config import EncoderConfig
from ..media import VideoReader, VideoWriter
from ._flow import _END, _Clock, _Control, _Job

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = ["bound_fps", "measure_encode", "measure_infer"]


def measure_infer(pipe: Pipeline, frames: list[av.VideoFrame]) -> tuple[float, list[np.ndarray]]:
    """The pipeline's infer stage alone on decoded frames held in memory: (fps, upscaled luma planes)."""
    src: queue.Queue = queue.Queue()
    out: queue.Queue = queue.Queue()
    for i, frame in enumerate(frames):
        src.put(_Job(i, frame, 0.0))
    src.put(_END)
    t0 = time.perf_counter()
    pipe._infer(src, out, _Control(), _Clock())
    seconds = time.perf_counter() - t0
    done = [item for item in iter(out.get_nowait, _END)]
    if len(done) != len(frames) or any(job.luma is None for job in done):  # pragma: no cover - a pipeline bug
        raise RuntimeError("the infer stage lost frames")
    return len(frames) / seconds, [job.luma for job in done]


def measure_encode(pipe: Pipeline, source: str | os.PathLike[str] | VideoReader, dst: Path,
                   frames: list[av.VideoFrame], lumas: list[np.ndarray],
                   encoder: EncoderConfig | None = None) -> float:
    """The encode stage alone (compose + :class:`VideoWriter`, closed) on upscaled luma held in memory: fps.

    ``source``: the input (its video stream sets the output's), a file name or an open reader;
    ``encoder``: default the pipeline's.
    """
    reader = source if isinstance(source, VideoReader) else VideoReader(source)
    try:
        t0 = time.perf_counter()
        writer = VideoWriter(dst, reader, encoder=encoder or pipe.config.encoder, overwrite=True)
        for i, (frame, luma) in enumerate(zip(frames, lumas)):
            writer.write(pipe._compose(writer, _Job(i, frame, 0.0, luma)))
        writer.close()
        return len(frames) / (time.perf_counter() - t0)
    finally:
        if reader is not source:
            reader.close()


def bound_fps(decode: float, infer: float, encode: float, *, cuda: bool) -> float:
    """The best any pipeline could do from the stages' speeds alone.

    On CPU the stages share the cores, so their times add: ``1 / (1/decode + 1/infer + 1/encode)``;
    on CUDA inference runs beside the CPU stages: ``min(decode, infer, encode)``.
    """
    if cuda:
        return min(decode, infer, encode)
    return 1.0 / (1.0 / decode + 1.0 / infer + 1.0 / encode)
