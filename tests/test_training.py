"""Training: the loss falls, checkpoints are written, and an interrupted run resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vsr.cli import main as cli_main
from vsr.errors import ConfigError
from vsr.evaluate import load_image
from vsr.models import create_model, read_weights
from vsr.training import PatchData, TrainConfig, load_training_images, train


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small smooth-plus-edges RGB images (made here) as a training folder."""
    import cv2

    folder = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:72]
    for i in range(4):
        img = np.zeros((60, 72, 3), np.float64)
        for c in range(3):
            fx, fy, ph = rng.uniform(0.05, 0.4, 3)
            img[..., c] = 127 + 90 * np.sin(fx * xx + ph) * np.cos(fy * yy)
        img[20 + i : 40, 10 + 3 * i : 30] = rng.uniform(0, 255, 3)  # a hard-edged square
        cv2.imwrite(str(folder / f"img{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return folder


def _config(folder: Path, **kw) -> TrainConfig:
    base = dict(model="espcn-fast", scale=2, data=(str(folder),), steps=6, batch_size=4, patch=8,
                warmup=2, lr=3e-3, l2_from=0.5, bf16_until=0.5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_patches_are_aligned_and_deterministic(image_folder: Path) -> None:
    pairs = load_training_images((str(image_folder),), 2)
    data = PatchData(pairs, scale=2, patch=8, seed=1)
    lr, hr, mask = data.batch(5, 6)
    assert lr.shape == (6, 1, 8, 8) and hr.shape == (6, 1, 16, 16) and mask is None
    lr2, hr2, _ = data.batch(5, 6)
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)
    assert not torch.equal(lr, data.batch(6, 6)[0])
    # HR patches averaged 2x2 look like their LR patches (aligned crops, same flips)
    pooled = torch.nn.functional.avg_pool2d(hr, 2)
    assert float((pooled - lr).abs().mean()) < 0.03


def test_grid_phases_pair_each_shifted_image_with_its_own_lr(image_folder: Path) -> None:
    from vsr.evaluate import list_images, make_lr, modcrop, to_y

    plain = load_training_images((str(image_folder),), 2)
    phased = load_training_images((str(image_folder),), 2, grid_phases=True)
    assert len(phased) == 4 * len(plain)
    for got, want in zip(phased[::4], plain):  # shift (0, 0) is the plain pair
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    img = load_image(list_images(image_folder)[1])
    lr, hr = phased[4 + 3]  # second image, shift (1, 1)
    assert np.array_equal(hr, to_y(modcrop(img[1:, 1:], 2)))
    assert np.array_equal(lr, to_y(make_lr(modcrop(img[1:, 1:], 2), 2)))
    assert not np.array_equal(lr[:-1, :-1], phased[4][0][:-1, :-1])  # another sampling of the same content


def test_context_windows_see_real_pixels_or_the_image_border() -> None:
    """With context, every pixel the loss counts has its whole halo inside the input window,
    except where the halo leaves the image (where inference zero-pads too)."""
    scale, patch, context = 2, 6, 3
    ys, xs = np.mgrid[0:20, 0:30]
    code = (ys * 100 + xs).astype(np.float64)  # each LR pixel's value names its position
    hr_code = np.kron(code, np.ones((scale, scale)))
    data = PatchData([(code, hr_code)], scale=scale, patch=patch, seed=4, context=context)
    assert data.window == patch + 2 * context
    counted_rows: set[int] = set()
    for step in range(40):
        lr, hr, mask = data.batch(step, 8)
        assert lr.shape == (8, 1, 12, 12) and hr.shape == mask.shape == (8, 1, 24, 24)
        assert torch.equal(hr, torch.kron(lr, torch.ones(1, 1, scale, scale)))  # aligned, same flips
        for n in range(8):
            pos = np.rint(lr[n, 0].double().numpy() * 255).astype(int)
            window = {(int(v) // 100, int(v) % 100) for v in pos.ravel()}
            assert len(window) == 144
            m = mask[n, 0, ::scale, ::scale].numpy()
            assert float(mask[n].sum()) == (patch * scale) ** 2
            for iy, ix in ((int(v) // 100, int(v) % 100) for v in pos[m == 1]):
                counted_rows.add(iy)
                for dy in range(-context, context + 1):
                    for dx in range(-context, context + 1):
                        y, x = iy + dy, ix + dx
                        assert (y, x) in window or not (0 <= y < 20 and 0 <= x < 30)
    assert {0, 19} <= counted_rows  # the image's own border rows are trained too


def test_masked_loss_counts_only_the_patch() -> None:
    from vsr.training import _patch_loss

    target = torch.zeros(2, 1, 6, 6)
    mask = torch.zeros_like(target)
    mask[:, :, 2:4, 2:4] = 1.0
    pred = torch.full_like(target, 5.0)  # wrong everywhere outside the patch ...
    pred[:, :, 2:4, 2:4] = 0.5  # ... off by 0.5 inside it
    assert float(_patch_loss(pred, target, mask, l2=True)) == pytest.approx(0.25)
    assert float(_patch_loss(pred, target, mask, l2=False)) == pytest.approx(0.5)
    assert float(_patch_loss(pred, target, None, l2=False)) == pytest.approx((5.0 * 64 + 0.5 * 8) / 72)


def test_tiny_run_lowers_loss_and_writes_checkpoint(image_folder: Path, tmp_path: Path) -> None:
    config = _config(image_folder, steps=40, l2_from=1.0, bf16_until=0.0, lr=5e-3, warmup=1)
    result = train(config, tmp_path / "run", val=None, log_every=5, checkpoint_every=20, log=lambda s: None)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.checkpoint.is_file() and result.weights.is_file()
    state, meta = read_weights(result.weights)
    assert meta["steps"] == 40 and meta["seed"] == 3 and meta["training"]["model"] == "espcn-fast"
    model = create_model("espcn-fast", scale=2, weights=result.weights)
    assert model.scale == 2
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 40


@pytest.mark.parametrize("data_options", [{}, {"context": 2, "grid_phases": True}])
def test_interrupted_then_resumed_equals_uninterrupted(image_folder: Path, tmp_path: Path, data_options) -> None:
    config = _config(image_folder, **data_options)
    whole = train(config, tmp_path / "whole", log=lambda s: None, checkpoint_every=2)
    part = train(config, tmp_path / "part", stop_after=3, log=lambda s: None, checkpoint_every=2)
    assert part.steps == 3 and not part.weights.exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(config, tmp_path / "part", log=lambda s: None)
    with pytest.raises(ConfigError, match="other settings"):
        train(_config(image_folder, seed=4), tmp_path / "part", resume=True, log=lambda s: None)
    resumed = train(config, tmp_path / "part", resume=True, log=lambda s: None, checkpoint_every=2)
    assert resumed.steps == whole.steps == 6
    a, _ = read_weights(whole.weights)
    b, _ = read_weights(resumed.weights)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_older_than_the_data_options_resumes_with_their_defaults(image_folder: Path,
                                                                           tmp_path: Path) -> None:
    config = _config(image_folder)
    train(config, tmp_path / "old", stop_after=2, log=lambda s: None, checkpoint_every=2)
    ckpt_path = tmp_path / "old" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    for key in ("context", "grid_phases"):  # as written before these options existed
        del ckpt["config"][key]
    torch.save(ckpt, ckpt_path)
    with pytest.raises(ConfigError, match="context"):
        train(_config(image_folder, context=2), tmp_path / "old", resume=True, log=lambda s: None)
    assert train(config, tmp_path / "old", resume=True, log=lambda s: None).steps == config.steps
    with pytest.raises(ConfigError, match="unknown options \\['sharpen'\\]"):
        TrainConfig.from_dict({**config.to_dict(), "sharpen": 1.0})  # a newer vsr's checkpoint


def test_validation_psnr_is_reported(image_folder: Path, tmp_path: Path) -> None:
    result = train(_config(image_folder, steps=4), tmp_path / "v", val=image_folder, val_every=2,
                   log=lambda s: None)
    vals = [h["val_psnr"] for h in result.history if "val_psnr" in h]
    assert len(vals) == 2 and all(10 < v < 60 for v in vals)
    assert result.val_psnr == vals[-1]


def test_init_from_other_scale_copies_feature_layers(image_folder: Path, tmp_path: Path) -> None:
    first = train(_config(image_folder, scale=3, patch=6, steps=2), tmp_path / "x3", log=lambda s: None)
    second = train(_config(image_folder, scale=2, steps=1, lr=1e-12, min_lr=1e-12, init=str(first.weights)),
                   tmp_path / "x2", log=lambda s: None)
    a, _ = read_weights(first.weights)
    b, _ = read_weights(second.weights)
    assert torch.allclose(a["features.0.weight"], b["features.0.weight"], atol=1e-6)
    assert a["subpixel.weight"].shape != b["subpixel.weight"].shape


def test_bad_settings_are_one_line_errors(image_folder: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(data=())
    with pytest.raises(ConfigError):
        TrainConfig(data=("x",), scale=5)
    rc = cli_main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--steps", "1"])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_train_runs(image_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    rc = cli_main(["train", "--model", "espcn-fast", "--scale", "2", "--data", str(image_folder),
                   "--out", str(out), "--steps", "3", "--batch-size", "2", "--patch", "8", "--warmup", "1",
                   "--log-every", "1", "--context", "1", "--grid-phases"])
    assert rc == 0
    _, meta = read_weights(out / "espcn-fast_x2.safetensors")
    assert meta["training"]["context"] == 1 and meta["training"]["grid_phases"] is True
    assert "wrote" in capsys.readouterr().out
    assert load_image(next(image_folder.iterdir())).shape == (60, 72, 3)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_steps_run_in_fp32_where_the_cpu_would_emulate_bf16(image_folder: Path, tmp_path: Path, monkeypatch,
                                                                   native: bool) -> None:
    # bf16 autocast is only a speed measure; where the CPU lacks it (faked flags) it would be ~10x slower
    from vsr.engine import _devices

    monkeypatch.setattr(_devices, "cpu_flags", lambda: frozenset({"avx2", "fma"} | ({"avx512_bf16"} if native else set())))
    said: list[str] = []
    asked = train(_config(image_folder, bf16_until=0.5), tmp_path / "bf16", log=said.append)
    fp32 = train(_config(image_folder, bf16_until=0.0), tmp_path / "fp32", log=lambda s: None)
    a, _ = read_weights(asked.weights)
    b, _ = read_weights(fp32.weights)
    same = all(torch.equal(a[k], b[k]) for k in a)
    notice = [s for s in said if "no native bf16" in s]
    if native:  # the first half of the steps under bf16 autocast: other weights, no notice
        assert not same and not notice
    else:
        assert same and len(notice) == 1 and "fp32" in notice[0]
