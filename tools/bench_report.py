#!/usr/bin/env python3
"""Markdown tables for docs/PERFORMANCE.md from `vsr bench --json` files (and tools/bench_backends.py JSON).

    python tools/bench_report.py docs/bench/espcn.json docs/bench/espcn-fast.json
    python tools/bench_report.py --backends docs/bench/backends.json
    python tools/bench_report.py --runs docs/bench/2026-12-02/run_*.json      # `vsr run --report` files

Every figure in the tables is read from the JSON files; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsr.bench import cpu_label  # noqa: E402


def _f(v: Any, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def _label(r: dict[str, Any], c: dict[str, Any]) -> str:
    """The row's model, precision and engine, and the oneDNN ISA cap when the run had one (no AMX)."""
    cap = r["machine"].get("onednn_max_cpu_isa")
    return f"{c['model']} ({c['precision']}, {c['engine']}{', no AMX: ' + cap if cap else ''})"


def stage_table(results: list[dict[str, Any]]) -> str:
    head = ("model", "case", "out", "decode", "infer", "encode", "sequential", "pipeline", "bound", "efficiency",
            "pipeline / sequential")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for c in r["cases"]:
            lines.append("| " + " | ".join((
                _label(r, c), c["case"], "x".join(map(str, c["output_size"])),
                _f(c["decode_fps"]), _f(c["infer_fps"]), _f(c["encode_fps"]), _f(c["sequential_fps"]),
                f"**{_f(c['pipeline_fps'])}**", _f(c["bound_fps"]), _f(c["efficiency"], ".2f"),
                _f(c["pipeline_vs_sequential"], ".2f"),
            )) + " |")
    return "\n".join(lines)


