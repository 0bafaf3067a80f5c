"""The int8 CPU engine: its scheme, its shipped files, where ``auto`` picks it, its quality against fp32."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vsr.cli import main
from vsr.config import load_config
from vsr.engine import LumaUpscaler, int8_model, upscaler_from_config
from vsr.engine import _devices
from vsr.engine._int8 import Int8CpuNet
from vsr.errors import DeviceError, WeightsError
from vsr.evaluate import engine_upscaler, evaluate
from vsr.models import ESPCNConfig, create_model, shipped_weights
from vsr.quantize import (RESIDUAL_STEP_FLOOR, SCHEME, QuantESPCN, _best_relu_bypass_scales, calibrate,
                           fake_activation, fake_residual, file_sha256, load_int8, residual_step, residual_table,
                           save_int8, shipped_int8, tanh_table)

SHIPPED = [(m, s) for m in ("espcn", "espcn-fast") for s in (2, 3, 4) if shipped_int8(m, s) is not None]
VNNI = {"avx512f", "avx512_bf16", "avx512_vnni"}  # AVX-512 with bf16 and VNNI, as far as vsr looks
needs_int8 = pytest.mark.skipif(not _devices.cpu_has_int8_dot(), reason="this CPU has no VNNI/AMX-INT8")


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch):
    """Fake the CPU's flags (and vendor): ``flags({"avx512_vnni", ...}, vendor="GenuineIntel")``."""
    def fake(values: set[str], vendor: str = "GenuineIntel") -> None:
        monkeypatch.setattr(_devices, "cpu_flags", lambda: frozenset(values))
        monkeypatch.setattr(_devices, "cpu_vendor", lambda: vendor)
    return fake


def _clip_frames(path: Path, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for _, f in zip(range(count), c.decode(video=0))]


def _calibrated(model: str = "espcn", scale: int = 3, *, bypass: bool | None = None) -> QuantESPCN:
    fp32 = create_model(model, scale=scale)
    rng = np.random.default_rng(0)
    planes = [rng.integers(16, 236, (40, 48)).astype(np.uint8) for _ in range(2)]
    return QuantESPCN.from_model(fp32, calibrate(fp32, planes, samples=4096, bypass=bypass), bypass=bypass)


# -- the scheme -------------------------------------------------------------------------------
@needs_int8
@pytest.mark.parametrize("model, scale, bypass", [("espcn", 3, None), ("espcn", 2, False), ("espcn-fast", 3, None)],
                         ids=["espcn-v4", "espcn-v3", "espcn-fast"])
@pytest.mark.parametrize("shape", [(2, 1, 37, 53), (1, 1, 3, 5)], ids=["frame", "tiny"])
def test_engine_computes_the_scheme_it_was_trained_for(model: str, scale: int, bypass: bool | None,
                                                       shape: tuple[int, ...]) -> None:
    """oneDNN's int8 result equals the float simulation QAT trains, but for rare one-level roundings; a frame
    smaller than the bypass's reach (7x7) too, where every pixel is on the exact ring."""
    q = _calibrated(model, scale, bypass=bypass)
    assert q.bypass is (bypass is None)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, shape).astype(np.uint8))
    got = Int8CpuNet(q)(x, 255).float()
    with torch.no_grad():
        want = q(x.float() / 255).mul(255).round().clamp(0, 255)
    diff = (got - want).abs()
    assert diff.max() <= 2 and (diff > 0).float().mean() < 0.005, (diff.max(), (diff > 0).float().mean())


