#!/usr/bin/env python3
"""LR network vs HR network at equal compute: the claim of section 3 of the ESPCN authors' note.

The note compares, at the same depth ``l`` and the same runtime cost, a network whose convolutions
all run in LR space (``n = 32`` maps, 3x3 kernels, last layer ``r²`` maps + periodic shuffle) with
one that upsamples first (bicubic) and convolves in HR space: per layer
``32·32·3·3·(W/r)·(H/r) = n²·K²·W·H``, i.e. ``n·K = 96/r``; at x2 the note's ``n = 8``, ``K = 6``.
This tool builds both, counts their multiply-adds per output pixel (forward hooks on every
convolution), trains both with :func:`vsr.training.train` (same data, schedule, seed, steps),
evaluates them with :func:`vsr.evaluate.evaluate` (Set5, Set14, the published protocol), times
them on a 1080p output, and checks the deconvolution view: an FSRCNN-style network (LR convs, then a
learned ``ConvTranspose2d`` of stride ``r``) converted by :func:`vsr.ops.convert_transposed_convs`.

HR design (``hr_design``): middle layers ``n→n`` with ``K×K`` kernels, ``n²K² = 32²·3²/r²``
exactly (x2: n=8, K=6 as in the note; x3: the note's ``n = 32/9``, ``K = 9`` is not an integer
width, the exact integer solution nearest to it is n=4, K=8); the last layer ``n→1`` uses ``K`` too,
and the first layer ``1→n`` gets the kernel ``K1`` that makes the totals equal exactly
(x2: 3x3, x3: 4x4): the LR network's first and last layers are not ``32→32`` either.

Even kernels have no centre: each even ``K×K`` layer is padded ``K/2-1`` before and ``K/2``
after (shifting its output by +1/2 HR pixel) or the other way round (-1/2), alternating so that
the shifts cancel (exactly at x2; at x3 an odd number of even layers leaves +1/2 HR pixel,
reported as ``residual_shift``). Output size always equals the bicubic image's size.

    nice -n 10 python tools/lr_vs_hr.py --scales 2 3 --steps 3000

writes ``docs/lr_vs_hr.json``, ``docs/LR_VS_HR.md`` and ``docs/lr_vs_hr.png`` (runs and weights
under ``runs/lr_vs_hr``; a rerun resumes or reuses them). ``--timing-only`` re-measures speed
into an existing JSON (take timings on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

from vsr.errors import ConfigError, VsrError  # noqa: E402
from vsr.evaluate import evaluate, list_images, load_image, prepare_sample  # noqa: E402
from vsr.imresize import cubic  # noqa: E402
from vsr.models import ESPCN, ESPCNConfig, read_weights  # noqa: E402
from vsr.models.espcn import ACTIVATIONS  # noqa: E402
from vsr.ops import convert_transposed_convs  # noqa: E402
from vsr.training import TrainConfig, train  # noqa: E402

LR_WIDTH, LR_KERNEL = 32, 3


# ----------------------------------------------------------------------------- networks
def lr_network(scale: int, depth: int, activation: str = "tanh") -> ESPCN:
    """The note's LR network: ``depth`` 3x3 convolutions in LR space, 32 maps, then the shuffle."""
    return ESPCN(ESPCNConfig(scale=scale, widths=(LR_WIDTH,) * (depth - 1), kernels=(LR_KERNEL,) * depth,
                             activation=activation, arch="lr-net"))


