"""Running a model on pixel planes: tiling, integer I/O, the out-of-memory fallback.

Synchronous by design: the streaming pipeline (:mod:`vsr.pipeline`) owns threads and
CUDA streams and calls into this module. The live preview, the Python API and the
benchmarks use the same :class:`LumaUpscaler`, so every path upscales the same way.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ..errors import DeviceError, WeightsError
from ..models import ESPCN, create_model, shipped_weights
from ..quantize import QuantESPCN, load_int8, shipped_int8, shipped_int8_names
from ._devices import (cpu_has_native_bf16, exact_levels, float_advice, resolve_device, resolve_precision,
                       strict_fp32, use_int8)
from ._fused_bf16 import FusedCpuNet
from ._heap import keep_freed_heap
from ._int8 import Int8CpuNet

if TYPE_CHECKING:
    from ..config import PipelineConfig

__all__ = ["LumaUpscaler", "int8_model", "upscaler_from_config"]

log = logging.getLogger("vsr")

_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_MIN_TILE = 64  # the out-of-memory fallback halves the tile down to this size, then gives up


# torch.OutOfMemoryError exists from torch 2.5 (setup.py allows 2.1); torch.cuda's from 1.13.
_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    {t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
     if isinstance(t, type)}
)
# Raised outside PyTorch's caching allocator (kernel launches, cuDNN/cuBLAS workspaces, the CPU
# allocator) as plain RuntimeErrors: "CUDA error: out of memory", "CUDA out of memory" (torch < 1.13).
_OOM_MESSAGES = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED", "can't allocate memory")


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, _OOM_TYPES) or any(m in str(exc) for m in _OOM_MESSAGES)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class _Tiling:
    tile: int  # LR pixels per side of a tile's core
    halo: int  # LR pixels of context on each side


@functools.cache
def _warn_software_bf16() -> None:
    """Once a process: bf16 asked for on a CPU that emulates it (on an AVX2-only AMD EPYC, Zen 3, espcn x3 at
    640x360 inferred at 1.0 fps in bf16 against 8.7 in fp32: docs/PERFORMANCE.md, session 9)."""
    log.warning("this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 runs in software, several times slower "
                "than fp32; use --precision fp32 (or auto, which picks fp32 here)")


class LumaUpscaler:
    """Upscales integer luma planes with an ESPCN on one device and precision.

    Input: an integer tensor ``(N, 1, h, w)`` (uint8, or int16/int32 holding up to
    ``max_value``) on ``device``; output: the same dtype, ``(N, 1, r·h, r·w)``, rounded
    and clamped to ``[0, max_value]``.

    Frames larger than ``tile`` LR pixels (0: never) are processed in tiles that
    overlap by the network's receptive field, so the result equals the untiled one. With
    ``tile=0`` the fused CPU path still tiles large frames for cache locality
    (:meth:`FusedCpuNet.cache_tile`), with the same result.
    On out-of-memory (CUDA, or the CPU allocator) the tile size is halved, down to 64
    pixels, and the call retried; the smaller tile is kept for later calls.

    On CPU, integer planes of tanh/ReLU models go through :class:`FusedCpuNet` (oneDNN
    convolutions with fused activations; ``fused=False`` keeps the plain module);
    :meth:`forward_float` always runs the module.

    ``int8=True`` (``model`` a :class:`~vsr.quantize.QuantESPCN`, from an int8 file): 8-bit
    planes go through :class:`Int8CpuNet` (oneDNN int8 convolutions); deeper planes, whose
    samples do not fit its uint8 input, through the fused path at ``dtype`` with the same
    weights, and :meth:`forward_float` runs them as a plain module.
    """

    def __init__(
        self,
        model: ESPCN,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        tile: int = 0,
        channels_last: bool = True,
        fused: bool = True,
        int8: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.scale = model.scale
        if self.device.type == "cpu":
            keep_freed_heap()  # frames reuse the heap instead of page-faulting it back in (see _heap)
        if self.device.type == "cpu" and dtype == torch.bfloat16 and not int8 and not cpu_has_native_bf16():
            _warn_software_bf16()
        self.tile = tile
        self.halo = model.config.halo
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._int8: Int8CpuNet | None = None
        if int8:
            if not Int8CpuNet.supported(model, self.device):
                raise DeviceError("the int8 engine needs an int8 model (an .int8.safetensors file) on a CPU with "
                                  f"oneDNN's int8 convolutions in PyTorch; {float_advice()}")
            self._int8 = self._checked_int8(Int8CpuNet(model))
            plain = ESPCN(model.config)
            plain.load_state_dict(model.state_dict())
            model = plain
        # Built before the module is cast, from its full-precision weights.
        net = FusedCpuNet(model, dtype) if fused and FusedCpuNet.supported(model, self.device, dtype) else None
        # Deep integer planes need more significant bits than fp16/bf16 hold (see _module_for):
        # a full-precision copy, moved to the device on first use.
        self._full: ESPCN | None = copy.deepcopy(model).eval() if dtype != torch.float32 else None
        self._full_on_device = False
        if dtype == torch.float32:
            strict_fp32(self.device)
        self.model = model.eval().to(self.device, dtype=dtype, memory_format=self.memory_format)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._fused: FusedCpuNet | None = None  # set first: _checked runs the module through _run
        self._active: FusedCpuNet | Int8CpuNet | None = None  # the integer path of the current call
        self._fused = self._checked(net) if net is not None else None

    @property
    def fused(self) -> bool:
        """Whether integer planes go through the fused oneDNN path (CPU, tanh/ReLU models)."""
        return self._fused is not None

    @property
    def precision(self) -> str:
        """``int8`` on the int8 engine, else the float precision's name."""
        if self._int8 is not None:
            return "int8"
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @staticmethod
    @torch.inference_mode()
    def _checked_int8(net: Int8CpuNet) -> Int8CpuNet:
        """The int8 path, if it runs here and computes its scheme (the float simulation) on a small frame."""
        x = torch.arange(24 * 20, dtype=torch.float32).reshape(1, 1, 24, 20).mul_(37).remainder_(256)
        try:
            got = net(x.to(torch.uint8), 255).float()
        except RuntimeError as exc:  # a PyTorch or oneDNN build without these kernels
            raise DeviceError(f"the int8 engine does not run here ({str(exc).splitlines()[0][:120]}); "
                              f"{float_advice()}") from None
        want = net.simulated(x.to(torch.uint8), 255).float()
        if (got - want).abs().max().item() > 2:  # pragma: no cover - a oneDNN bug, not an input
            raise DeviceError(f"the int8 engine disagrees with its scheme on this machine; {float_advice()}")
        return net

    @torch.inference_mode()
    def _checked(self, net: FusedCpuNet) -> FusedCpuNet | None:
        """The fused path, if it runs here and agrees with the module on a small frame; else None."""
        x = torch.arange(24 * 20, dtype=torch.float32).reshape(1, 1, 24, 20).mul_(37).remainder_(256)
        try:
            got = net(x.to(torch.uint8), 255).float()
        except RuntimeError as exc:  # an old CPU or oneDNN build without these kernels
            log.debug("fused CPU path unavailable: %s", exc)
            return None
        want = self.forward_float(x / 255).float().mul_(255).round_().clamp_(0, 255)
        tolerance = 1.0 if self.dtype == torch.float32 else 8.0  # bf16: ~3 significant digits
        if (got - want).abs().max().item() > tolerance:  # pragma: no cover - a oneDNN bug, not an input
            log.warning("fused CPU path disagrees with the module; using the module")
            return None
        return net

    @torch.inference_mode()
    def forward_float(self, x: torch.Tensor) -> torch.Tensor:
        """Float planes in [0, 1] (any float dtype) → upscaled float planes (unclamped)."""
        x = x.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        return self._run(x, self.model)

    def _run(self, x: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``net`` on whole frames, or in tiles when they are larger than ``tile`` or memory runs out.

        The failed attempt's error is reduced to one line inside ``except``; cached memory is
        released and the next attempt made after it, when the traceback (and every tensor its
        frames held) is gone, and a final :class:`DeviceError` carries no chain to it.
        """
        while True:
            tile = self.tile or self._cache_tile(x)
            try:
                if tile and max(x.shape[-2:]) > tile:
                    return self._tiled(x, _Tiling(tile, self.halo), net)
                return net(x)
            except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA) is one; the CPU allocator's is plain
                if not _out_of_memory(exc):
                    raise
                reason = _first_line(exc)
            self._release_cached_memory()
            current = tile or max(x.shape[-2:])
            if current <= _MIN_TILE:
                raise DeviceError(
                    f"{self.device.type} out of memory even in {current}-pixel tiles of "
                    f"{x.shape[0]} frame(s) ({reason}); use --batch 1, a smaller model or another device"
                )
            self.tile = max(_MIN_TILE, current // 2)
            log.info("%s out of memory: processing in %d-pixel tiles from now on", self.device.type, self.tile)

    def _release_cached_memory(self) -> None:
        """Give the caching allocator's free blocks back, so that the smaller attempt can use them."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _cache_tile(self, x: torch.Tensor) -> int:
        """Tiles for speed, not memory: large integer frames on the fused or int8 CPU path (same result)."""
        if self._active is None or x.is_floating_point() or x.device.type != "cpu":
            return 0
        return self._active.cache_tile(x.shape)

    def _tiled(self, x: torch.Tensor, t: _Tiling, net: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``net`` (planes in, planes of the same dtype out) tile by tile."""
        n, c, h, w = x.shape
        r = self.scale
        out = torch.empty((n, c, h * r, w * r), device=x.device, dtype=x.dtype)
        for y0 in range(0, h, t.tile):
            for x0 in range(0, w, t.tile):
                y1, x1 = min(y0 + t.tile, h), min(x0 + t.tile, w)
                # Context from real neighbours; zeros only at the frame's own border,
                # exactly where the untiled network zero-pads too.
                ya, xa = max(0, y0 - t.halo), max(0, x0 - t.halo)
                yb, xb = min(h, y1 + t.halo), min(w, x1 + t.halo)
                patch = net(x[:, :, ya:yb, xa:xb])
                oy, ox = (y0 - ya) * r, (x0 - xa) * r
                out[:, :, y0 * r : y1 * r, x0 * r : x1 * r] = patch[
                    :, :, oy : oy + (y1 - y0) * r, ox : ox + (x1 - x0) * r
                ]
        return out

    @torch.inference_mode()
    def __call__(self, planes: torch.Tensor, max_value: int = 255) -> torch.Tensor:
        if planes.ndim != 4 or planes.shape[1] != 1:
            raise ValueError(f"expected luma planes of shape (N, 1, H, W), got {tuple(planes.shape)}")
        use_int8 = self._int8 is not None and max_value <= 255 and planes.dtype == torch.uint8
        self._active = self._int8 if use_int8 else self._fused
        if self._active is not None and planes.device.type == "cpu":
            return self._run(planes, functools.partial(self._active, max_value=max_value))
        self._active = None
        return self._run(planes.to(self.device), functools.partial(self._module_planes, max_value=max_value))

    def _module_planes(self, planes: torch.Tensor, max_value: int) -> torch.Tensor:
        """Integer planes through the module; the conversions run per attempt (and per tile), inside the retry.

        Divided by ``max_value`` in fp32 *before* the cast: a 16-bit 65535 is inf in fp16.
        """
        model, dtype = self._module_for(max_value)
        x = planes.float().div_(max_value).to(dtype).contiguous(memory_format=self.memory_format)
        y = model(x)
        return y.float().mul_(max_value).round_().clamp_(0, max_value).to(planes.dtype)

    def _module_for(self, max_value: int) -> tuple[ESPCN, torch.dtype]:
        """The module and dtype for planes of ``max_value``: the reduced one while it holds every input level.

        fp16 has 11 significant bits, so 10-bit levels are exact in it and 12-bit ones are not
        (off by up to 7 levels before any arithmetic); bf16 has 8. Deeper planes run the whole
        net in fp32 (TF32 off on CUDA): ESPCN is small, and a 16-bit picture needs ~17 bits
        through every layer, which no mix of fp16 layers gives.
        """
        if self._full is None or max_value <= exact_levels(self.dtype):
            return self.model, self.dtype
        if not self._full_on_device:
            self._full = self._full.to(self.device, memory_format=self.memory_format)
            for p in self._full.parameters():
                p.requires_grad_(False)
            self._full_on_device = True
            strict_fp32(self.device)
            log.info("%d-bit planes run in fp32: %s holds only %d-bit levels exactly",
                     max_value.bit_length(), _NAMES[self.dtype], exact_levels(self.dtype).bit_length())
        return self._full, torch.float32


def upscaler_from_config(config: PipelineConfig) -> LumaUpscaler:
    """The configured model on the configured device and precision: how every front end loads it.

    Sets torch's CPU thread count when ``config.threads`` asks for one.
    """
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    if device.type == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    m = config.model
    int8 = int8_model(config.precision, device, m.name, m.scale, m.weights or None)
    if int8 is not None:
        return LumaUpscaler(int8, device=device, dtype=dtype, tile=config.tile, int8=True)
    model = create_model(m.name, scale=m.scale, weights=m.weights if m.weights else "shipped")
    return LumaUpscaler(model, device=device, dtype=dtype, tile=config.tile)


def int8_model(precision: str, device: torch.device, name: str, scale: int,
               weights: str | None = None) -> QuantESPCN | None:
    """The int8 network ``precision`` asks for (``int8``, or ``auto`` where it applies), else None.

    ``weights``: an ``.int8.safetensors`` file instead of the shipped one (``auto`` uses int8 for
    no other file). ``auto`` takes a shipped file only where its metadata says ``auto: true``:
    measured within 0.05 dB of fp32 on Set5, Set14 and a real clip (``quality``). Missing
    instructions or a missing file for ``int8``: a one-line error.
    """
    shipped = shipped_weights(name, scale)
    if weights is not None and shipped is not None and Path(weights).resolve() == shipped.resolve():
        weights = None  # the shipped fp32 file named explicitly (vsr bench does): its int8 file is the shipped one
    if weights is not None:
        if (precision == "auto" and not str(weights).endswith(".int8.safetensors")) or not use_int8(
                precision, device, ships=True):
            return None
        return load_int8(weights)[0]
    path = shipped_int8(name, scale)
    if not use_int8(precision, device, ships=path is not None):
        return None
    if path is None:
        raise WeightsError(f"no int8 weights ship for {name} x{scale}; they ship for "
                           f"{', '.join(shipped_int8_names()) or 'no model'}: choose one of those, "
                           "--precision bf16, or make one with vsr train --qat and pass --weights FILE")
    model, meta = load_int8(path)
    if precision == "auto" and meta.get("auto") is not True:
        return None  # shipped for --precision int8, but not within the quality bound that auto keeps
    return model
