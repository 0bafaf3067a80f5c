"""``speed: realtime`` (``vsr run --realtime``): the settings that keep up with the source, measured here.

A short probe decodes the input's first frames once and times them through the same
pipeline stages the run will use (:func:`vsr.pipeline.measure_infer` and
:func:`~vsr.pipeline.measure_encode`): the infer stage for each model and precision it
may choose, the encode stage for each encoder preset. From those it predicts the run's
speed as the bench does (:func:`vsr.pipeline.bound_fps`) and takes the first candidate,
in order of quality, predicted to reach the source's frame rate with a margin
(:data:`HEADROOM`). On CPU it adds the stages' times as if they could not overlap, and 8 frames
time an encoder's start and flush along with its frames: on a 2-core Xeon without AMX runs came
out 0.76-1.41x the prediction, median 1.15x (``tools/probe_accuracy.py``, ten settings). Quality goes in this order, the cheapest loss first:

1. precision, from ``auto``'s choice on (:func:`vsr.engine.precision_candidates`: bf16
   then any faster one on CPUs with native bf16; int8 joins when the engine offers it);
2. encoder preset, from the configured one to ultrafast (x264/x265: medium, faster,
   veryfast, ultrafast; other codecs keep theirs);
3. model, from the configured one along :data:`MODEL_LADDER` (espcn, then espcn-fast);
4. only when nothing above keeps up: int8 for a model whose int8 file ships but is not
   within the 0.05 dB bound that lets ``auto`` take it (:attr:`Ladders.last_resort`; its
   measured cost on a real clip is in the file, and the line names it). On a smooth
   real clip espcn x3's int8 costs more than espcn-fast does, so int8 outside the bound
   comes after every model, not in the precision step.

It starts from the configuration and only ever trades quality for speed: a key the
user set (a flag, an argument of :func:`vsr.upscale_video`, or a key present in the
``--config`` file) is never changed. When nothing is predicted to keep up, the fastest candidate is
chosen and the line says so. Measurements are memoised, so the probe times only what
the search reaches: with 8 frames of 640x360 x3 about a second, more when it must go
far down the list.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
import torch

from .config import PipelineConfig
from .engine import precision_candidates, resolve_device, resolve_precision
from .media import VideoReader
from .models import list_models, shipped_weights
from .pipeline import Pipeline, RunReport, bound_fps, measure_encode, measure_infer

__all__ = ["HEADROOM", "MODEL_LADDER", "Candidate", "Choice", "FrameProbe", "Ladders", "choose", "choose_realtime",
           "ladders", "pipeline_for", "slow_stage_hint", "with_choice"]

log = logging.getLogger("vsr")

#: Models from the best picture to the fastest; the realtime search moves along it from the configured one.
MODEL_LADDER: tuple[str, ...] = ("espcn", "espcn-fast")
#: The predicted speed must exceed the source's frame rate by this factor: the probe's noise on a busy machine,
#: and x264's slower presets, which run up to ~20 % faster on 8 frames than on 48 (a shorter lookahead; measured
#: on stream-of-water, 2-core Xeon, in alternation).
HEADROOM = 1.2
#: x264/x265 presets from the slowest; the search visits the configured one, then those of _PRESET_STEPS after it.
_X264_PRESETS = ("placebo", "veryslow", "slower", "slow", "medium", "fast", "faster", "veryfast", "superfast",
                 "ultrafast")
_PRESET_STEPS = ("medium", "faster", "veryfast", "ultrafast")
_PRESET_CODECS = {"libx264": "medium", "libx265": "medium"}  # codec: its default preset
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Ladders:
    """What the search may vary, each in order of quality (one entry: kept as configured)."""

    models: tuple[str, ...]
    precisions: dict[str, tuple[str, ...]]  # per model: int8 may ship for some models only
    presets: tuple[str | None, ...]
    kept: tuple[str, ...] = ()  # keys left alone because the user set them
    #: per model: precisions tried only when no candidate of ``precisions`` keeps up (int8 outside the bound)
    last_resort: dict[str, tuple[str, ...]] = field(default_factory=dict)
    scale: int = 3


def _faster_presets(codec: str, preset: str | None, device: str = "cpu") -> tuple[str | None, ...]:
    if codec == "auto" and not device.startswith("cuda"):
        codec = "libx264"  # what auto encodes with off CUDA (on CUDA it may be NVENC, whose presets differ)
    if codec not in _PRESET_CODECS:
        return (preset,)
    current = preset or _PRESET_CODECS[codec]
    if current not in _X264_PRESETS:
        return (preset,)
    rank = _X264_PRESETS.index(current)
    return (preset, *(p for p in _PRESET_STEPS if _X264_PRESETS.index(p) > rank))


def ladders(config: PipelineConfig, explicit: frozenset[str] | set[str]) -> Ladders:
    """The candidates for ``config`` when the dotted keys in ``explicit`` were set by the user."""
    device = resolve_device(config.device)
    m = config.model
    kept = [k for k in ("model.name", "precision", "encoder.preset") if k in explicit]
    if "model.weights" in explicit and "model.name" not in explicit:
        kept.append("model.name (its weights are set)")
    if "model.name" in explicit or "model.weights" in explicit or m.name not in MODEL_LADDER:
        models: tuple[str, ...] = (m.name,)
    else:
        after = MODEL_LADDER[MODEL_LADDER.index(m.name):]
        models = tuple(n for n in after if n in list_models() and (n == m.name or shipped_weights(n, m.scale)))
    precisions: dict[str, tuple[str, ...]] = {}
    last_resort: dict[str, tuple[str, ...]] = {}
    for name in models:
        offered = precision_candidates(device, model=name, scale=m.scale, weights=m.weights)
        spec = config.precision
        if spec == "int8" or (spec == "auto" and "int8" in offered):  # int8 is offered where auto takes it
            chosen = "int8"
        else:
            chosen = _DTYPE_NAMES[resolve_precision(spec, device)]
        if "precision" in explicit:
            precisions[name] = (chosen,)
            continue
        precisions[name] = offered[offered.index(chosen):] if chosen in offered else (chosen,)
        if spec == "auto" and "int8" not in precisions[name] and "int8" in precision_candidates(
                device, model=name, scale=m.scale, weights=m.weights, within_bound=False):
            last_resort[name] = ("int8",)
    enc = config.encoder
    presets = (enc.preset,) if "encoder.preset" in explicit else _faster_presets(enc.codec, enc.preset, device.type)
    return Ladders(models, precisions, presets, tuple(kept), last_resort, m.scale)


def _int8_cost(model: str, scale: int) -> str:
    """The shipped int8 file's measured loss against fp32 on the real clip, as a phrase ('' if unknown)."""
    from .models import read_weights
    from .quantize import shipped_int8

    try:  # the metadata only: no network built
        quality = read_weights(shipped_int8(model, scale))[1].get("quality") or {}
        return f" ({quality['clip_delta']:+.2f} dB on a real clip)"
    except Exception:  # noqa: BLE001 - the note is a courtesy; the run goes on without it
        return ""


