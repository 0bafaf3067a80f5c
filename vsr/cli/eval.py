"""`vsr eval`: PSNR/SSIM of a model and of bicubic on an image folder, published protocol."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="DIR",
                        help="folder of high-resolution images (e.g. ../shared/data/benchmark/Set5)")
    parser.add_argument("--scale", type=int, required=True, choices=(2, 3, 4), help="upscaling factor")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default="espcn",
                       help="registered model whose shipped weights to evaluate (default espcn)")
    which.add_argument("--weights", metavar="FILE", help="a .safetensors/.pt file written by vsr train")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate
    from ..models import ESPCNConfig, create_model, read_weights
    from ..training import resolve_device

    device = resolve_device(args.device)
    if args.weights:
        _, meta = read_weights(args.weights)
        cfg = meta.get("config")
        if not isinstance(cfg, dict):
            raise ConfigError(f"{args.weights!r} carries no architecture metadata; save it with vsr.save_weights")
        config = ESPCNConfig.from_dict(cfg)
        if config.scale != args.scale:
            raise ConfigError(f"{args.weights!r} holds x{config.scale} weights but --scale is {args.scale}")
        from ..models import ESPCN, load_weights

        model = load_weights(ESPCN(config), args.weights).eval()
        label = Path(args.weights).name
    else:
        model = create_model(args.model, scale=args.scale, weights="shipped")
        label = args.model
    result = evaluate(model, args.dataset, args.scale, device=device, name=label)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(f"{result.dataset} x{result.scale}, {label}: PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f} "
          f"(bicubic {result.bicubic_psnr:.2f} dB, {result.bicubic_ssim:.4f})")
    width = max(len(r.name) for r in result.images)
    print(f"{'image':<{width}}  {'PSNR':>6}  {'SSIM':>6}  {'bicubic':>7}  {'SSIM':>6}")
    for r in result.images:
        print(f"{r.name:<{width}}  {r.psnr:6.2f}  {r.ssim:6.4f}  {r.bicubic_psnr:7.2f}  {r.bicubic_ssim:6.4f}")
    return 0
