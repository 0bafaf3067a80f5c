"""Training ESPCN variants on image folders (the logic behind ``vsr train`` and ``tools/train.py``).

Data: every image of the given folders (e.g. T91 + BSD200, the "291" set), optionally also
MATLAB-downscaled copies (``image_scales``) and copies shifted against the downscaling grid
(``grid_phases``), modcropped; the LR image is made once per image with the evaluation
protocol's own degradation (:func:`vsr.evaluate.make_lr`), and both are kept as 8-bit Y.  A
training patch is an aligned crop (``patch`` LR pixels, ``patch*scale`` HR pixels) with one of
the 8 flips/rotations; since the bicubic kernel is symmetric, the transformed pair is exactly
what the protocol would make of the transformed image.  With ``context`` the network also sees
real pixels around the patch that the loss ignores (:class:`PatchData`).

Determinism and resuming: the batch of step ``i`` is drawn from ``default_rng([seed, i])``
alone, the learning rate and loss are functions of ``i``, and the checkpoint holds the
model and Adam state, so a run interrupted and resumed from its checkpoint ends with the
same weights, bit for bit, as one that never stopped (same device and thread count).

Schedule: linear warm-up, cosine decay from ``lr`` to ``min_lr``; L1 loss for the first
``l2_from`` of the steps (none by default), then MSE; on CPU the forward pass runs under
bf16 autocast (AMX) until ``bf16_until`` of the steps, then in fp32. bf16 is there for speed only:
on a CPU that has no native bf16 (AVX512-BF16 or AMX) autocast would emulate it several times
slower than fp32, so those steps run in fp32 instead, said once at the start (the configuration,
and so ``--resume``, is unchanged; a run's result depends on the machine anyway).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, DeviceError, WeightsError
from .engine import cpu_has_native_bf16
from .evaluate import Sample, evaluate, imresize, list_images, load_image, make_lr, modcrop, prepare_sample, to_y
from .models import ESPCN, ESPCNConfig, create_model, load_weights, read_weights, save_weights
from .ops.collapsible import collapse, make_collapsible

__all__ = ["DataSource", "TrainConfig", "TrainResult", "PatchData", "export_checkpoint", "train", "load_teacher",
           "load_training_data", "load_training_images"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that decides a training run's result (the checkpoint checks it on resume)."""

    model: str = "espcn"
    scale: int = 3
    data: tuple[str, ...] = ()
    # Defaults: the recipe of the shipped espcn weights (docs/MODELS.md). 32 patches of 24x24 LR
    # pixels make a step 4x faster than 64 of 32x32 on a CPU core (activations stay in cache), so
    # the same minutes give 4x the optimiser steps; MSE throughout is what PSNR measures.
    image_scales: tuple[float, ...] = (1.0, 0.8, 0.6)
    steps: int = 20000
    batch_size: int = 32
    patch: int = 24
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup: int = 2000
    l2_from: float = 0.0
    bf16_until: float = 0.9
    # Two data options measured on espcn x3 (docs/MODELS.md, "What did not help"): neither moved
    # Set5; context 4 gave +0.03 dB on Set14 at 1.8x the step time, so the default keeps both off.
    # context: LR pixels of real image around each patch that the loss ignores (PatchData; the
    # network's halo, 4 for espcn, removes every zero-padded edge); 0: loss over the whole patch.
    context: int = 0
    # grid_phases: each image also shifted by 0..scale-1 pixels before downscaling (load_training_images).
    grid_phases: bool = False
    seed: int = 0
    init: str | None = None
    # Issue 19 (docs/MODELS.md). collapsible: train every conv with parallel linear branches
    # (vsr.ops.collapsible) that fold into the plain network when the weights are written.
    collapsible: bool = False
    # teacher: weights file of a larger LR-space network (e.g. espcn-teacher) whose output is mixed
    # into the target; distill: the teacher's share of the loss (1 - distill: the ground truth's).
    teacher: str | None = None
    distill: float = 0.5

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ConfigError(f"scale must be 2, 3 or 4, got {self.scale!r}")
        if not self.data:
            raise ConfigError("no training data: pass --data FOLDER (e.g. ../shared/data/train/T91)")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch size must be positive, got {self.steps} and {self.batch_size}")
        if self.patch < 4:
            raise ConfigError(f"patch (LR pixels) must be at least 4, got {self.patch}; the paper uses 17")
        if not (self.lr > 0 and 0 < self.min_lr <= self.lr):
            raise ConfigError(f"need 0 < min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not (0.0 <= self.l2_from <= 1.0 and 0.0 <= self.bf16_until <= 1.0):
            raise ConfigError("l2_from and bf16_until are fractions of the steps, in [0, 1]")
        if self.context < 0:
            raise ConfigError(f"context must be 0 or more LR pixels, got {self.context}")
        if not self.image_scales or any(not 0.1 <= s <= 1.0 for s in self.image_scales):
            raise ConfigError(f"image scales must lie in [0.1, 1], got {self.image_scales}")
        for spec in self.data:
            DataSource.parse(spec)
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill is the teacher's share of the loss, in [0, 1], got {self.distill}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = list(self.data)
        d["image_scales"] = list(self.image_scales)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The inverse of :meth:`to_dict`; options newer than ``d`` (an older checkpoint's) take their defaults."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"training settings with unknown options {unknown}: written by another vsr version; "
                              "train into a new --out")
        return cls(**{**d, "data": tuple(d["data"]), "image_scales": tuple(d["image_scales"])})

    def learning_rate(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * min(1.0, t)))

    def uses_l2(self, step: int) -> bool:
        return step >= self.l2_from * self.steps

    def uses_bf16(self, step: int) -> bool:
        return step < self.bf16_until * self.steps


