"""Large frames: exact overlapping tiles, a configurable tile size, and tiles chosen on out-of-memory."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from media_utils import make_clip
from vsr.cli import main as vsr_main
from vsr.config import load_config
from vsr.engine import LumaUpscaler
from vsr.errors import DeviceError
from vsr.models import create_model
from vsr.pipeline import Pipeline


def upscaler(name: str, scale: int, tile: int = 0) -> LumaUpscaler:
    torch.manual_seed(7)
    model = create_model(name, scale=scale, weights=None)
    # Random weights are near-linear; a larger spread makes every layer's nonlinearity matter.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return LumaUpscaler(model, device="cpu", dtype=torch.float32, tile=tile)


@pytest.mark.parametrize(
    "name, scale, shape, tile",
    [
        ("espcn-fast", 2, (1, 1, 37, 53), 16),  # neither side a multiple of the tile
        ("espcn", 3, (2, 1, 64, 48), 16),  # exact multiples, a batch of two
        ("espcn", 2, (1, 1, 100, 17), 32),  # one tile wide, many tall
        ("espcn-fast", 4, (1, 1, 19, 70), 18),  # last tile narrower than the halo
    ],
)
def test_tiled_equals_untiled(name: str, scale: int, shape: tuple[int, ...], tile: int) -> None:
    whole = upscaler(name, scale)
    tiled = upscaler(name, scale, tile=tile)
    calls = []
    real_model = tiled.model
    tiled.model = lambda t: calls.append(tuple(t.shape[-2:])) or real_model(t)  # type: ignore[assignment]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    a, b = whole.forward_float(x), tiled.forward_float(x)
    assert a.shape == b.shape == (shape[0], 1, shape[2] * scale, shape[3] * scale)
    assert len(calls) == -(-shape[2] // tile) * -(-shape[3] // tile)  # really tiled
    assert max(max(c) for c in calls) <= tile + 2 * whole.halo
    assert (a - b).abs().max().item() <= 1e-4
    # The tiles must overlap by the halo: without it the seams show.
    seamed = upscaler(name, scale, tile=tile)
    seamed.halo = 0
    assert (seamed.forward_float(x) - a).abs().max().item() > 1e-3


def _luma_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray").astype(np.int16) for f in c.decode(video=0)]


def test_tile_from_config_and_flag(tmp_path: Path, random_weights, monkeypatch, capsys) -> None:
    src = make_clip(tmp_path / "in.mkv", width=90, height=50, frames=3, codec="ffv1")
    weights = str(random_weights("espcn-fast", 2))
    base = {"model.name": "espcn-fast", "model.scale": 2, "model.weights": weights, "device": "cpu",
            "encoder.codec": "ffv1"}
    tiles_seen: list[int] = []
    real_tiled = LumaUpscaler._tiled

    def spy(self: LumaUpscaler, x: torch.Tensor, t, net) -> torch.Tensor:
        tiles_seen.append(t.tile)
        return real_tiled(self, x, t, net)

    monkeypatch.setattr(LumaUpscaler, "_tiled", spy)
    Pipeline(load_config(None, base)).run(src, tmp_path / "whole.mkv")
    assert tiles_seen == []
    Pipeline(load_config(None, {**base, "tile": 32})).run(src, tmp_path / "tiled.mkv")
    assert tiles_seen == [32] * 3
    # The seams are invisible in the written video too (at most a rounding step apart).
    for a, b in zip(_luma_frames(tmp_path / "whole.mkv"), _luma_frames(tmp_path / "tiled.mkv"), strict=True):
        assert np.abs(a - b).max() <= 1
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tile: 24\n")
    code = vsr_main(["run", str(src), "-o", str(tmp_path / "cli.mkv"), "--config", str(cfg), "--weights", weights,
                     "--model", "espcn-fast", "--scale", "2", "--device", "cpu", "--codec", "ffv1", "-q"])
    assert code == 0, capsys.readouterr().err
    assert tiles_seen[3:] == [24] * 3
    code = vsr_main(["run", str(src), "-o", str(tmp_path / "flag.mkv"), "--config", str(cfg), "--tile", "40",
                     "--weights", weights, "--model", "espcn-fast", "--scale", "2", "--device", "cpu",
                     "--codec", "ffv1", "-q"])
    assert code == 0
    assert tiles_seen[6:] == [40] * 3  # the flag overrides the file
    code = vsr_main(["run", str(src), "-o", str(tmp_path / "bad.mkv"), "--tile", "5", "--weights", weights,
                     "--model", "espcn-fast", "--scale", "2", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "tile must be 0" in err and "Traceback" not in err


class _MemoryLimited(torch.nn.Module):
    """Wraps a model; raises the given out-of-memory error for inputs with more than ``limit`` pixels per side."""

    def __init__(self, model: torch.nn.Module, limit: int, error: BaseException) -> None:
        super().__init__()
        self.inner, self.limit, self.error = model, limit, error
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise self.error
        return self.inner(x)


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes"),
])
def test_out_of_memory_picks_smaller_tiles(error: BaseException, caplog, monkeypatch) -> None:
    monkeypatch.setattr(logging.getLogger("vsr"), "propagate", True)  # the CLI turns it off
    whole = upscaler("espcn", 2)
    x = torch.rand(1, 1, 300, 210, generator=torch.Generator().manual_seed(3))
    expected = whole.forward_float(x)
    up = upscaler("espcn", 2)
    limited = _MemoryLimited(up.model, limit=100, error=error)
    up.model = limited  # type: ignore[assignment]
    with caplog.at_level("INFO", logger="vsr"):
        got = up.forward_float(x)
    assert (got - expected).abs().max().item() <= 1e-4
    assert up.tile == 75  # 300 → 150 (still too big with its halo) → 75
    assert all(max(s) <= 75 + 2 * up.halo for s in limited.sizes[-12:])
    assert "out of memory: processing in 75-pixel tiles" in caplog.text
    # The smaller tile is kept: the next frame goes straight to tiles, without another failure.
    limited.sizes.clear()
    up.forward_float(x)
    assert all(max(s) <= 100 for s in limited.sizes)


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error() -> None:
    up = upscaler("espcn-fast", 2)
    up.model = _MemoryLimited(up.model, limit=20, error=torch.OutOfMemoryError("CUDA out of memory"))  # type: ignore[assignment]
    with pytest.raises(DeviceError, match="out of memory even in 64-pixel tiles"):
        up.forward_float(torch.rand(1, 1, 200, 200))


def test_other_runtime_errors_are_not_taken_for_out_of_memory() -> None:
    up = upscaler("espcn-fast", 2)
    up.model = _MemoryLimited(up.model, limit=20, error=RuntimeError("cuDNN error: bad param"))  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="cuDNN error"):
        up.forward_float(torch.rand(1, 1, 200, 200))
    assert up.tile == 0
