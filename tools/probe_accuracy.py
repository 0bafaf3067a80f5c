"""How well ``vsr run --realtime``'s probe predicts a run: predicted against measured fps, per setting.

For each setting (model, precision, x264 preset) on the input: the probe's stage speeds on its
first 8 frames (:class:`vsr.realtime.FrameProbe`: infer, and encode after its warm-up), with the
cores each stage kept busy (process CPU time over wall time); two predictions from them: the
probe's own (:func:`vsr.pipeline.bound_fps`, the stages' times added) and one that adds their CPU
time instead (``min(stage fps, cores / sum(busy cores / fps))``); then the real ``vsr run`` of
the whole input with that setting. ``--cold``: also time the process's first encodes, before any
warm-up (what the probe measured before it warmed the encoder up)::

    python tools/probe_accuracy.py samples/stream-of-water.mp4 /tmp/bottle_300.mp4
    python tools/probe_accuracy.py samples/stream-of-water.mp4 --cold
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import tempfile
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vsr.config import load_config  # noqa: E402
from vsr.pipeline import bound_fps, measure_encode, measure_infer  # noqa: E402
from vsr.realtime import FrameProbe  # noqa: E402

SETTINGS = (("espcn", "bf16", "medium"), ("espcn", "int8", "ultrafast"), ("espcn-fast", "bf16", "ultrafast"),
            ("espcn-fast", "int8", "ultrafast"), ("espcn-fast", "int8", "veryfast"))


def _busy(f: Callable[[], float]) -> tuple[float, float]:
    """(result, cores kept busy) of ``f()``."""
    c0, t0 = time.process_time(), time.perf_counter()
    r = f()
    return r, (time.process_time() - c0) / (time.perf_counter() - t0)


def cold_encodes(src: str, rounds: int = 4) -> list[float]:
    """ultrafast encode fps of the probe's frames, the process's first encodes first, no warm-up."""
    config = load_config(None)
    with FrameProbe(src, config) as probe:
        probe.infer_fps("espcn-fast", "int8")
        pipe = probe.pipeline("espcn-fast", "int8")
        enc = dataclasses.replace(config.encoder, preset="ultrafast", audio="drop", subtitles="drop")
        return [measure_encode(pipe, probe.reader, Path(probe._tmp.name) / f"cold{i}.mkv", probe.frames,
                               probe._lumas, enc) for i in range(rounds)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+")
    p.add_argument("--cold", action="store_true", help="only the cold-encode measurement")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    for src in args.inputs:
        if args.cold:
            print(src, "ultrafast encode fps, first encodes of the process:",
                  " ".join(f"{v:.1f}" for v in cold_encodes(src)))
            continue
        config = load_config(None)
        with FrameProbe(src, config) as probe:
            rows = []
            for model, precision, preset in SETTINGS:
                probe.infer_fps(model, precision)  # loads the model and warms the stage up
                pipe = probe.pipeline(model, precision)
                infer, infer_cores = _busy(lambda: measure_infer(pipe, probe.frames)[0])
                encode = probe.encode_fps(preset)  # the probe's own figure, after its warm-up
                enc = dataclasses.replace(config.encoder, preset=preset, audio="drop", subtitles="drop")
                _, encode_cores = _busy(lambda: measure_encode(pipe, probe.reader, Path(probe._tmp.name) / "c.mkv",
                                                               probe.frames, probe._lumas, enc))
                added = bound_fps(probe.decode_fps, infer, encode, cuda=False)
                cpu = min(infer, encode, cores / (infer_cores / infer + encode_cores / encode))
                rows.append((model, precision, preset, infer, infer_cores, encode, encode_cores, added, cpu))
        for model, precision, preset, infer, ic, encode, ec, added, cpu in rows:
            run = subprocess.run([sys.executable, "-m", "vsr", "run", src, "--model", model, "--precision", precision,
                                  "--preset", preset, "-o", str(Path(tempfile.gettempdir()) / "probe_accuracy.mp4"),
                                  "-y"], capture_output=True, text=True, cwd=REPO)
            actual = float(re.search(r"([\d.]+) fps end to end", run.stderr).group(1))
            print(f"{Path(src).name} {model} {precision} {preset}: infer {infer:.1f} ({ic:.2f} cores), encode "
                  f"{encode:.1f} ({ec:.2f} cores); predicted {added:.1f} (times added), {cpu:.1f} (CPU time added); "
                  f"run {actual:.1f} fps = {actual / added:.2f}x / {actual / cpu:.2f}x the predictions", flush=True)


if __name__ == "__main__":
    main()
