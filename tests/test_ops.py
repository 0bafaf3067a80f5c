"""vsr.ops: periodic shuffle, deconvolution ⇄ LR convolution, whole-model conversion."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vsr.errors import ConfigError
from vsr.models import create_model
from vsr.ops import (
    PeriodicShuffle,
    SubpixelConv,
    SubpixelConversionWarning,
    SubpixelConvModule,
    TransposedConv,
    convert_transposed_convs,
    deconv_to_subpixel,
    periodic_shuffle,
    periodic_unshuffle,
    subpixel_to_deconv,
    unsupported_reason,
)

SCALES = (2, 3, 4)
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Hundreds of tiny convolutions: intra-op threads only add sync cost (ms per call on a busy box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def kernel_sizes(r: int) -> list[int]:
    """Multiples of r and sizes that are not: 1, r-1, r+1, 2r-1."""
    return sorted({1, max(1, r - 1), r, r + 1, 2 * r - 1, 2 * r, 3 * r})


def assert_close_rel(y: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5) -> None:
    assert y.shape == ref.shape
    scale = ref.abs().max().clamp_min(1e-12)
    err = (y - ref).abs().max()
    assert err <= rtol * scale, f"max error {err:.3g} vs max |ref| {scale:.3g}"


# --------------------------------------------------------------------------- periodic shuffle


@pytest.mark.parametrize("r", [1, *SCALES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_periodic_shuffle_2d_is_torch_pixel_shuffle(r: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(r)
    for c, h, w in [(1, 1, 1), (3, 4, 5), (2, 7, 3)]:
        x = torch.randint(-1000, 1000, (2, c * r * r, h, w), generator=g).to(dtype)
        y = periodic_shuffle(x, r)
        assert torch.equal(y, F.pixel_shuffle(x, r))
        assert torch.equal(periodic_unshuffle(y, r), x)
        assert torch.equal(periodic_unshuffle(y, r), F.pixel_unshuffle(y, r))
        assert torch.equal(PeriodicShuffle(r)(x), y)


@pytest.mark.parametrize("r", SCALES)
def test_periodic_shuffle_1d_matches_definition(r: int) -> None:
    c, length = 3, 5
    x = torch.arange(2 * c * r * length).reshape(2, c * r, length)
    y = periodic_shuffle(x, r)
    assert y.shape == (2, c, length * r)
    for n, ch, pos, phase in itertools.product(range(2), range(c), range(length), range(r)):
        assert y[n, ch, pos * r + phase] == x[n, ch * r + phase, pos]
    assert torch.equal(periodic_unshuffle(y, r), x)


def test_periodic_shuffle_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="multiple of r"):
        periodic_shuffle(torch.zeros(1, 5, 2, 2), 2)
    with pytest.raises(ConfigError, match="multiple of r"):
        periodic_unshuffle(torch.zeros(1, 1, 5, 4), 2)
    with pytest.raises(ConfigError, match="tensor"):
        periodic_shuffle(torch.zeros(4, 4), 2)
    with pytest.raises(ConfigError, match="positive integer"):
        periodic_shuffle(torch.zeros(1, 4, 2, 2), 0)


# --------------------------------------------------------------------------- the note's 1-D examples


def note_weight(f: list[int]) -> torch.Tensor:
    """The note's sub-pixel filter f as a ConvTranspose1d weight: indices reversed."""
    return torch.tensor(f[::-1], dtype=torch.int64).reshape(1, 1, -1)


def test_note_example_multiple_of_r() -> None:
    sub = deconv_to_subpixel(note_weight([1, 2, 3, 4]), stride=2)
    assert sub.weight.tolist() == [[[2, 4]], [[1, 3]]]  # f1 = (2, 4), f2 = (1, 3)


def test_note_example_not_a_multiple_of_r() -> None:
    sub = deconv_to_subpixel(note_weight([1, 2, 3]), stride=2)
    assert sub.weight.tolist() == [[[2, 0]], [[1, 3]]]  # f1 = (2) and a padding zero, f2 = (1, 3)


