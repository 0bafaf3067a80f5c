"""``vsr export --format mpv``: a GLSL user shader with which mpv upscales the luma as vsr does.

Exactness, in mpv itself: mpv (``vo=gpu``, OpenGL; in CI under Xvfb on Mesa's llvmpipe) plays
frames of a real clip made gray and full range, so that its RGB screenshot is the luma, in a
window exactly r× the video, so that mpv scales nothing after the shader. The screenshot's luma
equals vsr's own upscale of the same frames (:class:`vsr.engine.LumaUpscaler`, fp32) within 2
levels over the whole frame, borders included, and mpv's pass list shows every pass of the
shader ran. These tests skip where mpv or xvfb-run is absent (Debian packages mpv, xvfb).
espcn x2 and espcn-fast x3 always run; ``VSR_MPV_ALL=1`` runs all six shipped models and scales
(each costs llvmpipe several seconds of shader compilation).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from torch import nn

import vsr
from vsr.cli import main as vsr_main
from vsr.engine import LumaUpscaler
from vsr.export import MAX_BINDS, mpv_shader, shader_cost, when_condition
from vsr.models import ESPCN, ESPCNConfig, create_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("mpv_screenshots.lua")
SHIPPED = [(m, r) for m in ("espcn", "espcn-fast") for r in (2, 3, 4)]
ALWAYS = {("espcn", 2), ("espcn-fast", 3)}
needs_mpv = pytest.mark.skipif(shutil.which("mpv") is None or shutil.which("xvfb-run") is None,
                               reason="needs mpv and xvfb-run (Debian packages mpv, xvfb)")


def passes(text: str) -> list[dict[str, list[str]]]:
    """The shader's passes: for each, its ``//!`` directives (name -> arguments, in order) and ``body``."""
    out: list[dict[str, list[str]]] = []
    for line in text.splitlines():
        m = re.match(r"//!(\w+)\s*(.*)", line)
        if m and (m[1] == "DESC" or not out or out[-1]["body"]):
            out.append({"body": []})
        if m:
            out[-1].setdefault(m[1], []).append(m[2])
        elif out:
            out[-1]["body"].append(line)
    return out


@pytest.mark.parametrize("model, scale", SHIPPED)
def test_every_shipped_model_exports_a_consistent_pass_chain(tmp_path: Path, model: str, scale: int) -> None:
    path = vsr.export_mpv(tmp_path / f"{model}_x{scale}.glsl", model=model, scale=scale)
    text = path.read_text()
    chain = passes(text)
    cost = shader_cost(create_model(model, scale=scale))
    assert len(chain) == cost.passes
    saved = {"HOOKED"}
    for p in chain:
        assert p["HOOK"] == ["LUMA"] and p["WHEN"] == [when_condition(scale)]
        assert set(p["BIND"]) <= saved, "a pass reads a texture no earlier pass wrote"
        assert len(p["BIND"]) <= MAX_BINDS
        saved |= set(p.get("SAVE", []))
    *convs, shuffle = chain
    assert all(p["COMPONENTS"] == ["4"] and "WIDTH" not in p for p in convs)
    assert shuffle["WIDTH"] == [f"LUMA.w {scale} *"] and shuffle["HEIGHT"] == [f"LUMA.h {scale} *"]
    assert shuffle["OFFSET"] == ["ALIGN"] and "SAVE" not in shuffle  # it replaces LUMA
    # The cost figures are the texture reads the text holds.
    reads = [sum(line.count("_tex(") for line in p["body"]) for p in chain]
    assert sum(reads[:-1]) == cost.fetches_per_video_pixel
    assert reads[-1] == math.ceil(scale**2 / 4)
    assert cost.fetches_per_output_pixel == pytest.approx(sum(reads[:-1]) / scale**2 + reads[-1])
    assert text.startswith(f"// vsr {model} x{scale}:") and text.isascii()


def test_model_the_shader_cannot_express_is_one_line_naming_the_layer() -> None:
    net = create_model("espcn-fast", scale=2, weights=None)
    net.features[1] = nn.Sigmoid()
    with pytest.raises(vsr.ConfigError, match=r"cannot express layer 'features.1' \(Sigmoid\)") as err:
        mpv_shader(net)
    assert "\n" not in str(err.value)
    net = create_model("espcn-fast", scale=2, weights=None)
    net.features[2] = nn.Conv2d(32, 16, 3, stride=2, padding=1)
    with pytest.raises(vsr.ConfigError, match=r"'features.2' \(Conv2d: stride \(2, 2\)"):
        mpv_shader(net)
    with pytest.raises(vsr.ConfigError, match="takes 3 channels; an mpv LUMA shader takes 1"):
        mpv_shader(ESPCN(ESPCNConfig(scale=2, channels=3)))
    net = create_model("espcn-fast", scale=2, weights=None)
    net.shuffle = nn.PixelShuffle(3)  # 4 maps cannot make a x3 plane
    with pytest.raises(vsr.ConfigError, match=r"'shuffle' \(PixelShuffle: x3 needs 9 maps"):
        mpv_shader(net)


