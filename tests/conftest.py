"""Shared fixtures. Data from ../shared/data is optional: tests that need it skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VSR_SHARED_DATA", REPO.parent / "shared" / "data"))

# Keep CPU tests predictable on CI's 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _fused_bf16_runs() -> bool:
    """Whether oneDNN runs the fused bf16 convolutions here: they need AVX512 (BW/VL/DQ) or AVX-NE-CONVERT, so an
    AVX2-only CPU (e.g. AMD Zen 3) takes the plain module path, as vsr does there (LumaUpscaler._checked)."""
    from vsr.engine import LumaUpscaler
    from vsr.models import create_model

    return LumaUpscaler(create_model("espcn-fast", scale=2, weights=None), device="cpu", dtype=torch.bfloat16).fused


fused_bf16 = pytest.mark.skipif(not _fused_bf16_runs(), reason="oneDNN has no bf16 convolutions on this CPU")


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=cuda)])
def device(request: pytest.FixtureRequest) -> str:
    """Device-parametrised tests: CUDA cases skip without a GPU."""
    return request.param


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory: pytest.TempPathFactory):
    """``random_weights(model, scale)`` → a weights file of a randomly initialised model.

    For tests of plumbing (timestamps, streams, errors) that must not depend on trained weights.
    """
    from vsr.models import create_model, save_weights

    folder = tmp_path_factory.mktemp("weights")
    cache: dict[tuple[str, int], Path] = {}

    def make(model: str = "espcn-fast", scale: int = 2) -> Path:
        if (model, scale) not in cache:
            torch.manual_seed(scale)
            cache[model, scale] = save_weights(
                create_model(model, scale=scale, weights=None), folder / f"{model}_x{scale}.safetensors"
            )
        return cache[model, scale]

    return make


@pytest.fixture(scope="session")
def engine_checks():
    """tools/engine_checks.py as a module: the real-clip measurement that quality tests share with the tool."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("engine_checks", REPO / "tools" / "engine_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
