"""The fused oneDNN CPU path against the plain fp32 module, on a real frame with the shipped weights.

bf16 must cost rounding noise only: an early version shifted every output pixel by a
quarter level on real video (-0.2 dB against the original) and lost two bits at 10-bit;
without bias correction, espcn-fast's output moved by a tenth of a level.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import fused_bf16
from vsr.engine import LumaUpscaler
from vsr.models import create_model


@pytest.fixture(scope="module")
def luma(shared_data: Path) -> np.ndarray:
    """A 320x180 luma plane (0-255 floats) from a real clip, the size a x3 upscale to 960x540 starts from."""
    with av.open(str(shared_data / "videos" / "mdn_flower.mp4")) as c:
        frame = next(c.decode(video=0))
    y = frame.to_ndarray(format="gray")  # 960x540
    return y.reshape(180, 3, 320, 3).astype(np.float64).mean(axis=(1, 3))


def _upscale(luma: np.ndarray, max_value: int, dtype: torch.dtype, fused: bool,
             model: str = "espcn", scale: int = 3) -> torch.Tensor:
    planes = torch.from_numpy(np.round(luma * max_value / 255).astype(np.int16))[None, None]
    up = LumaUpscaler(create_model(model, scale=scale), device="cpu", dtype=dtype, fused=fused)
    assert up.fused == fused
    with torch.inference_mode():
        return up(planes, max_value).double()


@pytest.mark.parametrize("max_value", [255, 1023, 4095])
def test_fused_fp32_equals_the_module(luma: np.ndarray, max_value: int) -> None:
    ref = _upscale(luma, max_value, torch.float32, fused=False)
    got = _upscale(luma, max_value, torch.float32, fused=True)
    # Summation order only (oneDNN's varies with threading): ~1e-6 relative, which moves the
    # rounding of the ~0.1 % of values that lie that close to a half level.
    assert (got - ref).abs().max().item() <= 1
    assert (got == ref).double().mean().item() > 0.995


@fused_bf16
@pytest.mark.parametrize("model,scale", [("espcn", 3), ("espcn-fast", 2)])
@pytest.mark.parametrize("max_value", [255, 1023, 4095])
def test_fused_bf16_is_unbiased_and_close_to_fp32(luma: np.ndarray, max_value: int, model: str, scale: int) -> None:
    ref = _upscale(luma, max_value, torch.float32, False, model, scale)
    got = _upscale(luma, max_value, torch.bfloat16, True, model, scale)
    level = max_value / 255  # errors in 8-bit levels, whatever the bit depth
    diff = (got - ref) / level
    assert abs(diff.mean().item()) < 0.05, "bf16 shifts the picture's brightness"
    assert diff.pow(2).mean().sqrt().item() < 0.45
    assert ((got >= 0) & (got <= max_value)).all()


@pytest.mark.parametrize("dtype", [pytest.param(torch.bfloat16, marks=fused_bf16), torch.float32])
def test_large_frames_are_cache_tiled_with_the_same_result(dtype: torch.dtype, monkeypatch) -> None:
    """tile=0 still tiles a 960x540 frame on the fused path (for cache locality), bit-identically."""
    up = LumaUpscaler(create_model("espcn", scale=2), device="cpu", dtype=dtype)
    x = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (1, 1, 540, 960), dtype=np.uint8))
    tiles: list[int] = []
    real_tiled = LumaUpscaler._tiled
    monkeypatch.setattr(LumaUpscaler, "_tiled", lambda self, x, t, net: tiles.append(t.tile) or real_tiled(self, x, t, net))
    with torch.inference_mode():
        tiled = up(x)
        assert tiles and 64 <= tiles[0] < 540
        monkeypatch.setattr(up, "_cache_tile", lambda x: 0)
        whole = up(x)
    assert len(tiles) == 1
    assert torch.equal(tiled, whole)
    small = torch.zeros((1, 1, 90, 160), dtype=torch.uint8)
    assert up._fused is not None and up._fused.cache_tile(small.shape) == 0