class Measure(Protocol):
    """Stage speeds on the input's first frames (:class:`FrameProbe`, or fakes in tests)."""

    source_fps: float | None
    decode_fps: float
    cuda: bool

    def infer_fps(self, model: str, precision: str) -> float: ...

    def encode_fps(self, preset: str | None) -> float: ...


@dataclass(frozen=True)
class Candidate:
    model: str
    precision: str
    preset: str | None
    fps: float  # predicted for the whole pipeline
    infer_fps: float
    encode_fps: float

    @property
    def label(self) -> str:
        return f"{self.model} {self.precision}" + (f" preset {self.preset}" if self.preset else "")


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    keeps_up: bool | None  # None: the source's frame rate is unknown
    source_fps: float | None
    decode_fps: float
    tried: tuple[Candidate, ...]
    kept: tuple[str, ...] = ()
    frames: int = 0  # probe frames
    probe_s: float = 0.0
    config: PipelineConfig | None = None
    pipeline: Pipeline | None = field(default=None, compare=False, repr=False)
    ladders: Ladders | None = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        """One line: what was chosen and why (measured against the source's frame rate)."""
        c = self.candidate
        kept = f"; kept as set: {', '.join(self.kept)}" if self.kept else ""
        speeds = f"(decode {self.decode_fps:.0f}, infer {c.infer_fps:.1f}, encode {c.encode_fps:.1f} fps alone)"
        on = f"on the first {self.frames} frames in {self.probe_s:.1f} s" if self.frames else "on the first frames"
        if self.source_fps is None:
            return (f"realtime: the source's frame rate is unknown (or it has no frames), so nothing to keep up "
                    f"with; kept {c.label}{kept}")
        ratio = c.fps / self.source_fps
        if self.keeps_up:
            better = [t for t in self.tried if self._rank(t) < self._rank(c)]
            up = max(better, key=self._rank) if better else None
            why = f"; the next better setting, {up.label}, {up.fps:.1f} fps" if up else ""
            return (f"realtime: {c.label}: {c.fps:.1f} fps predicted {speeds} {on}, for a "
                    f"{self.source_fps:.2f} fps source ({ratio:.2f}x){self._last_resort_note(c)}{why}{kept}")
        return (f"realtime: nothing is predicted to keep up with the {self.source_fps:.2f} fps source on this machine "
                f"(from the stages' speeds alone, their times added); chose the fastest, {c.label}: "
                f"{c.fps:.1f} fps predicted {speeds} {on} ({ratio:.2f}x){kept}")

    def _last_resort_note(self, c: Candidate) -> str:
        if self.ladders is None or c.precision not in self.ladders.last_resort.get(c.model, ()):
            return ""
        return (f"; nothing else kept up, so int8 although it is outside auto's 0.05 dB bound for {c.model}"
                f"{_int8_cost(c.model, self.ladders.scale)}")

    def _rank(self, c: Candidate) -> tuple[int, int, int]:
        """Where ``c`` stands in quality order: model, preset, precision, as the ladders list them."""
        lad = self.ladders
        if lad is None:
            return (0, 0, 0)
        usual = lad.precisions[c.model]
        if c.precision not in usual:  # a last resort ranks after every usual candidate
            return (len(lad.models) + lad.models.index(c.model), lad.presets.index(c.preset),
                    lad.last_resort[c.model].index(c.precision))
        return lad.models.index(c.model), lad.presets.index(c.preset), usual.index(c.precision)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.candidate.model, "precision": self.candidate.precision, "preset": self.candidate.preset,
            "predicted_fps": self.candidate.fps, "source_fps": self.source_fps, "keeps_up": self.keeps_up,
            "decode_fps": self.decode_fps, "probe_frames": self.frames, "probe_s": self.probe_s,
            "kept": list(self.kept), "tried": [dataclasses.asdict(t) for t in self.tried],
        }