def test_python_export_refuses_to_clobber_and_leaves_no_temporary(tmp_path: Path, random_weights) -> None:
    weights = random_weights("espcn-fast", 2)
    dest = tmp_path / "s.glsl"
    dest.write_text("precious")
    with pytest.raises(vsr.OutputExistsError, match="exists; pass -y/--overwrite"):
        vsr.export_mpv(dest, scale=2, model="espcn-fast", weights=weights)
    assert dest.read_text() == "precious"
    vsr.export_mpv(dest, scale=2, model="espcn-fast", weights=weights, overwrite=True)
    assert dest.read_text().count("//!HOOK LUMA") == shader_cost(create_model("espcn-fast", scale=2)).passes
    with pytest.raises(vsr.WeightsError):
        vsr.export_mpv(tmp_path / "x.glsl", scale=3, model="espcn-fast", weights=weights)  # x2 weights for x3
    with pytest.raises(vsr.EncodeError, match="does not exist"):
        vsr.export_mpv(tmp_path / "no" / "x.glsl", scale=2, model="espcn-fast", weights=weights)
    with pytest.raises(vsr.EncodeError, match="is a directory"):
        vsr.export_mpv(tmp_path, scale=2, model="espcn-fast", weights=weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.glsl"]


def test_cli_writes_the_shader_and_errors_are_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "espcn_x2.glsl"
    assert vsr_main(["export", "--format", "mpv", "--scale", "2", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    cost = shader_cost(create_model("espcn", scale=2))
    assert f"wrote {out}" in err and f"{cost.passes} passes" in err and "mpv --glsl-shaders=" in err
    for args, message in ((["--scale", "2"], "exists; pass -y/--overwrite"),
                          (["--scale", "2", "-y", "--opset", "13"], "--opset applies to --format onnx only"),
                          (["--scale", "2", "-y", "--model", "srcnn"], "unknown model")):
        assert vsr_main(["export", "--format", "mpv", "-o", str(out), *args]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines


# -- in mpv -------------------------------------------------------------------------------------------

def gray_clip(path: Path, frames: int = 3, size: tuple[int, int] = (64, 48), bits: int = 8) -> np.ndarray:
    """A Y4M of real footage (a detailed crop of the bundled sample), gray (neutral chroma) and tagged
    full range, so that mpv's RGB is the luma; returns the Y planes ``(frames, h, w)``. At 10 bits
    the 8-bit footage is scaled by 4 with random low bits."""
    w, h = size
    planes = []
    with av.open(str(REPO / "samples" / "stream-of-water.mp4")) as container:
        for frame in container.decode(video=0):
            y = frame.to_ndarray(format="yuv420p")[: frame.height]
            planes.append(y[264 : 264 + h, 200 : 200 + w])  # rocks and foam
            if len(planes) == frames:
                break
    y = np.stack(planes)
    if bits == 10:
        y = y.astype("<u2") * 4 + np.random.default_rng(0).integers(0, 4, y.shape).astype("<u2")
    chroma = np.full(2 * (h // 2) * (w // 2), 1 << (bits - 1), y.dtype).tobytes()
    tag = {8: "C420jpeg", 10: "C420p10 XYSCSS=420P10"}[bits]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 {tag} XCOLORRANGE=FULL\n".encode())
        for plane in y:
            f.write(b"FRAME\n" + plane.tobytes() + chroma)
    return y


def mpv_frames(shader: Path, clip: Path, window: tuple[int, int], frames: int, tmp: Path,
               rotate: int = 0) -> tuple[list[np.ndarray], list[list[str]]]:
    """Window screenshots (RGB) of the first ``frames`` frames played with ``shader``, and mpv's passes for each."""
    prefix = tmp / "shot"
    cmd = ["xvfb-run", "-a", "mpv", "--no-config", "--vo=gpu", "--gpu-api=opengl", "--gpu-context=x11egl",
           f"--geometry={window[0]}x{window[1]}", f"--glsl-shaders={shader}", "--pause", "--dither-depth=no",
           "--osd-level=0", "--no-osd-bar", "--no-osc", "--ytdl=no", "--screenshot-format=png",
           "--screenshot-high-bit-depth=no", f"--video-rotate={rotate}", f"--script={SCRIPT}",
           f"--script-opts=shot-frames={frames},shot-prefix={prefix}", str(clip)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    shots = [cv2.imread(f"{prefix}{i}.png", cv2.IMREAD_COLOR) for i in range(frames)]
    assert run.returncode == 0 and all(s is not None for s in shots), run.stdout[-2000:] + run.stderr[-2000:]
    lists = [Path(f"{prefix}{i}.txt").read_text().splitlines() for i in range(frames)]
    return [cv2.cvtColor(s, cv2.COLOR_BGR2RGB) for s in shots], lists


def luma(rgb: np.ndarray) -> np.ndarray:
    """Y of full-range BT.601 RGB: the chroma terms cancel, so this is exact whatever the (neutral) chroma."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def mpv_matches_vsr(tmp_path: Path, network: ESPCN, title: str, bits: int = 8, rotate: int = 0) -> None:
    r = network.scale
    y = gray_clip(tmp_path / "gray.y4m", bits=bits)
    shader = tmp_path / "vsr.glsl"
    shader.write_text(mpv_shader(network, title=title))
    n, h, w = y.shape
    window = (h * r, w * r) if rotate % 180 else (w * r, h * r)
    shots, pass_lists = mpv_frames(shader, tmp_path / "gray.y4m", window, n, tmp_path, rotate)
    top = (1 << bits) - 1
    planes = torch.from_numpy(y.astype(np.int32) if bits > 8 else y)[:, None]
    want = LumaUpscaler(network, device="cpu", dtype=torch.float32)(planes, max_value=top)[:, 0].numpy()
    want = np.rot90(want, -rotate // 90, axes=(1, 2))  # vsr upscales as stored; mpv shows it turned clockwise
    for i, (rgb, ran) in enumerate(zip(shots, pass_lists)):
        assert rgb.shape == (*want.shape[1:], 3)
        assert sum(p.startswith(f"user shader: {title}") for p in ran) == shader_cost(network).passes, ran
        diff = np.abs(luma(rgb) - want[i] * (255 / top))  # in 8-bit levels
        assert diff.max() <= 2.0, f"frame {i}: max |mpv - vsr| {diff.max():.2f} levels at {np.unravel_index(diff.argmax(), diff.shape)}"
        assert np.abs(rgb.astype(int) - rgb[..., 1:2]).max() <= 1  # gray stays gray: chroma untouched


@needs_mpv
@pytest.mark.parametrize("model, scale", [
    pytest.param(m, r, marks=[] if (m, r) in ALWAYS or os.environ.get("VSR_MPV_ALL") else
                 pytest.mark.skip(reason="set VSR_MPV_ALL=1 to render every shipped model in mpv"))
    for m, r in SHIPPED])
def test_mpv_renders_what_vsr_computes(tmp_path: Path, model: str, scale: int) -> None:
    mpv_matches_vsr(tmp_path, create_model(model, scale=scale), f"vsr {model} x{scale}")


@needs_mpv
def test_mpv_runs_any_walkable_model(tmp_path: Path) -> None:
    """Widths that are not multiples of 4, a 5x5 last layer, PReLU: the walk, not ESPCN's shape."""
    torch.manual_seed(0)
    net = ESPCN(ESPCNConfig(scale=2, widths=(10, 6), kernels=(3, 3, 5), activation="prelu")).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5)
    mpv_matches_vsr(tmp_path, net, "vsr test")


@needs_mpv
def test_mpv_feeds_10_bit_luma_as_vsr_does(tmp_path: Path) -> None:
    """mpv normalises a 10-bit plane to Y / 1023, as vsr does (max_value 1023)."""
    mpv_matches_vsr(tmp_path, create_model("espcn-fast", scale=3), "vsr espcn-fast x3", bits=10)


@needs_mpv
@pytest.mark.parametrize("model, scale, rotate", [("espcn-fast", 3, 90), ("espcn-fast", 3, 180),
                                                  ("espcn-fast", 3, 270), ("espcn", 2, 90)])
def test_mpv_upscales_rotated_video_as_stored(tmp_path: Path, model: str, scale: int, rotate: int) -> None:
    """Rotation metadata: the network still runs on the frame as stored, as vsr does."""
    mpv_matches_vsr(tmp_path, create_model(model, scale=scale), f"vsr {model} x{scale}", rotate=rotate)


@needs_mpv
def test_shader_stays_off_below_its_scale(tmp_path: Path) -> None:
    y = gray_clip(tmp_path / "gray.y4m", frames=1)
    shader = vsr.export_mpv(tmp_path / "x3.glsl", model="espcn-fast", scale=3)
    h, w = y.shape[1:]
    _, (ran,) = mpv_frames(shader, tmp_path / "gray.y4m", (2 * w, 2 * h), 1, tmp_path)  # a 2x window
    assert ran and not any("vsr" in p for p in ran), ran
