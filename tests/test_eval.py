"""Evaluation to the published protocol: imresize, metrics, bicubic baselines, `vsr eval --json`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vsr.cli import main as cli_main
from vsr.errors import ConfigError
from vsr.evaluate import evaluate, load_image, make_lr, modcrop, model_upscaler, prepare_sample
from vsr.imresize import imresize
from vsr.metrics import psnr, rgb2y, ssim
from vsr.models import create_model, save_weights

# Published bicubic Y-PSNR (dB) under the protocol (../shared/data/README.md).
PUBLISHED_BICUBIC = {
    ("Set5", 2): 33.66, ("Set5", 3): 30.39, ("Set5", 4): 28.42,
    ("Set14", 2): 30.24, ("Set14", 3): 27.55, ("Set14", 4): 26.00,
}


@pytest.mark.parametrize("dataset,scale", sorted(PUBLISHED_BICUBIC))
def test_bicubic_reproduces_published_baselines(shared_data: Path, dataset: str, scale: int) -> None:
    result = evaluate(None, shared_data / "benchmark" / dataset, scale)
    assert len(result.images) == (5 if dataset == "Set5" else 14)
    assert abs(result.bicubic_psnr - PUBLISHED_BICUBIC[dataset, scale]) <= 0.05
    assert result.psnr == result.bicubic_psnr
    assert 0.6 < result.bicubic_ssim < 0.95


def test_bicubic_ssim_matches_literature(shared_data: Path) -> None:
    # Bicubic SSIM on Set5 as tabulated by VDSR/LapSRN: 0.9299 / 0.8682 / 0.8104.
    for scale, expected in ((2, 0.9299), (3, 0.8682), (4, 0.8104)):
        got = evaluate(None, shared_data / "benchmark" / "Set5", scale).bicubic_ssim
        assert abs(got - expected) < 0.002, (scale, got)


def test_imresize_matches_matlab_weights_by_hand() -> None:
    # Downscaling by 2 with antialiasing: a cubic kernel stretched 2x; a constant stays constant,
    # a linear ramp stays linear away from the mirrored borders.
    const = np.full((12, 10), 77, np.uint8)
    assert (imresize(const, 0.5) == 77).all()
    ramp = np.tile(np.arange(16, dtype=np.float64), (4, 1))
    down = imresize(ramp, 0.5)
    assert down.shape == (2, 8)
    np.testing.assert_allclose(down[0, 2:6], [4.5, 6.5, 8.5, 10.5], atol=1e-9)
    # Upscaling by 2 is MATLAB's plain bicubic at offsets 0.25 / 0.75: weights of Keys' kernel.
    row = np.zeros((1, 8))
    row[0, 4] = 1.0
    up = imresize(np.repeat(row, 4, axis=0), output_shape=(4, 16))[0]
    w = lambda x: (1.5 * x**3 - 2.5 * x**2 + 1) if x <= 1 else (-0.5 * x**3 + 2.5 * x**2 - 4 * x + 2)
    np.testing.assert_allclose(up[6:12], [w(1.25), w(0.75), w(0.25), w(0.25), w(0.75), w(1.25)], atol=1e-12)
    assert imresize(np.zeros((9, 9, 3), np.uint8), 1 / 3).shape == (3, 3, 3)


def test_imresize_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        imresize(np.zeros((4, 4)), 0)
    with pytest.raises(ConfigError):
        imresize(np.zeros((4,)), 2)


def test_rgb2y_is_matlab_bt601_studio_range() -> None:
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0]]], np.uint8)
    assert rgb2y(rgb).tolist() == [[16, 235, 81, 145]]
    assert rgb2y(rgb).dtype == np.uint8


def test_psnr_and_ssim() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 50)).astype(np.uint8)
    b = np.clip(a.astype(int) + 2, 0, 255).astype(np.uint8)
    assert psnr(a, a) == math.inf
    mse = np.mean((a[3:-3, 3:-3].astype(float) - b[3:-3, 3:-3]) ** 2)
    assert psnr(a, b, shave_border=3) == pytest.approx(10 * math.log10(255**2 / mse))
    assert ssim(a, a) == pytest.approx(1.0)
    assert 0.0 < ssim(a, b, shave_border=3) < 1.0
    assert ssim(a, 255 - a) < 0.0
    with pytest.raises(ConfigError):
        psnr(a, b[:, :-1])


def test_gray_image_is_its_own_y(shared_data: Path) -> None:
    bridge = load_image(shared_data / "benchmark" / "Set14" / "bridge.png")
    assert bridge.ndim == 2
    sample = prepare_sample(bridge, 3, "bridge.png")
    assert sample.hr_y.shape == modcrop(bridge, 3).shape
    assert (sample.hr_y == modcrop(bridge, 3)).all()
    assert sample.lr_y.shape == (sample.hr_y.shape[0] // 3, sample.hr_y.shape[1] // 3)


def test_callable_upscaler_and_module_agree(shared_data: Path) -> None:
    """Any LR-Y -> HR-Y callable can be scored; an exact bicubic callable scores as bicubic on Y."""
    model = create_model("espcn-fast", scale=2, weights=None)
    folder = shared_data / "benchmark" / "Set5"
    a = evaluate(model, folder, 2)
    b = evaluate(model_upscaler(model), folder, 2)
    assert a.psnr == pytest.approx(b.psnr)
    ybic = evaluate(lambda y: imresize(y, 2), folder, 2)
    assert abs(ybic.psnr - ybic.bicubic_psnr) < 0.02  # bicubic on Y vs on RGB: same to 0.02 dB
    with pytest.raises(ConfigError):
        evaluate(lambda y: y, folder, 2)


def test_make_lr_is_modcropped_matlab_downscale() -> None:
    img = np.random.default_rng(1).integers(0, 256, (50, 47, 3)).astype(np.uint8)
    lr = make_lr(img, 3)
    assert lr.shape == (16, 15, 3) and lr.dtype == np.uint8


def test_vsr_eval_json(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    weights = save_weights(create_model("espcn-fast", scale=3, weights=None), tmp_path / "w.safetensors")
    folder = shared_data / "benchmark" / "Set5"
    rc = cli_main(["eval", "--dataset", str(folder), "--scale", "3", "--weights", str(weights), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("dataset", "scale", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "images"):
        assert key in out
    assert out["dataset"] == "Set5" and out["scale"] == 3 and len(out["images"]) == 5
    assert abs(out["bicubic_psnr"] - 30.39) < 0.05
    assert out["psnr"] == pytest.approx(np.mean([r["psnr"] for r in out["images"]]), abs=1e-3)
    # wrong scale for the weights, missing folder: one-line errors, exit 1
    assert cli_main(["eval", "--dataset", str(folder), "--scale", "2", "--weights", str(weights)]) == 1
    assert cli_main(["eval", "--dataset", str(tmp_path / "nope"), "--scale", "3", "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "x3" in err and "does not exist" in err
