"""`vsr train`: train ESPCN weights from image folders (logic in :mod:`vsr.training`)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

import torch

from ..errors import ConfigError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,0.8,0.6, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="espcn", help="registered variant to train (default espcn)")
    parser.add_argument("--scale", type=int, default=3, choices=(2, 3, 4), help="upscaling factor")
    parser.add_argument("--data", action="append", metavar="DIR[:DOWNSCALE[:WEIGHT]]", required=True,
                        help="folder of training images (PNG, BMP, JPEG; RGB or gray); repeat for several "
                             "(e.g. T91 and BSD200). DOWNSCALE: shrink each image by it first (e.g. 0.5 for "
                             "JPEG sources); WEIGHT: how often its pixels are drawn relative to other folders'")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="run folder: checkpoint.pt, log.jsonl and the final .safetensors")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    from ..training import TrainConfig

    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    parser.add_argument("--steps", type=int, default=d["steps"], help=f"optimizer steps (default {d['steps']})")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"],
                        help=f"patches per step (default {d['batch_size']})")
    parser.add_argument("--patch", type=int, default=d["patch"],
                        help=f"LR patch side in pixels; HR patches are patch*scale (default {d['patch']}; the paper: 17)")
    parser.add_argument("--image-scales", type=_floats, default=d["image_scales"], metavar="S,S,...",
                        help="also train on copies of each image downscaled by these factors "
                             f"(default {','.join(f'{s:g}' for s in d['image_scales'])})")
    parser.add_argument("--lr", type=float, default=d["lr"], help=f"peak Adam learning rate (default {d['lr']:g})")
    parser.add_argument("--min-lr", type=float, default=d["min_lr"],
                        help=f"final learning rate of the cosine decay (default {d['min_lr']:g})")
    parser.add_argument("--warmup", type=int, default=d["warmup"], help=f"linear warm-up steps (default {d['warmup']})")
    parser.add_argument("--l2-from", type=float, default=d["l2_from"],
                        help="fraction of the steps trained with L1 loss before MSE takes over "
                             f"(default {d['l2_from']:g}: MSE throughout)")
    parser.add_argument("--bf16-until", type=float, default=d["bf16_until"],
                        help=f"fraction of the steps run under bf16 autocast, the rest in fp32 (default {d['bf16_until']:g})")
    parser.add_argument("--context", type=int, default=d["context"], metavar="N",
                        help="LR pixels of real image around each patch that the network sees and the loss "
                             "ignores; the network's halo (4 for espcn) leaves no zero-padded edge in the loss "
                             "(default 0: the loss covers the whole patch)")
    parser.add_argument("--grid-phases", action="store_true", default=d["grid_phases"],
                        help="also train on each image shifted by 0..scale-1 pixels before downscaling "
                             "(scale^2 LR images an image: the sampling grid at every phase)")
    parser.add_argument("--seed", type=int, default=d["seed"], help=f"random seed (default {d['seed']})")
    parser.add_argument("--init", metavar="FILE",
                        help="start from the tensors of FILE that fit (e.g. another scale's feature layers)")
    # issue 19: collapsible training and distillation
    parser.add_argument("--collapsible", action="store_true", default=d["collapsible"],
                        help="train each conv with parallel linear branches (1x1, 1x1-kxk-1x1, identity, "
                             "Sobel/Laplacian) that fold into the plain network when the weights are written")
    parser.add_argument("--teacher", metavar="FILE",
                        help="distil from this larger network's weights (e.g. an espcn-teacher run at the same scale)")
    parser.add_argument("--distill", type=float, default=d["distill"], metavar="A",
                        help=f"with --teacher: the teacher output's share of the loss (default {d['distill']:g})")
    parser.add_argument("--val", metavar="DIR", help="validation image folder (e.g. Set5), PSNR under the protocol")
    parser.add_argument("--val-every", type=int, default=2000, help="validate every N steps (default 2000)")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="checkpoint every N steps")
    parser.add_argument("--log-every", type=int, default=500, help="print the loss every N steps")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    qat = parser.add_argument_group("int8 (quantization-aware fine-tuning)")
    qat.add_argument("--qat", action="store_true",
                     help="fine-tune the fp32 weights (--init FILE, default the shipped ones) for the int8 engine and "
                          "write <model>_x<scale>.int8.safetensors; options left at their defaults take the QAT "
                          "recipe's (steps 1000, lr 1e-5, warmup 50, fp32)")
    qat.add_argument("--calib-video", action="append", default=[], metavar="FILE",
                     help="also calibrate the int8 activation ranges on frames of this clip (repeatable)")


def main(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, train

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("val_every", "checkpoint_every", "log_every"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    config = TrainConfig(
        model=args.model, scale=args.scale, data=tuple(args.data), image_scales=tuple(args.image_scales),
        steps=args.steps, batch_size=args.batch_size, patch=args.patch, lr=args.lr, min_lr=args.min_lr,
        warmup=args.warmup, l2_from=args.l2_from, bf16_until=args.bf16_until, context=args.context,
        grid_phases=args.grid_phases, seed=args.seed, init=args.init,
        collapsible=args.collapsible, teacher=args.teacher, distill=args.distill,
    )
    from ..models import get_spec

    get_spec(config.model)  # unknown names fail before the data loads
    options = dict(
        resume=args.resume, val=args.val, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, device=args.device,
        command=shlex.join(["vsr", "train", *sys.argv[2:]]) if sys.argv[1:2] == ["train"] else shlex.join(sys.argv),
    )
    if args.qat:
        return _qat(config, args, options)
    result = train(config, args.out, **options)
    print(f"wrote {result.weights} ({result.steps} steps, {result.seconds:.0f}s"
          + (f", Set5 {result.val_psnr:.3f} dB" if result.val_psnr is not None else "") + ")")
    return 0


def _qat(config: object, args: argparse.Namespace, options: dict[str, object]) -> int:
    """``--qat``: the QAT recipe for options left at their defaults, then :func:`vsr.qat.train_qat`."""
    from ..qat import QAT_DEFAULTS, train_qat
    from ..training import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    config = dataclasses.replace(config, **{k: v for k, v in QAT_DEFAULTS.items()  # type: ignore[type-var]
                                            if getattr(config, k) == defaults[k]})
    result, int8 = train_qat(config, args.out, source=args.init, videos=args.calib_video, **options)
    print(f"wrote {int8} ({result.steps} steps, {result.seconds:.0f}s"
          + (f", Set5 {result.val_psnr:.3f} dB int8" if result.val_psnr is not None else "") + ")")
    return 0