#: Evaluation sets that must never be trained on (matched against every component of a data path).
EVALUATION_ONLY = ("bsd100", "set5", "set14", "urban100", "manga109")


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` entry, ``PATH[:DOWNSCALE[:WEIGHT]]``.

    ``downscale``: every image is first MATLAB-downscaled by this factor and then treated as the HR
    image (about 0.5 for JPEG sources hides most compression artefacts); ``weight``: how often a
    pixel of this folder is drawn, relative to a pixel of a weight-1 folder (patches are otherwise
    drawn in proportion to each image's patch positions).
    """

    path: str
    downscale: float = 1.0
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "DataSource":
        parts = spec.split(":")
        numbers: list[float] = []
        while len(parts) > 1 and len(numbers) < 2:
            try:
                numbers.insert(0, float(parts[-1]))
            except ValueError:
                break
            parts.pop()
        src = cls(":".join(parts), *numbers)
        if not src.path:
            raise ConfigError(f"--data {spec!r} names no folder; use PATH[:DOWNSCALE[:WEIGHT]]")
        if not 0.1 <= src.downscale <= 1.0 or not src.weight > 0:
            raise ConfigError(f"--data {spec!r}: downscale must lie in [0.1, 1] and weight be positive "
                              f"(PATH[:DOWNSCALE[:WEIGHT]], e.g. ImageNet1000:0.5:1)")
        banned = [p for p in Path(src.path).parts if p.lower() in EVALUATION_ONLY]
        if banned:
            raise ConfigError(f"--data {spec!r}: {banned[0]} is an evaluation set and is never trained on; "
                              "use the training folders (e.g. ../shared/data/train/T91)")
        return src

    @property
    def label(self) -> str:
        """The folder's name with its options, for weight-file metadata."""
        name = Path(self.path).name
        return name if (self.downscale, self.weight) == (1.0, 1.0) else f"{name}:{self.downscale:g}:{self.weight:g}"


@dataclass(frozen=True)
class TrainResult:
    weights: Path
    checkpoint: Path
    steps: int
    seconds: float
    val_psnr: float | None
    history: tuple[dict[str, Any], ...] = field(default=(), repr=False)


def load_training_images(
    folders: tuple[str, ...], scale: int, image_scales: tuple[float, ...] = (1.0,), *, grid_phases: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(lr_y, hr_y)`` 8-bit pairs for every image (and downscaled copy) of ``folders``.

    ``folders`` are :class:`DataSource` specs (``PATH[:DOWNSCALE[:WEIGHT]]``; the weight is
    :func:`load_training_data`'s business). JPEG and grayscale images load like PNG; only the 8-bit
    Y planes are kept (the RGB image lives only while its LR image is made).

    ``grid_phases``: also pair each HR image cropped by ``(dy, dx)``, ``0 <= dy, dx < scale``, with its
    own LR image, so that the downscaling grid meets the content at every phase (``scale**2``
    pairs an image instead of one; the HR arrays are views, the LR ones are ``1/scale**2`` the size).
    """
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    shifts = [(dy, dx) for dy in range(scale) for dx in range(scale)] if grid_phases else [(0, 0)]
    for spec in folders:
        source = DataSource.parse(spec)
        for path in list_images(source.path):
            img = load_image(path)
            for s in image_scales:
                f = s * source.downscale
                src = img if f == 1.0 else imresize(img, f)
                src_y = to_y(src)
                for dy, dx in shifts:
                    hr = modcrop(src[dy:, dx:], scale)
                    if min(hr.shape[:2]) < 2 * scale:
                        continue
                    pairs.append((to_y(make_lr(hr, scale)), modcrop(src_y[dy:, dx:], scale)))
    return pairs


def load_training_data(config: TrainConfig) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    """All pairs of ``config.data`` and the sampling weight of each (its folder's ``weight``)."""
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    factors: list[float] = []
    for spec in config.data:
        got = load_training_images((spec,), config.scale, config.image_scales, grid_phases=config.grid_phases)
        pairs += got
        factors += [DataSource.parse(spec).weight] * len(got)
    return pairs, factors


class PatchData:
    """Aligned LR/HR Y patches with flips and rotations, batch ``i`` a pure function of ``(seed, i)``.

    ``context``: LR pixels of real image around each patch that the network sees but the loss
    ignores.  A network with zero padding computes the outer ``halo`` pixels of a bare patch from
    zeros that are not there in a whole frame; without context more than half of a 24x24 patch's
    loss (for espcn's halo of 4) trains that artificial edge instead of the interior.  With
    context the window is ``patch + 2*context`` pixels, shifted inward where the patch lies near
    the image's edge, so zero padding is seen only where inference sees it too: at the image border.
    """

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], *, scale: int, patch: int, seed: int,
                 context: int = 0, factors: list[float] | None = None):
        """``factors``: a sampling weight per pair (default 1), multiplying its share of patch positions."""
        self.scale, self.patch, self.seed, self.context = scale, patch, seed, context
        factors = [1.0] * len(pairs) if factors is None else factors
        if len(factors) != len(pairs):
            raise ValueError(f"{len(factors)} sampling factors for {len(pairs)} pairs")
        keep = [n for n, (lr, _) in enumerate(pairs) if min(lr.shape) >= self.window]
        self.pairs = [pairs[n] for n in keep]
        if not self.pairs:
            raise ConfigError(f"no training image is at least {self.window * scale} pixels on each side")
        positions = np.array([(lr.shape[0] - patch + 1) * (lr.shape[1] - patch + 1) * factors[n]
                              for n, (lr, _) in zip(keep, self.pairs)], float)
        self.weights = positions / positions.sum()

    @property
    def window(self) -> int:
        """Side of the LR input patches, context included."""
        return self.patch + 2 * self.context

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(lr, hr, mask)``: ``mask`` is 1 on the HR pixels the loss counts, None when that is all of them."""
        rng = np.random.default_rng([self.seed, step])
        p, r, c, w = self.patch, self.scale, self.context, self.window
        which = rng.choice(len(self.pairs), size=size, p=self.weights)
        lr_out = np.empty((size, 1, w, w), np.float32)
        hr_out = np.empty((size, 1, w * r, w * r), np.float32)
        mask_out = np.zeros((size, 1, w, w), np.float32) if c else None
        for n, idx in enumerate(which):
            lr, hr = self.pairs[idx]
            y = int(rng.integers(0, lr.shape[0] - p + 1))
            x = int(rng.integers(0, lr.shape[1] - p + 1))
            wy = min(max(y - c, 0), lr.shape[0] - w)
            wx = min(max(x - c, 0), lr.shape[1] - w)
            a = lr[wy : wy + w, wx : wx + w]
            b = hr[wy * r : (wy + w) * r, wx * r : (wx + w) * r]
            m = None
            if mask_out is not None:
                m = np.zeros((w, w), np.float32)
                m[y - wy : y - wy + p, x - wx : x - wx + p] = 1.0
            k = int(rng.integers(0, 8))
            if k & 4:
                a, b = a[:, ::-1], b[:, ::-1]
                m = None if m is None else m[:, ::-1]
            a, b = np.rot90(a, k & 3), np.rot90(b, k & 3)
            lr_out[n, 0] = a
            hr_out[n, 0] = b
            if mask_out is not None:
                mask_out[n, 0] = np.rot90(m, k & 3)
        mask = None
        if mask_out is not None:
            mask = torch.from_numpy(mask_out).repeat_interleave(r, dim=2).repeat_interleave(r, dim=3)
        return torch.from_numpy(lr_out / 255.0), torch.from_numpy(hr_out / 255.0), mask


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but this torch has no CUDA device; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None


def _patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, *, l2: bool) -> torch.Tensor:
    """Mean squared (``l2``) or absolute error over the pixels where ``mask`` is 1 (all when None)."""
    if mask is None:
        return F.mse_loss(pred, target) if l2 else F.l1_loss(pred, target)
    err = (pred - target) * mask
    return (err.square() if l2 else err.abs()).sum() / mask.sum()


def _init_from(model: ESPCN, path: str) -> list[str]:
    """Copy the tensors of ``path`` whose name and shape fit (another scale's feature layers)."""
    state, _ = read_weights(path)
    own = model.state_dict()
    copied = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    if not copied:
        raise WeightsError(f"{path!r} has no tensor that fits the model; is it the same variant?")
    model.load_state_dict({**own, **{k: state[k] for k in copied}})
    return copied


def load_teacher(path: str, scale: int) -> ESPCN:
    """The frozen network of weights file ``path`` (any ESPCN architecture its metadata describes)."""
    state, meta = read_weights(path)
    if "config" not in meta:
        raise WeightsError(f"{path!r} does not describe its architecture; pass a weights file `vsr train` wrote")
    cfg = ESPCNConfig.from_dict(meta["config"])
    if cfg.scale != scale or cfg.channels != 1:
        raise ConfigError(f"teacher {path!r} is a x{cfg.scale} network with {cfg.channels} channel(s); "
                          f"this run trains x{scale} on luma: train a teacher at x{scale} first")
    teacher = load_weights(ESPCN(cfg), path).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _save_checkpoint(path: Path, model: ESPCN, opt: torch.optim.Optimizer, step: int, config: TrainConfig,
                     history: list[dict[str, Any]], seconds: float) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
         "config": config.to_dict(), "history": history, "seconds": seconds},
        tmp,
    )
    os.replace(tmp, path)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    val: str | Path | None = None,
    val_every: int = 2000,
    checkpoint_every: int = 1000,
    log_every: int = 100,
    device: str = "auto",
    stop_after: int | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    module: torch.nn.Module | None = None,
) -> TrainResult:
    """Train ``config`` into folder ``out`` (``checkpoint.pt``, ``log.jsonl``, ``<model>_x<scale>.safetensors``).

    ``resume``: continue from ``out/checkpoint.pt`` (its config must equal ``config``).
    ``stop_after``: stop (with a checkpoint) once that many steps are done, as an interruption would.
    ``module``: train this network (trained in place) instead of ``create_model(config.model)``, e.g. an
    architecture that is not a registered variant; ``config.model`` then only names it (files, logs). It
    must map ``(N, 1, h, w)`` in [0, 1] to ``(N, 1, scale*h, scale*w)`` and have ``config.to_dict()``
    for the weights file's metadata.
    """
    say = log or (lambda s: print(s, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    model = (create_model(config.model, scale=config.scale, weights=None) if module is None else module).train()
    initialised: list[str] = []
    if config.init:
        initialised = _init_from(model, config.init)
    if config.collapsible:
        if module is not None:
            raise ConfigError("--collapsible trains a registered ESPCN's convolutions, not a given network "
                              "(e.g. --qat's); leave one of them out")
        model = make_collapsible(model)  # after --init: the run starts at exactly the initial network
    teacher = None if config.teacher is None else load_teacher(config.teacher, config.scale)
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    model = model.to(dev)
    if teacher is not None:
        teacher = (teacher.to(memory_format=torch.channels_last) if dev.type == "cpu" else teacher).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, history, seconds_before = 0, [], 0.0
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=True)
        saved, wanted = TrainConfig.from_dict(ckpt["config"]).to_dict(), config.to_dict()
        if saved != wanted:
            diff = {k: (v, wanted[k]) for k, v in saved.items() if wanted[k] != v}
            raise ConfigError(f"{str(ckpt_path)!r} was made with other settings {diff}; use a new --out or the same flags")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, history, seconds_before = int(ckpt["step"]), list(ckpt["history"]), float(ckpt["seconds"])
        say(f"resuming {ckpt_path} at step {step}/{config.steps}")
    elif ckpt_path.is_file() and not resume:
        raise ConfigError(f"{str(ckpt_path)!r} exists: pass --resume to continue it, or choose another --out")

    t_load = time.perf_counter()
    pairs, factors = load_training_data(config)
    data = PatchData(pairs, scale=config.scale, patch=config.patch, seed=config.seed, context=config.context,
                     factors=factors)
    val_samples: list[Sample] = []
    if val is not None:
        val_samples = [prepare_sample(load_image(p), config.scale, p.name) for p in list_images(val)]
    say(f"{config.model} x{config.scale}: {len(data.pairs)} training images loaded in "
        f"{time.perf_counter() - t_load:.1f}s; {config.steps} steps of {config.batch_size} "
        f"patches {config.patch}->{config.patch * config.scale} (context {config.context}) on {dev}"
        + (f"; init {len(initialised)} tensors from {config.init}" if initialised else ""))

    def validate() -> float | None:
        if not val_samples:
            return None
        model.eval()
        res = evaluate(model, val_samples, config.scale, device=dev)
        model.train()
        if dev.type == "cpu":
            model.to(memory_format=torch.channels_last)
        return res.psnr

    # autocast emulates bf16 where the CPU has none: several times slower than fp32 (docs/PERFORMANCE.md)
    bf16_ok = dev.type != "cpu" or cpu_has_native_bf16()
    if not bf16_ok and config.uses_bf16(step):
        say(f"this CPU has no native bf16 (AVX512-BF16 or AMX): the first {config.bf16_until:g} of the steps run "
            "in fp32 instead of under bf16 autocast, which would emulate it several times slower")
    start = time.perf_counter()
    running, count = 0.0, 0
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    val_psnr: float | None = None
    try:
        while step < end:
            lr_b, hr_b, mask = data.batch(step, config.batch_size)
            lr_b, hr_b = lr_b.to(dev), hr_b.to(dev)
            if dev.type == "cpu":
                lr_b = lr_b.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = config.learning_rate(step)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16_ok and config.uses_bf16(step)):
                pred = model(lr_b)
                if teacher is not None:
                    with torch.no_grad():
                        taught = teacher(lr_b).float()
            pred = pred.float()
            mask_d = None if mask is None else mask.to(dev)
            loss = _patch_loss(pred, hr_b, mask_d, l2=config.uses_l2(step))
            if teacher is not None:
                loss = ((1.0 - config.distill) * loss
                        + config.distill * _patch_loss(pred, taught, mask_d, l2=config.uses_l2(step)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += float(loss.detach())
            count += 1
            is_val = val_samples and (step % val_every == 0 or step == config.steps)
            if step % log_every == 0 or is_val or step == end:
                elapsed = seconds_before + time.perf_counter() - start
                entry: dict[str, Any] = {"step": step, "loss": running / max(count, 1),
                                         "lr": config.learning_rate(step - 1), "seconds": round(elapsed, 1),
                                         "loss_kind": "l2" if config.uses_l2(step - 1) else "l1"}
                if is_val:
                    val_psnr = validate()
                    entry["val_psnr"] = val_psnr
                history.append(entry)
                with open(out / "log.jsonl", "a") as fh:
                    fh.write(json.dumps(entry) + "\n")
                say(f"step {step}/{config.steps} {entry['loss_kind']} loss {entry['loss']:.5f} "
                    f"lr {entry['lr']:.2e} {elapsed:.0f}s"
                    + (f" Set5 {val_psnr:.3f} dB" if is_val and val_psnr is not None else ""))
                running, count = 0.0, 0
            if step % checkpoint_every == 0:
                _save_checkpoint(ckpt_path, model, opt, step, config, history,
                                 seconds_before + time.perf_counter() - start)
    except KeyboardInterrupt:
        _save_checkpoint(ckpt_path, model, opt, step, config, history, seconds_before + time.perf_counter() - start)
        say(f"interrupted at step {step}; checkpoint saved, continue with --resume")
        raise
    seconds = seconds_before + time.perf_counter() - start
    _save_checkpoint(ckpt_path, model, opt, step, config, history, seconds)
    weights = out / f"{config.model}_x{config.scale}.safetensors"
    if step >= config.steps:
        model_cpu = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
        if config.collapsible:
            model_cpu = collapse(model_cpu)
        save_weights(
            model_cpu, weights,
            training={**config.to_dict(), "data": [DataSource.parse(d).label for d in config.data],
                      "init": Path(config.init).name if config.init else None,
                      "teacher": Path(config.teacher).name if config.teacher else None},
            steps=step, seed=config.seed, wall_seconds=round(seconds, 1),
            machine=f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, {dev.type}, "
                    f"{torch.get_num_threads()} threads",
            val_set5_psnr=val_psnr,
            command=command or " ".join(sys.argv),
        )
    return TrainResult(weights, ckpt_path, step, seconds, val_psnr, tuple(history))


def export_checkpoint(checkpoint: str | Path, weights: str | Path) -> Path:
    """Write the model of a (possibly unfinished) training checkpoint as a weights file."""
    ckpt = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    config = TrainConfig.from_dict(ckpt["config"])
    model: torch.nn.Module = create_model(config.model, scale=config.scale, weights=None)
    if config.collapsible:
        model = make_collapsible(model)
    model.load_state_dict(ckpt["model"])
    if config.collapsible:
        model = collapse(model)
    return save_weights(model, weights, training=config.to_dict(), steps=int(ckpt["step"]), seed=config.seed,
                        wall_seconds=round(float(ckpt["seconds"]), 1), unfinished=int(ckpt["step"]) < config.steps)
