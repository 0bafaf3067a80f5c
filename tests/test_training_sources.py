"""Training data sources (PATH[:DOWNSCALE[:WEIGHT]], JPEG and gray inputs, BSD100 refused) and distillation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vsr.cli import main as cli_main
from vsr.errors import ConfigError
from vsr.evaluate import imresize, list_images, load_image, make_lr, modcrop, to_y
from vsr.models import create_model, read_weights, save_weights
from vsr.training import DataSource, PatchData, TrainConfig, load_training_data, load_training_images, train


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A JPEG folder (RGB) and a grayscale PNG folder, made here."""
    import cv2

    rng = np.random.default_rng(7)
    out = {}
    for kind in ("jpeg", "gray"):
        folder = tmp_path_factory.mktemp(kind)
        for i in range(3):
            img = cv2.GaussianBlur(rng.uniform(0, 255, (64, 80, 3)).astype(np.uint8), (7, 7), 2.0)
            if kind == "jpeg":
                cv2.imwrite(str(folder / f"p{i}.JPEG"), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
            else:
                cv2.imwrite(str(folder / f"g{i}.png"), img[:, :, 1])
        out[kind] = folder
    return out


def test_data_specs_parse_and_refuse_evaluation_sets(tmp_path: Path) -> None:
    assert DataSource.parse("a/ImageNet1000:0.5:2") == DataSource("a/ImageNet1000", 0.5, 2.0)
    assert DataSource.parse("a/b:0.5") == DataSource("a/b", 0.5, 1.0)
    assert DataSource.parse("a/b") == DataSource("a/b")
    assert DataSource.parse("c:/x/y") == DataSource("c:/x/y")  # a colon that is not an option
    assert DataSource.parse("a/ImageNet1000:0.5:2").label == "ImageNet1000:0.5:2"
    for bad, why in [("../shared/data/benchmark/BSD100", "evaluation set"), ("x/bsd100/", "evaluation set"),
                     ("x/Set14:0.5", "evaluation set"), ("x:0.05", "downscale"), ("x:1:0", "weight"), (":0.5", "no folder")]:
        with pytest.raises(ConfigError, match=why):
            TrainConfig(data=(bad,))
    rc = cli_main(["train", "--data", str(tmp_path / "BSD100"), "--out", str(tmp_path / "o"), "--steps", "1"])
    assert rc == 1


def test_jpeg_and_gray_folders_load_as_8bit_y_pairs_and_downscale_first(folders: dict[str, Path]) -> None:
    for kind, folder in folders.items():
        pairs = load_training_images((str(folder),), 2)
        assert len(pairs) == 3
        for lr, hr in pairs:
            assert lr.dtype == hr.dtype == np.uint8 and lr.ndim == hr.ndim == 2
            assert hr.shape == (64, 80) and lr.shape == (32, 40)
    # downscale 0.5: the HR image is the MATLAB-downscaled image, its LR made from that
    (lr, hr), *_ = load_training_images((f"{folders['jpeg']}:0.5",), 2)
    img = load_image(list_images(folders["jpeg"])[0])
    small = modcrop(imresize(img, 0.5), 2)
    assert np.array_equal(hr, to_y(small)) and np.array_equal(lr, to_y(make_lr(small, 2)))
    # with image scales, downscale multiplies them
    sizes = [hr.shape for _, hr in load_training_images((f"{folders['gray']}:0.5",), 2, (1.0, 0.5))][:2]
    assert sizes == [(32, 40), (16, 20)]


def test_folder_weight_sets_how_often_its_patches_are_drawn(folders: dict[str, Path]) -> None:
    config = TrainConfig(scale=2, data=(str(folders["jpeg"]), f"{folders['gray']}:1:3"), image_scales=(1.0,), patch=8,
                         seed=0)
    pairs, factors = load_training_data(config)
    assert factors == [1.0] * 3 + [3.0] * 3
    data = PatchData(pairs, scale=2, patch=8, seed=0, factors=factors)
    assert data.weights[3:].sum() == pytest.approx(0.75)  # same sizes: 3 / (1 + 3)
    rng = np.random.default_rng([0, 5])
    drawn = rng.choice(len(data.pairs), size=4000, p=data.weights)  # exactly what batch() draws
    assert 0.72 < float(np.mean(drawn >= 3)) < 0.78
    a = PatchData(pairs, scale=2, patch=8, seed=0, factors=factors).batch(3, 5)
    b = PatchData(pairs, scale=2, patch=8, seed=0, factors=factors).batch(3, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # deterministic with the seed
    with pytest.raises(ValueError, match="factors"):
        PatchData(pairs, scale=2, patch=8, seed=0, factors=[1.0])


def _student(folders: dict[str, Path], **kw) -> TrainConfig:
    base = dict(model="espcn-fast", scale=2, data=(str(folders["jpeg"]), str(folders["gray"])), steps=3,
                batch_size=2, patch=8, warmup=1, lr=1e-3, bf16_until=0.0, seed=2)
    return TrainConfig(**{**base, **kw})


def test_distillation_mixes_the_teacher_output_into_the_target(folders: dict[str, Path], tmp_path: Path) -> None:
    teacher_run = train(TrainConfig(model="espcn-teacher", scale=2, data=(str(folders["jpeg"]),), steps=2,
                                    batch_size=2, patch=8, warmup=1, seed=1), tmp_path / "teacher", log=lambda s: None)
    _, meta = read_weights(teacher_run.weights)
    assert meta["config"]["widths"] == [128, 64, 32]
    quiet = {"log": lambda s: None, "log_every": 1}
    plain = train(_student(folders), tmp_path / "plain", **quiet)
    # distill 0: the teacher is computed but has no share of the loss
    zero = train(_student(folders, teacher=str(teacher_run.weights), distill=0.0), tmp_path / "zero", **quiet)
    a, b = read_weights(plain.weights)[0], read_weights(zero.weights)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # distill 1 with the student's own starting network as teacher: the target is the prediction, loss 0
    start = create_model("espcn-fast", scale=2, weights=None)
    own = save_weights(start, tmp_path / "own.safetensors")
    same = train(_student(folders, init=str(own), teacher=str(own), distill=1.0),
                 tmp_path / "same", **quiet)
    assert same.history[0]["loss"] == 0.0
    mixed = train(_student(folders, teacher=str(teacher_run.weights), distill=0.5), tmp_path / "mixed", **quiet)
    assert mixed.history[0]["loss"] != plain.history[0]["loss"]
    _, meta = read_weights(mixed.weights)
    assert meta["training"]["teacher"] == teacher_run.weights.name and meta["training"]["distill"] == 0.5
    with pytest.raises(ConfigError, match="x2 network"):
        train(_student(folders, scale=3, teacher=str(teacher_run.weights)), tmp_path / "x3", log=lambda s: None)
    with pytest.raises(ConfigError, match="distill"):
        _student(folders, distill=1.5)


def test_cli_collapsible_and_teacher_flags(folders: dict[str, Path], tmp_path: Path, capsys) -> None:
    teacher = save_weights(create_model("espcn-teacher", scale=2, weights=None), tmp_path / "t.safetensors")
    rc = cli_main(["train", "--model", "espcn-fast", "--scale", "2", "--data", f"{folders['jpeg']}:0.5:2",
                   "--data", str(folders["gray"]), "--out", str(tmp_path / "cli"), "--steps", "2",
                   "--batch-size", "2", "--patch", "8", "--warmup", "1", "--collapsible",
                   "--teacher", str(teacher), "--distill", "0.3"])
    assert rc == 0, capsys.readouterr().err
    _, meta = read_weights(tmp_path / "cli" / "espcn-fast_x2.safetensors")
    assert meta["training"]["collapsible"] is True and meta["training"]["distill"] == 0.3
    assert meta["training"]["data"][0].endswith(":0.5:2")
