"""ESPCN on 8-bit planes as oneDNN int8 convolutions: the int8 CPU path of :mod:`vsr.engine`.

Computes the scheme of :mod:`vsr.quantize` (the same one ``vsr train --qat`` fine-tunes)
with PyTorch's oneDNN int8 operators, the ones inductor's x86 quantisation lowers to
(``torch.ops.onednn.qconv_prepack`` / ``qconv2d_pointwise``): weights prepacked once,
activations uint8 in channels_last memory from layer to layer, integer dot products on
AVX512-VNNI / AVX-VNNI, or AMX-INT8 where the CPU has it.

* The first layer reads the uint8 plane itself (exact). Every layer's input is uint8 codes
  at scale 1 with a per-tensor zero point: the per-channel scales are folded into the
  weights before they are quantised, exactly as the simulation does.
* ReLU layers fuse the activation and the requantisation into the convolution. Tanh layers
  write the pre-activation's uint8 code and turn it into the activation's code with one
  256-entry table pass (``cv2.LUT``, in place): oneDNN's int8 convolution in PyTorch has no
  tanh post-op, and a float tanh pass costs more than all three convolutions.
* The last layer (weights as two int8 halves) is two convolutions writing fp32, the second
  summed onto the first by oneDNN's sum post-op, dequantised inside oneDNN (accumulation times
  the weight scales, plus the fp32 bias, with ``max_value`` folded in); the result is rounded
  and clamped once to the output's levels (``+ 0.5`` in the bias, a clamp, the truncating copy), as the fp32 path rounds: no 8-bit requantisation with a calibrated scale. The
  periodic shuffle and the integer conversion are one strided copy.
* Padding: a zero-padded border holds the real value 0, i.e. the input's zero point (0 for
  the plane, 128 for tanh codes, 0 for ReLU codes), as in the float network.

Only 8-bit planes take this path: a deeper sample does not fit the first layer's uint8
input exactly, so :class:`~vsr.engine.LumaUpscaler` sends 10/12/16-bit planes through
the fused bf16/fp32 path (:mod:`._fused_bf16`, exact input by its two-byte split) instead.

ONNX Runtime's QDQ static quantisation (``quantize_static``, per-channel, uint8
activations) was measured against this on the same frames: slower than ONNX Runtime's own
fp32 (69 vs 48 ms for espcn x3 at 640x360, 2 threads; tanh runs between dequantise and
quantise nodes), where this path takes about 10 ms on the machine of the commit message.
"""

from __future__ import annotations

import cv2
import torch

from ..quantize import QuantESPCN, quantized_weight, split_weight, tanh_table
from ._fused_bf16 import cache_tile, write_shuffled

__all__ = ["Int8CpuNet"]

# (packed weight, weight scales, bias, padding, input zero point, output zero point); codes at scale 1
_Layer = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int], int, int]