def choose(options: Ladders, measure: Measure) -> Choice:
    """The first candidate in quality order predicted to keep up; else the fastest of all.

    Quality order: model, then preset, then precision (the cheapest loss varies fastest).
    Encoder presets are taken to be faster the further down the ladder, so each model is
    probed from its fastest preset up: if even that does not keep up the model is passed
    over, and otherwise the walk towards slower presets stops at the first one that does
    not keep up. That measures the cheap presets first and the slow ones only when they
    might be chosen, which keeps the probe short on a machine that needs ultrafast.
    """
    tried: list[Candidate] = []
    infers: dict[tuple[str, str], float] = {}
    encodes: dict[str | None, float] = {}
    source = measure.source_fps
    target = (source or 0.0) * HEADROOM

    def candidate(model: str, precision: str, preset: str | None) -> Candidate:
        if (model, precision) not in infers:  # each stage speed is asked for once
            infers[model, precision] = measure.infer_fps(model, precision)
        if preset not in encodes:
            encodes[preset] = measure.encode_fps(preset)
        infer, encode = infers[model, precision], encodes[preset]
        fps = bound_fps(measure.decode_fps, infer, encode, cuda=measure.cuda)
        c = Candidate(model, precision, preset, fps, infer, encode)
        if c not in tried:
            tried.append(c)
        return c

    def fitting(model: str, preset: str | None, precisions: tuple[str, ...]) -> Candidate | None:
        """The first precision (in quality order) that keeps up with ``model`` at ``preset``."""
        for precision in precisions:
            c = candidate(model, precision, preset)
            if c.fps >= target:
                return c
        return None

    first = (options.models[0], options.precisions[options.models[0]][0], options.presets[0])
    if not source:
        return Choice(Candidate(*first, 0.0, 0.0, 0.0), None, None, measure.decode_fps, (), options.kept)
    tiers = [options.precisions, options.last_resort]
    for tier in tiers:
        for model in options.models:
            if not tier.get(model):
                continue
            best = fitting(model, options.presets[-1], tier[model])
            if best is None:
                continue
            for preset in reversed(options.presets[:-1]):
                slower = fitting(model, preset, tier[model])
                if slower is None:
                    break
                best = slower
            return Choice(best, True, source, measure.decode_fps, tuple(tried), options.kept, ladders=options)
    fastest = max(tried, key=lambda t: t.fps)
    return Choice(fastest, fastest.fps >= source, source, measure.decode_fps, tuple(tried), options.kept,
                  ladders=options)


