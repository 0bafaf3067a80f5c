#!/usr/bin/env python3
"""Copy a training run's weights into the package, with the provenance of any weights it started from.

    python tools/ship_weights.py runs/espcn_x3/espcn_x3.safetensors

writes ``vsr/models/weights/espcn_x3.safetensors``: the same tensors and metadata, plus ``init_metadata``
(the metadata of the ``--init`` file the run started from, found next to the run or given with
``--init-file``), so that a shipped file tells every stage of its training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vsr.models import ESPCN, ESPCNConfig, load_weights, read_weights, save_weights  # noqa: E402

WEIGHTS_DIR = REPO / "vsr" / "models" / "weights"


def ship(run_weights: Path, init_file: Path | None = None, note: str | None = None) -> Path:
    _, meta = read_weights(run_weights)
    training = meta.get("training", {})
    model = load_weights(ESPCN(ESPCNConfig.from_dict(meta["config"])), run_weights)
    extra = {k: v for k, v in meta.items() if k != "config"}
    if init_file is not None:
        _, init_meta = read_weights(init_file)
        extra["init_metadata"] = {k: v for k, v in init_meta.items() if k != "config"}
    if note:
        extra["note"] = note
    out = WEIGHTS_DIR / f"{training['model']}_x{meta['config']['scale']}.safetensors"
    save_weights(model, out, **extra)
    if out.stat().st_size >= 1_000_000:
        raise SystemExit(f"{out} is {out.stat().st_size} bytes; shipped weights must stay under 1 MB")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="the .safetensors a training run wrote")
    parser.add_argument("--init-file", type=Path, help="the weights file the run was initialised from")
    parser.add_argument("--note", help="free text stored as metadata 'note'")
    args = parser.parse_args(argv)
    print(ship(args.weights, args.init_file, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
