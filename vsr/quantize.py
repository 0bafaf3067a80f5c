"""The int8 scheme of ESPCN, shared by the int8 CPU engine and quantization-aware training.

One definition, two users: :mod:`vsr.engine._int8` computes it with oneDNN's int8
convolutions, and :class:`QuantESPCN` simulates it in float (fake quantisation with a
straight-through estimator) so that ``vsr train --qat`` fine-tunes exactly what the engine
runs. The scheme, for 8-bit planes (deeper video does not go through it, see the engine):

* **Input**: the uint8 plane itself, ``x = q / 255``: exact, no calibration.
* **Weights**: per output channel, symmetric: ``s = max|w| / 127``, ``w_q = round(w / s)``
  in [-127, 127] (:func:`weight_scales`). Biases stay fp32; accumulation is exact (int32).
* **Hidden tanh layer** (scheme v3, where there is no bypass; per output channel ``c``): the
  pre-activation ``z`` is coded ``k = clamp(round(z / s_z[c]), -128, 127)`` (oneDNN writes ``k + 128``
  as uint8) and the activation's code is ``clamp(round(tanh(k s_z[c]) / s_z[c]), -127, 127)``, at the same step
  ``s_z[c]`` (scheme v3), looked up in a 256-entry table per channel. Most channels of ESPCN's
  first layer stay in tanh's linear part (median largest ``|tanh|`` 0.14-0.20), where this table
  is the identity and a value is rounded once. v2 coded the activation at
  ``tanh(127 s_z[c]) / 127``, a step a little finer than ``s_z[c]``, so that the second rounding
  moved codes by one in a pattern (aliasing); v3, calibrated and fine-tuned by the same recipe,
  measured on espcn x3 against fp32 (``tools/int8_calibration_variants.py espcn:3
  '{"scheme_v2_step": true}' '{}'``): Set5 −0.118 → −0.091 dB, Set14 −0.057 → −0.045, real clips
  −0.528 → −0.405 (mdn_flower), −0.364 → −0.233 (mdn_friday), −0.873 → −0.660
  (imageio_cockatoo), at no cost in time (the same table pass). PyTorch's
  int8 convolution fuses ReLU and hardtanh but not tanh, and a separate float tanh pass over
  64 channels cost more than the three int8 convolutions together (640x360, measured); the
  table is one byte-wise pass.
* **First hidden layer, tanh: the linear bypass** (scheme v4, for tanh ESPCNs of two hidden layers, i.e. espcn).
  ``tanh(z) = z + (tanh(z) - z)``, and layer 2 is linear, so it reads the two parts apart. The linear part goes
  to layer 2 in fp32: layer 2's fp32 weights on ``z = w1 * x + b1`` with layer 1's fp32 weights, which the
  engine computes as one convolution of the uint8 plane with the composite kernel ``w2 o w1`` (7x7, 1568
  multiply-adds a pixel for espcn's 32 outputs) plus ``w2``'s sums times ``b1``, and the float network's two
  convolutions on the outermost ring, where ``z``'s zero padding is in reach. Only the residual goes through 8
  bits: the int8 layer 1's code ``k`` of ``z`` (as above) gives ``tanh(k s) - k s``, coded per channel at
  :func:`residual_step` (one 256-entry table pass, as v3's), and layer 2's int8 weights read those codes.
  Where tanh is nearly linear the residual is nearly 0, so what layer 2 reads is ``tanh(z)`` to within the
  residual's step, not within ``s / 2``: layer 1's code cost v3 most of its noise (without it, espcn x3
  mdn_flower went from -0.41 to -0.08 dB: ``tools/int8_noise_sources.py espcn:3`` at commit af217ed, on the v3
  file). Each ``s`` is calibrated for the
  least error of ``z`` plus the coded residual against ``tanh(z)`` (:func:`_best_bypass_scales`), and the
  residual steps are floored at :data:`RESIDUAL_STEP_FLOOR` of the largest. Paired with v3 by the shipped QAT
  recipe on one machine (``tools/int8_calibration_variants.py espcn:3 '{"bypass": false}' '{}'``), espcn x3
  against fp32, v3 -> v4: Set5 -0.093 -> -0.034 dB, Set14 -0.048 -> -0.010, mdn_flower -0.414 -> -0.038,
  mdn_friday -0.218 -> -0.139, imageio_cockatoo -0.672 -> -0.113. The cost is the composite convolution, the
  edge strips and one add (docs/PERFORMANCE.md, session 11).
* **Hidden ReLU layer** (per output channel): code ``clamp(round(relu(z) / s_a[c]), 0, 255)``,
  fused in the convolution.
* **First hidden layer, ReLU: the linear bypass** (scheme v4, espcn-fast). ``relu(z) = z + relu(-z)``, and a
  code of 0 is exact. Most of ESPCN's first-layer ReLU channels are positive on most pixels, so for such a
  channel ``relu(-z)`` is 0 almost everywhere: that channel's weights and bias are negated in layer 1, whose
  fused ReLU then writes the codes of ``relu(-z)``, and its ``z`` goes to layer 2 in fp32 by the
  composite convolution, as tanh's does. Calibration picks, per channel, the side with the less error
  (:func:`_best_relu_bypass_scales`; a negative scale marks a channel that codes ``relu(-z)``); layer 2's ReLU runs
  after the linear part is added. Paired with v3 by the shipped recipe (``tools/int8_calibration_variants.py
  espcn-fast:3 '{"bypass": false}' '{}'``), espcn-fast x3 against fp32, v3 -> v4: see docs/PERFORMANCE.md,
  session 11.
* Per-channel activation scales cost nothing at run time: ``1/s`` is folded into the layer's
  weight scales and bias (the uint8 codes are its output at scale 1), and the next layer's
  input scale (``s_z`` or ``s_a``; ``1/255`` for the plane) into its float weights before they
  are quantised, so every convolution sees codes at scale 1 and a per-tensor zero point.
* **Last hidden layer** (since scheme v2, mixed precision): an int8 convolution like the others (its
  input is the previous layer's codes), but its output is dequantised to fp32 by oneDNN (int32
  accumulation times the weight scales, plus the fp32 bias) and activated in fp32: no 8-bit
  activation code. Those codes cost espcn x3 about 0.4 dB on a real clip (mdn_flower, Y plane)
  and 0.05 dB on Set5; the layer after them has a ninth (espcn) to a fifth (espcn-fast) of the
  multiply-adds, so running it in fp32 costs a few percent of the int8 time (measured, 640x360 x3).
* **Last layer**: fp32 weights and bias on the fp32 activations, times ``max_value``, rounded
  once to the output's own levels, as the fp32 path rounds. (v1 ran it as two int8 weight halves
  on 8-bit codes; rounding its weights to one int8 had cost espcn x3 0.12 dB on Set5.)

So the 8-bit quantities are the input plane (exact), the weights of every layer but the last, and
the activation codes *between* the int8 layers, i.e. of every hidden layer but the last (with the
bypass, the residual's codes).

``s_z`` (tanh) and ``s_a`` (ReLU), one per channel of every hidden layer but the last, are calibrated on
real frames (:func:`calibrate`: each channel's clip with the least quantisation error over its
values) and ship
with the fine-tuned weights in ``<model>_x<scale>.int8.safetensors``, whose metadata records
the sha256 of the fp32 weight file they were derived from (:func:`save_int8`, :func:`load_int8`).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .errors import WeightsError
from .models import ESPCN, ESPCNConfig, read_weights

__all__ = [
    "SCHEME",
    "QuantESPCN",
    "calibrate",
    "coded_widths",
    "fake_weight",
    "file_sha256",
    "load_int8",
    "residual_step",
    "residual_table",
    "save_int8",
    "shipped_int8",
    "shipped_int8_names",
    "tanh_table",
    "weight_scales",
]

SCHEME = "vsr-int8-v4"  # recorded in every int8 file; a changed scheme gets a new name
KINDS = ("tanh", "relu")  # activations the scheme covers


def file_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def weight_scales(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 scales of a conv weight ``(o, i, k, k)``: ``max|w| / 127``."""
    return (w.detach().abs().amax((1, 2, 3)).float() / 127).clamp_min(1e-12)


