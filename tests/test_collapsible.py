"""Collapsible training (vsr.ops.collapsible): the branches fold exactly into the deployed convolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vsr.errors import ConfigError
from vsr.models import ESPCN, create_model, read_weights, shipped_weights
from vsr.ops.collapsible import CollapsibleConv2d, collapse, collapsed_state_dict, make_collapsible
from vsr.training import TrainConfig, export_checkpoint, train


def _branched(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A collapsible ESPCN run branch by branch (every CollapsibleConv2d through ``branched``)."""
    h = x
    for layer in model.features:
        h = layer.branched(h) if isinstance(layer, CollapsibleConv2d) else layer(h)
    return model.shuffle(model.subpixel.branched(h))


def _randomise(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("name", ["espcn", "espcn-fast"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_collapsed_network_equals_branched_network(name: str, scale: int) -> None:
    torch.manual_seed(scale)
    model = make_collapsible(create_model(name, scale=scale, weights=None))
    _randomise(model, seed=10 * scale + len(name))  # every branch non-zero
    x = torch.rand(2, 1, 17, 22, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = _branched(model, x)
        plain = create_model(name, scale=scale, weights=None)
        plain.load_state_dict(collapsed_state_dict(model))  # a plain ESPCN's state_dict, strictly
        out = plain(x)
        folded = model(x)  # the training forward: the folded kernel
    assert type(plain.features[0]) is nn.Conv2d and out.shape == (2, 1, 17 * scale, 22 * scale)
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel < 1e-5, rel
    assert float((folded - ref).abs().max() / ref.abs().max()) < 1e-5
    # the branches matter: without them the output is far from the branched one
    main_only = {k.replace(".main", ""): v for k, v in model.state_dict().items() if ".main." in k}
    plain.load_state_dict(main_only)
    with torch.no_grad():
        assert float((plain(x) - ref).abs().max() / ref.abs().max()) > 0.1


def test_every_branch_kind_is_present_and_identity_where_shapes_allow() -> None:
    layer = CollapsibleConv2d(8, 8, 3)
    assert layer.identity_scale is not None and layer.edge_names == ("sobel_x", "sobel_y", "laplacian")
    assert CollapsibleConv2d(1, 8, 5).identity_scale is None
    assert CollapsibleConv2d(4, 8, 1).edge_names == ()  # a 1x1 conv cannot hold a 3x3 filter
    for k in (1, 3, 5):
        conv = CollapsibleConv2d(6, 6, k).double()
        _randomise(conv, seed=k)
        x = torch.rand(1, 6, 9, 11, dtype=torch.float64)
        with torch.no_grad():
            assert torch.allclose(conv.to_conv()(x), conv.branched(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        CollapsibleConv2d(1, 1, 4)


@pytest.mark.parametrize("name", ["espcn", "espcn-fast"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_collapsible_model_starts_exactly_at_the_shipped_network(name: str, scale: int) -> None:
    shipped = create_model(name, scale=scale)  # the package's weights
    model = make_collapsible(shipped)
    x = torch.rand(1, 1, 15, 19, generator=torch.Generator().manual_seed(scale))
    with torch.no_grad():
        assert torch.equal(model(x), shipped(x))
    for key, value in collapsed_state_dict(model).items():
        assert torch.equal(value, shipped.state_dict()[key]), key
    assert all(type(m) is not CollapsibleConv2d for m in collapse(model).modules())
    assert type(shipped.features[0]) is nn.Conv2d  # the input model is left alone


def test_gradients_reach_every_branch() -> None:
    torch.manual_seed(0)
    model = make_collapsible(create_model("espcn-fast", scale=2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.rand(4, 1, 12, 12)
    target = torch.rand(4, 1, 24, 24)
    for _ in range(2):  # the first step moves the zero factors, the second the ones behind them
        opt.zero_grad()
        nn.functional.mse_loss(model(x), target).backward()
        opt.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert not unchanged


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    out = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(5)
    for i in range(3):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (48, 56, 3)).astype(np.uint8), (5, 5), 1.5)
        cv2.imwrite(str(out / f"i{i}.png"), img)
    return out


def test_collapsible_run_from_shipped_weights_writes_a_plain_espcn(folder: Path, tmp_path: Path) -> None:
    init = shipped_weights("espcn-fast", 2)
    assert init is not None
    config = TrainConfig(model="espcn-fast", scale=2, data=(str(folder),), steps=4, batch_size=2, patch=8,
                         warmup=1, lr=1e-3, bf16_until=0.0, seed=1, init=str(init), collapsible=True)
    whole = train(config, tmp_path / "whole", log=lambda s: None, checkpoint_every=2)
    state, meta = read_weights(whole.weights)
    assert meta["training"]["collapsible"] is True
    net = create_model("espcn-fast", scale=2, weights=whole.weights)  # loads as the deployed architecture
    assert isinstance(net, ESPCN) and set(state) == set(net.state_dict())
    start, _ = read_weights(init)
    assert any(not torch.equal(state[k], start[k]) for k in state)  # it trained
    # interrupted, exported, resumed: the same weights as the uninterrupted run
    part = train(config, tmp_path / "part", stop_after=2, log=lambda s: None, checkpoint_every=2)
    exported = export_checkpoint(part.checkpoint, tmp_path / "mid.safetensors")
    assert set(read_weights(exported)[0]) == set(state)
    resumed = train(config, tmp_path / "part", resume=True, log=lambda s: None, checkpoint_every=2)
    again, _ = read_weights(resumed.weights)
    for k in state:
        assert torch.equal(state[k], again[k]), k
    with pytest.raises(ConfigError, match="--collapsible"):  # e.g. --qat's network
        train(config, tmp_path / "module", module=create_model("espcn-fast", scale=2), log=lambda s: None)
