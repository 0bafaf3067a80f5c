"""``vsr run --executor ray``: the same inputs, outputs and messages as a local run, the work done by
:func:`vsr.cluster.run`. One input or many, a failing file is listed and the others go on
(exit 1 at the end, as batches do); ``--report`` adds the per-node figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import PipelineConfig
from ..errors import ConfigError, MediaError
from .run import ProgressBar, _default_output, _expand, summary


def _is_url(name: str) -> bool:
    return "://" in name and not name.startswith("file://")


def _url_output(src: str, config: PipelineConfig, folder: str | None) -> str:
    """The default output of a URL input: ``output.pattern`` beside it, or in the ``-o`` folder."""
    head, _, name = src.rstrip("/").rpartition("/")
    out = _default_output(Path(name), config, None, None).name
    return f"{(folder or head).rstrip('/')}/{out}"


def _pairs(args: argparse.Namespace, config: PipelineConfig, muxer: str | None) -> tuple[list, list]:
    """(input, output) pairs to run, and inputs that failed already (one-line errors)."""
    if "-" in args.inputs or args.output == "-":
        raise ConfigError("--executor ray reads and writes files (every node must see them): standard input "
                          "and output need --executor local")
    urls = [i for i in args.inputs if _is_url(i)]
    local = [i for i in args.inputs if not _is_url(i)]
    single = len(args.inputs) == 1 and not (local and Path(local[0]).is_dir())
    if single:
        src = args.inputs[0]
        if args.output is not None:
            return [(src, args.output)], []
        return [(src, _url_output(src, config, None) if urls else str(_default_output(src, config, muxer, None)))], []
    out = args.output
    if out is not None and not _is_url(out):
        if Path(out).exists() and not Path(out).is_dir():
            raise ConfigError(f"-o {out}: with several inputs or a folder, -o names a folder, and this is a file")
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"-o {out}: cannot create this folder ({exc.strerror or exc})") from None
    pairs = []
    failed = []
    if local:
        items, bad = _expand(local, config, muxer)
        folder = Path(out) if out is not None and not _is_url(out) else None
        for item in items:
            if out is not None and _is_url(out):
                pairs.append((str(item.src), _url_output(item.src.name, config, out)))
            else:
                pairs.append((str(item.src), str(_default_output(item.src, config, muxer, folder))))
        failed = [i.error for i in bad]
    for src in urls:
        pairs.append((src, _url_output(src, config, out)))
    seen: dict[str, str] = {}
    for src, dst in pairs:
        if seen.setdefault(dst, src) != src:
            raise ConfigError(f"{src}: its output {dst} would also be {seen[dst]}'s; rename one of them")
    if not pairs:
        raise MediaError(failed[0] if len(failed) == 1 else
                         f"none of the {len(failed)} inputs can be read: " + "; ".join(failed))
    return pairs, failed


def run_cluster(args: argparse.Namespace, config: PipelineConfig, muxer: str | None) -> int:
    from .. import cluster

    pairs, failed = _pairs(args, config, muxer)
    quiet = config.progress == "never"
    bar = ProgressBar(config.progress == "always" or (config.progress == "auto" and sys.stderr.isatty()))
    try:
        result = cluster.run(pairs, config, resume=args.resume, format=args.format, progress=bar)
    finally:
        bar.finish()
    many = len(pairs) + len(failed) > 1
    for n, f in enumerate(result.files, 1):
        where = f"[{n}/{len(result.files)}] {f.input}: " if many else ""
        if f.report is not None and not quiet:
            print(f"vsr: {where}{summary(f.report)}", file=sys.stderr)
        elif f.report is None:
            print(f"vsr: {'[%d/%d] ' % (n, len(result.files)) if many else ''}failed: {f.error}", file=sys.stderr)
    for error in failed:
        print(f"vsr: failed: {error}", file=sys.stderr)
    done = [f for f in result.files if f.report is not None]
    bad = len(result.files) - len(done) + len(failed)
    frames = sum(f.report.frames for f in done if f.report is not None)
    wall = result.elapsed_s
    totals = {"files": len(result.files) + len(failed), "succeeded": len(done), "failed": bad, "frames": frames,
              "elapsed_s": wall, "fps": frames / wall if wall > 0 else 0.0, "workers": result.workers}
    if args.report:
        data = {"executor": "ray", "files": [f.to_dict() for f in result.files]
                + [{"status": "failed", "error": e} for e in failed],
                "nodes": result.nodes, "total": totals,
                "failed": [f.input for f in result.files if f.report is None]}
        Path(args.report).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if many and (not quiet or bad):
        line = (f"vsr: {len(done)} of {totals['files']} file(s) upscaled on {len(result.nodes)} node(s), "
                f"{frames} frames in {wall:.1f} s ({totals['fps']:.1f} fps)")
        if bad:
            line += f"; {bad} failed"
        print(line, file=sys.stderr)
    return 1 if bad else 0
