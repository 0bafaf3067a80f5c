"""ESPCN on integer planes as prepacked oneDNN convolutions: the CPU fast path of :mod:`vsr.engine`.

Profiling the eager module on CPU (bf16, 360p, x3) showed two thirds of the time in
``tanh`` as a separate pass and most of the rest in per-call weight reordering and float
post-processing. Here the weights are reordered once into oneDNN's blocked layout, each
convolution applies its activation as a post-op, ``1/max_value`` is folded into the first
layer and ``max_value`` into the last (which also clamps as a post-op), so integer planes
go in and the last layer's output only needs rounding and the periodic shuffle, which is
written straight into the integer output.

bf16 keeps 8 significant bits, and three places lost more than the activations must:

* **First-layer weights.** Rounding them to bf16 changes each filter's DC gain, which on
  real video shifted every output pixel by about -0.2 levels (-0.2 dB). Each weight is
  sent as two bf16 halves, ``w = hi + lo``, against two copies of the input channel:
  the exact fp32 filter for one extra input channel (about 7 % more multiply-adds).
* **Input samples** above 255 (10-bit and deeper video) are not exact in bf16; they go in
  as ``256·hi + lo`` with both bytes exact, each with its own pair of weight halves.
* **Output.** Biases stay fp32, and the last layer outputs ``value - offset`` (offset
  about half of ``max_value``), so 8-bit output values lie within ±128 where bf16 still
  resolves half a level; above 8 bits no bf16 output is fine enough, so the last layer
  runs in fp32 there.

* **Later layers' weights.** Rounding them shifts each filter's response to the average
  activation: a mean output offset of up to 0.1 level (espcn-fast). The fp32 bias absorbs
  the shift estimated on flat grey frames (:meth:`FusedCpuNet._rounding_shift`).

Measured on mdn_flower (four 320x180 frames, x3, shipped espcn): PSNR against the
original 42.62 dB in fp32; bf16 before these changes 42.42, after 42.57 (mean output
offset against fp32 -0.25 level before, 0.03 after; espcn-fast x2 0.10 -> -0.02).
"""

from __future__ import annotations

import torch

from ..models import ESPCN

_ACTIVATIONS = {"tanh": "tanh", "relu": "relu"}  # ESPCN activation -> oneDNN post-op

_Layer = tuple[torch.Tensor, torch.Tensor, list[int], str, torch.dtype]

# Cache blocking: the widest layer's activations of a whole 960x540 frame (64 channels, bf16:
# 66 MB) stream through memory between layers; tiles of ~8 MiB of them stay in cache. Measured
# by tools/engine_checks.py cache-tiles (1 thread, bf16, x2): espcn 960x540 93 -> 60 ms,
# 1920x1080 454 -> 239 ms; espcn-fast 1920x1080 188 -> 108 ms; frames under ~32 MiB
# (640x360 espcn: 28 ms) gained nothing.
_TILE_ABOVE_BYTES = 32 << 20
_TILE_BYTES = 8 << 20


def _bytes_of(max_value: int) -> int:
    """How many 8-bit parts an input sample is split into for bf16 (1 for 8-bit video)."""
    return 1 if max_value <= 255 else 2