def test_relu_bypass_codes_the_side_with_fewer_non_zero_values() -> None:
    """Scheme v4, ReLU: ``relu(z) = z + relu(-z)``, so a channel that is positive on most pixels codes ``relu(-z)``
    (0 there, and 0 is exact) and sends ``z`` to layer 2 in fp32; a mostly negative one codes ``relu(z)``."""
    g = torch.Generator().manual_seed(0)
    mostly_pos = torch.randn(4096, generator=g).abs() - 0.05
    values = torch.stack([mostly_pos, -mostly_pos])
    scales = _best_relu_bypass_scales(values)
    assert scales[0] < 0 < scales[1]
    q = _calibrated("espcn-fast", 2)
    assert q.bypass and 0 < int(q.linear_channels().sum()) < 32  # real weights: some channels of each kind
    z = (torch.rand(1, 32, 8, 8, generator=g) * 2 - 1) * 250 * q.scales[0].abs()[None, :, None, None]  # no clipping
    sides = torch.where(q.linear_channels()[None, :, None, None], -z, z)
    codes = fake_activation(sides, "relu", q.scales[0].abs()) * q.scales[0].abs()[None, :, None, None]
    read = torch.where(q.linear_channels()[None, :, None, None], z, torch.zeros_like(z)) + codes
    assert (read - torch.relu(z)).abs().max() <= q.scales[0].abs().max() / 2 + 1e-6


@pytest.mark.parametrize("shape", [(2, 1, 29, 41), (1, 1, 6, 4), (1, 1, 1, 9)])
def test_bypass_composite_is_layer_2_on_the_exact_pre_activation(shape: tuple[int, ...]) -> None:
    """Scheme v4's linear part as the engine computes it (one 7x7 convolution of the plane, what it adds for the
    pre-activation outside the image taken off the outermost ring) equals layer 2's fp32 weights on layer 1's
    zero-padded pre-activation."""
    q = _calibrated("espcn", 3)
    net = Int8CpuNet(q)
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, shape).astype(np.uint8))
    conv1, conv2 = q.convs()[:2]
    w1 = conv1.weight.detach() / 255
    zeros = torch.zeros(shape[0], 32, *shape[2:]).contiguous(memory_format=torch.channels_last)
    got = net._add_linear_part(zeros, x, net._pack(255, list(shape))[2]) / 2  # the engine's, the sigmoid trick's 2
    z = torch.nn.functional.conv2d(x.float(), w1, conv1.bias.detach(), padding=2)
    want = torch.nn.functional.conv2d(z, conv2.weight.detach(), None, padding=1)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4 * want.abs().max().item()), (got - want).abs().max()


def test_bypass_residual_codes_vanish_where_tanh_is_linear() -> None:
    """Scheme v4's table: the residual ``tanh(k s) - k s`` of each pre-activation code, at its own step; 0 where
    tanh is linear, odd, monotone (never wraps), and the ends of the code range on the ends of its own."""
    scales = torch.tensor([1e-4, 1.2e-3, 0.012])
    table = residual_table(scales)[0].astype(int) - 128  # (256, C): code k + 128 -> residual code
    k = np.arange(-128, 128)
    assert table[128].tolist() == [0, 0, 0] and table[0, 2] == 127  # k = 0; k = -128 on the largest step
    step = residual_step(scales).double().numpy()
    assert np.allclose(step[:2], step[2] * RESIDUAL_STEP_FLOOR)  # the two smaller steps are floored
    assert (np.diff(table, axis=0) <= 0).all() and np.array_equal(table[1:], -table[1:][::-1])
    step = residual_step(scales).double().numpy()
    want = (np.tanh(k[:, None] * scales.double().numpy()) - k[:, None] * scales.double().numpy()) / step
    assert np.abs(table - want).max() <= 0.5 + 1e-9
    z = torch.linspace(-0.5, 0.5, 201)[None, :, None].expand(3, -1, 1)
    codes = fake_residual(z, scales)
    assert torch.equal(codes, codes.round()) and codes.abs().max() <= 127
    read = z + codes * residual_step(scales)[:, None, None]  # what layer 2 reads: z exactly, the residual coded
    s = scales[:, None, None]
    inside = (z / s).round().abs() <= 127
    err = (read - torch.tanh(z)).abs()
    assert (err <= s / 2 + residual_step(scales)[:, None, None] / 2 + 1e-6)[inside].all()
    assert err[0][inside[0]].max() < 1e-6  # channel 0 stays linear: z itself, no rounding at all


