"""Media input and output with PyAV: demux → decode, and encode → mux.

This module knows containers, streams, frames, packets and pixel planes; it knows
nothing of models. The reader yields decoded video frames and, in demux order, the
packets of the streams that are copied (audio, subtitles); the writer encodes video
frames, copies or re-encodes those packets, and writes to a temporary file beside the
destination that replaces it only when everything succeeded.

The work is split over private modules (``_frames``: planes; ``_reader``: demux and
decode; ``_writer``: encode and mux; ``_carry``: the one plan of what else an output
carries of its input: streams, cover art, attachments, chapters, timecode, tags); this
package re-exports their public surface.
"""

from __future__ import annotations

from ._carry import CarryItem, CarryPlan
from ._frames import frame_planes, native_format, new_frame, resize_plane
from ._reader import Item, VideoInfo, VideoReader, check_input_path
from ._writer import SourceDescription, VideoWriter, resolve_container_format

__all__ = [
    "CarryItem",
    "CarryPlan",
    "Item",
    "SourceDescription",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "check_input_path",
    "frame_planes",
    "native_format",
    "new_frame",
    "resize_plane",
    "resolve_container_format",
]