@pytest.mark.parametrize("f", [[1, 2, 3, 4], [1, 2, 3]])
def test_note_examples_reproduce_the_transposed_conv_exactly(f: list[int]) -> None:
    """y1 = f1 ✳ x, y2 = f2 ✳ x interleaved == transposed conv == sub-pixel conv of Fig. 3b."""
    x = torch.tensor([[[3, -1, 4, 1, -5]]], dtype=F64)  # integers: every result is exact
    w = note_weight(f).to(F64)
    for padding, output_padding in [(0, 0), (1, 0), (1, 1), (2, 1)]:
        if padding >= len(f):
            continue
        ref = F.conv_transpose1d(x, w, stride=2, padding=padding, output_padding=output_padding)
        sub = deconv_to_subpixel(w, stride=2, padding=padding, output_padding=output_padding)
        assert torch.equal(sub.apply(x), ref)
    # Fig. 3b: zero-interleave x, then correlate with f itself (not reversed).
    z = torch.zeros(1, 1, 2 * x.shape[-1] - 1, dtype=F64)
    z[..., ::2] = x
    subpixel = F.conv1d(z, torch.tensor(f, dtype=F64).reshape(1, 1, -1), padding=len(f) - 1)
    assert torch.equal(subpixel, F.conv_transpose1d(x, w, stride=2))


# --------------------------------------------------------------------------- kernel conversion


@pytest.mark.parametrize("r", SCALES)
def test_1d_conversion_matches_conv_transpose_everywhere(r: int) -> None:
    g = torch.Generator().manual_seed(10 + r)
    cases = 0
    for K in kernel_sizes(r):
        for p, op, length in itertools.product(range(K), range(r), (1, 2, 6)):
            if (length - 1) * r + K - 2 * p + op <= 0:
                continue
            c_in, c_out = 1 + (p % 3), 1 + (op + K) % 3
            w = torch.randn(c_in, c_out, K, generator=g, dtype=F64)
            b = torch.randn(c_out, generator=g, dtype=F64)
            x = torch.randn(2, c_in, length, generator=g, dtype=F64)
            ref = F.conv_transpose1d(x, w, b, stride=r, padding=p, output_padding=op)
            sub = deconv_to_subpixel(w, b, stride=r, padding=p, output_padding=op)
            assert_close_rel(sub.apply(x), ref, 1e-12)
            assert_close_rel(sub.to_module()(x), ref, 1e-12)
            cases += 1
    assert cases > 50


