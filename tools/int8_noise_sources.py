#!/usr/bin/env python3
"""Where an int8 file's quality goes: its scheme with one rounding step taken out at a time.

The shipped int8 file of a tanh model, simulated in float (:class:`vsr.quantize.QuantESPCN`, the
engine's scheme), against its fp32 model on Set5, Set14 and four real clips degraded by r, as
``tools/int8_calibration_variants.py`` measures it (same data, same frames). Rows:

* as shipped: every rounding of the scheme;
* without the pre-activation code: the tanh of a coded layer is taken of its exact pre-activation
  instead of the 8-bit code ``round(z / s_z)`` the engine's table reads;
* without the activation code: the tanh's output is passed on unrounded;
* oneDNN's tanh post-op (a candidate scheme, not shipped): the tanh of the exact pre-activation,
  coded per tensor (``round(127 tanh(z))``, what an int8 linear with oneDNN's tanh post-op and one
  output scale writes) instead of per channel. ESPCN's first-layer channels mostly stay in tanh's
  linear part (median largest ``|tanh|`` 0.14-0.20), so one step for all of them is several times
  coarser than each channel's own;
* scheme v2's activation step: the table's output codes at ``tanh(127 s_z) / 127`` (what v2 shipped),
  a little finer than the pre-activation's step ``s_z`` that scheme v3 codes them at, so that a value
  is rounded twice (on a v3 file, calibrated and fine-tuned for v3: the v2 recipe's own figures are in
  ``vsr/quantize.py``);
* without either activation code: what the int8 weights alone cost.

On a scheme v4 file (espcn, the linear bypass) the two codes are those of the residual ``tanh(k s) - k s``:
"without the pre-activation code" takes it of ``z / s`` unrounded, "without the activation code" passes it on
unrounded; the two stand-in rows are v3's and are skipped.

The first line gives how far layer 1's channels reach into tanh (the median largest ``|tanh|``).
The weights stay int8 in every row. What is left in rows 2 and 3 is the other roundings' share, and row 4
is the weights' own.
No weights change and nothing trains, so each row is the same file::

    python tools/int8_noise_sources.py espcn:3
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import vsr.quantize as quantize  # noqa: E402
from int8_calibration_variants import deltas, v2_output_step  # noqa: E402
from vsr.models import create_model  # noqa: E402


def _post_op_tanh(z: torch.Tensor, kind: str, scale: torch.Tensor) -> torch.Tensor:
    """tanh of the exact pre-activation, coded at one step (1/127) for every channel, in the units the next
    layer's folded weights expect (each channel's own step ``t``)."""
    t = quantize.output_step(kind, scale.to(z))[:, None, None]
    a = 127 * torch.tanh(z)
    return quantize._ste(a, torch.round(a).clamp(-127, 127)) / (127 * t)


def _v2_step_tanh(z: torch.Tensor, kind: str, scale: torch.Tensor) -> torch.Tensor:
    """The shipped pre-activation code, its tanh coded at scheme v2's step ``tanh(127 s_z) / 127``, in the units
    the next layer's folded weights expect (``s_z``)."""
    s = scale.to(z)[:, None, None]
    t = v2_output_step(kind, s)
    k = quantize._ste(z / s, torch.round(z / s).clamp(-128, 127))
    a = torch.tanh(k * s) / t
    return quantize._ste(a, torch.round(a).clamp(-127, 127)) * (t / quantize.output_step(kind, s))


# row -> the fake_activation it runs with: the shipped one with these keywords, or a stand-in
ROWS: dict[str, dict[str, bool] | Callable[..., torch.Tensor]] = {
    "as shipped": {},
    "without the pre-activation code": {"code_input": False},
    "without the activation code": {"code_output": False},
    "without either activation code (int8 weights only)": {"code_input": False, "code_output": False},
    "oneDNN's tanh post-op (per-tensor activation code)": _post_op_tanh,
    "scheme v2's activation step": _v2_step_tanh,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="MODEL:SCALE of a shipped tanh model with an int8 file, e.g. espcn:3")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    name, _, scale_text = args.model.partition(":")
    scale = int(scale_text)
    torch.set_num_threads(args.threads)
    int8_file = quantize.shipped_int8(name, scale)
    if int8_file is None:
        raise SystemExit(f"int8_noise_sources: no int8 file ships for {name} x{scale}")
    int8 = quantize.load_int8(int8_file)[0].eval()
    if int8.kind != "tanh":
        raise SystemExit(f"int8_noise_sources: {name} uses {int8.kind}; only tanh layers have a pre-activation code")
    fp32 = create_model(name, scale=scale).eval()
    reach = torch.tanh(127 * int8.scales[0])  # each layer-1 channel's largest |tanh| within its clip
    print(f"{name} x{scale}: layer 1's largest |tanh| per channel: median {reach.median().item():.3f}, "
          f"{(reach < 0.5).float().mean().item() * 100:.0f} % of channels under 0.5", flush=True)
    shipped, shipped_residual = quantize.fake_activation, quantize.fake_residual
    try:
        for label, switches in ROWS.items():
            if callable(switches) and int8.bypass:
                print(f"{name} x{scale} {label}: a stand-in for scheme v3's tanh codes, which v4 does not have",
                      flush=True)
                continue
            # QuantESPCN.forward looks fake_activation and fake_residual up in their module at each call
            quantize.fake_activation = switches if callable(switches) else functools.partial(shipped, **switches)
            if not callable(switches):
                quantize.fake_residual = functools.partial(shipped_residual, **switches)
            with torch.no_grad():
                d = deltas(fp32, int8, scale)
            print(f"{name} x{scale} {label}: " + ", ".join(f"{k} {v:+.3f}" for k, v in d.items()), flush=True)
    finally:
        quantize.fake_activation, quantize.fake_residual = shipped, shipped_residual


if __name__ == "__main__":
    main()
