#!/usr/bin/env python3
"""Where an int8 file's quality goes: its scheme with one rounding step taken out at a time.

The shipped int8 file of a tanh model, simulated in float (:class:`vsr.quantize.QuantESPCN`, the
engine's scheme), against its fp32 model on Set5, Set14 and four real clips degraded by r, as
``tools/int8_calibration_variants.py`` measures it (same data, same frames). Rows:

* as shipped: every rounding of the scheme;
* without the pre-activation code: the tanh of a coded layer is taken of its exact pre-activation
  instead of the 8-bit code ``round(z / s_z)`` the engine's table reads;
* without the activation code: the tanh's output is passed on unrounded.

The weights stay int8 in every row. What is left in the last two rows is the other roundings' share.
No weights change and nothing trains, so each row is the same file::

    python tools/int8_noise_sources.py espcn:3
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import vsr.quantize as quantize  # noqa: E402
from int8_calibration_variants import deltas  # noqa: E402
from vsr.models import create_model  # noqa: E402

# row -> the keywords of vsr.quantize.fake_activation it runs with
ROWS: dict[str, dict[str, bool]] = {
    "as shipped": {},
    "without the pre-activation code": {"code_input": False},
    "without the activation code": {"code_output": False},
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
    shipped = quantize.fake_activation
    try:
        for label, switches in ROWS.items():
            # QuantESPCN.forward looks fake_activation up in its module at each call
            quantize.fake_activation = functools.partial(shipped, **switches)
            with torch.no_grad():
                d = deltas(fp32, int8, scale)
            print(f"{name} x{scale} {label}: " + ", ".join(f"{k} {v:+.3f}" for k, v in d.items()), flush=True)
    finally:
        quantize.fake_activation = shipped


if __name__ == "__main__":
    main()
