"""ESPCN on 8-bit planes as oneDNN int8 convolutions: the int8 CPU path of :mod:`vsr.engine`.

Computes the scheme of :mod:`vsr.quantize` (the same one ``vsr train --qat`` fine-tunes)
with PyTorch's oneDNN int8 operators, the ones inductor's x86 quantisation lowers to
(``torch.ops.onednn.qconv_prepack`` / ``qconv2d_pointwise``): weights prepacked once,
activations uint8 in channels_last memory from layer to layer, integer dot products on
AVX512-VNNI / AVX-VNNI, or AMX-INT8 where the CPU has it. (oneDNN runs these operators on AVX2 alone too,
but not exactly: on an AMD Zen 3 espcn x4 came out 4 output levels off its scheme, likely int16 saturation
of paired products, which VNNI does not have (``tools/engine_checks.py int8-exact``); one more reason
:func:`~vsr.engine.use_int8` refuses int8 without the instructions.)

* The first layer reads the uint8 plane itself (exact). Every layer's input is uint8 codes
  at scale 1 with a per-tensor zero point: the per-channel scales are folded into the
  weights before they are quantised, exactly as the simulation does.
* ReLU layers fuse the activation and the requantisation into the convolution. Tanh layers
  write the pre-activation's uint8 code and turn it into the activation's code with one
  256-entry table pass (``cv2.LUT``, in place): oneDNN's int8 convolution in PyTorch has no
  tanh post-op, and a float tanh pass over the widest (first) layer costs more than all
  three convolutions.
* The last hidden layer (scheme v2) is an int8 convolution writing fp32: dequantised inside
  oneDNN (int32 accumulation times the weight scales, plus the fp32 bias; ReLU as its post-op),
  tanh in place in fp32 over its 32 (espcn) channels, as ``sigmoid(2z) - 1/2 = tanh(z) / 2``: the 2
  in the weight scales and bias, the 1/2 in the last layer's weights (both exact, powers of two), and
  a zero-padded border still means tanh = 0. PyTorch's ``tanh_`` is the slow one of the two on AMD
  Zen 4: 12.8 ms on this layer's output against 3.5 ms for ``sigmoid_`` and the subtraction (espcn x3
  640x360, 2 threads; ``tools/int8_breakdown.py``, and ``--alternatives`` for the two side by side).
  The last layer is an fp32 oneDNN
  convolution on that (weights reordered once, ``max_value`` folded in, ``+ 0.5`` in the bias,
  the clamp as its hardtanh post-op); the truncating integer copy rounds, as the fp32 path
  rounds, and the periodic shuffle and the integer conversion are one strided copy. Against
  scheme v1 (8-bit codes of that layer, the last layer as two int8 weight halves), espcn x3
  640x360, one thread, oneDNN capped to AVX512_CORE_BF16: 69.6 -> 72.3 ms a frame with the
  machine loaded (bf16 fused: 194 ms), for about half the quantisation noise on a real clip.
* Scheme v4's linear bypass: for tanh (espcn), layer 1's table gives the code of tanh's residual
  ``tanh(k s) - k s`` instead of tanh's; for ReLU (espcn-fast), the channels that code ``relu(-z)`` have their
  weights and bias negated in layer 1 (the fused ReLU does the rest). Layer 2's int8 convolution reads those codes,
  and its fp32 output gets the linear part (of the channels that have one) added in place before the activation:
  an fp32 oneDNN convolution of the plane itself with the composite kernel ``w2 o w1`` (7x7 for espcn, weights
  reordered once, ``w2``'s sums times ``b1`` as its bias), the add into layer 2's output (and for ReLU the ReLU)
  its post-ops. On the outermost ring, where layer 1's zero padding is in reach, what the composite adds for the
  pre-activation outside the image is first taken off layer 2's output (``_take_off_ring``). (A one-channel
  NCHW input takes PyTorch's slow generic ``conv2d``; the channels_last oneDNN call with reordered weights is the
  fast one.)
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

from ..quantize import QuantESPCN, quantized_weight, residual_table, tanh_table
from ._fused_bf16 import cache_tile, write_shuffled

__all__ = ["Int8CpuNet"]

# (packed weight, weight scales, bias, padding, input zero point, output zero point); codes at scale 1
_Layer = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int], int, int]
# the last layer, fp32: (reordered weight, bias, padding, clamp bounds)
_Last = tuple[torch.Tensor, torch.Tensor, list[int], list[float]]
# scheme v4's linear bypass, fp32, for the channels that have one: (composite weight, its bias, layer 1's weight per
# input code, its bias, layer 2's weight); all but layer 1's times tanh's sigmoid-trick 2
_Bypass = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class Int8CpuNet:
    """A :class:`~vsr.quantize.QuantESPCN` as oneDNN int8 convolutions (and an fp32 last layer), uint8 planes in and out."""

    def __init__(self, model: QuantESPCN) -> None:
        self.scale = model.scale
        self.kind = model.kind
        self._model = model
        self._widest = max(model.config.widths)
        self._tables = []  # tanh's: the residual's codes with the bypass, else tanh's; ReLU is fused in the conv
        if self.kind == "tanh":
            self._tables = [residual_table(model.scales[0])] if model.bypass else [tanh_table(s) for s in model.scales]
        self._packed: dict[int, tuple[list[_Layer], _Last, _Bypass | None]] = {}
        self._zero_points: dict[int, torch.Tensor] = {}  # out channels -> the weights' zero points (0)

    @staticmethod
    def supported(model: object, device: torch.device) -> bool:
        return (
            device.type == "cpu"
            and isinstance(model, QuantESPCN)
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.onednn, "qconv_prepack")
            and hasattr(torch.ops.onednn, "qconv2d_pointwise")
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        )

    @torch.no_grad()
    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The scheme simulated in float (:class:`~vsr.quantize.QuantESPCN`) on ``x`` in [0, 1]."""
        return self._model(x.float())

    def simulated(self, planes: torch.Tensor, max_value: int = 255) -> torch.Tensor:
        """What ``self(planes, max_value)`` computes, by the float simulation: rounded integer planes of ``planes``'s
        dtype. The engine equals it but for rare one-level roundings on CPUs with VNNI/AMX-INT8."""
        out = self.reference(planes.float() / max_value).mul_(max_value).round_().clamp_(0, max_value)
        return out.to(planes.dtype)

    def cache_tile(self, shape: torch.Size) -> int:
        """LR tile side that keeps a frame batch's activations (one byte a channel) in cache, or 0."""
        return cache_tile(shape, self._widest)

    def _pack(self, max_value: int, in_size: list[int]) -> tuple[list[_Layer], _Last, _Bypass | None]:
        """Per int8 layer: weights quantised with every scale folded in (see :mod:`vsr.quantize`), prepacked
        once; the fp32 last layer reordered once; scheme v4's composite."""
        packed = self._packed.get(max_value)
        if packed is None:
            layers: list[_Layer] = []
            model = self._model
            convs, steps = model.convs(), model.input_steps()
            steps[0] = torch.full((1,), 1 / max_value)
            x_zp = 0
            for i, conv in enumerate(convs[:-1]):
                w = conv.weight.detach() * steps[i][None, :, None, None]
                bias = conv.bias.detach().float()
                if i == 0 and self.kind == "relu":  # the ReLU bypass: the linear channels code relu(-z)
                    sign = torch.where(model.linear_channels(), -1.0, 1.0)
                    w, bias = w * sign[:, None, None, None], bias * sign
                wq, ws = quantized_weight(w)
                out_zp = 0
                if i < len(model.scales):  # uint8 codes out at scale 1: 1/s folded into the weight scales and bias
                    out_zp = 128 if self.kind == "tanh" else 0
                    ws, bias = ws / model.scales[i].abs(), bias / model.scales[i].abs()
                elif self.kind == "tanh":  # fp32 out, activated as sigmoid(2z) - 1/2 = tanh(z) / 2: 2 folded in
                    ws, bias = ws * 2, bias * 2
                layers.append((self._prepacked(wq, ws.contiguous(), x_zp, conv.padding), ws.contiguous(),
                               bias.contiguous(), list(conv.padding), x_zp, out_zp))
                x_zp = out_zp
            last = convs[-1]  # fp32, in output levels: times max_value, + 0.5 (the truncating copy rounds)
            gain = 2 * max_value if self.kind == "tanh" else max_value  # tanh(z) came in halved
            w = (last.weight.detach().float() * gain).contiguous(memory_format=torch.channels_last)
            size = [in_size[0], w.shape[1], in_size[2], in_size[3]]
            w = torch.ops.mkldnn._reorder_convolution_weight(w, list(last.padding), [1, 1], [1, 1], 1, size)
            packed = (layers, (w, (last.bias.detach().float() * max_value + 0.5).contiguous(), list(last.padding),
                               [0.0, max_value + 0.49]),
                      self._bypass(steps[0], in_size))
            self._packed[max_value] = packed
        return packed

    def _bypass(self, step: torch.Tensor, in_size: list[int]) -> _Bypass | None:
        """Scheme v4's linear part for the channels that have one (:meth:`~vsr.quantize.QuantESPCN.linear_channels`),
        or None."""
        linear = self._model.linear_channels()
        if not bool(linear.any()):
            return None
        conv1, conv2 = self._model.convs()[:2]
        gain = 2 if self.kind == "tanh" else 1  # the sigmoid trick's 2 (see the module docstring)
        return self._composite((conv1.weight.detach().float() * step)[linear], conv1.bias.detach().float()[linear],
                               conv2.weight.detach().float()[:, linear] * gain, in_size)

    @staticmethod
    def _composite(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, in_size: list[int]) -> _Bypass:
        """Scheme v4's linear part: layer 2's fp32 weights on layer 1's exact pre-activation ``z = w1 * x + b1`` are
        one convolution of the plane, ``(w2 o w1) * x`` (7x7 for espcn's 5x5 and 3x3, 5x5 for espcn-fast), plus ``w2``'s
        sums times ``b1``, wherever ``z``'s zero padding (outside the image) is not in reach: every pixel but
        the outermost ring, which :meth:`_linear_part` computes as the float network does."""
        # (w2 o w1)[t] = sum over a of w2[a] w1[t - a]: w1 zero-padded, correlated with w2 flipped
        composite = torch.nn.functional.conv2d(torch.nn.functional.pad(w1.transpose(0, 1), [w2.shape[-1] - 1] * 4),
                                               w2.flip(2, 3)).transpose(0, 1).contiguous()
        pad = (composite.shape[-1] - 1) // 2  # an fp32 oneDNN convolution, its weight reordered once
        composite = torch.ops.mkldnn._reorder_convolution_weight(
            composite.contiguous(memory_format=torch.channels_last), [pad, pad], [1, 1], [1, 1], 1, in_size)
        return composite, (w2.sum((2, 3)) @ b1).contiguous(), w1.contiguous(), b1.contiguous(), w2.contiguous()

    @staticmethod
    def _add_linear_part(y: torch.Tensor, x: torch.Tensor, bypass: _Bypass, relu: bool = False) -> torch.Tensor:
        """``y`` (layer 2's fp32 output, channels_last) plus layer 2's fp32 weights on layer 1's exact pre-activation
        of the plane ``x`` (zero outside the image; for tanh times the sigmoid trick's 2), in place, then ReLU if
        asked: :meth:`_take_off_ring`, then :meth:`_add_composite`."""
        xf = x.float()
        Int8CpuNet._take_off_ring(y, xf, bypass)
        return Int8CpuNet._add_composite(y, xf, bypass, relu)

    @staticmethod
    def _add_composite(y: torch.Tensor, xf: torch.Tensor, bypass: _Bypass, relu: bool) -> torch.Tensor:
        """``y`` plus the composite convolution of the plane ``xf`` (fp32), in place: oneDNN's ``add`` post-op (ReLU
        after it), which saves a pass over ``y`` and the composite's own output tensor."""
        composite, bias, w1, _, w2 = bypass
        pad = w1.shape[-1] // 2 + w2.shape[-1] // 2
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            y, xf.contiguous(memory_format=torch.channels_last), composite, bias, [pad, pad], [1, 1], [1, 1], 1,
            "add", 1.0, "relu" if relu else None, [], "")

    @staticmethod
    def _take_off_ring(y: torch.Tensor, xf: torch.Tensor, bypass: _Bypass) -> None:
        """What the composite adds on the outermost ring for ``z`` outside the image, taken off ``y`` in advance.

        The composite sees ``z = w1 * x + b1`` everywhere, also on the band of ``z`` just outside the image
        that layer 2's kernel reaches from the ring, where the float network has layer 1's zero padding. So
        that band's ``z`` (64 channels on a line of pixels around the frame, from layer 1's fp32 weights on
        the zero-padded plane ``xf``) goes through the rows (columns) of ``w2`` that reach it and is subtracted:
        the four sides are disjoint (the top and bottom bands include the corners, the side bands are zero-padded
        where they would meet them), so every outside position is taken off once. For espcn at 640x360 about
        5 MMAC a side for the rows, against 51 MMAC for the float network's two convolutions on 4-row strips."""
        _, _, w1, b1, w2 = bypass
        conv2d, pad_ = torch.nn.functional.conv2d, torch.nn.functional.pad
        p1, p2 = w1.shape[-1] // 2, w2.shape[-1] // 2
        h, w = xf.shape[-2:]
        xp = pad_(xf, [p1 + p2] * 4)  # the plane as the composite sees it
        reach = p2 + 2 * p1  # plane rows (columns) that fix a band p2 deep
        # z on the bands: rows -p2..-1 and h..h+p2-1 over every column the ring reaches; columns likewise over the
        # image's rows only. A band p2 deep reaches output rows 0..p2-1 through kernel rows 0..p2-1 (the bottom's
        # through the last p2): p2 - 1 zero rows on the image side make the valid convolution's output p2 deep.
        top, bottom = conv2d(xp[:, :, :reach], w1, b1), conv2d(xp[:, :, h + p2:], w1, b1)
        left = conv2d(xp[:, :, p2:h + p2 + 2 * p1, :reach], w1, b1)
        right = conv2d(xp[:, :, p2:h + p2 + 2 * p1, w + p2:], w1, b1)
        y[:, :, :p2] -= conv2d(pad_(top, [0, 0, 0, p2 - 1]), w2[:, :, :p2])
        y[:, :, h - p2:] -= conv2d(pad_(bottom, [0, 0, p2 - 1, 0]), w2[:, :, p2 + 1:])
        y[:, :, :, :p2] -= conv2d(pad_(left, [0, p2 - 1, p2, p2]), w2[:, :, :, :p2])
        y[:, :, :, w - p2:] -= conv2d(pad_(right, [p2 - 1, 0, p2, p2]), w2[:, :, :, p2 + 1:])

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
        (*coded, (w_f, s_f, b_f, pad_f, xzp_f, _)), (w_last, b_last, pad_last, bounds), bypass = self._pack(
            max_value, list(planes.shape))
        act = "relu" if self.kind == "relu" else "none"
        for i, (weight, ws, bias, pad_i, xzp_i, ozp) in enumerate(coded):
            y = torch.ops.onednn.qconv2d_pointwise(
                y, 1.0, xzp_i, weight, ws, self._zeros(len(ws)), bias, [1, 1], pad_i, [1, 1], 1, 1.0, ozp,
                None, act, [], "")
            if self._tables:
                codes = y.permute(0, 2, 3, 1).numpy().reshape(-1, y.shape[3], y.shape[1])  # channels_last: a view
                cv2.LUT(codes, self._tables[i], dst=codes)
        # the last hidden layer: int8 in, dequantised to fp32 by oneDNN, activated in fp32
        y = torch.ops.onednn.qconv2d_pointwise(
            y, 1.0, xzp_f, w_f, s_f, self._zeros(len(s_f)), b_f, [1, 1], pad_f, [1, 1], 1, 1.0, 0, torch.float32,
            "none" if bypass is not None else act, [], "")
        if bypass is not None:  # scheme v4: y held layer 2 on the codes; add its linear part, then activate
            y = self._add_linear_part(y, planes, bypass, relu=self.kind == "relu")
        if self.kind == "tanh":
            y.sigmoid_().sub_(0.5)  # tanh(z) / 2 of the pre-activation z (2z came out): see the module docstring
        # fp32 last layer; value + 0.5 (in the bias), clamped by the post-op, truncated by the integer copy
        out = torch.ops.mkldnn._convolution_pointwise(y, w_last, b_last, pad_last, [1, 1], [1, 1], 1, "hardtanh",
                                                      bounds, "")
        return write_shuffled(out, self.scale, planes.dtype)