#: Frames encoded (and not timed) before the probe's first encode measurement.
_WARM_UP = 2


def _probe_frames(width: int, height: int, scale: int) -> int:
    """8 frames up to 1080p out; fewer for larger outputs (3 at 4K), so that the probe stays short."""
    return max(3, min(8, round(8 * 1920 * 1080 / max(1, width * height * scale * scale))))


class FrameProbe:
    """The input's first frames, decoded once, timed through each candidate's stages (memoised).

    Builds one :class:`Pipeline` per model and precision measured; :meth:`pipeline` hands
    the chosen one on, so the run does not load its model twice.
    """

    def __init__(self, src: str | Path, config: PipelineConfig, *, frames: int | None = None) -> None:
        self.config = config
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        self._infer: dict[tuple[str, str], float] = {}
        self._encode: dict[str | None, float] = {}
        self._lumas: list[np.ndarray] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="vsr-realtime-")
        self.reader = VideoReader(src)
        info = self.reader.info
        self.source_fps = info.fps
        n = frames or _probe_frames(info.width, info.height, config.model.scale)
        self.frames: list[av.VideoFrame] = []
        it = iter(self.reader)
        t0 = time.perf_counter()
        for item in it:
            if isinstance(item, av.VideoFrame):
                self.frames.append(item)
                if len(self.frames) >= n:
                    break
        seconds = time.perf_counter() - t0
        self.decode_fps = len(self.frames) / seconds if seconds > 0 else float("inf")
        if not self.frames:  # nothing to time: the run itself will say what is wrong with the input
            self.source_fps = None
        device = resolve_device(config.device)
        self.cuda = device.type == "cuda"

    def close(self) -> None:
        self.reader.close()
        self._tmp.cleanup()

    def __enter__(self) -> "FrameProbe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pipeline(self, model: str, precision: str) -> Pipeline:
        key = (model, precision)
        if key not in self._pipelines:
            self._pipelines[key] = Pipeline(self.config.replace({"model.name": model, "precision": precision}))
        return self._pipelines[key]

    def infer_fps(self, model: str, precision: str) -> float:
        key = (model, precision)
        if key not in self._infer:
            pipe = self.pipeline(model, precision)
            warm = self.frames[: max(1, min(len(self.frames), pipe.cpu_workers))]
            measure_infer(pipe, warm)  # workers started, weights packed for this size
            self._infer[key], lumas = measure_infer(pipe, self.frames)
            self._lumas = self._lumas or lumas
        return self._infer[key]

    def encode_fps(self, preset: str | None) -> float:
        if preset not in self._encode:
            if self._lumas is None:  # upscaled frames to encode: any candidate's (same size)
                ladder = ladders(self.config, frozenset())
                self.infer_fps(ladder.models[0], ladder.precisions[ladder.models[0]][0])
            assert self._lumas is not None
            pipe = next(iter(self._pipelines.values()))
            encoder = dataclasses.replace(self.config.encoder, preset=preset, audio="drop", subtitles="drop")
            if not self._encode:
                # The process's first encode may pay one-time costs (the encoder library's and the compose's
                # first use): on stream-of-water x3 at ultrafast the first of four timed 57 and 77 fps in two
                # processes (76-104 after), 98 in a third (tools/probe_accuracy.py --cold); a probe that timed
                # 33.6 said nothing kept up with a run that went 1.59x.
                measure_encode(pipe, self.reader, Path(self._tmp.name) / "warm-up.mkv", self.frames[:_WARM_UP],
                               self._lumas[:_WARM_UP], encoder)
            self._encode[preset] = measure_encode(pipe, self.reader, Path(self._tmp.name) / f"probe_{preset}.mkv",
                                                  self.frames, self._lumas, encoder)
        return self._encode[preset]