def test_tanh_codes_keep_the_pre_activation_step() -> None:
    """Scheme v3: the activation is coded at the pre-activation's own step, so where tanh is nearly linear
    the table maps each code to itself (one rounding); saturating codes shrink, monotonically, never wrap."""
    scales = torch.tensor([1e-4, 1.2e-3, 0.012])  # largest |tanh| about 0.013, 0.15 and 0.9
    table = tanh_table(scales)[0].astype(int) - 128  # (256, C): code k + 128 -> activation code
    k = np.arange(-128, 128)
    assert np.array_equal(table[:, 0], np.clip(k, -127, 127))
    assert np.abs(table[:, 1] - np.clip(k, -127, 127)).max() <= 1
    assert (np.diff(table, axis=0) >= 0).all() and table[-1, 2] == round(float(np.tanh(127 * 0.012)) / 0.012)
    z = torch.linspace(-0.1, 0.1, 101)[None, :, None].expand(3, -1, 1)
    s = scales[:, None, None]
    a = fake_activation(z, "tanh", scales)  # what the next layer reads, in units of each channel's step
    assert torch.equal(a, a.round()) and a.abs().max() <= 127
    k = torch.round(z / s)
    inside = k.abs() <= 127  # codes the table does not clamp
    assert ((a * s - torch.tanh(k * s)).abs() <= s / 2 + 1e-7)[inside].all()


def test_fake_quantisation_passes_gradients_straight_through() -> None:
    q = _calibrated("espcn-fast", 2)
    x = torch.rand(1, 1, 12, 12)
    q(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.parameters())


@needs_int8
def test_deeper_planes_take_the_fused_path_with_the_same_weights() -> None:
    """A 10-bit sample does not fit int8's uint8 input: those planes go through the fused bf16 path."""
    q = _calibrated("espcn-fast", 2)
    up = LumaUpscaler(q, dtype=torch.bfloat16, int8=True)
    plain = create_model("espcn-fast", scale=2, weights=None)
    plain.load_state_dict(q.state_dict())
    fused = LumaUpscaler(plain, dtype=torch.bfloat16)
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 1024, (1, 1, 30, 40)).astype(np.int16))
    assert torch.equal(up(x, 1023), fused(x, 1023))
    x8 = (x >> 2).to(torch.uint8)
    assert up.precision == "int8" and not torch.equal(up(x8, 255), fused(x8, 255))  # 8-bit: the int8 path


# -- files --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, scale", SHIPPED)
def test_int8_file_is_safetensors_derived_from_the_shipped_fp32_file(model: str, scale: int) -> None:
    """No pickle: a safetensors header (little-endian length, then JSON); the fp32 file it came from is the shipped one."""
    path = shipped_int8(model, scale)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert "quant.scale.0" in header and len(raw) < 1 << 20
    q, meta = load_int8(path)
    assert isinstance(q, QuantESPCN) and q.scale == scale and meta["config"]["activation"] == q.kind
    assert meta["source"] == shipped_weights(model, scale).name
    assert meta["source_sha256"] == file_sha256(shipped_weights(model, scale)), (
        "the shipped fp32 weights changed since this int8 file was made: run vsr train --qat again")


def test_espcn_x3_int8_files_ship() -> None:
    assert ("espcn", 3) in SHIPPED and ("espcn-fast", 3) in SHIPPED


