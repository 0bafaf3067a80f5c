import pytest
import torch

import vsr
from vsr.models import ESPCN, ESPCNConfig, create_model, list_models, load_weights, register_model, save_weights


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(scale: int, channels: int) -> None:
    model = create_model("espcn", scale=scale, channels=channels, weights=None)
    out = model(torch.rand(2, channels, 11, 7))
    assert out.shape == (2, channels, 11 * scale, 7 * scale)


def test_paper_architecture() -> None:
    m = create_model("espcn", scale=3, weights=None)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(64, 1, 5, 5), (32, 64, 3, 3), (9, 32, 3, 3)]
    assert isinstance(m.features[1], torch.nn.Tanh)
    assert isinstance(m.shuffle, torch.nn.PixelShuffle) and m.shuffle.upscale_factor == 3


def test_bad_input_shape_is_clear() -> None:
    m = create_model("espcn", scale=2, weights=None)
    with pytest.raises(ValueError, match=r"expects a \(N, 1, H, W\) tensor, got shape \(1, 3, 4, 4\)"):
        m(torch.rand(1, 3, 4, 4))


def test_registry() -> None:
    assert {"espcn", "espcn-fast"} <= set(list_models())
    with pytest.raises(ValueError, match="already registered"):
        register_model("espcn", widths=(64, 32), kernels=(5, 3, 3))
    with pytest.raises(vsr.ModelError, match="unknown model 'nope'; choose one of: .*espcn"):
        create_model("nope", weights=None)
    with pytest.raises(vsr.ConfigError, match="scale must be 2, 3 or 4"):
        create_model("espcn", scale=5, weights=None)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip(tmp_path, suffix: str) -> None:
    a = create_model("espcn", scale=2, weights=None)
    path = save_weights(a, tmp_path / f"w{suffix}")
    b = create_model("espcn", scale=2, weights=path)
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(a(x), b(x))


def test_weights_of_other_scale_or_arch_refused(tmp_path) -> None:
    path = save_weights(create_model("espcn", scale=2, weights=None), tmp_path / "x2.safetensors")
    with pytest.raises(vsr.WeightsError, match=r"holds weights for x2 .* but the model is x3"):
        create_model("espcn", scale=3, weights=path)
    with pytest.raises(vsr.WeightsError, match=r"widths=\[64, 32\].*but the model is .*widths=\[32, 16\]"):
        create_model("espcn-fast", scale=2, weights=path)
    # a bare state_dict (no metadata) of the wrong shape is refused by shape
    torch.save(create_model("espcn", scale=2, weights=None).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(vsr.WeightsError, match="does not fit the model"):
        load_weights(ESPCN(ESPCNConfig(scale=4)), tmp_path / "bare.pt")


def test_pickled_module_refused(tmp_path) -> None:
    torch.save(create_model("espcn", scale=2, weights=None), tmp_path / "module.pt")
    with pytest.raises(vsr.WeightsError, match="cannot read weights"):
        create_model("espcn", scale=2, weights=tmp_path / "module.pt")


def test_missing_and_corrupt_weights(tmp_path) -> None:
    with pytest.raises(vsr.WeightsError, match="does not exist"):
        create_model("espcn", scale=2, weights=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(vsr.WeightsError, match="cannot read weights"):
        create_model("espcn", scale=2, weights=bad)


def test_errors_inherit_builtins() -> None:
    assert issubclass(vsr.ConfigError, ValueError)
    assert issubclass(vsr.MediaError, OSError)
    assert issubclass(vsr.OutputExistsError, FileExistsError)
    assert issubclass(vsr.ModelError, LookupError)
    assert all(issubclass(getattr(vsr, n), vsr.VsrError) for n in vsr.__all__ if n.endswith("Error"))