def choose_realtime(src: str | Path, config: PipelineConfig, explicit: frozenset[str] | set[str]) -> Choice:
    """Probe ``src`` and choose; the :class:`Choice` carries the configuration and a loaded pipeline for it."""
    t0 = time.perf_counter()
    with FrameProbe(src, config) as probe:
        choice = choose(ladders(config, explicit), probe)
        c = choice.candidate
        chosen = config.replace({"model.name": c.model, "precision": c.precision, "speed": "realtime"})
        chosen = dataclasses.replace(chosen, encoder=dataclasses.replace(chosen.encoder, preset=c.preset))
        upscaler = probe.pipeline(c.model, c.precision).upscaler
        frames = len(probe.frames)
    return dataclasses.replace(choice, frames=frames, probe_s=time.perf_counter() - t0, config=chosen,
                               pipeline=Pipeline(chosen, upscaler=upscaler))


def pipeline_for(src: str | Path, config: PipelineConfig,
                 explicit: frozenset[str] | set[str]) -> tuple[Pipeline, Choice | None]:
    """The pipeline to run ``src`` with: ``config``'s, or with ``speed: realtime`` the chosen one."""
    if config.speed != "realtime":
        return Pipeline(config), None
    if str(src) in ("-", "pipe:0"):
        log.info("realtime: standard input cannot be probed before the run; running the configuration as it is")
        return Pipeline(config), None
    choice = choose_realtime(src, config, explicit)
    assert choice.pipeline is not None
    return choice.pipeline, choice


def with_choice(report: RunReport, choice: Choice | None) -> RunReport:
    """The run's report with what ``speed: realtime`` measured and chose (its ``realtime`` key)."""
    return report if choice is None else dataclasses.replace(report, realtime=choice.to_dict())


# -- after a run -----------------------------------------------------------------------------------
def slow_stage_hint(report: RunReport, config: PipelineConfig) -> str | None:
    """For a run slower than real time: the stage that held it back (busiest) and the option that would help."""
    if not report.realtime_factor or report.realtime_factor >= 1.0 or not report.stages:
        return None
    name, stage = max(report.stages.items(), key=lambda kv: kv[1].busy_fraction)
    realtime = config.speed == "realtime"
    helps: list[str] = []
    if name == "encode":
        faster = _faster_presets(config.encoder.codec, config.encoder.preset, report.device)[1:]
        if faster:
            helps.append(f"--preset {faster[-2] if len(faster) > 1 else faster[0]}")
        elif config.encoder.codec not in (*_PRESET_CODECS, "auto"):
            helps.append("--codec libx264 --preset veryfast")
    elif name == "infer":
        at = MODEL_LADDER.index(report.model) if report.model in MODEL_LADDER else len(MODEL_LADDER) - 1
        if at + 1 < len(MODEL_LADDER):
            helps.append(f"--model {MODEL_LADDER[at + 1]}")
        offered = precision_candidates(torch.device(report.device), model=report.model, scale=report.scale)
        if report.precision in offered and offered.index(report.precision) + 1 < len(offered):
            helps.append(f"--precision {offered[-1]}")
    else:  # decode: no vsr option decodes faster
        helps.append("an input in a codec that decodes faster (e.g. H.264)")
    if not realtime:
        helps.append("--realtime")
    what = f"{name} (busy {stage.busy_fraction:.0%} of the run, {stage.fps:.1f} fps while busy)"
    advice = f"; try {' or '.join(helps)}" if helps else "; already the fastest settings vsr has for it"
    return f"slower than real time ({report.realtime_factor:.2f}x): held back by {what}{advice}"
