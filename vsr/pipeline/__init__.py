"""The streaming pipeline: decode → upscale → encode, three stages overlapped.

Each stage runs in its own thread and hands work to the next through a bounded
queue, so memory is bounded by ``queue_depth`` whatever the video's length and the
slowest stage sets the pace (PyAV and PyTorch release the GIL in their heavy calls).

Items flow in demux order: decoded frames, and the packets of copied streams, which
the upscale stage forwards untouched so that audio stays interleaved with video (a packet
that arrives while a batch is gathered follows that batch; it never cuts it short).

On CUDA the upscale stage keeps several batches in flight: luma planes are copied once
into reused pinned host buffers, copied to the device on a copy stream (``non_blocking``),
upscaled on a compute stream and copied back on a third stream, ordered by events, so
that transfers overlap computation; a hand-off thread sleeps on each batch's last event
and hands it on as soon as it is done. This module is the only home of threads and
CUDA streams in vsr.

The live preview's stages (capture, upscale, display, record) are latest-frame-wins
instead: see :class:`LatestSlot` and :class:`LatestFrameStages`.

Private modules: ``_pipeline`` (:class:`Pipeline`), ``_runners`` (CPU workers, CUDA
streams), ``_flow`` (queues and stop flag), ``_latest`` (live), ``_overlap``
(:func:`overlapped_map`), ``_probe`` (stages timed apart, for the bench and ``speed: realtime``),
``_reports``; this package re-exports their public surface.
"""

from __future__ import annotations

from ._latest import LatestFrameStages, LatestSlot, SlotClosed
from ._overlap import overlapped_map
from ._pipeline import Pipeline, default_output_path
from ._probe import bound_fps, measure_encode, measure_infer
from ._reports import Progress, RunReport, StageReport

__all__ = [
    "LatestFrameStages",
    "LatestSlot",
    "Pipeline",
    "Progress",
    "RunReport",
    "SlotClosed",
    "StageReport",
    "bound_fps",
    "default_output_path",
    "measure_encode",
    "measure_infer",
    "overlapped_map",
]