def run_table(results: list[dict[str, Any]]) -> str:
    """The bench's real-time encoder setting beside the one `vsr run` uses by default, same rounds."""
    head = ("model", "case", "out", "encoder preset", "encode", "pipeline", "efficiency", "x real time (the clip's fps)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for c in r["cases"]:
            chosen = c.get("realtime")
            preset = c.get("encoder_preset", r["options"]["preset"])
            rows = [(f"{preset} (`--realtime`'s choice)" if chosen else preset, c["encode_fps"], c["pipeline_fps"], c["efficiency"],
                     c.get("realtime_factor"))]
            rd = c.get("run_default")
            if rd:
                rows.append((f"{rd['preset']} (`vsr run`'s default)", rd["encode_fps"], rd["pipeline_fps"],
                             rd["efficiency"], rd["realtime_factor"]))
            for preset, enc, pipe, eff, factor in rows:
                lines.append("| " + " | ".join((
                    _label(r, c), c["case"], "x".join(map(str, c["output_size"])),
                    str(preset), _f(enc), f"**{_f(pipe)}**", _f(eff, ".2f"), _f(factor, ".2f") + ("x" if factor else ""),
                )) + " |")
    return "\n".join(lines)


def compute_table(results: list[dict[str, Any]]) -> str:
    head = ("model", "case", "GFLOP / frame", "infer GFLOP/s", "matmul GFLOP/s", "infer / matmul", "OpenCV ESPCN fps",
            "infer / OpenCV", "bicubic fps", "PSNR vs fp32 (frame)", "max diff")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for c in r["cases"]:
            acc = c["accuracy"]
            lines.append("| " + " | ".join((
                _label(r, c), c["case"], _f(c["gflop_per_frame"], ".2f"),
                _f(c["infer_gflops"], ".0f"), _f(c["matmul_gflops"], ".0f"), _f(c["infer_vs_matmul"], ".2f"),
                _f(c["opencv_fps"]), _f(c["infer_vs_opencv"], ".1f") + ("x" if c["infer_vs_opencv"] else ""),
                _f(c["bicubic_fps"]),
                "identical" if acc["max_abs_diff"] == 0 else f"{acc['psnr_vs_fp32_db']:.1f} dB",
                str(acc["max_abs_diff"]),
            )) + " |")
    return "\n".join(lines)


def conditions(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        m, o = r["machine"], r["options"]
        lines.append(
            f"- `{r['cases'][0]['model']}` run: {r['started_utc']}, {r['seconds']:.0f} s; {cpu_label(m)}, "
            f"{m['usable_cores']} cores ({', '.join(m['cpu_flags'])}); torch {m['torch']}, PyAV {m['pyav']}, "
            f"OpenCV {m['opencv']}; "
            + (f"**oneDNN capped to {m['onednn_max_cpu_isa']}** (no AMX); " if m.get("onednn_max_cpu_isa") else "")
            + f"GPU: {m['gpu'] or 'none'}; {o['frames']} frames x {o['repeats']} rounds, "
            f"medians; encoder {o['codec']} preset {o['preset']} crf {o['crf']}"
            + (f" (and {o['run_preset']}, `vsr run`'s default)" if o.get("run_preset") else "") + "; load average "
            f"{r['load_average_1m']['start']:.2f} at start, {r['load_average_1m']['end']:.2f} at end"
        )
    return "\n".join(lines)


def backends_table(report: dict[str, Any]) -> str:
    threads = report["threads"]
    head = ("model", "backend", "1 thread", f"{threads} threads", f"{threads} workers x 1 thread", "PSNR vs fp32 module")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, data in report["models"].items():
        for row in data["backends"]:
            acc = row["psnr_vs_fp32_module"]
            lines.append("| " + " | ".join((
                name, row["backend"], _f(row.get("fps_1_threads")), _f(row.get(f"fps_{threads}_threads")),
                _f(row.get(f"fps_{threads}_workers")), "identical" if acc is None else f"{acc:.1f} dB",
            )) + " |")
    lines.append("")
    for name, data in report["models"].items():
        for label, ops in data["profile"].items():
            cells = ", ".join(f"`{o['op']}` {o['share']:.0%} ({o['ms_per_frame']:.1f} ms)" for o in ops[:5])
            lines.append(f"- {name}, {label} (1 thread, per frame): {cells}")
    lines.append(f"\n(load average {report['load_average_1m']:.2f} at start, {report['load_average_1m_end']:.2f} at end)")
    return "\n".join(lines)


def runs_table(reports: list[tuple[Path, dict[str, Any]]]) -> str:
    """`vsr run --report` files: what ran, how fast against the source, and each stage's busy fraction."""
    from vsr.config import PipelineConfig

    head = ("report", "input", "settings", "frames", "fps", "x real time", "busy: decode / infer / encode",
            "--realtime probe")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path, r in reports:
        rt = r.get("realtime")
        if rt:
            settings = f"`--realtime` chose {rt['model']} {rt['precision']} {rt['preset']}"
            probe = (f"{rt['probe_frames']} frames, {rt['probe_s']:.1f} s; predicted {rt['predicted_fps']:.1f} fps"
                     + ("" if rt["keeps_up"] else " (nothing kept up: the fastest)"))
        else:
            default = PipelineConfig().encoder.preset
            preset = (r.get("encoder") or {}).get("preset", default)  # reports before session 8 name none
            what = "default" if preset == default else "given"
            settings = f"{what}: {r['model']} {r['precision']} {preset}"
            probe = "–"
        busy = " / ".join(f"{r['stages'][k]['busy_fraction']:.2f}" for k in ("decode", "infer", "encode"))
        lines.append("| " + " | ".join((
            f"`{path.name}`", f"{Path(r['input']).name} {r['input_size'][0]}x{r['input_size'][1]} x{r['scale']}",
            settings, str(r["frames"]), _f(r["fps"]), f"**{_f(r['realtime_factor'], '.2f')}x**", busy, probe,
        )) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", nargs="*", type=Path)
    ap.add_argument("--backends", type=Path)
    ap.add_argument("--runs", nargs="+", type=Path, default=[], help="`vsr run --report` JSON files")
    args = ap.parse_args()
    results = [json.loads(p.read_text()) for p in args.bench]
    if results:
        print(stage_table(results), "", run_table(results), "", compute_table(results), "", conditions(results), "",
              sep="\n")
    if args.runs:
        print(runs_table([(p, json.loads(p.read_text())) for p in args.runs]), "", sep="\n")
    if args.backends:
        print(backends_table(json.loads(args.backends.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
