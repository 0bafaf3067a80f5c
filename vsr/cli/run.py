"""``vsr run``: upscale a video file through the streaming pipeline."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError
from ..media import VideoReader
from ..pipeline import Pipeline, Progress, RunReport, default_output_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="video file to upscale")
    p.add_argument("-o", "--output", metavar="OUTPUT",
                   help="output file (default: <stem>_x<N>.<ext> beside the input)")
    p.add_argument("--config", metavar="FILE", help="YAML configuration (default: built-in, as pipeline.yaml)")
    # Every option defaults to None: only what the user sets overrides the configuration.
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor")
    p.add_argument("--model", metavar="NAME", help="registered model (espcn, espcn-fast)")
    p.add_argument("--weights", metavar="FILE", help="weights file instead of the shipped ones")
    p.add_argument("--device", metavar="DEV", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="inference precision")
    p.add_argument("--batch", type=int, metavar="N", help="frames per inference call")
    p.add_argument("--tile", type=int, metavar="PX", help="LR tile size for huge frames (0: whole frames)")
    p.add_argument("--codec", metavar="NAME", help="video encoder (libx264, libx265, ffv1, ...)")
    p.add_argument("--crf", type=int, metavar="N", help="encoder quality (lower is better)")
    p.add_argument("--preset", metavar="NAME", help="encoder speed preset")
    p.add_argument("--pix-fmt", metavar="FMT", help="output pixel format (default: the input's)")
    p.add_argument("--audio", choices=("copy", "reencode", "drop"), help="audio policy")
    p.add_argument("-y", "--overwrite", action="store_true", default=None, help="replace an existing output")
    p.add_argument("--report", metavar="FILE", help="write a JSON report of the run (fps, stages, latency)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "model.scale": args.scale,
        "model.name": args.model,
        "model.weights": args.weights,
        "device": args.device,
        "precision": args.precision,
        "batch": args.batch,
        "tile": args.tile,
        "encoder.codec": args.codec,
        "encoder.crf": args.crf,
        "encoder.preset": args.preset,
        "encoder.pix_fmt": args.pix_fmt,
        "encoder.audio": args.audio,
        "output.overwrite": args.overwrite,
        "progress": "never" if args.quiet else None,
    }


class ProgressBar:
    """A one-line progress bar on stderr: frames, fps and ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        if p.total:
            frac = min(1.0, p.frames / p.total)
            bar = "#" * int(frac * 30)
            eta = (p.total - p.frames) / p.fps if p.fps > 0 else 0.0
            line = f"[{bar:<30}] {p.frames}/{p.total} frames  {p.fps:.1f} fps  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        else:
            line = f"{p.frames} frames  {p.fps:.1f} fps"
        sys.stderr.write("\r" + line + " " * 4)
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def summary(report: RunReport) -> str:
    rt = f", {report.realtime_factor:.2f}x real time" if report.realtime_factor else ""
    return (f"{report.frames} frames in {report.elapsed_s:.1f} s: {report.fps:.1f} fps end to end{rt}, "
            f"{report.device} ({report.precision}) -> {report.output}")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))
    if args.input != "-":
        VideoReader(args.input).close()  # input errors first: they are more basic than model errors
    if args.report and Path(args.report).is_dir():
        raise ConfigError(f"--report {args.report}: is a directory; give a file name")
    output = args.output if args.output is not None else default_output_path(args.input, config)
    bar_on = config.progress == "always" or (config.progress == "auto" and sys.stderr.isatty())
    bar = ProgressBar(bar_on)
    pipeline = Pipeline(config)
    try:
        report = pipeline.run(args.input, output, progress=bar)
    finally:
        bar.finish()
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if config.progress != "never":
        print(f"vsr: {summary(report)}", file=sys.stderr)
    return 0