class FusedCpuNet:
    """An ESPCN's convolutions as oneDNN calls with fused activations, integer planes in and out."""

    def __init__(self, model: ESPCN, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.scale = model.scale
        act = _ACTIVATIONS[model.config.activation]
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        self._layers = [
            (m.weight.detach().float().cpu(), m.bias.detach().float().cpu(), list(m.padding),
             act if i < len(convs) - 1 else "hardtanh")  # the last layer clamps to the output range
            for i, m in enumerate(convs)
        ]
        self._packed: dict[int, list[_Layer]] = {}
        self._widest = max(w.shape[0] for w, *_ in self._layers)
        self._means = self._mean_activations()

    @staticmethod
    def supported(model: ESPCN, device: torch.device, dtype: torch.dtype) -> bool:
        return (
            device.type == "cpu"
            and dtype in (torch.float32, torch.bfloat16)
            and model.config.activation in _ACTIVATIONS
            and model.config.channels == 1
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        )

    def cache_tile(self, shape: torch.Size) -> int:
        """LR tile side that keeps a frame batch's activations in cache, or 0 (whole frames)."""
        return cache_tile(shape, self._widest * torch.finfo(self.dtype).bits // 8)

    @property
    def _split(self) -> bool:
        return self.dtype == torch.bfloat16

    @staticmethod
    def _offset(max_value: int) -> int:
        return (max_value + 1) // 2

    def _first_weights(self, w: torch.Tensor, max_value: int) -> torch.Tensor:
        """Layer 1's (o, 1, k, k) filter over the input channels :meth:`_input` makes."""
        w = w / max_value
        if not self._split:
            return w
        parts = []
        for j in reversed(range(_bytes_of(max_value))):  # high byte first, as _input stacks them
            v = w * (256**j)
            hi = v.to(torch.bfloat16).float()
            parts += [hi, v - hi]
        return torch.cat(parts, 1)

    def _pack(self, max_value: int, in_size: list[int]) -> list[_Layer]:
        packed = self._packed.get(max_value)
        if packed is None:
            packed = []
            last = len(self._layers) - 1
            for i, (w, b, pad, act) in enumerate(self._layers):
                dtype = self.dtype
                if i == 0:
                    w = self._first_weights(w, max_value)
                if i == last:
                    w, b = w * max_value, b * max_value - self._offset(max_value)
                    if max_value > 255:
                        dtype = torch.float32  # no bf16 output resolves one level above 8 bits
                if i > 0 and dtype == torch.bfloat16:
                    b = b - self._rounding_shift(w, i)
                w = w.to(dtype).contiguous(memory_format=torch.channels_last)
                size = [in_size[0], w.shape[1], in_size[2], in_size[3]]
                w = torch.ops.mkldnn._reorder_convolution_weight(w, pad, [1, 1], [1, 1], 1, size)
                packed.append((w, b.float(), pad, act, dtype))
            self._packed[max_value] = packed
        return packed

    def _mean_activations(self) -> list[torch.Tensor]:
        """Each hidden layer's mean activation per channel over flat grey frames (levels 16-235), fp32."""
        y = torch.linspace(16 / 255, 235 / 255, 23).reshape(-1, 1, 1, 1).expand(-1, 1, 9, 9)
        means = []
        with torch.no_grad():
            for w, b, pad, act in self._layers[:-1]:
                y = torch.nn.functional.conv2d(y, w, b, padding=pad)
                y = torch.tanh(y) if act == "tanh" else torch.relu(y)
                means.append(y[:, :, 4, 4].mean(0))  # the centre: no border padding reaches it
        return means

    def _rounding_shift(self, w: torch.Tensor, layer: int) -> torch.Tensor:
        """The mean output shift rounding ``w`` to bf16 causes, per output channel (to take off the bias).

        Rounding a filter's weights changes its response to the average input; over a frame that is
        a constant offset (a brightness shift at the last layer). Estimated on the fp32 network's
        activations of flat grey frames: "bias correction" (Nagel et al., ICCV 2019, data-free).
        """
        error = w.to(torch.bfloat16).float() - w  # (o, i, k, k)
        return (error.sum((2, 3)) * self._means[layer - 1]).sum(1)

    def _input(self, planes: torch.Tensor, max_value: int) -> torch.Tensor:
        """Integer planes as the first layer's channels_last input (see the module docstring)."""
        if not self._split:
            return planes.to(self.dtype).contiguous(memory_format=torch.channels_last)
        n, _, h, w = planes.shape
        parts = [planes] if _bytes_of(max_value) == 1 else [planes >> 8, planes & 255]
        x = torch.empty((n, h, w, 2 * len(parts)), dtype=self.dtype)
        for j, part in enumerate(parts):
            x[..., 2 * j : 2 * j + 2].copy_(part.permute(0, 2, 3, 1).expand(-1, -1, -1, 2))
        return x.permute(0, 3, 1, 2)  # (N, C, h, w) in channels_last memory

    def __call__(self, planes: torch.Tensor, max_value: int) -> torch.Tensor:
        r = self.scale
        offset = self._offset(max_value)
        y = self._input(planes, max_value)
        for weight, bias, pad, act, dtype in self._pack(max_value, list(planes.shape)):
            scalars = [float(-offset), float(max_value - offset)] if act == "hardtanh" else [None]
            y = torch.ops.mkldnn._convolution_pointwise(
                y.to(dtype), weight, bias, pad, [1, 1], [1, 1], 1, act, scalars, "")
        y = y.round_().add_(offset)  # integers, exact in the output dtype
        return write_shuffled(y, r, planes.dtype)


def cache_tile(shape: torch.Size, per_pixel: int) -> int:
    """LR tile side that keeps a frame batch's widest activations (``per_pixel`` bytes) in cache, or 0."""
    n, _, h, w = shape
    if n * h * w * per_pixel <= _TILE_ABOVE_BYTES:
        return 0
    return max(64, round((_TILE_BYTES / (n * per_pixel)) ** 0.5 / 32) * 32)


def write_shuffled(y: torch.Tensor, r: int, dtype: torch.dtype) -> torch.Tensor:
    """The periodic shuffle of the last layer's integer-valued ``(N, r², h, w)`` output, as ``dtype`` planes.

    ``y`` is in channels_last memory, i.e. ``(N, h, w, r·r)``: the shuffle and the integer
    conversion are one strided copy.
    """
    n, _, h, w = y.shape
    out = torch.empty((n, 1, h * r, w * r), dtype=dtype)
    out.view(n, h, r, w, r).copy_(y.permute(0, 2, 3, 1).reshape(n, h, w, r, r).permute(0, 1, 3, 2, 4))
    return out
