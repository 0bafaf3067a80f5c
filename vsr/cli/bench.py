"""``vsr bench``: stage, pipeline and peer speeds per case; a table, and JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..bench import DEFAULT_CASES, BenchCase, BenchOptions, format_table, run_bench
from ..config import PipelineConfig
from ..errors import ConfigError
from ..media import check_input_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="FILE", help="benchmark on the first --frames frames of this video")
    src.add_argument("--size", metavar="WxH", help="benchmark on a synthetic clip of this LR size (e.g. 640x360)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4),
                   help="upscaling factor (default 3 with --input/--size; without them, only the default cases of it)")
    p.add_argument("--model", default="espcn", metavar="NAME", help="registered model (default: espcn)")
    p.add_argument("--weights", metavar="FILE",
                   help="weights file, or 'random' (default: the shipped weights, random when none ship)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16", "int8"), help="inference precision")
    p.add_argument("--frames", type=int, default=48, metavar="N", help="frames per case (default: 48)")
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="rounds per case; medians are reported (default: 3)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="frames per inference call (default: 1)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="torch CPU threads (default: the pipeline's)")
    p.add_argument("--codec", default="libx264", metavar="NAME", help="video encoder (default: libx264)")
    p.add_argument("--preset", default="ultrafast", metavar="NAME",
                   help="encoder preset (default: ultrafast, a real-time setting; vsr run defaults to medium)")
    p.add_argument("--run-preset", default=PipelineConfig().encoder.preset, metavar="NAME",
                   help="also time the encode stage and pipeline with this preset: vsr run's default "
                        f"({PipelineConfig().encoder.preset}) unless given; 'none': do not")
    p.add_argument("--crf", type=int, default=18, metavar="N", help="encoder quality (default: 18)")
    p.add_argument("--engine", choices=("fused", "module"), default="fused",
                   help="CPU engine: fused oneDNN path (default) or the plain PyTorch module, for comparison")
    p.add_argument("--realtime", action="store_true",
                   help="benchmark what vsr run --realtime chooses on each case's clip (model, precision, preset), "
                        "starting from --model and vsr run's preset")
    p.add_argument("--no-peers", action="store_true", help="skip the OpenCV dnn_superres and bicubic peers")
    p.add_argument("--json", metavar="FILE", help="write the full results as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ConfigError(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 640x360")
    return int(m.group(1)), int(m.group(2))


def cases_from_args(args: argparse.Namespace) -> tuple[BenchCase, ...]:
    if args.input:
        check_input_path(args.input)
        return (BenchCase(input=args.input, scale=args.scale or 3),)
    if args.size:
        w, h = _size(args.size)
        return (BenchCase(width=w, height=h, scale=args.scale or 3),)
    return tuple(c for c in DEFAULT_CASES if args.scale in (None, c.scale))


def main(args: argparse.Namespace) -> int:
    if args.json and Path(args.json).is_dir():
        raise ConfigError(f"--json {args.json}: is a directory; give a file name")
    options = BenchOptions(
        cases=cases_from_args(args), model=args.model, weights=args.weights, device=args.device,
        precision=args.precision, frames=args.frames, repeats=args.repeats, batch=args.batch,
        threads=args.threads, codec=args.codec, preset=args.preset, crf=args.crf,
        run_preset=None if str(args.run_preset).lower() == "none" else args.run_preset,
        fused=args.engine == "fused", peers=not args.no_peers, realtime=args.realtime,
    )

    def say(line: str) -> None:
        if not args.quiet:
            print(f"vsr bench: {line}", file=sys.stderr, flush=True)

    result = run_bench(options, say)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0