def test_int8_file_round_trip_and_refusals(tmp_path: Path) -> None:
    q = _calibrated("espcn-fast", 2)
    path = save_int8(q, q.scales, tmp_path / "m.int8.safetensors", source=shipped_weights("espcn-fast", 2))
    back, meta = load_int8(path)
    assert all(torch.equal(a, b) for a, b in zip(back.scales, q.scales))
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), q.state_dict().values()))
    with pytest.raises(WeightsError, match="not an int8 file"):
        load_int8(shipped_weights("espcn-fast", 2))
    pickled = tmp_path / "m.pt"
    torch.save(q.state_dict(), pickled)
    with pytest.raises(WeightsError, match="not an int8 file"):
        load_int8(pickled)
    save_int8(q, q.scales, tmp_path / "old.int8.safetensors", source=shipped_weights("espcn-fast", 2),
              scheme="vsr-int8-v3")  # the same network, recorded under an earlier scheme
    with pytest.raises(WeightsError, match=f"made for int8 scheme vsr-int8-v3, and this vsr computes {SCHEME}; "
                                           "re-make it .* with vsr train --qat"):
        load_int8(tmp_path / "old.int8.safetensors")
    assert SCHEME == "vsr-int8-v4" and back.bypass is True and torch.equal(back.linear_channels(), q.scales[0] < 0)
    t = _calibrated("espcn", 3)
    tanh_path = save_int8(t, t.scales, tmp_path / "t.int8.safetensors", source=shipped_weights("espcn", 3))
    assert load_int8(tanh_path)[0].bypass is True
    deeper = ESPCNConfig(scale=2, widths=(16, 8, 8), kernels=(3, 3, 3, 3), activation="relu")
    with pytest.raises(WeightsError, match="linear bypass"):
        QuantESPCN(deeper, [torch.ones(16), torch.ones(8)], bypass=True)
    with pytest.raises(WeightsError, match="positive activation scales"):  # signed: the ReLU bypass's first layer only
        QuantESPCN(deeper, [-torch.ones(16), torch.ones(8)])


# -- choosing it ----------------------------------------------------------------------------------
def _precision(precision: str, model: str = "espcn-fast", scale: int = 3) -> str:
    config = load_config(None, {"precision": precision, "device": "cpu", "model.name": model, "model.scale": scale})
    return upscaler_from_config(config).precision


def _meta(model: str, scale: int) -> dict:
    return load_int8(shipped_int8(model, scale))[1]


AUTO = [(m, s) for m, s in SHIPPED if _meta(m, s).get("auto") is True]


@pytest.fixture
def auto_stamped(monkeypatch: pytest.MonkeyPatch):
    """``auto_stamped(model, scale)``: the engine reads that shipped int8 file as stamped ``auto: true``.

    For the tests of *when* auto takes int8 (instructions, shipped files), whatever the shipped
    files' recorded quality is: those tests are about the choice, not about one file's figures.
    """
    import vsr.engine._luma as luma

    def stamp(model: str, scale: int) -> None:
        target, real = shipped_int8(model, scale), luma.load_int8

        def load(path):
            net, meta = real(path)
            return (net, {**meta, "auto": True}) if Path(path) == target else (net, meta)
        monkeypatch.setattr(luma, "load_int8", load)
    return stamp


def test_auto_files_record_their_quality_within_the_bound() -> None:
    """``auto: true`` only where the recorded int8-fp32 deltas (tools/int8_quality.py) are all within 0.05 dB."""
    for model, scale in SHIPPED:
        q = _meta(model, scale)["quality"]
        assert "Y plane" in q["clip"], f"{model} x{scale}: stamped with the old RGB clip measure; re-run --stamp"
        within = all(q[f"{k}_delta"] >= -0.05 for k in ("Set5", "Set14", "clip"))
        assert _meta(model, scale)["auto"] is within, (model, scale, q)


@needs_int8
def test_auto_skips_int8_files_outside_the_bound(flags) -> None:
    flags(VNNI)
    for model, scale in sorted(set(SHIPPED) - set(AUTO)):
        assert _precision("auto", model, scale) == "bf16"
        assert _precision("int8", model, scale) == "int8"


@needs_int8
def test_auto_picks_int8_only_with_the_instructions(flags, auto_stamped) -> None:
    auto_stamped("espcn-fast", 3)
    flags(VNNI)
    assert _precision("auto") == "int8"
    flags(VNNI - {"avx512_vnni"} | {"avx_vnni"})
    assert _precision("auto") == "int8"
    flags(VNNI - {"avx512_vnni"})
    assert _precision("auto") == "bf16"
    flags(set())
    assert _precision("auto") == "fp32"


