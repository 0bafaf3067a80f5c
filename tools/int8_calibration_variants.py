"""int8 calibration and QAT variants for one model: is the calibration what limits int8 quality?

Each variant re-runs the shipped QAT recipe (``vsr train --qat`` defaults: T91 + BSD200, 1000 steps,
lr 1e-5, calibration on stream-of-water and bottle-detection) from the shipped fp32 weights with one
thing changed, then compares the int8 scheme (``QuantESPCN``, the engine's scheme simulated in float)
with fp32: Set5 and Set14 under the published protocol, and four real clips degraded by r (four
frames each, the model applied to the LR Y plane). Variants are JSON objects:

* ``images_per_folder`` / ``frames_per_video``: what :func:`vsr.qat.calibration_planes` reads;
* ``samples`` / ``seed``: the draw :func:`vsr.quantize.calibrate` chooses each scale from;
* ``lsq``: learn the activation scales during QAT (as log-parameters beside the weights);
* ``steps`` / ``lr``: the QAT schedule;
* ``extra_data``: more ``--data`` specs (``DIR[:DOWNSCALE[:WEIGHT]]``) for QAT, beside T91 and BSD200;
* ``bypass``: false for scheme v3 (tanh codes between layers 1 and 2) instead of v4's linear bypass (shipped;
  :mod:`vsr.quantize`), in calibration, QAT and measurement alike: the paired comparison behind v4
  (docs/PERFORMANCE.md, session 11);
* ``residual_floor``: scheme v4's :data:`vsr.quantize.RESIDUAL_STEP_FLOOR` (shipped: 1/32; 0: none);
* ``scheme_v2_step``: scheme v3 with tanh activations coded at scheme v2's step ``tanh(127 s_z) / 127`` instead
  of the pre-activation's own step ``s_z``: the paired comparison behind v3 (docs/PERFORMANCE.md, session 9).

    python tools/int8_calibration_variants.py espcn-fast:4 '{}' '{"seed": 1}' '{"samples": 262144}' '{"lsq": true}'

``'{}'`` is the shipped recipe itself: on the shipped file it reproduces the stamped Set5 and Set14 deltas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import engine_checks as ec  # noqa: E402
from vsr.evaluate import evaluate  # noqa: E402
from vsr.models import ESPCN, create_model, shipped_weights  # noqa: E402
from vsr.qat import QAT_DEFAULTS, calibration_planes  # noqa: E402
import vsr.quantize as quantize  # noqa: E402
from vsr.quantize import QuantESPCN, calibrate  # noqa: E402
from vsr.training import TrainConfig, train  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
CALIBRATION_VIDEOS = ("mdn_stream-of-water.mp4", "intel_bottle-detection.mp4")


class _LearnedScales(QuantESPCN):
    """The scheme with its activation scales as trainable log-parameters (positive by construction)."""

    def learn_scales(self) -> None:
        self.log_scales = torch.nn.ParameterList([torch.nn.Parameter(s.clone().log()) for s in self._fixed])

    @property
    def scales(self) -> list[torch.Tensor]:
        if "log_scales" in self._modules:
            return [p.exp() for p in self.log_scales]
        return self._fixed

    @scales.setter
    def scales(self, value: list[torch.Tensor]) -> None:
        self._fixed = value


def quantized(name: str, scale: int, variant: dict[str, Any], out: Path,
              weights: str | None = None) -> tuple[ESPCN, QuantESPCN]:
    """(fp32, int8 scheme after the variant's calibration and QAT); ``weights``: the fp32 file (default: shipped)."""
    weights = weights or str(shipped_weights(name, scale))
    fp32 = create_model(name, scale=scale, weights=weights).eval()
    data = tuple(str(SHARED / "train" / f) for f in ("T91", "BSD200")) + tuple(variant.get("extra_data", ()))
    planes = calibration_planes(list(data), scale, [str(SHARED / "videos" / v) for v in CALIBRATION_VIDEOS],
                                images_per_folder=variant.get("images_per_folder", 12),
                                frames_per_video=variant.get("frames_per_video", 4))
    bypass = False if variant.get("scheme_v2_step") else variant.get("bypass")
    scales = calibrate(fp32, planes, samples=variant.get("samples", 1 << 15), seed=variant.get("seed", 0),
                       bypass=bypass)
    module = _LearnedScales.from_model(fp32, scales, bypass=bypass)
    if variant.get("lsq"):
        module.learn_scales()
    schedule = {**QAT_DEFAULTS, **{k: variant[k] for k in ("steps", "lr") if k in variant}}
    train(TrainConfig(model=name, scale=scale, data=data, init=weights, **schedule), out,
          module=module, val=None, log_every=10**9, checkpoint_every=10**9)
    learned = [s.detach().clone() for s in module.scales]
    if "log_scales" in module._modules:
        del module.log_scales
    return fp32, QuantESPCN.from_model(module, learned, bypass=bypass).eval()


def deltas(fp32: ESPCN, int8: QuantESPCN, scale: int) -> dict[str, float]:
    """int8 minus fp32, dB: Set5, Set14 and each real clip."""
    out = {ds: evaluate(int8, SHARED / "benchmark" / ds, scale).psnr - evaluate(fp32, SHARED / "benchmark" / ds,
                                                                              scale).psnr for ds in ("Set5", "Set14")}
    for clip in ec.REAL_CLIPS:
        tmp = Path(tempfile.mkdtemp())
        originals, _ = ec.degraded_clip(SHARED / "videos" / clip, tmp / "small.mkv", scale, frames=4)
        lows = ec._y_planes(tmp / "small.mkv")

        def psnr(model: ESPCN) -> float:
            with torch.no_grad():
                return statistics.mean(
                    ec._psnr((model(torch.from_numpy(lo / 255.0).float()[None, None]).clamp(0, 1) * 255).round()[0, 0]
                             .numpy(), o) for lo, o in zip(lows, originals))
        out[clip.split(".")[0]] = psnr(int8) - psnr(fp32)
    return out


def v2_output_step(kind: str, scale: torch.Tensor) -> torch.Tensor:
    """Scheme v2's :func:`vsr.quantize.output_step`: a tanh code's step ``tanh(127 s_z) / 127`` (v3: ``s_z``)."""
    return torch.tanh(127 * scale) / 127 if kind == "tanh" else scale


@contextlib.contextmanager
def _residual_floor(floor: float | None) -> Iterator[None]:
    """Scheme v4's residual step floor in :mod:`vsr.quantize` while the block runs (read there at each use)."""
    shipped = quantize.RESIDUAL_STEP_FLOOR
    if floor is not None:
        quantize.RESIDUAL_STEP_FLOOR = floor
    try:
        yield
    finally:
        quantize.RESIDUAL_STEP_FLOOR = shipped


@contextlib.contextmanager
def _v2_step(on: bool) -> Iterator[None]:
    """Scheme v2's tanh activation step in :mod:`vsr.quantize` while the block runs (every user looks it up there)."""
    shipped = quantize.output_step
    if on:
        quantize.output_step = v2_output_step
    try:
        yield
    finally:
        quantize.output_step = shipped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL:SCALE")
    p.add_argument("variants", nargs="+", metavar="JSON")
    p.add_argument("--weights", metavar="FILE", help="fp32 weights to start from (default: the shipped file)")
    args = p.parse_args()
    torch.set_num_threads(1)
    name, scale = args.model.split(":")
    for text in args.variants:
        variant = json.loads(text)
        with _v2_step(variant.get("scheme_v2_step", False)), _residual_floor(variant.get("residual_floor")):
            fp32, int8 = quantized(name, int(scale), variant, Path(tempfile.mkdtemp(prefix="int8-variant-")),
                                    args.weights)
            row = deltas(fp32, int8, int(scale))
        print(text, " ".join(f"{k} {v:+.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
