"""The engine's CUDA logic, checked on CPU: deep planes in fp16/bf16, strict fp32, and the out-of-memory retry.

The arithmetic of the GPU path (fp16/bf16 module, integer planes in and out) runs on CPU
too, so the precision rules are measured here; what needs a GPU is in test_cuda.py.
"""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest
import torch

from vsr.engine import LumaUpscaler, exact_levels, strict_fp32, tf32_flags
from vsr.engine import _luma
from vsr.errors import DeviceError
from vsr.models import create_model


def planes_with_white_patch(bits: int, h: int = 40, w: int = 56, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Smooth waves and noise with a white (max_value) patch and a black one, as the decoder gives them."""
    mv = (1 << bits) - 1
    yy, xx = np.mgrid[0:h, 0:w]
    y = (0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0)) * mv
    y += np.random.default_rng(seed).normal(0, mv * 0.03, (h, w))
    y[6:22, 6:22] = mv
    y[28:36, 36:52] = 0
    t = torch.from_numpy(np.clip(y, 0, mv).astype(np.int32))[None, None]
    return (t.to(torch.uint8) if bits == 8 else t), mv


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_reduced_precision_module_keeps_deep_planes(dtype: torch.dtype, bits: int) -> None:
    """#1: planes are divided by max_value in fp32 before the cast, and deeper planes than the dtype holds run in fp32.

    Before: a 16-bit white patch became inf then NaN in fp16 (black on a GPU), 12-bit was off by 7 levels.
    """
    model = create_model("espcn", scale=2)
    ref = LumaUpscaler(create_model("espcn", scale=2), device="cpu", dtype=torch.float32, fused=False)
    up = LumaUpscaler(model, device="cpu", dtype=dtype, fused=False)
    x, mv = planes_with_white_patch(bits)
    got, want = up(x, mv), ref(x, mv)
    assert got.dtype == x.dtype and got.shape == (1, 1, 80, 112)
    white = got[..., 16:40, 16:40].long()  # the patch's core, away from its edges
    assert white.min().item() >= mv - mv // 64, "white patch came out dark"
    diff = (got.long() - want.long()).abs().max().item()
    if mv > exact_levels(dtype):
        assert diff <= 1  # the fp32 module, TF32-free: same arithmetic as the reference
    else:
        assert diff <= 2  # fp16 at 8 and 10 bit, bf16 at 8 bit (measured: 1-2 levels)


def test_fp16_is_used_up_to_10_bits_and_fp32_above(caplog, monkeypatch) -> None:
    monkeypatch.setattr(logging.getLogger("vsr"), "propagate", True)
    up = LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu", dtype=torch.float16, fused=False)
    assert up._module_for(1023) == (up.model, torch.float16)
    with caplog.at_level("INFO", logger="vsr"):
        module, dtype = up._module_for(4095)
    assert dtype == torch.float32 and module is not up.model
    assert next(module.parameters()).dtype == torch.float32
    assert "12-bit planes run in fp32: fp16 holds only 10-bit levels exactly" in caplog.text
    fp32 = LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu", dtype=torch.float32, fused=False)
    assert fp32._full is None and fp32._module_for(65535) == (fp32.model, torch.float32)


@pytest.fixture
def restore_tf32():
    saved = tf32_flags()
    yield
    torch.backends.cudnn.conv.fp32_precision = saved["cudnn_conv"]
    torch.backends.cuda.matmul.fp32_precision = saved["cuda_matmul"]


def test_fp32_on_cuda_turns_tf32_off(restore_tf32) -> None:
    """#2: cuDNN convolutions default to TF32; fp32 asked on CUDA (a run, the bench's reference) must be fp32."""
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    strict_fp32(torch.device("cpu"))
    assert tf32_flags()["cudnn_conv"] == "tf32"  # CPU runs leave CUDA's flags alone
    strict_fp32(torch.device("cuda", 1))
    assert tf32_flags() == {"cudnn_conv": "ieee", "cuda_matmul": "ieee"}


def test_fp32_and_deep_plane_upscalers_ask_for_strict_fp32(monkeypatch) -> None:
    seen: list[torch.device] = []
    monkeypatch.setattr(_luma, "strict_fp32", seen.append)
    LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu", dtype=torch.float32, fused=False)
    assert seen == [torch.device("cpu")]
    up = LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu", dtype=torch.bfloat16, fused=False)
    assert len(seen) == 1  # a bf16 model: nothing to ask
    up(planes_with_white_patch(10)[0], 1023)
    assert len(seen) == 2  # the fp32 copy for deep planes


# -- out of memory -----------------------------------------------------------------------------------
class _Hog(torch.nn.Module):
    """Allocates a buffer (watched by a weakref), then fails like an allocator for inputs above ``limit`` pixels."""

    def __init__(self, inner: torch.nn.Module, limit: int, error: BaseException) -> None:
        super().__init__()
        self.inner, self.limit, self.error = inner, limit, error
        self.buffers: list[weakref.ref] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.limit:
            scratch = torch.empty(1 << 20)  # what a failed attempt holds when the allocator gives up
            self.buffers.append(weakref.ref(scratch))
            raise type(self.error)(*self.error.args)  # a new one each time, as an allocator raises
        return self.inner(x)


OOM_ERRORS = [
    pytest.param(RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
                 id="cuda-error"),
    pytest.param(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), id="cudnn"),
    pytest.param(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
                 id="cublas"),
    pytest.param(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), id="allocator"),
]


