"""What a run reports: progress while it runs, and the :class:`RunReport` at the end."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

@dataclass(frozen=True)
class Progress:
    frames: int
    total: int  # estimate from the container; 0 when unknown
    elapsed: float

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class StageReport:
    frames: int
    busy_s: float  # time spent working, not waiting on a queue
    fps: float  # frames per second of busy time
    busy_fraction: float  # busy time over the run's wall time


@dataclass(frozen=True)
class RunReport:
    input: str
    output: str
    frames: int
    elapsed_s: float
    fps: float
    source_fps: float | None
    realtime_factor: float | None  # fps / source_fps
    device: str
    precision: str
    model: str
    scale: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    stages: dict[str, StageReport]
    latency_ms: dict[str, float]  # per frame, decoded → handed to the encoder
    lost_packets: int = 0
    notes: tuple[str, ...] = ()
    # Per item besides the picture (streams, chapters, timecode, tags): item, kind, action, reason, stream.
    streams: tuple[dict[str, Any], ...] = ()
    realtime: dict[str, Any] | None = None  # speed: realtime: what was measured and chosen (vsr.realtime)
    encoder: dict[str, Any] | None = None  # the video encoder as it ran: codec, preset, crf

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d["streams"] = list(self.streams)
        return d
