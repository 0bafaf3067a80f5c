"""``vsr run``: upscale video files, folders or a stream on standard input through the streaming pipeline.

One input: errors are one line and exit 1, as everywhere. Several inputs, or a folder:
a batch, with one model load for all files; a file that fails is listed and the batch
goes on; exit 1 at the end if any failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import PipelineConfig, load_config_and_keys
from ..errors import ConfigError, MediaError, VsrError
from ..media import VideoReader, check_input_path, resolve_container_format
from ..pipeline import Pipeline, Progress, RunReport, default_output_path
from ..realtime import pipeline_for, slow_stage_hint, with_choice
from ._model_options import add_model_arguments, model_overrides

log = logging.getLogger("vsr")

# What a folder given as input contributes: files with these extensions, not its subfolders.
VIDEO_SUFFIXES = frozenset({
    ".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".mxf",
    ".nut", ".ogv", ".ts", ".webm", ".wmv", ".y4m",
})
# The file extension of an output format named with -f, for default output names.
_FORMAT_SUFFIX = {"yuv4mpegpipe": ".y4m", "matroska": ".mkv", "mp4": ".mp4", "mov": ".mov", "mpegts": ".ts",
                  "nut": ".nut", "webm": ".webm", "avi": ".avi", "flv": ".flv"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video file(s) or folder(s) to upscale; - reads a stream (e.g. Y4M) on standard input")
    p.add_argument("-o", "--output", metavar="OUTPUT",
                   help="output file, or - for standard output (default: <stem>_x<N>.<ext> beside the input); "
                        "with several inputs or a folder: the output folder, created if missing")
    p.add_argument("-f", "--format", metavar="FMT",
                   help="output container: y4m, mkv, mp4, nut, webm, ... or any FFmpeg muxer "
                        "(default: from the output's extension; mkv on standard output). "
                        "y4m holds raw frames: no audio, and --codec/--crf/--preset do not apply")
    # Every option defaults to None: only what the user sets overrides the configuration.
    add_model_arguments(p, config_help="YAML configuration (default: built-in, as pipeline.yaml)")
    p.add_argument("--batch", type=int, metavar="N", help="frames per inference call")
    p.add_argument("--tile", type=int, metavar="PX", help="LR tile size for huge frames (0: whole frames)")
    p.add_argument("--codec", metavar="NAME", help="video encoder: auto (NVENC on a CUDA run when the GPU has it, else libx264), libx264, libx265, ffv1, ...")
    p.add_argument("--crf", type=int, metavar="N", help="encoder quality (lower is better)")
    p.add_argument("--preset", metavar="NAME", help="encoder speed preset")
    p.add_argument("--pix-fmt", metavar="FMT", help="output pixel format (default: the input's)")
    p.add_argument("--audio", choices=("copy", "reencode", "drop"), help="audio policy")
    p.add_argument("--realtime", action="store_const", const="realtime", dest="speed",
                   help="measure the first frames, then choose the model, precision and encoder preset that keep "
                        "up with the source here (only those not set by a flag or in --config); = --speed realtime")
    p.add_argument("--speed", choices=("quality", "realtime"),
                   help="quality: the settings as they are (the default); realtime: as --realtime")
    p.add_argument("-y", "--overwrite", action="store_true", default=None, help="replace an existing output")
    p.add_argument("--report", metavar="FILE",
                   help="write a JSON report of the run (fps, stages, latency, what was carried or dropped per stream; "
                        "per file and in total for a batch)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")
    p.add_argument("--resume", action="store_true",
                   help="encode in segments kept beside the output until it is done, and continue an "
                        "interrupted run of the same job from its last finished segment")
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where to work: local (this process, the default) or ray (segments in parallel on a "
                        "Ray cluster; needs pip install 'vsr[ray]'; see docs/CLUSTER.md)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: the cluster's head, host:port or auto (default: start a Ray on "
                        "this machine, listening on loopback only)")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        **model_overrides(args),
        "batch": args.batch,
        "tile": args.tile,
        "encoder.codec": args.codec,
        "encoder.crf": args.crf,
        "encoder.preset": args.preset,
        "encoder.pix_fmt": args.pix_fmt,
        "encoder.audio": args.audio,
        "output.overwrite": args.overwrite,
        "progress": "never" if args.quiet else None,
        "executor.kind": args.executor,
        "executor.address": args.ray_address,
        "speed": args.speed,
    }


class ProgressBar:
    """The progress bar on stderr (tqdm): frames done of the total, fps, ETA; for a cluster job, over all workers."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=p.total or None, unit=" frames", file=sys.stderr, mininterval=0.25,
                             dynamic_ncols=True, leave=False, smoothing=0.1)
        if p.total and self._bar.total != p.total:
            self._bar.total = p.total
        if p.frames > self._bar.n:
            self._bar.update(p.frames - self._bar.n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def summary(report: RunReport) -> str:
    rt = f", {report.realtime_factor:.2f}x real time" if report.realtime_factor else ""
    output = "standard output" if report.output in ("-", "pipe:1") else report.output
    return (f"{report.frames} frames in {report.elapsed_s:.1f} s: {report.fps:.1f} fps end to end{rt}, "
            f"{report.device} ({report.precision}) -> {output}")


def _default_output(src: str | Path, config: PipelineConfig, muxer: str | None, folder: Path | None) -> Path:
    """``output.pattern`` beside ``src`` (or in ``folder``), with the extension of ``-f`` when given."""
    dst = default_output_path(src, config)
    if muxer is not None:
        dst = dst.with_suffix(_FORMAT_SUFFIX.get(muxer, dst.suffix))
    return folder / dst.name if folder is not None else dst


def main(args: argparse.Namespace) -> int:
    config, explicit = load_config_and_keys(args.config, _overrides(args))  # explicit: what speed: realtime keeps
    if args.report and Path(args.report).is_dir():
        raise ConfigError(f"--report {args.report}: is a directory; give a file name")
    muxer = resolve_container_format(args.format, args.output or "")
    if config.executor.kind == "ray":
        from ._cluster import run_cluster

        return run_cluster(args, config, muxer)
    if len(args.inputs) == 1 and not (args.inputs[0] != "-" and Path(args.inputs[0]).is_dir()):
        return _run_one(args, config, explicit, muxer)
    return _run_batch(args, config, explicit, muxer)


def _run_one(args: argparse.Namespace, config: PipelineConfig, explicit: frozenset[str], muxer: str | None) -> int:
    src = args.inputs[0]
    if src != "-":
        VideoReader(src).close()  # input errors first: they are more basic than model errors
    elif args.output is None:
        raise ConfigError("input - (standard input) has no name to derive an output name from: "
                          "give -o FILE, or -o - -f y4m to write to standard output")
    elif sys.stdin.isatty():
        raise ConfigError("input - reads standard input, which is a terminal here: pipe a stream in, "
                          "e.g. ffmpeg -i in.mkv -f yuv4mpegpipe - | vsr run - -o out.mkv")
    if args.output == "-" and sys.stdout.isatty():
        raise ConfigError("-o - writes video to standard output, which is a terminal here: "
                          "pipe it on (| ffmpeg -i - out.mp4) or give -o FILE")
    output = args.output if args.output is not None else _default_output(src, config, muxer, None)
    pipeline, choice = pipeline_for(src, config, explicit)
    if choice is not None and config.progress != "never":
        print(f"vsr: {choice.line()}", file=sys.stderr)
    report = with_choice(_run_file(pipeline, pipeline.config, src, output, args.format, args.resume), choice)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if config.progress != "never":
        print(f"vsr: {summary(report)}", file=sys.stderr)
        _print_hint(report, pipeline.config)
    return 0


def _print_hint(report: RunReport, config: PipelineConfig, where: str = "") -> None:
    hint = slow_stage_hint(report, config)
    if hint:
        print(f"vsr: {where}{hint}", file=sys.stderr)


def _run_file(pipeline: Pipeline, config: PipelineConfig, src: str | Path, dst: str | Path,
              format: str | None, resume: bool = False) -> RunReport:
    bar_on = config.progress == "always" or (config.progress == "auto" and sys.stderr.isatty())
    bar = ProgressBar(bar_on)
    try:
        return pipeline.run(src, dst, progress=bar, format=format, resume=resume)
    finally:
        bar.finish()


@dataclass
class _Item:
    """One file of a batch: where it goes, and how it went."""

    src: Path
    dst: Path | None = None
    report: RunReport | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.report is not None:
            return {"status": "ok", **self.report.to_dict()}
        return {"status": "failed", "input": str(self.src), "output": str(self.dst) if self.dst else None,
                "error": self.error}


def _expand(inputs: list[str], config: PipelineConfig, muxer: str | None) -> tuple[list[_Item], list[_Item]]:
    """Files to process (folders expanded, in name order) and inputs that already failed."""
    items: list[_Item] = []
    failed: list[_Item] = []
    seen: set[Path] = set()
    for name in inputs:
        if name == "-":
            raise ConfigError("standard input (-) cannot be one of several inputs; give it alone")
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
            # Outputs of an earlier run beside their inputs (a_x3.mp4 next to a.mp4) are not inputs.
            outputs = {_default_output(p, config, m, None).name for p in files for m in (None, muxer)}
            skipped = [p for p in files if p.name in outputs]
            if skipped:
                log.info("%s: skipping %d file(s) named like vsr outputs of files beside them (%s)", path,
                         len(skipped), ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else ""))
            files = [p for p in files if p.name not in outputs]
            if not files:
                failed.append(_Item(path, error=f"{path}: is a directory with no video files in it "
                                               f"(looked for {', '.join(sorted(VIDEO_SUFFIXES))})"))
            candidates = files
        else:
            candidates = [path]
        for p in candidates:
            key = p.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                check_input_path(p)
                items.append(_Item(p))
            except MediaError as exc:
                failed.append(_Item(p, error=str(exc)))
    return items, failed