def _module_upscaler(limit: int, error: BaseException) -> tuple[LumaUpscaler, _Hog]:
    up = LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu", dtype=torch.float32, fused=False)
    hog = _Hog(up.model, limit, error)
    up.model = hog  # type: ignore[assignment]
    return up, hog


@pytest.mark.parametrize("error", OOM_ERRORS)
def test_out_of_memory_outside_the_allocator_is_caught(error: BaseException) -> None:
    """#5: cuDNN/cuBLAS/kernel-launch OOMs are plain RuntimeErrors; they too fall back to tiles."""
    up, hog = _module_upscaler(100, error)
    x, mv = planes_with_white_patch(8, h=150, w=130)
    want = LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu", dtype=torch.float32, fused=False)(x, mv)
    got = up(x, mv)
    assert up.tile == 75 and hog.buffers
    assert (got.long() - want.long()).abs().max().item() <= 1


def test_out_of_memory_without_torch_out_of_memory_error(monkeypatch) -> None:
    """#4: torch.OutOfMemoryError exists only from torch 2.5; the check must not need it."""
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    monkeypatch.setattr(_luma, "_OOM_TYPES", tuple(
        t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
        if isinstance(t, type)))
    assert _luma._out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert _luma._out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))  # torch < 1.13's form
    assert not _luma._out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"))


def test_integer_conversions_are_inside_the_retry(monkeypatch) -> None:
    """#5: the whole-frame dtype conversions run per attempt: an OOM in them falls back to tiles too."""
    up = LumaUpscaler(create_model("espcn-fast", scale=2), device="cpu", dtype=torch.float32, fused=False)
    real = up._module_planes
    sizes: list[int] = []

    def convert_then_run(planes: torch.Tensor, max_value: int) -> torch.Tensor:
        sizes.append(max(planes.shape[-2:]))
        if max(planes.shape[-2:]) > 100:
            raise RuntimeError("CUDA error: out of memory")  # as planes.float() would on a full GPU
        return real(planes, max_value)

    monkeypatch.setattr(up, "_module_planes", convert_then_run)
    x, mv = planes_with_white_patch(10, h=150, w=130)
    got = up(x, mv)
    assert got.dtype == x.dtype and got.shape == (1, 1, 300, 260)
    assert sizes[0] == 150 and max(sizes[2:]) <= 75 + 2 * up.halo


@pytest.mark.parametrize("limit", [100, 10], ids=["retry-succeeds", "gives-up"])
def test_failed_attempt_memory_is_freed_before_empty_cache(limit: int, monkeypatch) -> None:
    """#6: empty_cache runs after the except block, when the failed attempt's tensors are gone,
    and the DeviceError keeps no chain (cause, context, traceback) to them."""
    up, hog = _module_upscaler(limit, RuntimeError("CUDA error: out of memory"))
    alive_at_release: list[bool] = []
    monkeypatch.setattr(up, "_release_cached_memory",
                        lambda: alive_at_release.append(any(ref() is not None for ref in hog.buffers)))
    gc.disable()  # freed by reference counting, not by a later collection
    try:
        x, mv = planes_with_white_patch(8, h=150, w=130)
        if limit == 100:
            up(x, mv)
        else:
            with pytest.raises(DeviceError, match="out of memory even in 64-pixel tiles .*CUDA error: out of memory") as info:
                up(x, mv)
            err = info.value
            assert err.__cause__ is None and err.__context__ is None
            del info, err
    finally:
        gc.enable()
    assert alive_at_release and not any(alive_at_release)
    assert all(ref() is None for ref in hog.buffers)