def quantized_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_q int8, scales)`` with ``w ≈ w_q * scales[:, None, None, None]``."""
    s = weight_scales(w)
    return torch.round(w.detach().float() / s[:, None, None, None]).clamp_(-127, 127).to(torch.int8), s


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` forward, identity backward (straight-through estimator)."""
    return x + (q - x).detach()


def fake_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` as the engine computes with it: int8 per output channel."""
    s = weight_scales(w)[:, None, None, None].to(w.dtype)
    return _ste(w, torch.round(w / s).clamp(-127, 127) * s)


def output_step(kind: str, scale: torch.Tensor) -> torch.Tensor:
    """The real value of one activation code: the pre-activation's own step ``s_z`` for tanh (scheme v3, see
    the module docstring), ``s_a`` for ReLU."""
    return scale


def fake_activation(z: torch.Tensor, kind: str, scale: torch.Tensor, *, code_input: bool = True,
                    code_output: bool = True) -> torch.Tensor:
    """A hidden layer's activation codes from its pre-activation ``z`` (N, C, h, w), as the engine computes them.

    ``code_input`` / ``code_output`` (tanh only; both True in the scheme): round the pre-activation to the
    8-bit code the engine's table reads, and the activation to its code. ``tools/int8_noise_sources.py``
    turns one off at a time to see what each rounding costs.
    """
    s = scale.to(z)[:, None, None]
    if kind == "tanh":
        k = (z / s).clamp(-128, 127)
        if code_input:
            k = _ste(z / s, torch.round(z / s).clamp(-128, 127))
        a = torch.tanh(k * s) / output_step(kind, s)
        return _ste(a, torch.round(a).clamp(-127, 127)) if code_output else a
    a = torch.relu(z) / s
    return _ste(a, torch.round(a).clamp(0, 255))


#: Scheme v4: no channel's residual step is under this fraction of its layer's largest. Layer 2's int8 weights
#: fold each input channel's step in and are scaled per output channel, so a channel whose step is 1/1000 of the
#: largest would keep almost none of their 8 bits; floored, it keeps 5. Measured on espcn x3 by the shipped QAT
#: recipe (``tools/int8_calibration_variants.py espcn:3 '{"residual_floor": F}'``), Set5 / mdn_flower /
#: imageio_cockatoo against fp32: none -0.046 / -0.049 / -0.174 dB; 1/64 -0.035 / -0.038 / -0.137; 1/32 -0.034 /
#: -0.038 / -0.113; 1/16 -0.036 / -0.040 / -0.171; 1/8 -0.036 / -0.057 / -0.161.
RESIDUAL_STEP_FLOOR = 1 / 32


def _residual_step64(scale: torch.Tensor, *, floor: bool = True) -> torch.Tensor:
    """Per channel of ``scale`` (one layer's ``s``, 1-D), float64: in float32 ``128 s - tanh(128 s)`` cancels for
    small ``s``. ``floor=False``: each channel's own step, as calibration searches it."""
    s = scale.double()
    step = ((128 * s - torch.tanh(128 * s)) / 127).clamp_min(1e-30)
    return torch.maximum(step, step.max() * RESIDUAL_STEP_FLOOR) if floor else step


def residual_step(scale: torch.Tensor) -> torch.Tensor:
    """Scheme v4: the real value of one code of the bypassed layer's tanh residual ``tanh(k s) - k s``, per channel
    of ``scale`` (1-D): ``(128 s - tanh(128 s)) / 127``, so that the residual of every pre-activation code ``k`` in
    [-128, 127] fits [-127, 127], and at least :data:`RESIDUAL_STEP_FLOOR` times the layer's largest."""
    return _residual_step64(scale).float()


def _residual_codes(k: torch.Tensor, s: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The residual's code of pre-activation codes ``k`` at steps ``s`` and ``step`` (broadcast; float64
    throughout, as the engine's table is made)."""
    s, k = s.double(), k.double()
    return torch.round((torch.tanh(k * s) - k * s) / step.double()).clamp(-127, 127)


def fake_residual(z: torch.Tensor, scale: torch.Tensor, *, code_input: bool = True,
                  code_output: bool = True) -> torch.Tensor:
    """Scheme v4's codes of the bypassed layer's residual from its pre-activation ``z`` (N, C, h, w): the pre-activation
    is coded ``k = clamp(round(z / s), -128, 127)`` (the code the engine's table reads) and ``tanh(k s) - k s`` at
    :func:`residual_step`. Straight-through: the gradient is that of ``tanh(z) - z``, in code units.
    ``code_input`` / ``code_output`` (both True in the scheme), as in :func:`fake_activation`."""
    step64 = _residual_step64(scale)[:, None, None]
    s, step = scale.to(z)[:, None, None], step64.to(z)
    kc = (z / s).clamp(-128, 127)
    a = (torch.tanh(kc * s) - kc * s) / step
    if code_input and code_output:  # float64, as the engine's table is made
        value = _residual_codes(torch.round(kc.detach()), scale[:, None, None], step64).to(z)
    else:
        k = torch.round(kc.detach()) if code_input else kc.detach()
        value = (torch.tanh(k * s) - k * s) / step
        if code_output:
            value = torch.round(value).clamp(-127, 127)
    return _ste(a, value)


def residual_table(scale: torch.Tensor) -> np.ndarray:
    """Scheme v4's tables, ``(1, 256, C)`` uint8: code ``k + 128`` of ``z`` -> the residual's code + 128."""
    k = torch.arange(-128, 128, dtype=torch.float64)[:, None]
    codes = _residual_codes(k, scale[None, :], _residual_step64(scale)[None, :]) + 128
    return np.ascontiguousarray(codes.to(torch.uint8).numpy()[None])


def tanh_table(scale: torch.Tensor) -> np.ndarray:
    """The engine's tables, ``(1, 256, C)`` uint8: code ``k + 128`` of ``z`` -> the activation's code + 128."""
    k = torch.arange(-128, 128, dtype=torch.float64)[:, None]
    s = scale.double()[None, :]
    codes = torch.round(torch.tanh(k * s) / output_step("tanh", s)).clamp(-127, 127) + 128
    return np.ascontiguousarray(codes.to(torch.uint8).numpy()[None])


def coded_widths(config: ESPCNConfig) -> tuple[int, ...]:
    """Widths of the hidden layers whose activations are 8-bit codes: all but the last (since scheme v2)."""
    return tuple(config.widths[:-1])


def _kind(config: ESPCNConfig) -> str:
    if config.activation not in KINDS or config.channels != 1:
        raise WeightsError(f"int8 covers luma ESPCNs with {' or '.join(KINDS)}; got {config.channels} channel(s), "
                           f"{config.activation}")
    return config.activation


class QuantESPCN(ESPCN):
    """An ESPCN whose forward pass is the int8 scheme, simulated in float (for QAT and as the reference).

    ``scales``: per hidden layer but the last (the coded ones), one activation scale per channel
    (``s_z`` for tanh, ``s_a`` for ReLU; with the ReLU bypass, negative where the channel codes ``relu(-z)``).
    Its ``state_dict`` is a plain ESPCN's (the scales are not in it), so training, checkpoints and
    :func:`vsr.models.save_weights` treat it as one.
    """

    def __init__(self, config: ESPCNConfig, scales: Sequence[torch.Tensor], *, bypass: bool | None = None) -> None:
        super().__init__(config)
        self.kind = _kind(config)
        scales = [torch.as_tensor(s, dtype=torch.float32).flatten() for s in scales]
        can_bypass = len(scales) == 1
        if bypass and not can_bypass:
            raise WeightsError("the linear bypass (scheme v4) covers ESPCNs with two hidden layers")
        #: scheme v4's linear bypass of the first layer (the default where it applies); False: scheme v3
        self.bypass = can_bypass if bypass is None else bypass
        signed = self.bypass and self.kind == "relu"  # a negative scale: that channel codes relu(-z)
        if [len(s) for s in scales] != list(coded_widths(config)) or not all(
                bool((s.abs() > 0).all() if signed else (s > 0).all()) for s in scales):
            raise WeightsError(f"int8 needs positive activation scales for layers of widths {list(coded_widths(config))}")
        self.scales = scales

    def linear_channels(self) -> torch.Tensor:
        """Scheme v4: which of layer 1's channels send their pre-activation ``z`` to layer 2 in fp32 (bool): all of a
        tanh layer's; a ReLU layer's where the channel codes ``relu(-z)`` (``relu(z) = z + relu(-z)``)."""
        if not self.bypass:
            return torch.zeros(len(self.scales[0]), dtype=torch.bool)
        if self.kind == "tanh":
            return torch.ones(len(self.scales[0]), dtype=torch.bool)
        return self.scales[0] < 0

    def unbypassed(self) -> "QuantESPCN":
        """The same weights and scale magnitudes through scheme v3's steps (no linear part): what the bypass costs in
        time, not a network anyone ships (its scales were calibrated for the bypass)."""
        return QuantESPCN.from_model(self, [s.abs() for s in self.scales], bypass=False)

    @classmethod
    def from_model(cls, model: ESPCN, scales: Sequence[torch.Tensor], *, bypass: bool | None = None) -> "QuantESPCN":
        q = cls(model.config, scales, bypass=bypass)
        q.load_state_dict(model.state_dict())
        return q

    def convs(self) -> list[torch.nn.Conv2d]:
        return [m for m in self.modules() if isinstance(m, torch.nn.Conv2d)]

    def input_steps(self) -> list[torch.Tensor]:
        """Per int8 layer (all but the last), the real value of one input code per input channel
        (folded into its weights)."""
        steps = [torch.full((1,), 1 / 255)]
        if self.bypass and self.kind == "tanh":  # layer 2 reads the residual's codes
            return steps + [residual_step(self.scales[0])]
        return steps + [output_step(self.kind, s.abs()) for s in self.scales]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"ESPCN expects a (N, 1, H, W) tensor, got shape {tuple(x.shape)}")
        y = torch.round(x * 255)  # the engine's input: the uint8 plane's codes
        convs, steps = self.convs(), self.input_steps()
        z = None  # scheme v4: the bypassed layer's pre-activation in fp32
        for i, conv in enumerate(convs[:-1]):  # int8 layers: codes in, int8 weights
            w = conv.weight * steps[i].to(conv.weight)[None, :, None, None]
            codes, y = y, torch.nn.functional.conv2d(y, fake_weight(w), conv.bias, padding=conv.padding)
            if z is not None:  # the linear part in fp32: layer 2's weights on z (the engine: one composite conv)
                y, z = y + torch.nn.functional.conv2d(z, conv.weight, None, padding=conv.padding), None
            if i == 0 and self.bypass:  # z from layer 1's fp32 weights; the residual from its int8 code
                z = torch.nn.functional.conv2d(codes, w, conv.bias, padding=conv.padding)
                if self.kind == "tanh":
                    y = fake_residual(y, self.scales[0])
                else:  # relu(z) = z + relu(-z): the linear channels code relu(-z), the others relu(z)
                    linear = self.linear_channels().to(y.device)[None, :, None, None]
                    z = torch.where(linear, z, torch.zeros_like(z))
                    y = fake_activation(torch.where(linear, -y, y), "relu", self.scales[0].abs())
            elif i < len(self.scales):
                y = fake_activation(y, self.kind, self.scales[i])
            else:  # the last hidden layer: fp32 activation
                y = torch.tanh(y) if self.kind == "tanh" else torch.relu(y)
        last = convs[-1]  # fp32
        return self.shuffle(torch.nn.functional.conv2d(y, last.weight, last.bias, padding=last.padding))


def _search(top: torch.Tensor, codes: int, factors: Iterable[float], error: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, the step ``top * f / codes`` (``top``: (C, 1)) of least ``error(step)`` ((C,)) over ``factors``,
    and that error."""
    best = torch.zeros(len(top))
    best_err = torch.full((len(top),), float("inf"))
    for f in factors:
        s = top * f / codes
        err = error(s)
        better = err < best_err
        best = torch.where(better, s[:, 0], best)
        best_err = torch.where(better, err, best_err)
    return best, best_err


def _activation_error(values: torch.Tensor, kind: str) -> Any:
    """``step -> `` the mean squared error of each channel's coded activation (rows of ``values``: pre-activations)."""
    def error(s: torch.Tensor) -> torch.Tensor:
        if kind == "tanh":
            t = output_step(kind, s)
            q = torch.round(torch.tanh(torch.round(values / s).clamp(-128, 127) * s) / t).clamp(-127, 127) * t
            return (q - torch.tanh(values)).square().mean(1)
        a = values.clamp_min(0)
        return (torch.round(a / s).clamp(0, 255) * s - a).square().mean(1)
    return error


def _best_scales(values: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel (rows of ``values``, pre-activations), the scale with the least error of the activation, and
    that error."""
    top = values.abs().amax(1) if kind == "tanh" else values.clamp_min(0).amax(1)
    return _search(top.clamp_min(1e-6)[:, None], 127 if kind == "tanh" else 255, np.linspace(1 / 64, 1, 64),
                   _activation_error(values, kind))


def _best_relu_bypass_scales(values: torch.Tensor) -> torch.Tensor:
    """Scheme v4, ReLU: per channel, code ``relu(z)`` or ``relu(-z)`` (negative scale), whichever has the less error.

    A code of 0 is exact, so the side with fewer non-zero values mostly wins: ESPCN's first-layer ReLU channels are
    positive on most pixels, and ``relu(-z)`` is 0 there."""
    pos, pos_err = _best_scales(values, "relu")
    neg, neg_err = _best_scales(-values, "relu")
    return torch.where(neg_err < pos_err, -neg, pos)


def _best_bypass_scales(values: torch.Tensor) -> torch.Tensor:
    """Scheme v4, per channel: the pre-activation step ``s`` with the least error of what layer 2 reads, ``z`` plus the
    residual's code, against ``tanh(z)``. Up to 1.25 times the largest ``|z|`` / 127: a coarser ``s`` clips nothing
    and rounds ``z`` only inside ``tanh``, so in the linear part the error is that of the residual alone."""
    target = torch.tanh(values.double())

    def error(s: torch.Tensor) -> torch.Tensor:
        step = _residual_step64(s[:, 0], floor=False)[:, None]  # each channel's own: the floor depends on them all
        got = values.double() + _residual_codes(torch.round(values / s).clamp(-128, 127), s, step) * step
        return (got - target).square().mean(1).float()

    return _search(values.abs().amax(1).clamp_min(1e-6)[:, None], 127, np.linspace(1 / 64, 1.25, 80), error)[0]


@torch.no_grad()
def calibrate(model: ESPCN, planes: Iterable[np.ndarray], *, samples: int = 1 << 15,
              seed: int = 0, bypass: bool | None = None) -> list[torch.Tensor]:
    """Per-channel activation scales of ``model`` for the int8 scheme, from 8-bit luma planes of real frames.

    Layer by layer on the quantised network so far (each layer sees the error of those before);
    ``samples`` values per channel, drawn at random, choose each clip.
    """
    kind = _kind(model.config)
    rng = torch.Generator().manual_seed(seed)
    xs = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))[None, None] for p in planes]
    if not xs:
        raise WeightsError("no calibration frames")
    q = QuantESPCN(model.config, [torch.ones(w) for w in coded_widths(model.config)], bypass=bypass)
    q.load_state_dict(model.state_dict())
    convs, scales = q.convs(), []
    for i, conv in enumerate(convs[: len(q.scales)]):
        w = fake_weight(conv.weight * q.input_steps()[i][None, :, None, None])
        zs = [torch.nn.functional.conv2d(x, w, conv.bias, padding=conv.padding) for x in xs]
        flat = torch.cat([z.transpose(0, 1).flatten(1) for z in zs], 1)
        pick = flat[:, torch.randint(flat.shape[1], (min(samples, flat.shape[1]),), generator=rng)]
        if q.bypass:
            q.scales[i] = _best_bypass_scales(pick) if kind == "tanh" else _best_relu_bypass_scales(pick)
        else:
            q.scales[i] = _best_scales(pick, kind)[0]
        scales.append(q.scales[i])
        if i + 1 < len(q.scales):  # the next coded layer's input (none after the last, nor with the bypass)
            xs = [fake_activation(z, kind, q.scales[i]) for z in zs]
    return scales


# -- files -------------------------------------------------------------------------------------
def _int8_path(name: str, scale: int) -> Path:
    return Path(str(resources.files("vsr.models") / "weights")) / f"{name}_x{scale}.int8.safetensors"


def shipped_int8(name: str, scale: int) -> Path | None:
    """The int8 file shipped for ``name`` at ``scale``, or None."""
    path = _int8_path(name, scale)
    return path if path.is_file() else None


def shipped_int8_names() -> list[str]:
    """``<model> x<scale>`` of every int8 file that ships, for error messages."""
    folder = _int8_path("x", 2).parent
    return sorted(p.name.removesuffix(".int8.safetensors").replace("_x", " x") for p in folder.glob("*.int8.safetensors"))


def save_int8(model: ESPCN, scales: Sequence[torch.Tensor], path: str | os.PathLike[str], *,
              source: str | os.PathLike[str], **metadata: Any) -> Path:
    """Write fine-tuned weights and activation scales; ``source`` is the fp32 weight file they come from."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"int8 files are safetensors; name it <model>_x<scale>.int8.safetensors, not {path.name!r}")
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    for i, sc in enumerate(scales):
        state[f"quant.scale.{i}"] = torch.as_tensor(sc, dtype=torch.float32).flatten().contiguous()
    meta = {"config": json.dumps(model.config.to_dict()), "scheme": json.dumps(SCHEME),
            "source": json.dumps(Path(source).name), "source_sha256": json.dumps(file_sha256(source)),
            **{k: json.dumps(v) for k, v in metadata.items()}}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_int8(path: str | os.PathLike[str]) -> tuple[QuantESPCN, dict[str, Any]]:
    """The network of an int8 file (fine-tuned weights and scales) and its metadata; safetensors only (no pickle)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{str(path)!r} is not an int8 file (<model>_x<scale>.int8.safetensors)")
    state, meta = read_weights(path)
    scheme = meta.get("scheme")
    if isinstance(scheme, str) and scheme.startswith("vsr-int8-") and scheme != SCHEME:
        raise WeightsError(f"{str(path)!r} was made for int8 scheme {scheme}, and this vsr computes {SCHEME}; "
                           "re-make it from its fp32 weights with vsr train --qat")
    if scheme != SCHEME or not isinstance(meta.get("config"), dict):
        raise WeightsError(f"{str(path)!r} is not an int8 file of scheme {SCHEME}; make one with vsr train --qat")
    config = ESPCNConfig.from_dict(meta["config"])
    scales = [state.pop(f"quant.scale.{i}", torch.zeros(0)) for i in range(len(coded_widths(config)))]
    model = QuantESPCN(config, scales)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{str(path)!r} does not fit its own config: {str(exc).splitlines()[0]}") from None
    return model.eval(), meta