class Int8CpuNet:
    """A :class:`~vsr.quantize.QuantESPCN` as oneDNN int8 convolutions, uint8 planes in and out."""

    def __init__(self, model: QuantESPCN) -> None:
        self.scale = model.scale
        self.kind = model.kind
        self._model = model
        self._widest = max(model.config.widths)
        self._tables = [tanh_table(s) for s in model.scales] if self.kind == "tanh" else []
        self._packed: dict[int, list[_Layer]] = {}
        self._zero_points: dict[int, torch.Tensor] = {}  # out channels -> the weights' zero points (0)

    @staticmethod
    def supported(model: object, device: torch.device) -> bool:
        return (
            device.type == "cpu"
            and isinstance(model, QuantESPCN)
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.onednn, "qconv_prepack")
            and hasattr(torch.ops.onednn, "qconv2d_pointwise")
        )

    @torch.no_grad()
    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The scheme simulated in float (:class:`~vsr.quantize.QuantESPCN`) on ``x`` in [0, 1]."""
        return self._model(x.float())

    def cache_tile(self, shape: torch.Size) -> int:
        """LR tile side that keeps a frame batch's activations (one byte a channel) in cache, or 0."""
        return cache_tile(shape, self._widest)

    def _pack(self, max_value: int) -> list[_Layer]:
        """Per layer: weights quantised with every scale folded in (see :mod:`vsr.quantize`), prepacked once."""
        packed = self._packed.get(max_value)
        if packed is None:
            packed = []
            model = self._model
            convs, steps = model.convs(), model.input_steps()
            steps[0] = torch.full((1,), 1 / max_value)
            x_zp = 0
            for i, conv in enumerate(convs):
                w = conv.weight.detach() * steps[i][None, :, None, None]
                bias = conv.bias.detach().float()
                if i < len(convs) - 1:  # uint8 codes out at scale 1: 1/s folded into the weight scales and bias
                    wq, ws = quantized_weight(w)
                    out_zp = 128 if self.kind == "tanh" else 0
                    ws, bias = ws / model.scales[i], bias / model.scales[i]
                else:  # two int8 halves, each dequantised in output levels: hi (+ bias + 0.5), lo summed onto it
                    wq, ws = split_weight(w)
                    o = len(bias)
                    for part, b in ((slice(0, o), bias * max_value + 0.5), (slice(o, 2 * o), None)):
                        scales = (ws[part] * max_value).contiguous()
                        packed.append((self._prepacked(wq[part], scales, x_zp, conv.padding), scales,
                                       b, list(conv.padding), x_zp, 0))
                    break
                packed.append((self._prepacked(wq, ws.contiguous(), x_zp, conv.padding), ws.contiguous(), bias.contiguous(),
                               list(conv.padding), x_zp, out_zp))
                x_zp = out_zp
            self._packed[max_value] = packed
        return packed

    @staticmethod
    def _prepacked(wq: torch.Tensor, ws: torch.Tensor, x_zp: int, padding: tuple[int, ...]) -> torch.Tensor:
        return torch.ops.onednn.qconv_prepack(wq.contiguous(memory_format=torch.channels_last), ws, 1.0, x_zp,
                                              [1, 1], list(padding), [1, 1], 1, None)

    def _zeros(self, n: int) -> torch.Tensor:
        """The weights' zero points (0), one per output channel."""
        zeros = self._zero_points.get(n)
        if zeros is None:
            zeros = self._zero_points[n] = torch.zeros(n, dtype=torch.int64)
        return zeros

    def __call__(self, planes: torch.Tensor, max_value: int = 255) -> torch.Tensor:
        if max_value > 255 or planes.dtype != torch.uint8:
            raise ValueError("the int8 path takes 8-bit planes (uint8); deeper ones go through the fused path")
        y = planes.contiguous(memory_format=torch.channels_last)
        *hidden, (w_hi, s_hi, b_hi, pad, xzp, _), (w_lo, s_lo, _, _, _, _) = self._pack(max_value)
        for i, (weight, ws, bias, pad_i, xzp_i, ozp) in enumerate(hidden):
            y = torch.ops.onednn.qconv2d_pointwise(
                y, 1.0, xzp_i, weight, ws, self._zeros(len(ws)), bias, [1, 1], pad_i, [1, 1], 1, 1.0, ozp,
                None, "relu" if self.kind == "relu" else "none", [], "")
            if self._tables:
                codes = y.permute(0, 2, 3, 1).numpy().reshape(-1, y.shape[3], y.shape[1])  # channels_last: a view
                cv2.LUT(codes, self._tables[i], dst=codes)
        zeros = self._zeros(len(s_hi))
        out = torch.ops.onednn.qconv2d_pointwise(
            y, 1.0, xzp, w_hi, s_hi, zeros, b_hi, [1, 1], pad, [1, 1], 1, 1.0, 0, torch.float32, "none", [], "")
        out = torch.ops.onednn.qconv2d_pointwise.binary(
            y, 1.0, xzp, w_lo, s_lo, zeros, out, None, [1, 1], pad, [1, 1], 1, 1.0, 0, torch.float32,
            1.0, 0, "sum", 1.0, "none", [], "")
        # value + 0.5 (in the bias), clamped, truncated by the integer copy: rounded to the output's levels
        out.clamp_(0, max_value + 0.49)
        return write_shuffled(out, self.scale, planes.dtype)
