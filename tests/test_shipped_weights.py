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


# The shipped weights' margins over bicubic (dB, Y-PSNR), rounded down to 0.01: Set5 and Set14 under the
# published protocol, and the real clip of tests/test_pipeline.py (mdn_flower degraded by r in its own
# planes, 6 frames, fp32). Issue 19: re-shipped weights may not shrink any of them. Measured 2026-12-02
# with the weights shipped then; raise an entry when a re-ship raises it (docs/MODELS.md has the figures).
MARGINS = {
    ("espcn", 2): (2.75, 2.00, 0.87),
    ("espcn", 3): (2.26, 1.66, 0.60),
    ("espcn", 4): (1.78, 1.26, 0.70),
    ("espcn-fast", 2): (2.70, 1.95, 0.81),
    ("espcn-fast", 3): (2.01, 1.52, 0.55),
    ("espcn-fast", 4): (1.74, 1.26, 0.60),
}


@pytest.mark.parametrize("name,scale", SHIPPED)
def test_shipped_model_keeps_its_margin_over_bicubic(shared_data: Path, name: str, scale: int) -> None:
    model = create_model(name, scale=scale)  # loads the shipped file by name
    set5_floor, set14_floor, _ = MARGINS[name, scale]
    set5 = evaluate(model, shared_data / "benchmark" / "Set5", scale)
    assert set5.psnr - set5.bicubic_psnr >= max(MIN_GAIN[scale], set5_floor), (set5.psnr, set5.bicubic_psnr)
    assert set5.ssim > set5.bicubic_ssim
    set14 = evaluate(model, shared_data / "benchmark" / "Set14", scale)
    assert set14.psnr - set14.bicubic_psnr >= set14_floor, (set14.psnr, set14.bicubic_psnr)


@pytest.mark.parametrize("name,scale", SHIPPED)
def test_shipped_model_keeps_its_margin_on_a_real_clip(shared_data: Path, tmp_path: Path, engine_checks,
                                                       name: str, scale: int) -> None:
    small = tmp_path / "small.mkv"
    originals, bicubic = engine_checks.degraded_clip(shared_data / "videos" / "mdn_flower.mp4", small, scale)
    sr = engine_checks.upscaled_psnr(small, tmp_path / "up.mkv", originals, {
        "model.name": name, "model.scale": scale, "device": "cpu", "precision": "fp32"})
    assert sr - bicubic >= MARGINS[name, scale][2], f"vsr {sr:.3f} dB vs bicubic {bicubic:.3f} dB"


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