@needs_int8
def test_auto_keeps_bf16_on_amd_cpus_whose_bf16_is_as_fast(flags, auto_stamped) -> None:
    """Zen 4 and Zen 5 (AMD with AVX512-BF16) run bf16 as fast as int8 or faster: auto stays on bf16 there, an
    explicit int8 still runs, and an AMD CPU without native bf16 takes int8 as any other with the instructions."""
    auto_stamped("espcn-fast", 3)
    flags(VNNI, vendor="AuthenticAMD")
    assert _precision("auto") == "bf16" and _precision("int8") == "int8"
    flags(VNNI - {"avx512_bf16"}, vendor="AuthenticAMD")
    assert _precision("auto") == "int8"
    flags(VNNI, vendor="GenuineIntel")
    assert _precision("auto") == "int8"


@needs_int8
def test_auto_picks_int8_only_for_models_whose_file_ships(flags, monkeypatch: pytest.MonkeyPatch,
                                                          random_weights, auto_stamped) -> None:
    auto_stamped("espcn-fast", 3)
    flags(VNNI)
    assert _precision("auto") == "int8"
    monkeypatch.setattr("vsr.engine._luma.shipped_int8", lambda name, scale: None)
    assert _precision("auto") == "bf16"
    with pytest.raises(WeightsError, match="no int8 weights ship for espcn-fast x3; they ship for espcn"):
        _precision("int8")
    monkeypatch.undo()
    flags(VNNI)
    config = load_config(None, {"device": "cpu", "model.name": "espcn-fast", "model.scale": 2,
                                "model.weights": str(random_weights("espcn-fast", 2))})
    assert upscaler_from_config(config).precision == "bf16"  # its own fp32 weights: no int8 file of them


