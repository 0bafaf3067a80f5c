"""Quantization-aware fine-tuning, ``vsr train --qat``: the int8 file of a model, from its fp32 weights.

1. Calibrate the per-channel activation scales of :mod:`vsr.quantize` on real frames: the
   LR images of the training folders (made as the evaluation protocol makes them) and frames
   of any clips given (``--calib-video``), as decoded, since that is what the engine sees.
2. Fine-tune the fp32 weights through :class:`~vsr.quantize.QuantESPCN` (the engine's exact
   scheme with a straight-through estimator) with :func:`vsr.training.train` itself: same
   data, schedule, checkpoints and resume; fp32 throughout (no bf16 autocast).
3. Write ``<model>_x<scale>.int8.safetensors`` (fine-tuned weights and the scales) recording
   the sha256 of the fp32 file it started from; ``vsr.engine`` loads it for ``precision: int8``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, MediaError
from .evaluate import list_images, load_image, make_lr, to_y
from .models import create_model, shipped_weights
from .quantize import QuantESPCN, calibrate, save_int8
from .training import TrainConfig, TrainResult, train

__all__ = ["QAT_DEFAULTS", "calibration_planes", "train_qat"]

#: What ``--qat`` uses for the options left at the fp32 recipe's defaults: a short, gentle fine-tune.
QAT_DEFAULTS: dict[str, Any] = {"steps": 1000, "lr": 1e-5, "min_lr": 1e-6, "warmup": 50, "bf16_until": 0.0}


def calibration_planes(folders: Sequence[str], scale: int, videos: Sequence[str] = (), *,
                       images_per_folder: int = 12, frames_per_video: int = 4) -> list[np.ndarray]:
    """8-bit luma planes the network sees: LR images of ``folders`` (evenly spread) and decoded clip frames."""
    from .training import DataSource

    planes = []
    for spec in folders:  # --data specs: PATH[:DOWNSCALE[:WEIGHT]]; the options do not matter for ranges
        files = list_images(DataSource.parse(spec).path)
        for path in files[:: max(1, len(files) // images_per_folder)][:images_per_folder]:
            planes.append(to_y(make_lr(load_image(path), scale)))
    for video in videos:
        import av

        try:
            with av.open(str(video)) as container:
                stream = container.streams.video[0]
                step = max(1, (stream.frames or 100) // frames_per_video)
                got = [f.to_ndarray(format="gray") for i, f in enumerate(container.decode(stream))
                       if i % step == 0]
        except (av.FFmpegError, IndexError) as exc:
            raise MediaError(f"cannot read calibration clip {str(video)!r}: {exc}") from None
        planes += got[:frames_per_video]
    return planes


def train_qat(config: TrainConfig, out: str | Path, *, source: str | Path | None = None,
              videos: Sequence[str] = (), **train_options: Any) -> tuple[TrainResult, Path]:
    """Fine-tune ``source`` (default: the shipped fp32 weights of ``config.model``) for int8; returns the int8 file too."""
    if source is None:
        source = shipped_weights(config.model, config.scale)
        if source is None:
            raise ConfigError(f"no shipped weights for {config.model} x{config.scale} to fine-tune; pass --init FILE")
    fp32 = create_model(config.model, scale=config.scale, weights=source)
    scales = calibrate(fp32, calibration_planes(config.data, config.scale, videos))
    module = QuantESPCN.from_model(fp32, scales)
    config = dataclasses.replace(config, init=str(source), bf16_until=0.0)
    result = train(config, out, module=module, **train_options)
    int8 = Path(out) / f"{config.model}_x{config.scale}.int8.safetensors"
    if result.steps >= config.steps:
        save_int8(module.cpu().eval(), scales, int8, source=source,
                  qat={**config.to_dict(), "data": [Path(d).name for d in config.data], "init": Path(source).name,
                       "calibration_videos": [Path(v).name for v in videos]},
                  steps=result.steps, val_set5_psnr=result.val_psnr)
    return result, int8
