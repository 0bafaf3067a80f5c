"""``vsr export``: write a model for other runtimes (ONNX: FFmpeg's dnn_processing, OpenCV dnn, ONNX Runtime;
mpv: a GLSL user shader for mpv and libplacebo)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_mpv, export_onnx, onnx_max_difference, shader_cost


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("onnx", "mpv"), default="onnx",
                   help="onnx (the network; default) or mpv (a GLSL user shader for mpv / libplacebo)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=3, help="upscaling factor (default 3)")
    p.add_argument("--model", metavar="NAME", default="espcn", help="registered model (espcn, espcn-fast)")
    p.add_argument("--weights", metavar="FILE", help="weights file instead of the shipped ones")
    p.add_argument("--opset", type=int, metavar="N", help=f"ONNX opset (default {DEFAULT_OPSET}; onnx only)")
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="the file to write (e.g. espcn_x3.onnx, espcn_x3.glsl)")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def main(args: argparse.Namespace) -> int:
    if args.format == "mpv":
        return _mpv(args)
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    path = export_onnx(args.output, scale=args.scale, model=args.model, weights=args.weights,
                       opset=opset, overwrite=args.overwrite)
    if not args.quiet:
        from ..models import create_model

        network = create_model(args.model, scale=args.scale, weights=args.weights or "shipped")
        diff = onnx_max_difference(path, network)
        check = (f"; ONNX Runtime vs PyTorch: max |diff| {diff:.1e} on random input" if diff is not None
                 else "; onnxruntime not installed, not cross-checked")
        print(f"vsr: wrote {path} ({args.model} x{args.scale}, opset {opset}; {INPUT_NAME}: N x 1 x H x W "
              f"float in [0, 1], {OUTPUT_NAME}: N x 1 x {args.scale}H x {args.scale}W{check})", file=sys.stderr)
    return 0


def _mpv(args: argparse.Namespace) -> int:
    if args.opset is not None:
        raise ConfigError("--opset applies to --format onnx only; drop it for --format mpv")
    path = export_mpv(args.output, scale=args.scale, model=args.model, weights=args.weights,
                      overwrite=args.overwrite)
    if not args.quiet:
        from ..models import create_model

        cost = shader_cost(create_model(args.model, scale=args.scale, weights=args.weights or "shipped"))
        print(f"vsr: wrote {path} ({args.model} x{args.scale}: {cost}; play with "
              f"mpv --glsl-shaders={path} VIDEO)", file=sys.stderr)
    return 0