def test_int8_is_refused_on_a_cpu_without_the_instructions(flags, capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    flags({"avx2", "avx512f"})
    with pytest.raises(DeviceError, match="lacks .*avx512_vnni, avx_vnni, amx_int8"):
        _precision("int8")
    assert main(["eval", "--dataset", str(tmp_path), "--scale", "3", "--precision", "int8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "avx512_vnni" in err[0] and err[0].startswith("vsr: error: "), err
    with pytest.raises(DeviceError, match="int8 is the CPU engine"):
        int8_model("int8", torch.device("cuda"), "espcn", 3)


def test_the_refusal_suggests_bf16_only_where_the_cpu_has_it(flags) -> None:
    flags({"avx2", "fma"})  # e.g. AMD Zen 3: no AVX-512, no VNNI, no bf16
    with pytest.raises(DeviceError, match=r"lacks .*; use --precision fp32 \(this CPU has no native bf16"):
        _precision("int8")
    with pytest.raises(DeviceError, match=r"fp16 is for CUDA; on CPU use --precision fp32 \(this CPU"):
        _precision("fp16")
    flags({"avx2", "avx512f", "avx512_bf16"})  # bf16 in hardware, no VNNI
    with pytest.raises(DeviceError, match=r"lacks .*; use --precision bf16 or fp32$"):
        _precision("int8")


def test_bf16_on_a_cpu_that_emulates_it_warns_once(flags, monkeypatch: pytest.MonkeyPatch) -> None:
    from vsr.engine import _luma

    said: list[str] = []
    monkeypatch.setattr(_luma.log, "warning", lambda msg, *args: said.append(msg % args if args else msg))
    model = create_model("espcn-fast", scale=2, weights=None)
    for cpu, warnings in (({"avx2", "fma"}, 1), (VNNI, 0)):
        flags(cpu)
        _luma._warn_software_bf16.cache_clear()
        said.clear()
        for _ in range(2):
            LumaUpscaler(model, dtype=torch.bfloat16, fused=False)
        LumaUpscaler(model, dtype=torch.float32)
        bf16 = [m for m in said if "no native bf16" in m]
        assert len(bf16) == warnings and all("use --precision fp32" in m for m in bf16), (cpu, said)
    _luma._warn_software_bf16.cache_clear()


# -- quality ------------------------------------------------------------------------------------------
def _bounded(cases: list[tuple[str, int]], measure: str) -> list:
    """Every shipped file; xfail (not strict) only where its recorded delta on ``measure`` misses the bound."""
    return [pytest.param(m, s, marks=() if _meta(m, s)["quality"][f"{measure}_delta"] >= -0.05 else pytest.mark.xfail(
        strict=False, reason=f"{m} x{s} int8 misses 0.05 dB on {measure} (recorded: {_meta(m, s)['quality']})"))
        for m, s in cases]


@needs_int8
@pytest.mark.parametrize("model, scale", _bounded(SHIPPED, "Set5"))
def test_int8_within_0_05_db_of_fp32_on_set5(shared_data: Path, model: str, scale: int) -> None:
    """The published protocol, through the engine ``vsr run`` uses (what ``vsr eval --precision`` runs)."""
    q, _ = load_int8(shipped_int8(model, scale))
    int8 = evaluate(engine_upscaler(LumaUpscaler(q, int8=True)), shared_data / "benchmark" / "Set5", scale).psnr
    fp32 = evaluate(create_model(model, scale=scale), shared_data / "benchmark" / "Set5", scale).psnr
    assert int8 > fp32 - 0.05, f"int8 {int8:.3f} dB, fp32 {fp32:.3f} dB"


@needs_int8
@pytest.mark.parametrize("model, scale", _bounded(SHIPPED, "clip"))
def test_int8_within_0_05_db_of_fp32_on_a_real_clip(shared_data: Path, tmp_path: Path, engine_checks,
                                                     model: str, scale: int) -> None:
    """Degrade a real clip (not one calibrated on), upscale it with vsr run at int8 and fp32, compare with the original."""
    small = tmp_path / "small.mkv"
    originals, _ = engine_checks.degraded_clip(shared_data / "videos" / "mdn_flower.mp4", small, scale, frames=4)
    got = {p: engine_checks.upscaled_psnr(small, tmp_path / f"{p}.mkv", originals, {
        "model.name": model, "model.scale": scale, "device": "cpu", "precision": p}) for p in ("int8", "fp32")}
    assert got["int8"] > got["fp32"] - 0.05, got


def test_train_qat_writes_an_int8_file_of_the_shipped_weights(shared_data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``vsr train --qat`` from the shipped weights: calibrates, fine-tunes through the scheme, writes the file."""
    data = tmp_path / "data"
    data.mkdir()
    for src in sorted((shared_data / "train" / "T91").iterdir())[:3]:
        (data / src.name).write_bytes(src.read_bytes())
    clip = shared_data / "videos" / "mdn_stream-of-water.mp4"
    out = tmp_path / "run"
    assert main(["train", "--qat", "--model", "espcn-fast", "--scale", "2", "--data", str(data), "--out", str(out),
                 "--steps", "3", "--batch-size", "4", "--calib-video", str(clip), "--log-every", "1",
                 "--threads", "1"]) == 0
    assert "int8.safetensors (3 steps" in capsys.readouterr().out
    q, meta = load_int8(out / "espcn-fast_x2.int8.safetensors")
    assert meta["source_sha256"] == file_sha256(shipped_weights("espcn-fast", 2))
    assert meta["qat"]["lr"] == 1e-5 and meta["qat"]["bf16_until"] == 0.0 and meta["steps"] == 3
    assert meta["qat"]["calibration_videos"] == [clip.name]
    shipped = create_model("espcn-fast", scale=2).state_dict()
    assert any(not torch.equal(v, shipped[k]) for k, v in q.state_dict().items())  # it was fine-tuned
