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
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                        help="run through the engine vsr run uses at this precision (default: the fp32 module)")
    parser.add_argument("--engine", choices=("fused", "module"),
                        help="with --precision: fused (default; vsr run's CPU path: fused oneDNN or int8) or "
                             "module (the plain module; for int8 the scheme simulated in float)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args: argparse.Namespace) -> int:
    from ..models import ESPCNConfig, create_model, read_weights
    from ..training import resolve_device

    device = resolve_device(args.device)
    if args.engine and not args.precision:
        raise ConfigError("--engine chooses the engine of a --precision; give --precision too")
    if args.precision:
        return _report(args, *_engine_upscaler(args, device))
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
    return _report(args, model, label)


def _engine_upscaler(args: argparse.Namespace, device: object) -> tuple[object, str]:
    """``--precision``/``--engine``: the model in :class:`vsr.engine.LumaUpscaler`, as ``vsr run`` loads it."""
    from ..engine import LumaUpscaler, int8_model, resolve_precision
    from ..evaluate import engine_upscaler
    from ..models import create_model

    dtype = resolve_precision(args.precision, device)
    int8 = int8_model(args.precision, device, args.model, args.scale, args.weights)
    fused = args.engine != "module"
    if int8 is not None:
        if int8.scale != args.scale:
            raise ConfigError(f"{args.weights!r} holds x{int8.scale} weights but --scale is {args.scale}")
        if not fused:  # the scheme simulated in float: what QAT trains
            return int8, f"{args.weights or args.model} int8 (module)"
        up = LumaUpscaler(int8, device=device, dtype=dtype, int8=True)
    else:
        model = create_model(args.model, scale=args.scale, weights=args.weights or "shipped")
        up = LumaUpscaler(model, device=device, dtype=dtype, fused=fused)
    engine = "int8" if up.precision == "int8" else ("fused" if up.fused else "module")
    return engine_upscaler(up), f"{args.weights or args.model} {up.precision} ({engine})"


def _report(args: argparse.Namespace, model: object, label: str) -> int:
    from ..evaluate import evaluate
    from ..training import resolve_device

    result = evaluate(model, args.dataset, args.scale, device=resolve_device(args.device), name=label)
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
