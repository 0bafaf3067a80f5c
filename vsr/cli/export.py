"""``vsr export``: write a model for other runtimes (ONNX: FFmpeg's dnn_processing, OpenCV dnn, ONNX Runtime)."""

from __future__ import annotations

import argparse
import sys

from ..export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_max_difference


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("onnx",), default="onnx", help="model format (onnx)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=3, help="upscaling factor (default 3)")
    p.add_argument("--model", metavar="NAME", default="espcn", help="registered model (espcn, espcn-fast)")
    p.add_argument("--weights", metavar="FILE", help="weights file instead of the shipped ones")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the model file to write (e.g. espcn_x3.onnx)")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def main(args: argparse.Namespace) -> int:
    path = export_onnx(args.output, scale=args.scale, model=args.model, weights=args.weights,
                       opset=args.opset, overwrite=args.overwrite)
    if not args.quiet:
        from ..models import create_model

        network = create_model(args.model, scale=args.scale, weights=args.weights or "shipped")
        diff = onnx_max_difference(path, network)
        check = (f"; ONNX Runtime vs PyTorch: max |diff| {diff:.1e} on random input" if diff is not None
                 else "; onnxruntime not installed, not cross-checked")
        print(f"vsr: wrote {path} ({args.model} x{args.scale}, opset {args.opset}; {INPUT_NAME}: N x 1 x H x W "
              f"float in [0, 1], {OUTPUT_NAME}: N x 1 x {args.scale}H x {args.scale}W{check})", file=sys.stderr)
    return 0
