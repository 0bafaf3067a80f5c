"""The options that choose the model and where it runs, shared by ``vsr run`` and ``vsr live``.

Both read the configuration (``--config`` or the built-in defaults, as ``pipeline.yaml``);
every option here defaults to None, so only what the user sets overrides it.
"""

from __future__ import annotations

import argparse

from ..models import list_models


def add_model_arguments(p: argparse.ArgumentParser, *, config_help: str) -> None:
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor")
    p.add_argument("--model", metavar="NAME", help=f"registered model ({', '.join(list_models())})")
    p.add_argument("--weights", metavar="FILE", help="weights file instead of the shipped ones")
    p.add_argument("--device", metavar="DEV", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                   help="inference precision (int8: CPUs with VNNI/AMX, models whose int8 file ships)")


def model_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The configuration keys the options of :func:`add_model_arguments` override (None: not set)."""
    return {
        "model.scale": args.scale,
        "model.name": args.model,
        "model.weights": args.weights,
        "device": args.device,
        "precision": args.precision,
    }
