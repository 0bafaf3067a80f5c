"""tools/lr_vs_hr.py: equal compute, the note's parameter ratio, the deconv identity, and a reduced end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vsr.imresize import imresize
from vsr.ops import SubpixelConvModule, convert_transposed_convs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("lr_vs_hr", REPO / "tools" / "lr_vs_hr.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lr_vs_hr"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small RGB images with smooth patterns and hard edges, made here."""
    import cv2

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:48, 0:60]
    for i in range(4):
        img = np.zeros((48, 60, 3))
        for c in range(3):
            fx, fy, ph = rng.uniform(0.05, 0.4, 3)
            img[..., c] = 127 + 90 * np.sin(fx * xx + ph) * np.cos(fy * yy)
        img[10 + i : 30, 8 + 2 * i : 28] = rng.uniform(0, 255, 3)
        cv2.imwrite(str(folder / f"im{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return folder


@pytest.mark.parametrize("scale", [2, 3])
def test_equal_multiply_adds_and_note_parameter_ratio(tool, scale: int) -> None:
    lr = tool.lr_network(scale, 3)
    cfg = tool.hr_design(scale, 3)
    hr = tool.HRNet(cfg)
    a, b = tool.count_macs(lr), tool.count_macs(hr, lr_size=(17, 11))
    assert abs(b["conv"] / a["conv"] - 1) < 0.01 and abs(b["total"] / a["total"] - 1) < 0.01
    # the LR count by hand: 1->32, 32->32, 32->r² 3x3 convs per LR pixel, over r² output pixels
    assert a["conv"] == pytest.approx((32 * 9 + 32 * 32 * 9 + 32 * scale**2 * 9) / scale**2)
    n, k = cfg.widths[0], cfg.kernels[-1]
    assert n * n * k * k == pytest.approx(32 * 32 * 9 / scale**2)  # the note's per-layer equality
    if scale == 2:
        assert (n, k) == (8, 6)  # the note's configuration
        # the note: 32·32·3·3 vs 8·8·6·6 parameters per layer, 4x; the whole networks at least 3.5x
        assert tool.count_params(lr) / tool.count_params(hr) >= 3.5
        assert 32 * 32 * 9 / (n * n * k * k) == 4
    x = torch.rand(2, 1, 9, 14)
    assert lr(x).shape == hr(x).shape == (2, 1, 9 * scale, 14 * scale)


def test_even_kernels_alternate_padding_and_stay_aligned(tool) -> None:
    cfg = tool.HRNetConfig(scale=2, widths=(1, 1), kernels=(3, 6, 6))
    assert cfg.pads() == ((1, 1), (2, 3), (3, 2)) and cfg.residual_shift == 0
    # a net of delta kernels at the centre taps passes its input through unshifted
    net = tool.HRNet(cfg)
    with torch.no_grad():
        for conv, (before, _) in zip([m for m in net.body if isinstance(m, torch.nn.Conv2d)], cfg.pads()):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, before, before] = 1.0
    net.body = torch.nn.Sequential(*[m for m in net.body if not isinstance(m, torch.nn.Tanh)])
    x = torch.rand(1, 1, 8, 10)
    assert torch.allclose(net(x), net.upsample(x), atol=1e-6)
    assert tool.HRNetConfig(scale=3, widths=(4, 4), kernels=(4, 8, 8)).residual_shift == 0.5


@pytest.mark.parametrize("scale", [2, 3])
def test_bicubic_layer_is_matlab_imresize(tool, scale: int) -> None:
    lr = np.random.default_rng(scale).random((13, 17))
    ref = imresize(lr, scale)
    with torch.inference_mode():
        got = tool.MatlabBicubicUp(scale)(torch.from_numpy(lr).float()[None, None])[0, 0].double().numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-5


@pytest.mark.parametrize("scale", [2, 3])
def test_deconv_network_converts_to_identical_lr_convolutions(tool, scale: int) -> None:
    torch.manual_seed(0)
    net = tool.DeconvNet(scale, 3).eval()
    converted = convert_transposed_convs(net, strict=True)
    assert isinstance(converted.deconv, SubpixelConvModule)
    x = torch.rand(1, 1, 15, 11)
    with torch.inference_mode():
        a, b = net(x), converted(x)
    assert a.shape == (1, 1, 15 * scale, 11 * scale)
    assert float((a - b).abs().max()) < 1e-5
    assert tool.count_macs(net)["conv"] == tool.count_macs(converted)["conv"]


def test_reduced_end_to_end_run(tool, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = tool.main(["--scales", "2", "--steps", "4", "--batch-size", "2", "--patch", "8", "--val-points", "2",
                    "--data", str(image_folder), "--val", str(image_folder), "--test", str(image_folder),
                    "--runs", str(out / "runs"), "--json", str(out / "r.json"), "--doc", str(out / "R.md"),
                    "--plot", str(out / "r.png"), "--timing-size", "24", "32", "--timing-repeats", "1",
                    "--threads", "1", "--quiet"])
    assert rc == 0
    res = json.loads((out / "r.json").read_text())
    x2 = res["scales"]["2"]
    assert abs(x2["macs_ratio"] - 1) < 0.01 and abs(x2["macs_ratio_total"] - 1) < 0.01
    assert x2["params_ratio"] >= 3.5 and x2["params_ratio_predicted"] == 4
    for k in ("lr", "hr"):
        ev = x2[k]["eval"][image_folder.name]
        assert 5 < ev["psnr"] < 60 and 0 < ev["ssim"] <= 1
        assert [h["step"] for h in x2[k]["history"] if "val_psnr" in h] == [2, 4]
        assert x2[k]["time_ms"] > 0
    assert res["deconv"]["2"]["max_abs_diff"] < 1e-5
    assert res["deconv"]["2"]["timing"]["converted"]["median_ms"] > 0
    doc = (out / "R.md").read_text()
    assert res["command"] in doc and "| x2 | LR |" in doc and "| x2 | HR |" in doc
    import cv2

    plot = cv2.imread(str(out / "r.png"))
    assert plot is not None and plot.shape[0] > 100 and (plot < 250).any()
    # a rerun reuses the finished runs and keeps notes added below the marker
    (out / "R.md").write_text(doc + "hand-written note\n")
    assert tool.main(["--scales", "2", "--steps", "4", "--batch-size", "2", "--patch", "8", "--val-points", "2",
                      "--data", str(image_folder), "--val", str(image_folder), "--test", str(image_folder),
                      "--runs", str(out / "runs"), "--json", str(out / "r.json"), "--doc", str(out / "R.md"),
                      "--plot", str(out / "r.png"), "--no-timing", "--quiet"]) == 0
    assert "hand-written note" in (out / "R.md").read_text()
    assert json.loads((out / "r.json").read_text())["scales"]["2"]["lr"]["eval"] == x2["lr"]["eval"]