@pytest.mark.parametrize("r", SCALES)
@pytest.mark.parametrize("size", ["1", "r-1", "r", "r+1", "2r-1", "2r", "3r"])
def test_2d_conversion_matches_conv_transpose_everywhere(r: int, size: str) -> None:
    K = max(1, {"1": 1, "r-1": r - 1, "r": r, "r+1": r + 1, "2r-1": 2 * r - 1, "2r": 2 * r, "3r": 3 * r}[size])
    g = torch.Generator().manual_seed(100 * r + K)
    for p, op in itertools.product(range(K), range(r)):
        c_in, c_out = [(1, 1), (3, 2), (4, 5)][(p + op) % 3]
        h, w_ = 1 + (p % 4), 3 + (op % 2)
        if min(h, w_) * r - r + K - 2 * p + op <= 0:
            continue
        weight = torch.randn(c_in, c_out, K, K, generator=g)
        bias = torch.randn(c_out, generator=g)
        x = torch.randn(2, c_in, h, w_, generator=g)
        # float64 for the tight check; float32 as a deployed layer would run.
        for dtype, rtol in [(F64, 1e-12), (torch.float32, 1e-5)]:
            wt, bt, xt = weight.to(dtype), bias.to(dtype), x.to(dtype)
            ref = F.conv_transpose2d(xt, wt, bt, stride=r, padding=p, output_padding=op)
            sub = deconv_to_subpixel(wt, bt, stride=r, padding=p, output_padding=op)
            assert sub.weight.shape == (c_out * r * r, c_in, -(-K // r), -(-K // r))
            assert_close_rel(sub.apply(xt), ref, rtol)


def test_2d_non_square_kernel_and_padding() -> None:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(3, 2, 5, 3, generator=g, dtype=F64)
    b = torch.randn(2, generator=g, dtype=F64)
    x = torch.randn(1, 3, 4, 6, generator=g, dtype=F64)
    for padding, output_padding in [((0, 2), (1, 0)), ((4, 1), (0, 2)), ((2, 0), (2, 1))]:
        ref = F.conv_transpose2d(x, w, b, stride=3, padding=padding, output_padding=output_padding)
        sub = deconv_to_subpixel(w, b, stride=3, padding=padding, output_padding=output_padding)
        assert_close_rel(sub.apply(x), ref, 1e-12)
        back = subpixel_to_deconv(sub, kernel_size=(5, 3))
        assert torch.equal(back.weight, w)
        assert (back.padding, back.output_padding) == (padding, output_padding)


@pytest.mark.parametrize("r", SCALES)
def test_round_trip_gives_back_the_kernel(r: int) -> None:
    g = torch.Generator().manual_seed(r)
    for K, dims in itertools.product(kernel_sizes(r), (1, 2)):
        for p, op in [(0, 0), (K - 1, 0), (K // 2, r - 1), (min(1, K - 1), 1)]:
            w = torch.randn(2, 3, *[K] * dims, generator=g)
            b = torch.randn(3, generator=g)
            sub = deconv_to_subpixel(w, b, stride=r, padding=p, output_padding=op)
            back = subpixel_to_deconv(sub, kernel_size=K)
            assert torch.equal(back.weight, w) and torch.equal(back.bias, b)
            assert back.stride == r
            assert back.padding == (p,) * dims and back.output_padding == (op,) * dims
            # Without kernel_size the kernel comes back zero-padded (up to k·r), same layer.
            wide = subpixel_to_deconv(sub)
            K_wide = wide.weight.shape[-1]
            assert K <= K_wide <= -(-K // r) * r and wide.weight.shape[2:] == (K_wide,) * dims
            assert torch.equal(wide.weight[(..., *[slice(K_wide - K, None)] * dims)], w)
            x = torch.randn(1, 2, *[K] * dims, generator=g, dtype=F64)  # output >= 1 pixel
            ref = TransposedConv(w.to(F64), b.to(F64), r, back.padding, back.output_padding).apply(x)
            wide64 = TransposedConv(wide.weight.to(F64), b.to(F64), r, wide.padding, wide.output_padding)
            assert_close_rel(wide64.apply(x), ref, 1e-12)
            # And sub-pixel → deconv → sub-pixel is the identity on the weights.
            again = deconv_to_subpixel(back.weight, back.bias, stride=r, padding=p, output_padding=op)
            assert torch.equal(again.weight, sub.weight)
            assert (again.padding, again.crop) == (sub.padding, sub.crop)


@pytest.mark.parametrize("scale", SCALES)
def test_espcn_last_layer_is_a_deconvolution(scale: int) -> None:
    """The note's figure: ESPCN's (r², 32, 3, 3) layer + shuffle == one (32→1, 3r×3r) deconvolution."""
    model = create_model("espcn", scale=scale, weights=None)
    torch.manual_seed(scale)
    with torch.no_grad():
        # One bias for all r² phases: a deconvolution has one per output channel.
        model.subpixel.bias.fill_(0.25)
    conv = model.subpixel
    sub = SubpixelConv(weight=conv.weight.detach(), bias=conv.bias.detach(), scale=scale,
                       padding=tuple(conv.padding), crop=((0, 0), (0, 0)))
    deconv = subpixel_to_deconv(sub)
    assert deconv.weight.shape == (32, 1, 3 * scale, 3 * scale)
    assert deconv.padding == (scale, scale) and deconv.output_padding == (0, 0)
    h = torch.randn(2, 32, 7, 9)
    with torch.no_grad():
        ref = model.shuffle(conv(h))
        assert_close_rel(deconv.apply(h), ref)
        assert_close_rel(deconv.to_module()(h), ref)


def test_conversion_rejects_what_it_cannot_express() -> None:
    w = torch.randn(2, 1, 4, 4)
    with pytest.raises(ConfigError, match="output_padding"):
        deconv_to_subpixel(w, stride=2, output_padding=2)
    with pytest.raises(ConfigError, match="bias"):
        deconv_to_subpixel(w, torch.zeros(3), stride=2)
    with pytest.raises(ConfigError, match="weight"):
        deconv_to_subpixel(torch.zeros(2, 2), stride=2)
    sub = deconv_to_subpixel(w, torch.zeros(1), stride=2, padding=1, output_padding=1)
    phased = SubpixelConv(weight=sub.weight, bias=torch.arange(4.0), scale=2,
                          padding=sub.padding, crop=sub.crop)
    with pytest.raises(ConfigError, match="bias differs"):
        subpixel_to_deconv(phased)
    with pytest.raises(ConfigError, match="non-zero taps"):
        subpixel_to_deconv(sub, kernel_size=3)
    with pytest.raises(ConfigError, match="output_padding"):
        subpixel_to_deconv(SubpixelConv(weight=sub.weight, bias=None, scale=2, padding=(1, 1),
                                        crop=((0, 3), (0, 0))))
    with pytest.raises(ConfigError, match="crop"):
        SubpixelConv(weight=sub.weight, bias=None, scale=2, padding=(1, 1), crop=((0, -1), (0, 0)))


@settings(max_examples=60, deadline=None)
@given(
    r=st.integers(2, 4), K=st.integers(1, 13), dims=st.integers(1, 2),
    p_frac=st.floats(0, 0.999), op_frac=st.floats(0, 0.999),
    size=st.integers(1, 5), c_in=st.integers(1, 3), c_out=st.integers(1, 3), seed=st.integers(0, 2**16),
)
def test_conversion_property(r: int, K: int, dims: int, p_frac: float, op_frac: float,
                             size: int, c_in: int, c_out: int, seed: int) -> None:
    p, op = int(p_frac * K), int(op_frac * r)
    if (size - 1) * r + K - 2 * p + op <= 0:
        return
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c_in, c_out, *[K] * dims, generator=g, dtype=F64)
    b = torch.randn(c_out, generator=g, dtype=F64)
    x = torch.randn(1, c_in, *[size] * dims, generator=g, dtype=F64)
    ref = TransposedConv(w, b, r, (p,) * dims, (op,) * dims).apply(x)
    sub = deconv_to_subpixel(w, b, stride=r, padding=p, output_padding=op)
    assert_close_rel(sub.apply(x), ref, 1e-12)
    assert torch.equal(subpixel_to_deconv(sub, kernel_size=K).weight, w)


# --------------------------------------------------------------------------- whole models


def fsrcnn_like(scale: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 24, 5, padding=2), nn.PReLU(24),
        nn.Conv2d(24, 8, 1), nn.PReLU(8),
        nn.Conv2d(8, 8, 3, padding=1), nn.PReLU(8),
        nn.Conv2d(8, 24, 1), nn.PReLU(24),
        nn.ConvTranspose2d(24, 1, 9, stride=scale, padding=4, output_padding=scale - 1),
    )


def test_convert_fsrcnn_like_model() -> None:
    torch.manual_seed(0)
    model = fsrcnn_like().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to report
        fast = convert_transposed_convs(model)
    assert isinstance(model[-1], nn.ConvTranspose2d)  # the input is left alone
    assert isinstance(fast[-1], SubpixelConvModule)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in fast.modules())
    assert not fast.training
    x = torch.rand(2, 1, 17, 23)
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (2, 1, 51, 69)
        assert_close_rel(fast(x), ref)
        assert_close_rel(fast.double()(x.double()), model.double()(x.double()), 1e-12)


def test_convert_leaves_unsupported_layers_alone_and_reports_them() -> None:
    model = nn.ModuleDict({
        "up": nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),
        "grouped": nn.ConvTranspose2d(4, 4, 4, stride=2, groups=2),
        "dilated": nn.ConvTranspose2d(4, 2, 3, stride=2, dilation=2),
        "oblong": nn.ConvTranspose2d(4, 2, 3, stride=(2, 1)),
        "flat": nn.ConvTranspose2d(4, 2, 3, stride=1),
        "line": nn.ConvTranspose1d(4, 2, 5, stride=3, padding=1, output_padding=2),
        "lazy": nn.LazyConvTranspose2d(2, 3, stride=2),
        "cube": nn.ConvTranspose3d(4, 2, 2, stride=2),
    })
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = convert_transposed_convs(model)
    reports = {w.message.layer_name: w.message.reason for w in caught
               if issubclass(w.category, SubpixelConversionWarning)}
    assert set(reports) == {"grouped", "dilated", "oblong", "flat", "lazy", "cube"}
    assert "groups=2" in reports["grouped"] and "dilation" in reports["dilated"]
    assert "stride" in reports["oblong"] and "stride 1" in reports["flat"]
    for name in reports:
        assert type(fast[name]) is type(model[name])
        if name != "lazy":
            assert torch.equal(fast[name].weight, model[name].weight)
        assert unsupported_reason(model[name]) == reports[name]
    assert isinstance(fast["up"], SubpixelConvModule) and isinstance(fast["line"], SubpixelConvModule)
    x2, x1 = torch.randn(1, 4, 5, 6), torch.randn(2, 4, 7)
    with torch.no_grad():
        assert_close_rel(fast["up"](x2), model["up"](x2))
        assert_close_rel(fast["line"](x1), model["line"](x1))
    with pytest.raises(ConfigError, match="grouped.*dilated.*oblong.*flat.*lazy.*cube"):
        convert_transposed_convs(model, strict=True)


def test_convert_root_layer_and_shared_layers() -> None:
    layer = nn.ConvTranspose2d(3, 2, 5, stride=2, padding=2, output_padding=1)
    root = convert_transposed_convs(layer)
    assert isinstance(root, SubpixelConvModule)
    twice = convert_transposed_convs(nn.Sequential(layer, nn.Conv2d(2, 3, 1), layer))
    assert twice[0] is twice[2] and isinstance(twice[0], SubpixelConvModule)
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        assert_close_rel(root(x), layer(x))
        assert_close_rel(root(x[0]), layer(x[0]))  # unbatched, as ConvTranspose2d accepts
        assert_close_rel(twice(x), layer(twice[1](layer(x))))
    with pytest.raises(ConfigError, match="groups"):
        SubpixelConv.from_conv_transpose(nn.ConvTranspose2d(2, 2, 3, stride=2, groups=2))


# --------------------------------------------------------------------------- the figure tool


def test_draw_kernels_tool(tmp_path: Path) -> None:
    import cv2

    tool = Path(__file__).resolve().parents[1] / "tools" / "draw_kernels.py"
    out = tmp_path / "k2.png"
    run = subprocess.run([sys.executable, str(tool), "--scale", "2", "-o", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "weights" in run.stdout and str(out) in run.stdout
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 600
    again = subprocess.run([sys.executable, str(tool), "--scale", "2", "-o", str(out)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr


def test_draw_kernels_uses_shipped_weights_when_there_are_some(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from vsr.models import save_weights

    tool = Path(__file__).resolve().parents[1] / "tools" / "draw_kernels.py"
    spec = importlib.util.spec_from_file_location("draw_kernels", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained = create_model("espcn", scale=2, weights=None)
    with torch.no_grad():
        trained.subpixel.weight.fill_(0.0)
        trained.subpixel.weight[3, 5, 0, 2] = 1.0  # phase (1, 1), input channel 5, tap (0, 2)
    path = save_weights(trained, tmp_path / "espcn_x2.safetensors")
    monkeypatch.setattr(module, "shipped_weights", lambda name, scale: path if (name, scale) == ("espcn", 2) else None)
    image, source, max_diff = module.draw(2)
    assert "shipped" in source and path.name in source and max_diff < 1e-12
    # The one non-zero weight shows as red in channel 5's tiles only (row 0, column 5), on both panels.
    red = (image[..., 2] > 200) & (image[..., 0] < 100)
    ys, xs = np.nonzero(red)
    assert len(ys) == 2 * module.CELL**2  # one cell on the left, one on the right
