"""int8 against fp32 for shipped int8 files: Set5, Set14 (published protocol, ``vsr eval``) and a real clip.

The clip (mdn_flower, not calibrated on) is degraded by r in its own Y and chroma planes, upscaled
by ``vsr run`` at each precision, and the output's Y plane compared with the original's, as
tests/test_pipeline.py does (``tools/engine_checks.degraded_clip`` / ``upscaled_psnr``). ``--stamp`` records the deltas in
each file's metadata (``quality``) and ``auto``: whether all three are within ``--bound`` dB, which
is what lets ``precision: auto`` pick the file::

    python tools/int8_quality.py espcn:3 espcn-fast:3 --stamp

``--simulate``: measure the scheme simulated in float (:class:`vsr.quantize.QuantESPCN`, what QAT
trains) in place of oneDNN's int8 kernels, on any CPU, including those without VNNI/AMX-INT8 where
vsr refuses ``--precision int8``. There oneDNN's int8 kernels are not exact (on an AVX2-only AMD
EPYC, Zen 3, espcn x4 came out 4 levels off its scheme: ``tools/engine_checks.py int8-exact``), which
is one reason vsr refuses them; on a
CPU with the instructions the engine equals the simulation but for rare one-level roundings
(tests/test_int8.py). The stamp says which of the two measured it, and on what machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vsr.bench import cpu_label, machine_info  # noqa: E402
from vsr.cli import main as vsr_main  # noqa: E402
from vsr.quantize import shipped_int8  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _eval(dataset: str, model: str, scale: int, *extra: str) -> float:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        vsr_main(["eval", "--dataset", str(DATA / "benchmark" / dataset), "--scale", str(scale),
                  "--model", model, "--json", *extra])
    return json.loads(buf.getvalue())["psnr"]


def measure(model: str, scale: int) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location("engine_checks", REPO / "tools" / "engine_checks.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    row: dict[str, float] = {}
    for ds in ("Set5", "Set14"):
        fp32, int8 = _eval(ds, model, scale), _eval(ds, model, scale, "--precision", "int8")
        row.update({f"{ds}_fp32": round(fp32, 4), f"{ds}_int8": round(int8, 4), f"{ds}_delta": round(int8 - fp32, 4)})
    tmp = Path(tempfile.mkdtemp())
    originals, _ = checks.degraded_clip(DATA / "videos" / "mdn_flower.mp4", tmp / "small.mkv", scale, frames=6)
    for p in ("fp32", "int8"):
        row[f"clip_{p}"] = round(checks.upscaled_psnr(tmp / "small.mkv", tmp / f"{p}.mkv", originals, {
            "model.name": model, "model.scale": scale, "device": "cpu", "precision": p}), 4)
    row["clip_delta"] = round(row["clip_int8"] - row["clip_fp32"], 4)
    return row


def simulate_int8() -> None:
    """Run the int8 scheme simulated in float wherever vsr would run the int8 engine, on any CPU."""
    from vsr.engine import _devices
    from vsr.engine._int8 import Int8CpuNet

    Int8CpuNet.__call__ = Int8CpuNet.simulated
    flags = _devices.cpu_flags() | {"avx512_vnni"}
    _devices.cpu_flags = lambda: flags  # what use_int8 reads


def stamp(path: Path, quality: dict[str, float], bound: float, *, engine: str) -> bool:
    """Rewrite ``path`` with ``quality`` and ``auto`` in its metadata (tensors and the rest unchanged)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    ok = all(quality[f"{k}_delta"] >= -bound for k in ("Set5", "Set14", "clip"))
    machine = machine_info()
    meta.update(quality=json.dumps({**quality, "bound_db": bound, "clip": "mdn_flower.mp4, 6 frames, degraded and compared in the Y plane",
                                    "engine": engine,
                                    "machine": f"{cpu_label(machine)} ({', '.join(machine['cpu_flags'])})"}),
                auto=json.dumps(ok))
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL:SCALE")
    p.add_argument("--stamp", action="store_true")
    p.add_argument("--bound", type=float, default=0.05)
    p.add_argument("--simulate", action="store_true",
                   help="measure the scheme simulated in float instead of oneDNN's int8 kernels (any CPU)")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.simulate:
        simulate_int8()
    engine = "the scheme simulated in float" if args.simulate else "oneDNN int8"
    for spec in args.models:
        model, scale = spec.split(":")
        row = measure(model, int(scale))
        line = f"{model} x{scale} {json.dumps(row)}"
        if args.stamp:
            line += f" auto={stamp(shipped_int8(model, int(scale)), row, args.bound, engine=engine)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
