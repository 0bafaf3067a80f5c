"""Hardware video: ``encoder.codec: auto``, the NVENC option mapping, and the CPU fallbacks.

This machine has no NVIDIA GPU: opening NVENC or NVDEC fails here, so the fallback paths
are what these tests run for real; the NVENC/NVDEC paths themselves are checked by
tools/gpu_check.py on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from media_utils import make_clip
from vsr.cli import main as vsr_main
from vsr.config import EncoderConfig, load_config
from vsr.errors import EncodeError
from vsr.media import VideoReader, VideoWriter, native_format
from vsr.media import _hwcodec
from vsr.pipeline import Pipeline

NVENC_HERE = _hwcodec.encoder_opens("h264_nvenc")
no_nvenc = pytest.mark.skipif(NVENC_HERE, reason="this machine has NVENC: the fallback is not what runs")


@pytest.mark.parametrize("crf, preset, want", [
    (18, "medium", {"tune": "hq", "rc": "vbr", "cq": "18", "b": "0", "preset": "p5"}),
    (23, "ultrafast", {"tune": "hq", "rc": "vbr", "cq": "23", "b": "0", "preset": "p1"}),
    (0, "veryslow", {"tune": "hq", "rc": "vbr", "cq": "1", "b": "0", "preset": "p7"}),  # cq 0 is NVENC's "unset"
    (63, "P3", {"tune": "hq", "rc": "vbr", "cq": "51", "b": "0", "preset": "p3"}),
    (None, None, {"tune": "hq"}),
])
def test_nvenc_options_map_crf_and_preset(crf: int | None, preset: str | None, want: dict[str, str]) -> None:
    assert _hwcodec.nvenc_options(crf, preset) == want


def test_nvenc_options_are_options_nvenc_has() -> None:
    cc = av.CodecContext.create("h264_nvenc", "w")
    names = {o.name for o in (*cc.supported_options.private, *cc.supported_options.generic)}
    opts = _hwcodec.nvenc_options(18, "slow", gpu=1)
    assert set(opts) <= names
    choices = {o.name: [c.name for c in o.choices] for o in cc.supported_options.private if o.choices}
    assert opts["preset"] in choices["preset"] and opts["rc"] in choices["rc"] and opts["tune"] in choices["tune"]
    with pytest.raises(ValueError, match="no NVENC counterpart"):
        _hwcodec.nvenc_options(18, "placebo-max")


def test_auto_is_libx264_on_cpu_and_an_explicit_codec_is_honoured() -> None:
    auto = EncoderConfig()
    assert auto.codec == "auto"
    assert _hwcodec.choose_encoder(auto, gpu=None, pix_fmt="yuv420p") == _hwcodec.EncoderChoice(
        EncoderConfig(codec="libx264"), None)
    for codec in ("libx265", "h264_nvenc", "ffv1"):
        explicit = EncoderConfig(codec=codec)
        assert _hwcodec.choose_encoder(explicit, gpu=0, pix_fmt="yuv420p").encoder is explicit


@no_nvenc
def test_auto_on_a_gpu_without_nvenc_is_libx264_with_a_note() -> None:
    assert not _hwcodec.encoder_opens("h264_nvenc") and _hwcodec.encoder_opens("libx264")
    assert not _hwcodec.encoder_opens("no_such_encoder")
    choice = _hwcodec.choose_encoder(EncoderConfig(), gpu=0, pix_fmt="yuv420p")
    assert choice.encoder.codec == "libx264"
    assert "libx264 on all CPU cores: this GPU has no NVENC" in choice.note


def test_auto_on_a_gpu_with_nvenc(monkeypatch) -> None:
    monkeypatch.setattr(_hwcodec, "encoder_opens", lambda codec, *a, **k: True)
    choice = _hwcodec.choose_encoder(EncoderConfig(crf=20, preset="fast"), gpu=1, pix_fmt="yuv420p")
    assert choice.encoder == EncoderConfig(codec="h264_nvenc", crf=20, preset="fast")
    assert choice.note == "encoder: h264_nvenc on GPU 1 (NVENC, constant quality cq 20, preset p4)"
    ten_bit = _hwcodec.choose_encoder(EncoderConfig(), gpu=0, pix_fmt="yuv420p10le")
    assert ten_bit.encoder.codec == "libx264" and "cannot take yuv420p10le" in ten_bit.note


def test_writer_maps_options_for_nvenc(tmp_path: Path, monkeypatch) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=2)
    with VideoReader(src) as reader:
        writer = VideoWriter(tmp_path / "out.mkv", reader, encoder=EncoderConfig(codec="h264_nvenc", preset="slow"))
        try:
            monkeypatch.setattr(_hwcodec, "encoder_opens", lambda codec, *a, **k: True)
            assert writer._hardware_options() == {"tune": "hq", "rc": "vbr", "cq": "18", "b": "0", "preset": "p6"}
        finally:
            writer.abort()


@no_nvenc
def test_explicit_nvenc_without_one_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=2)
    with VideoReader(src) as reader:
        writer = VideoWriter(tmp_path / "out.mkv", reader, encoder=EncoderConfig(codec="h264_nvenc"))
        frame = next(item for item in reader if isinstance(item, av.VideoFrame))
        with pytest.raises(EncodeError, match="h264_nvenc cannot be opened here: it needs an NVIDIA GPU with NVENC"):
            writer.write(frame)
        writer.abort()
    code = vsr_main(["run", str(src), "-o", str(tmp_path / "cli.mkv"), "--codec", "h264_nvenc", "--device", "cpu",
                     "--model", "espcn-fast", "--scale", "2", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "NVENC" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cli.mkv").exists()


def test_writer_with_auto_encodes_h264(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=3)
    with VideoReader(src) as reader:
        with VideoWriter(tmp_path / "out.mkv", reader, encoder=EncoderConfig()) as writer:
            for item in reader:
                writer.write(item)
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert c.streams.video[0].codec_context.name == "h264"


# -- a CUDA run's choices, on this CPU machine -------------------------------------------------------
@no_nvenc
def test_cuda_run_without_nvenc_or_nvdec_falls_back_with_notes(tmp_path: Path, random_weights, monkeypatch) -> None:
    """What a run on an H100/H200 does (NVENC absent): a CPU pipeline told it runs on GPU 0."""
    monkeypatch.setattr(_hwcodec, "NVDEC_MIN_PIXELS", 64 * 48)  # this clip counts as large
    src = make_clip(tmp_path / "in.mp4", frames=6, audio={"channels": 1})
    pipe = Pipeline(load_config(None, {"device": "cpu", "model.name": "espcn-fast", "model.scale": 2,
                                       "model.weights": str(random_weights("espcn-fast", 2))}))
    monkeypatch.setattr(pipe, "_gpu_index", lambda: 0)
    report = pipe.run(src, tmp_path / "out.mp4")
    assert report.frames == 6
    notes = "\n".join(report.notes)
    assert "encoder: libx264 on all CPU cores: this GPU has no NVENC" in notes
    if "cuda" in av.codec.hwaccel.hwdevices_available() and not torch.cuda.is_available():
        assert "decoder: h264 on the CPU: NVDEC could not be opened" in notes
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.video[0].codec_context.name == "h264"
    plain = Pipeline(load_config(None, {"device": "cpu", "model.name": "espcn-fast", "model.scale": 2,
                                        "model.weights": str(random_weights("espcn-fast", 2))}))
    assert plain.run(src, tmp_path / "cpu.mp4").notes == ()  # a CPU run says nothing of hardware


def frames_and_times(reader: VideoReader) -> list[tuple[int | None, np.ndarray]]:
    return [(f.pts, f.to_ndarray(format="gray")) for f in reader if isinstance(f, av.VideoFrame)]


def test_nvdec_fallback_and_swap_keep_frames_and_timestamps(tmp_path: Path, monkeypatch) -> None:
    src = make_clip(tmp_path / "in.mp4", width=96, height=64, frames=8, audio={"channels": 1})
    with VideoReader(src) as cpu:
        want = frames_and_times(cpu)
    small = VideoReader(src, nvdec=0)  # small frames: NVDEC is not tried
    assert small.decoder == "cpu" and small.notes == []
    small.close()
    monkeypatch.setattr(_hwcodec, "NVDEC_MIN_PIXELS", 96 * 64)
    with VideoReader(src, nvdec=0) as reader:
        if not torch.cuda.is_available():
            assert reader.decoder == "cpu"  # on a GPU this is NVDEC, and the frames must still be the same
        got = frames_and_times(reader)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
    # The swap to the hardware container: a stand-in that opens the file plainly.
    monkeypatch.setattr(_hwcodec, "open_for_decoding", lambda path, **kw: (av.open(path), None))
    with VideoReader(src, nvdec=0) as reader:
        assert reader.decoder == "nvdec" and len(reader.passthrough) == 1
        got = frames_and_times(reader)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))


def test_open_for_decoding_leaves_what_nvdec_does_not_help() -> None:
    big = dict(width=1920, height=1080)
    assert _hwcodec.open_for_decoding("x.mp4", gpu=None, codec="h264", **big) == (None, None)
    assert _hwcodec.open_for_decoding("x.mp4", gpu=0, codec="h264", width=640, height=360) == (None, None)
    assert _hwcodec.open_for_decoding("x.mkv", gpu=0, codec="ffv1", **big) == (None, None)
    assert _hwcodec.open_for_decoding("-", gpu=0, codec="h264", **big) == (None, None)


def test_semi_planar_frames_become_planar_of_the_same_depth(tmp_path: Path) -> None:
    """NVDEC downloads NV12/P010: not planes vsr works on, converted without loss."""
    assert not native_format("nv12") and not native_format("p010le")
    assert _hwcodec.planar_twin("nv12") == "yuv420p" and _hwcodec.planar_twin("p010le") == "yuv420p10le"
    assert _hwcodec.planar_twin("yuv420p") is None
    rng = np.random.default_rng(0)
    src = av.VideoFrame.from_ndarray(rng.integers(0, 1024, (48, 64), dtype=np.uint16) << 6, format="gray16le")
    p010 = src.reformat(format="p010le")  # as NVDEC downloads a 10-bit frame (no container stores P010 raw)
    with VideoReader(make_clip(tmp_path / "in.mkv", frames=1)) as reader:
        planar = reader._planar(p010)
    assert planar.format.name == "yuv420p10le"
    from vsr.media import frame_planes
    y_p010 = np.frombuffer(memoryview(p010.planes[0]), np.uint16).reshape(48, -1)[:, :64]
    np.testing.assert_array_equal(frame_planes(planar)[0], y_p010 >> 6)  # the same 10-bit levels