@dataclass(frozen=True, kw_only=True)
class HRNetConfig:
    """HR network: MATLAB bicubic upsampling, then ``len(kernels)`` convolutions in HR space."""

    scale: int
    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    activation: str = "tanh"
    arch: str = "hr-net"

    def __post_init__(self) -> None:
        if self.scale < 2:
            raise ConfigError(f"scale must be at least 2, got {self.scale}")
        if len(self.kernels) != len(self.widths) + 1 or any(k < 1 for k in self.kernels):
            raise ConfigError(f"need one positive kernel size per layer, got widths {self.widths}, "
                              f"kernels {self.kernels}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")

    def pads(self) -> tuple[tuple[int, int], ...]:
        """``(before, after)`` zero padding per layer; even kernels alternate to cancel their half-pixel shifts."""
        out, shift = [], 0.0
        for k in self.kernels:
            if k % 2:
                out.append((k // 2, k // 2))
            elif shift <= 0:
                out.append((k // 2 - 1, k // 2))
                shift += 0.5
            else:
                out.append((k // 2, k // 2 - 1))
                shift -= 0.5
        return tuple(out)

    @property
    def residual_shift(self) -> float:
        """Net output shift in HR pixels (+: the output sees content from the right/bottom)."""
        return sum((a - b) / -2.0 for a, b in self.pads())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"], d["kernels"] = list(self.widths), list(self.kernels)
        d["pads"] = [list(p) for p in self.pads()]
        return d


class MatlabBicubicUp(nn.Module):
    """Fixed x``r`` upsampling equal to MATLAB ``imresize(x, r, 'bicubic')`` (float, symmetric borders).

    Separable: per axis, ``r`` 5-tap phase filters on the LR samples, interleaved.
    """

    TAPS = 5

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        half = self.TAPS // 2
        offsets = np.arange(-half, half + 1, dtype=np.float64)
        rows = []
        for phase in range(scale):
            u = (phase + 0.5) / scale - 0.5  # HR sample centre in LR coordinates, relative to its LR pixel
            w = cubic(u - offsets)
            rows.append(w / w.sum())
        self.register_buffer("phase_filters", torch.tensor(np.array(rows), dtype=torch.float32).view(scale, 1, 1, -1),
                             persistent=False)

    def _axis_w(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        half = self.TAPS // 2
        idx = torch.arange(-half, w + half, device=x.device)
        idx = torch.where(idx < 0, -idx - 1, torch.where(idx >= w, 2 * w - 1 - idx, idx))  # mirror incl. the edge
        idx = idx.clamp(0, w - 1)  # only for images narrower than the filter
        padded = x.index_select(3, idx).reshape(n * c, 1, h, w + 2 * half)
        y = F.conv2d(padded, self.phase_filters.to(x.dtype))  # (n*c, r, h, w)
        return y.permute(0, 2, 3, 1).reshape(n, c, h, w * self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._axis_w(x.transpose(2, 3)).transpose(2, 3)  # rows first, as MATLAB on equal factors
        return self._axis_w(y.contiguous())

    def macs_per_output_pixel(self) -> float:
        return self.TAPS / self.scale + self.TAPS


class HRNet(nn.Module):
    """Bicubic first, then convolutions in HR space (SRCNN-style), equal-sized output."""

    def __init__(self, config: HRNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.upsample = MatlabBicubicUp(cfg.scale)
        chans = (1, *cfg.widths, 1)
        layers: list[nn.Module] = []
        for i, (k, (a, b)) in enumerate(zip(cfg.kernels, cfg.pads())):
            layers.append(nn.ZeroPad2d((a, b, a, b)))
            layers.append(nn.Conv2d(chans[i], chans[i + 1], k))
            if i < len(cfg.kernels) - 1:
                layers.append(ACTIVATIONS[cfg.activation]())
        self.body = nn.Sequential(*layers)
        last = layers[-1]
        gain = nn.init.calculate_gain("tanh" if cfg.activation == "tanh" else "relu")
        for m in self.body:  # the same initialisation as ESPCN.reset_parameters
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, gain=1.0 if m is last else gain)
                nn.init.zeros_(m.bias)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.upsample(x))


def hr_design(scale: int, depth: int, activation: str = "tanh") -> HRNetConfig:
    """The equal-compute HR network for ``scale`` (see the module docstring)."""
    per_layer = LR_WIDTH**2 * LR_KERNEL**2 / scale**2  # 32·32·3·3 per LR pixel, per HR pixel
    nk = math.isqrt(round(per_layer))
    if nk * nk != per_layer:
        raise ConfigError(f"no integer n·K = sqrt({per_layer}) at x{scale}")
    want_k = LR_KERNEL * scale  # equal receptive field
    n, k = min(((nk // kk, kk) for kk in range(2, nk + 1) if nk % kk == 0), key=lambda nk_: abs(nk_[1] - want_k))
    # first 1->32 and last 32->r² LR layers, per HR pixel, against first 1->n (K1) and last n->1 (K)
    ends = (LR_WIDTH * LR_KERNEL**2 + LR_WIDTH * scale**2 * LR_KERNEL**2) / scale**2
    k1_sq = (ends - n * k * k) / n
    k1 = math.isqrt(max(0, round(k1_sq)))
    if k1 < 1 or k1 * k1 != k1_sq:
        raise ConfigError(f"no integer first-layer kernel equalises the compute at x{scale} (K1² = {k1_sq})")
    return HRNetConfig(scale=scale, widths=(n,) * (depth - 1), kernels=(k1,) + (k,) * (depth - 1),
                       activation=activation)


class DeconvNet(nn.Module):
    """FSRCNN-style: ``depth - 1`` 3x3 convolutions in LR space, then a learned ``ConvTranspose2d`` (stride r)."""

    def __init__(self, scale: int, depth: int, activation: str = "tanh") -> None:
        super().__init__()
        self.scale = scale
        chans = (1,) + (LR_WIDTH,) * (depth - 1)
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Conv2d(chans[i], chans[i + 1], LR_KERNEL, padding=LR_KERNEL // 2), ACTIVATIONS[activation]()]
        self.features = nn.Sequential(*layers)
        k = LR_KERNEL * scale  # output (L-1)·r + K - 2p = L·r with p = (K - r)/2 = r
        self.deconv = nn.ConvTranspose2d(LR_WIDTH, 1, k, stride=scale, padding=(k - scale) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.features(x))


# ----------------------------------------------------------------------------- counting and timing
def count_macs(model: nn.Module, lr_size: tuple[int, int] = (24, 24)) -> dict[str, float]:
    """Multiply-adds per HR output pixel, from a real forward pass (hooks on every convolution).

    ``conv``: learned convolutions (the note's measure); ``total`` adds the fixed bicubic upsampling.
    """
    counted: dict[str, float] = {"conv": 0.0, "fixed": 0.0}

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        kk = math.prod(mod.kernel_size)
        if isinstance(mod, nn.ConvTranspose2d):  # every input sample scatters into K² · out_channels outputs
            counted["conv"] += inputs[0].numel() * mod.out_channels // mod.groups * kk
        else:
            counted["conv"] += out.numel() * mod.in_channels // mod.groups * kk

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            y = model(torch.rand(1, 1, *lr_size))
    finally:
        for h in handles:
            h.remove()
    pixels = y.shape[-1] * y.shape[-2]
    for m in model.modules():
        if isinstance(m, MatlabBicubicUp):
            counted["fixed"] += m.macs_per_output_pixel() * pixels
    return {"conv": counted["conv"] / pixels, "fixed": counted["fixed"] / pixels,
            "total": (counted["conv"] + counted["fixed"]) / pixels}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def time_forward(model: nn.Module, lr_size: tuple[int, int], *, repeats: int, device: str = "cpu",
                 warmup: int = 2) -> dict[str, Any]:
    """Median wall time (ms) of one fp32 forward pass producing one ``r·h × r·w`` luma frame."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = torch.rand(1, 1, *lr_size, device=dev)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2),
            "repeats": repeats, "device": dev.type}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- training and evaluation
@dataclass(frozen=True, kw_only=True)
class Settings:
    scales: tuple[int, ...]
    depth: int
    steps: int
    batch_size: int
    patch: int
    lr: float
    seed: int
    activation: str
    data: tuple[str, ...]
    val: str
    test_sets: tuple[str, ...]
    runs: str
    val_points: int
    timing_size: tuple[int, int]
    timing_repeats: int
    threads: int


def build(kind: str, scale: int, s: Settings) -> nn.Module:
    torch.manual_seed(s.seed)  # same seed, same initialisation scheme for both networks
    if kind == "lr":
        return lr_network(scale, s.depth, s.activation)
    return HRNet(hr_design(scale, s.depth, s.activation))


def train_config(kind: str, scale: int, s: Settings) -> TrainConfig:
    return TrainConfig(model=f"{kind}-net", scale=scale, data=s.data, steps=s.steps, batch_size=s.batch_size,
                       patch=s.patch, lr=s.lr, warmup=min(500, max(1, s.steps // 10)), seed=s.seed)


def train_or_reuse(kind: str, scale: int, s: Settings, say: Callable[[str], None]) -> tuple[nn.Module, list[dict], float]:
    """Train (resuming an interrupted run) or reuse finished weights; returns (model, history, seconds)."""
    model = build(kind, scale, s)
    config = train_config(kind, scale, s)
    out = Path(s.runs) / f"x{scale}" / kind
    weights = out / f"{config.model}_x{scale}.safetensors"
    ckpt = out / "checkpoint.pt"
    if weights.is_file() and ckpt.is_file():
        state, meta = read_weights(weights)
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        if meta.get("steps") == s.steps and TrainConfig.from_dict(saved["config"]) == config:
            model.load_state_dict(state)
            say(f"{kind}-net x{scale}: reusing {weights}")
            return model.eval(), list(saved["history"]), float(saved["seconds"])
    val_every = max(1, s.steps // max(1, s.val_points))
    result = train(config, out, resume=True, val=s.val, val_every=val_every, checkpoint_every=max(1, s.steps // 10),
                   log_every=val_every, command=" ".join(sys.argv), log=say, module=model)
    return model.to("cpu").to(memory_format=torch.contiguous_format).eval(), list(result.history), result.seconds


def evaluate_model(model: nn.Module, scale: int, s: Settings) -> dict[str, Any]:
    res = {}
    for folder in s.test_sets:
        r = evaluate(model, folder, scale, name=getattr(model.config, "arch", "model"))
        res[Path(folder).name] = {"psnr": round(r.psnr, 3), "ssim": round(r.ssim, 4),
                                  "bicubic_psnr": round(r.bicubic_psnr, 3), "bicubic_ssim": round(r.bicubic_ssim, 4)}
    return res


def bicubic_check(scale: int, s: Settings) -> float:
    """Max |MatlabBicubicUp - vsr.imresize| (8-bit units) on a test image's LR luma: the HR net's input is the protocol's."""
    sample = prepare_sample(load_image(list_images(s.test_sets[0])[0]), scale)
    from vsr.imresize import imresize

    lr = sample.lr_y.astype(np.float64) / 255.0
    ref = imresize(lr, scale)
    with torch.inference_mode():
        got = MatlabBicubicUp(scale)(torch.from_numpy(lr).float()[None, None])[0, 0].double().numpy()
    return float(np.abs(got - ref).max() * 255.0)


def timing(scale: int, models: dict[str, nn.Module], s: Settings) -> dict[str, Any]:
    h, w = s.timing_size
    lr_size = (h // scale, w // scale)
    out = {"output": f"{lr_size[1] * scale}x{lr_size[0] * scale}", "threads": torch.get_num_threads(),
           "load_average_before": load_average()}
    for name, model in models.items():
        out[name] = time_forward(model, lr_size, repeats=s.timing_repeats)
    out["bicubic_only"] = time_forward(MatlabBicubicUp(scale), lr_size, repeats=s.timing_repeats)
    if torch.cuda.is_available():
        out["cuda"] = {name: time_forward(m, lr_size, repeats=s.timing_repeats, device="cuda")
                       for name, m in models.items()}
        for m in models.values():
            m.to("cpu")
    out["load_average_after"] = load_average()
    return out


def deconv_view(scale: int, s: Settings, timed: bool = True) -> dict[str, Any]:
    """DeconvNet vs its conversion into LR convolutions: identical output, and speed before/after."""
    torch.manual_seed(s.seed)
    net = DeconvNet(scale, s.depth, s.activation).eval()
    converted = convert_transposed_convs(net, strict=True).eval()
    h, w = s.timing_size
    lr_size = (h // scale, w // scale)
    x = torch.rand(1, 1, *lr_size)
    with torch.inference_mode():
        a, b = net(x), converted(x)
    res: dict[str, Any] = {
        "layers": [type(m).__name__ for m in (net.deconv, converted.deconv)],
        "output_shape": list(a.shape), "max_abs_diff": float((a - b).abs().max()),
        "macs_per_output_pixel": {"deconv": count_macs(net)["conv"], "converted": count_macs(converted)["conv"]},
        "params": {"deconv": count_params(net), "converted": count_params(converted)},
    }
    if timed:
        res["timing"] = {"deconv": time_forward(net, lr_size, repeats=s.timing_repeats),
                         "converted": time_forward(converted, lr_size, repeats=s.timing_repeats),
                         "threads": torch.get_num_threads(), "load_average": load_average()}
    return res


# ----------------------------------------------------------------------------- plot and doc
def draw_plot(results: dict[str, Any], path: Path) -> None:
    """Set5 PSNR (validation during training) over steps, one panel per scale; cv2 drawing."""
    import cv2

    scales = list(results["scales"])
    pw, ph, ml, mb, mt, mr = 520, 380, 70, 50, 40, 20
    img = np.full((ph, pw * len(scales), 3), 255, np.uint8)
    colours = {"lr": (200, 80, 0), "hr": (0, 90, 220)}  # BGR: blue-ish LR, orange HR
    font = cv2.FONT_HERSHEY_SIMPLEX
    for p, key in enumerate(scales):
        res = results["scales"][key]
        x0 = p * pw
        curves = {k: [(h["step"], h["val_psnr"]) for h in res[k]["history"] if h.get("val_psnr") is not None]
                  for k in ("lr", "hr")}
        pts = [v for c in curves.values() for v in c]
        bic = res["lr"]["eval"].get("Set5", {}).get("bicubic_psnr")
        if not pts:
            continue
        ys = [v for _, v in pts] + ([bic] if bic else [])
        y_lo, y_hi = math.floor(min(ys) - 0.2), math.ceil(max(ys) + 0.2)
        x_hi = max(s for s, _ in pts)

        def to_px(step: float, val: float) -> tuple[int, int]:
            return (int(x0 + ml + (pw - ml - mr) * step / x_hi),
                    int(mt + (ph - mt - mb) * (1 - (val - y_lo) / max(1e-9, y_hi - y_lo))))

        cv2.rectangle(img, (x0 + ml, mt), (x0 + pw - mr, ph - mb), (0, 0, 0), 1)
        for t in range(y_lo, y_hi + 1):
            _, yy = to_px(0, t)
            cv2.line(img, (x0 + ml - 4, yy), (x0 + ml, yy), (0, 0, 0), 1)
            cv2.putText(img, f"{t}", (x0 + ml - 30, yy + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for f in (0.0, 0.25, 0.5, 0.75, 1.0):
            xx, _ = to_px(f * x_hi, y_lo)
            cv2.line(img, (xx, ph - mb), (xx, ph - mb + 4), (0, 0, 0), 1)
            label = f"{int(f * x_hi)}"
            cv2.putText(img, label, (xx - 4 * len(label) * (2 if f == 1.0 else 1), ph - mb + 18), font, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
        if bic:
            _, yy = to_px(0, bic)
            cv2.line(img, (x0 + ml, yy), (x0 + pw - mr, yy), (150, 150, 150), 1, cv2.LINE_AA)
            cv2.putText(img, "bicubic", (x0 + pw - mr - 60, yy - 4), font, 0.4, (120, 120, 120), 1, cv2.LINE_AA)
        for k, c in curves.items():
            line = np.array([to_px(s_, v) for s_, v in c], np.int32)
            cv2.polylines(img, [line], False, colours[k], 2, cv2.LINE_AA)
            for q in line:
                cv2.circle(img, tuple(int(v) for v in q), 3, colours[k], -1, cv2.LINE_AA)
        cv2.putText(img, f"x{key}: Set5 PSNR (dB) during training", (x0 + ml, mt - 15), font, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(img, "training step", (x0 + pw // 2 - 30, ph - 12), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for i, k in enumerate(("lr", "hr")):
            label = f"{k.upper()} net ({res[k]['params']} params)"
            cv2.putText(img, label, (x0 + pw - mr - 215, ph - mb - 30 + 16 * i), font, 0.45, colours[k], 1,
                        cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def verdict(res: dict[str, Any]) -> str:
    lr, hr = res["lr"], res["hr"]
    gains = {d: lr["eval"][d]["psnr"] - hr["eval"][d]["psnr"] for d in lr["eval"]}
    speed = None
    if "timing" in res:
        speed = hr["time_ms"] / lr["time_ms"] if lr.get("time_ms") else None
    held = all(g > 0 for g in gains.values())
    parts = [f"LR - HR PSNR: " + ", ".join(f"{d} {g:+.2f} dB" for d, g in gains.items())]
    if speed:
        parts.append(f"HR/LR CPU time {speed:.2f}x")
    return ("quality: LR better on every set" if held else "quality: LR NOT better on every set") + " (" + "; ".join(parts) + ")"


def timing_output(results: dict[str, Any]) -> str:
    outs = {r["timing"]["output"] for r in results["scales"].values() if "timing" in r}
    return "/".join(sorted(outs)) or "output"


def write_doc(results: dict[str, Any], path: Path, plot: Path, json_path: Path) -> None:
    notes_marker = "<!-- notes: text below this line is kept when the tool rewrites the file -->"
    notes = ""
    if path.is_file():
        old = path.read_text()
        if notes_marker in old:
            notes = old.split(notes_marker, 1)[1]
    st = results["settings"]
    lines = [
        "# LR network vs HR network at equal compute (ESPCN note, section 3)",
        "",
        "Generated by `tools/lr_vs_hr.py` (do not edit above the notes marker). Command:",
        "",
        "```",
        results["command"],
        "```",
        "",
        f"Depth l = {st['depth']}, {st['activation']}; LR net: {st['depth']} 3x3 convolutions with 32 maps in LR space, "
        "the last one to r² maps + periodic shuffle. HR net: MATLAB bicubic x r first, then "
        f"{st['depth']} convolutions in HR space with n maps and K×K kernels, n·K = 96/r (see the tool's docstring). "
        f"Both trained with `vsr.training.train`: {st['steps']} steps, batch {st['batch_size']}, "
        f"{st['patch']}-pixel LR patches, lr {st['lr']} (warm-up, cosine, L1 then MSE for the last 20%), seed "
        f"{st['seed']}, data {', '.join(Path(d).name for d in st['data'])}; evaluated with `vsr.evaluate` "
        "(MATLAB bicubic degradation, Y, shave r).",
        "",
        "| scale | net | layers (n, K) | MACs / output px (conv; +bicubic) | params | Set5 PSNR / SSIM | Set14 PSNR / SSIM "
        f"| CPU ms / {timing_output(results)} frame (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, res in results["scales"].items():
        for k in ("lr", "hr"):
            r = res[k]
            layers = ", ".join(f"{a}→{b} {kk}×{kk}" for a, b, kk in r["layers"])
            ev = r["eval"]
            t = r.get("time_ms")
            lines.append(
                f"| x{key} | {k.upper()} | {layers} | {r['macs']['conv']:.0f}; {r['macs']['total']:.1f} | {r['params']} | "
                + " | ".join(f"{ev[d]['psnr']:.2f} / {ev[d]['ssim']:.4f}" for d in ev)
                + f" | {t if t is not None else 'n/a'} |")
        b = res["lr"]["eval"]
        lines.append(f"| x{key} | bicubic | | | | " + " | ".join(
            f"{b[d]['bicubic_psnr']:.2f} / {b[d]['bicubic_ssim']:.4f}" for d in b) + " | |")
    lines += ["", "Ratios and verdict per scale (computed by the tool):", ""]
    for key, res in results["scales"].items():
        lines.append(f"- x{key}: MACs HR/LR = {res['macs_ratio']:.4f} (conv), {res['macs_ratio_total']:.4f} (with bicubic); "
                     f"params LR/HR = {res['params_ratio']:.2f} (the note predicts {res['params_ratio_predicted']:.2f} for the "
                     f"32→32 vs n→n layers); HR residual shift {res['hr']['config']['residual_shift']} HR px; "
                     f"bicubic layer vs vsr.imresize max diff {res['bicubic_max_diff_8bit']:.2e} (8-bit units); "
                     f"{res['verdict']}.")
    if results.get("timing_conditions"):
        lines += ["", f"Timing: {results['timing_conditions']}"]
    if results.get("timing_command"):
        lines += ["", "Timings re-measured (same networks, trained weights not needed for speed) with:", "", "```",
                  results["timing_command"], "```"]
    lines += ["", f"![Set5 PSNR over training steps]({plot.name})", "", "Deconvolution view (FSRCNN-style: LR convs, then "
              "a learned ConvTranspose2d with stride r, K = 3r; random weights: the identity holds for any weights), "
              "converted with `vsr.ops.convert_transposed_convs`:", ""]
    lines += ["| scale | layer before → after | max abs diff | MACs / output px | CPU ms before | CPU ms after |",
              "|---|---|---|---|---|---|"]
    for key, d in results.get("deconv", {}).items():
        t = d.get("timing", {})
        lines.append(f"| x{key} | {' → '.join(d['layers'])} | {d['max_abs_diff']:.2e} | "
                     f"{d['macs_per_output_pixel']['deconv']:.0f} → {d['macs_per_output_pixel']['converted']:.0f} | "
                     f"{t.get('deconv', {}).get('median_ms', 'n/a')} | {t.get('converted', {}).get('median_ms', 'n/a')} |")
    lines += ["", f"All numbers: `{json_path.relative_to(REPO) if json_path.is_absolute() and REPO in json_path.parents else json_path}`. "
              f"Machine: {results['machine']}.", "", notes_marker]
    path.write_text("\n".join(lines) + (notes if notes else "\n"))


# ----------------------------------------------------------------------------- main
def layer_table(model: nn.Module) -> list[tuple[int, int, int]]:
    return [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in model.modules() if isinstance(m, nn.Conv2d)]


def summarise(scale: int, models: dict[str, nn.Module]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, m in models.items():
        cfg = m.config
        d = cfg.to_dict()
        if isinstance(cfg, HRNetConfig):
            d["residual_shift"] = cfg.residual_shift
        out[k] = {"config": d, "layers": layer_table(m), "macs": count_macs(m), "params": count_params(m)}
    out["macs_ratio"] = out["hr"]["macs"]["conv"] / out["lr"]["macs"]["conv"]
    out["macs_ratio_total"] = out["hr"]["macs"]["total"] / out["lr"]["macs"]["total"]
    out["params_ratio"] = out["lr"]["params"] / out["hr"]["params"]
    hr_cfg: HRNetConfig = models["hr"].config
    n, k = hr_cfg.widths[0], hr_cfg.kernels[-1]
    out["params_ratio_predicted"] = LR_WIDTH**2 * LR_KERNEL**2 / (n * n * k * k)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/lr_vs_hr.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3])
    p.add_argument("--depth", type=int, default=3, help="layers l of both networks (ESPCN: 3)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=24, help="LR patch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--activation", default="tanh", choices=sorted(ACTIVATIONS))
    p.add_argument("--data", action="append", default=None,
                   help="training folder (repeatable; default ../shared/data/train/T91 and BSD200)")
    p.add_argument("--val", default=str(SHARED / "benchmark" / "Set5"), help="validation folder (PSNR curve)")
    p.add_argument("--test", action="append", default=None, help="test folder (default Set5 and Set14)")
    p.add_argument("--val-points", type=int, default=15, help="validations per training run (plot points)")
    p.add_argument("--runs", default=str(REPO / "runs" / "lr_vs_hr"), help="training runs and weights")
    p.add_argument("--json", default=str(REPO / "docs" / "lr_vs_hr.json"))
    p.add_argument("--doc", default=str(REPO / "docs" / "LR_VS_HR.md"))
    p.add_argument("--plot", default=str(REPO / "docs" / "lr_vs_hr.png"))
    p.add_argument("--timing-size", type=int, nargs=2, default=[1080, 1920], metavar=("H", "W"),
                   help="output frame size for timing (default 1080p)")
    p.add_argument("--timing-repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--no-timing", action="store_true", help="skip speed measurements (e.g. while the CPU is busy)")
    p.add_argument("--timing-only", action="store_true", help="re-measure speed into the existing --json, rewrite doc")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say: Callable[[str], None] = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    torch.set_num_threads(args.threads)
    s = Settings(scales=tuple(args.scales), depth=args.depth, steps=args.steps, batch_size=args.batch_size,
                 patch=args.patch, lr=args.lr, seed=args.seed, activation=args.activation,
                 data=tuple(args.data or [str(SHARED / "train" / "T91"), str(SHARED / "train" / "BSD200")]),
                 val=args.val, test_sets=tuple(args.test or [str(SHARED / "benchmark" / "Set5"),
                                                             str(SHARED / "benchmark" / "Set14")]),
                 runs=args.runs, val_points=args.val_points, timing_size=tuple(args.timing_size),
                 timing_repeats=args.timing_repeats, threads=args.threads)
    if s.depth < 2:
        raise ConfigError(f"--depth must be at least 2, got {s.depth}")
    json_path, doc, plot = Path(args.json), Path(args.doc), Path(args.plot)
    machine = (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
               f"{args.threads} threads").replace("  ", " ")
    if args.timing_only:
        results = json.loads(json_path.read_text())
        for key in results["scales"]:
            scale = int(key)
            models = {k: build(k, scale, s) for k in ("lr", "hr")}
            t = timing(scale, models, s)
            results["scales"][key]["timing"] = t
            for k in ("lr", "hr"):
                results["scales"][key][k]["time_ms"] = t[k]["median_ms"]
            results["scales"][key]["verdict"] = verdict(results["scales"][key])
            results["deconv"][key] = deconv_view(scale, s)
            say(f"x{scale}: LR {t['lr']['median_ms']} ms, HR {t['hr']['median_ms']} ms per {t['output']} frame")
        results["timing_command"] = "python tools/lr_vs_hr.py " + " ".join(argv if argv is not None else sys.argv[1:])
    else:
        results = {"command": "python tools/lr_vs_hr.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "settings": {**asdict(s), "data": list(s.data)}, "scales": {}, "deconv": {}}
        for scale in s.scales:
            models = {k: build(k, scale, s) for k in ("lr", "hr")}
            res = summarise(scale, models)
            say(f"x{scale}: MACs per output pixel LR {res['lr']['macs']['conv']:.1f}, HR {res['hr']['macs']['conv']:.1f} "
                f"(+{res['hr']['macs']['fixed']:.1f} bicubic), ratio {res['macs_ratio']:.4f}; params LR {res['lr']['params']}, "
                f"HR {res['hr']['params']}, ratio {res['params_ratio']:.2f}")
            if abs(res["macs_ratio_total"] - 1) > 0.01:
                raise ConfigError(f"x{scale}: multiply-adds differ by more than 1% ({res['macs_ratio_total']:.4f})")
            res["bicubic_max_diff_8bit"] = bicubic_check(scale, s)
            for k in ("lr", "hr"):
                model, history, seconds = train_or_reuse(k, scale, s, say)
                models[k] = model
                res[k].update(history=history, train_seconds=round(seconds, 1), eval=evaluate_model(model, scale, s))
                say(f"x{scale} {k}-net: " + ", ".join(f"{d} {v['psnr']:.3f} dB / {v['ssim']:.4f}"
                                                      for d, v in res[k]["eval"].items()))
            if not args.no_timing:
                res["timing"] = timing(scale, models, s)
                for k in ("lr", "hr"):
                    res[k]["time_ms"] = res["timing"][k]["median_ms"]
            res["verdict"] = verdict(res)
            say(f"x{scale}: {res['verdict']}")
            results["scales"][str(scale)] = res
            results["deconv"][str(scale)] = deconv_view(scale, s, timed=not args.no_timing)
            say(f"x{scale} deconv view: max abs diff {results['deconv'][str(scale)]['max_abs_diff']:.2e}")
    results["machine"] = machine
    if any("timing" in r for r in results["scales"].values()):
        la = [r["timing"].get("load_average_before") for r in results["scales"].values() if "timing" in r]
        results["timing_conditions"] = (f"CPU fp32, batch 1, {args.threads} threads, median of {s.timing_repeats} runs "
                                        f"after 2 warm-ups, 1-minute load average before timing {la} "
                                        f"(the machine is shared), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                                        f"{machine}")
    for p_ in (json_path, doc, plot):
        p_.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    draw_plot(results, plot)
    write_doc(results, doc, plot, json_path)
    say(f"wrote {json_path}, {doc}, {plot}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VsrError as exc:
        print(f"tools/lr_vs_hr.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
