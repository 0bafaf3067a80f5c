"""The weights shipped inside the package: present, small, documented, and clearly better than bicubic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from vsr.evaluate import evaluate
from vsr.models import create_model, read_weights, shipped_weights

SHIPPED = [(name, scale) for name in ("espcn", "espcn-fast") for scale in (2, 3, 4)]
# Required Y-PSNR gain over bicubic on Set5 (issue 4).
MIN_GAIN = {2: 1.5, 3: 1.5, 4: 1.0}


@pytest.mark.parametrize("name,scale", SHIPPED)
def test_weights_ship_small_with_training_metadata(name: str, scale: int) -> None:
    path = shipped_weights(name, scale)
    assert path is not None, f"no shipped weights for {name} x{scale}"
    assert path.stat().st_size < 1_000_000
    _, meta = read_weights(path)
    assert meta["config"]["scale"] == scale
    for key in ("steps", "seed", "command", "training"):
        assert key in meta, key
    assert meta["training"]["model"] == name and meta["training"]["scale"] == scale
    assert meta["steps"] >= 1000


@pytest.mark.parametrize("name,scale", SHIPPED)
def test_shipped_model_beats_bicubic_on_set5(shared_data: Path, name: str, scale: int) -> None:
    model = create_model(name, scale=scale)  # loads the shipped file by name
    result = evaluate(model, shared_data / "benchmark" / "Set5", scale)
    assert result.psnr - result.bicubic_psnr >= MIN_GAIN[scale], (result.psnr, result.bicubic_psnr)
    assert result.ssim > result.bicubic_ssim


@pytest.mark.skipif(
    importlib.util.find_spec("cv2") is None or not hasattr(__import__("cv2"), "dnn_superres"),
    reason="OpenCV peers need opencv-contrib-python-headless<5 on PYTHONPATH (see tools/eval_peers.py)",
)
@pytest.mark.parametrize("scale", (2, 3, 4))
def test_espcn_beats_opencv_espcn(shared_data: Path, scale: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from eval_peers import peer_upscaler

    peer = peer_upscaler(shared_data / "peer_models" / f"ESPCN_x{scale}.pb", "espcn", scale)
    model = create_model("espcn", scale=scale)
    for dataset in ("Set5", "Set14"):
        folder = shared_data / "benchmark" / dataset
        assert evaluate(model, folder, scale).psnr > evaluate(peer, folder, scale).psnr
