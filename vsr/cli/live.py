"""``vsr live``: a camera, file or URL upscaled on the fly in a window, beside bicubic."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..config import PipelineConfig, load_config
from ..engine import upscaler_from_config
from ..errors import ConfigError, OutputExistsError
from ..live import VIEWS, LiveOptions, LiveReport, LiveUpscaler, Recorder, WindowDisplay, open_source, run_live
from ._model_options import add_model_arguments, model_overrides

KEYS = "keys: q/Esc quit, space pause, v view, [ ] or drag: split line, t/click: toggle, s snapshot, r record"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = KEYS
    p.add_argument("--source", default="0", metavar="SRC",
                   help="camera index (default 0), camera device (/dev/video2), video file or URL")
    p.add_argument("--loop", action="store_true", help="start a file over at its end")
    add_model_arguments(p, config_help="YAML configuration (model, device, precision, encoder)")
    p.add_argument("--view", choices=VIEWS, default="side-by-side",
                   help="bicubic and upscaled side by side, split at a movable line, or toggled (key v cycles)")
    p.add_argument("--record", metavar="FILE",
                   help="record the upscaled stream (not the window) from the start; key r stops and restarts")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace an existing --record file")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames shown")
    p.add_argument("--snapshot", metavar="FILE", help="save the last shown window image (PNG) on exit")
    p.add_argument("--report", metavar="FILE", help="write a JSON report (counts, fps, latency) on exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def _config(args: argparse.Namespace) -> PipelineConfig:
    return load_config(args.config, model_overrides(args))


def _check_outputs(args: argparse.Namespace) -> None:
    import cv2

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {args.max_frames}")
    for flag, value in (("--snapshot", args.snapshot), ("--report", args.report), ("--record", args.record)):
        if value is None:
            continue
        path = Path(value)
        if path.is_dir():
            raise ConfigError(f"{flag} {value}: is a directory; give a file name")
        if not path.parent.is_dir():
            raise ConfigError(f"{flag} {value}: folder {str(path.parent)!r} does not exist")
    if args.record is not None and Path(args.record).exists() and not args.overwrite:
        raise OutputExistsError(f"{args.record} exists; pass -y/--overwrite to replace it")
    if args.snapshot is not None and not cv2.haveImageWriter(args.snapshot):
        raise ConfigError(f"--snapshot {args.snapshot}: unknown image type; use a .png file name")


def load_upscaler(config: PipelineConfig) -> LiveUpscaler:
    """The model on the configured device and precision, as ``vsr run`` loads it."""
    return LiveUpscaler(upscaler_from_config(config))

def summary(report: LiveReport) -> str:
    rec = f"; recorded {', '.join(report.recordings)}" if report.recordings else ""
    return (f"live: {report.shown} frames shown of {report.captured} captured "
            f"({report.dropped_before_inference} dropped while the model was busy), "
            f"upscaling {report.fps['infer']:.1f} fps, latency p50 {report.latency_ms['p50']:.0f} ms "
            f"p95 {report.latency_ms['p95']:.0f} ms{rec}")


def main(args: argparse.Namespace) -> int:
    config = _config(args)
    _check_outputs(args)
    source = open_source(args.source, loop=args.loop)  # the more basic errors first: source, display, model
    try:
        display = WindowDisplay(f"vsr live - {source.name}")
        try:
            upscaler = load_upscaler(config)
            encoder = dataclasses.replace(config.encoder, preset="veryfast", audio="drop")  # must keep up
            recorder = Recorder(encoder, fps=source.fps, overwrite=args.overwrite)
            options = LiveOptions(
                view=args.view, max_frames=args.max_frames,
                snapshot=Path(args.snapshot) if args.snapshot else None,
                record=Path(args.record) if args.record else None,
                label=f"{config.model.name} x{config.model.scale}",
            )
        except BaseException:
            display.close()
            raise
    except BaseException:
        source.close()
        raise
    report = run_live(source, upscaler, display, options, recorder)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print(f"vsr: {summary(report)}", file=sys.stderr)
    return 0