def _run_batch(args: argparse.Namespace, config: PipelineConfig, explicit: frozenset[str],
               muxer: str | None) -> int:
    if args.output == "-":
        raise ConfigError("-o - (standard output) takes one input; with several, -o names a folder")
    folder = Path(args.output) if args.output is not None else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ConfigError(f"-o {folder}: with several inputs or a folder, -o names a folder, and this is a file")
    items, failed = _expand(args.inputs, config, muxer)
    if not items:
        if len(failed) == 1:
            raise MediaError(failed[0].error)
        raise MediaError(f"none of the {len(failed)} inputs can be read: " + "; ".join(f.error or "" for f in failed))
    by_output: dict[Path, _Item] = {}
    for item in items:
        item.dst = _default_output(item.src, config, muxer, folder)
        other = by_output.setdefault(item.dst.resolve(), item)
        if other is not item:
            item.error = f"{item.src}: its output {item.dst} would also be {other.src}'s; rename one of them"
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"-o {folder}: cannot create this folder ({exc.strerror or exc})") from None
    quiet = config.progress == "never"
    t0 = time.perf_counter()
    realtime = config.speed == "realtime"  # then a pipeline per file, chosen on its first frames
    pipeline = None if realtime else Pipeline(config)
    t_loaded = time.perf_counter()
    total = len(items) + len(failed)
    for n, item in enumerate(items, 1):
        where = f"[{n}/{len(items)}]"
        if item.error is None:
            try:
                if realtime:
                    pipeline, choice = pipeline_for(item.src, config, explicit)
                    if choice is not None and not quiet:
                        print(f"vsr: {where} {item.src}: {choice.line()}", file=sys.stderr)
                else:
                    choice = None
                item.report = with_choice(_run_file(pipeline, pipeline.config, item.src, item.dst, args.format,
                                                    args.resume), choice)
            except VsrError as exc:
                item.error = str(exc)
            except Exception as exc:  # a bug, but one file's: the batch goes on
                if getattr(args, "debug", False):
                    traceback.print_exc()
                first = str(exc).splitlines()[0] if str(exc) else ""
                item.error = f"{item.src}: internal error: {type(exc).__name__}: {first}"
        if item.report is not None and not quiet:
            print(f"vsr: {where} {item.src}: {summary(item.report)}", file=sys.stderr)
            assert pipeline is not None
            _print_hint(item.report, pipeline.config, f"{where} {item.src}: ")
        elif item.error is not None:
            print(f"vsr: {where} failed: {item.error}", file=sys.stderr)
    for item in failed:
        print(f"vsr: failed: {item.error}", file=sys.stderr)
    wall = time.perf_counter() - t_loaded
    done = [i for i in items if i.report is not None]
    bad = [i for i in [*items, *failed] if i.report is None]
    frames = sum(i.report.frames for i in done if i.report is not None)
    totals = {"files": total, "succeeded": len(done), "failed": len(bad), "frames": frames,
              "elapsed_s": wall, "fps": frames / wall if wall > 0 else 0.0, "model_load_s": t_loaded - t0}
    if args.report:
        data = {"files": [i.to_dict() for i in [*items, *failed]], "total": totals,
                "failed": [str(i.src) for i in bad]}
        Path(args.report).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if not quiet or bad:
        line = (f"vsr: {len(done)} of {total} file(s) upscaled, {frames} frames in {wall:.1f} s "
                f"({totals['fps']:.1f} fps)")
        if bad:
            line += f"; {len(bad)} failed: " + ", ".join(str(i.src) for i in bad)
        print(line, file=sys.stderr)
    return 1 if bad else 0
