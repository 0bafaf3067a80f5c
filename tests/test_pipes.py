"""``vsr run - -o - -f y4m``: streams on standard input and output, through real subprocess pipes.

Y4M is written and parsed here by the tests themselves (a header line, then ``FRAME`` and
the planes), so that nothing but the bytes on stdout is trusted: a stray print to stdout
would break the parse. With nearest-neighbour weights the luma that comes out is known
exactly. Where the ``ffmpeg`` binary is installed, the README's pipeline runs for real.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from media_utils import make_clip
from vsr.media import frame_planes
from vsr.models import create_model, save_weights

VSR = [sys.executable, "-m", "vsr"]


@pytest.fixture(scope="module")
def nearest2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """espcn-fast x2 weights whose luma output is the input repeated 2 x 2 times, exactly."""
    net = create_model("espcn-fast", scale=2, weights=None)
    with torch.no_grad():
        for conv in (net.features[0], net.features[2], net.subpixel):
            conv.weight.zero_()
            conv.bias.zero_()
            c = conv.weight.shape[-1] // 2
            conv.weight[:, 0, c, c] = 1.0
    return save_weights(net, tmp_path_factory.mktemp("w") / "nearest_x2.safetensors")


def model_args(weights: Path) -> list[str]:
    return ["--model", "espcn-fast", "--scale", "2", "--weights", str(weights), "--device", "cpu",
            "--precision", "fp32"]


# -- Y4M, by hand ---------------------------------------------------------------------------------

def plane_shapes(width: int, height: int, chroma: str) -> list[tuple[int, int]]:
    if chroma.startswith("420"):
        c = ((height + 1) // 2, (width + 1) // 2)
    elif chroma.startswith("422"):
        c = (height, (width + 1) // 2)
    elif chroma.startswith("444"):
        c = (height, width)
    else:  # mono
        return [(height, width)]
    return [(height, width), c, c]


def make_y4m(frames: list[list[np.ndarray]], *, rate: str = "30000:1001", interlace: str = "p",
             aspect: str = "1:1", chroma: str = "420jpeg", extra: str = "") -> bytes:
    height, width = frames[0][0].shape
    header = f"YUV4MPEG2 W{width} H{height} F{rate} I{interlace} A{aspect} C{chroma}{extra}\n".encode()
    body = b"".join(b"FRAME\n" + b"".join(p.astype("<u2" if "p1" in chroma else np.uint8).tobytes() for p in f)
                    for f in frames)
    return header + body


def parse_y4m(data: bytes) -> tuple[dict[str, str], list[list[np.ndarray]]]:
    """Header fields (by their letter, X-fields by name) and every frame's planes; the stream must end exactly."""
    head, _, rest = data.partition(b"\n")
    tokens = head.decode("ascii").split(" ")
    assert tokens[0] == "YUV4MPEG2", head[:40]
    fields: dict[str, str] = {}
    for t in tokens[1:]:
        if t.startswith("X"):
            key, _, value = t[1:].partition("=")
            fields[key] = value
        else:
            fields[t[0]] = t[1:]
    width, height = int(fields["W"]), int(fields["H"])
    chroma = fields.get("C", "420jpeg")
    depth = 2 if "p1" in chroma else 1
    shapes = plane_shapes(width, height, chroma)
    size = sum(h * w for h, w in shapes) * depth
    frames, pos = [], 0
    while pos < len(rest):
        end = rest.index(b"\n", pos)
        assert rest[pos:end].startswith(b"FRAME"), rest[pos:pos + 20]
        pos = end + 1
        planes, offset = [], pos
        for h, w in shapes:
            n = h * w * depth
            planes.append(np.frombuffer(rest[offset:offset + n], "<u2" if depth == 2 else np.uint8).reshape(h, w))
            offset += n
        assert offset - pos == size and offset <= len(rest), "truncated frame"
        frames.append(planes)
        pos = offset
    return fields, frames


def random_frames(n: int, width: int, height: int, chroma: str = "420jpeg", seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    high = 1024 if "p1" in chroma else 256
    out = []
    for i in range(n):
        planes = []
        for h, w in plane_shapes(width, height, chroma):
            base = cv2.resize(rng.integers(0, high, (max(1, h // 4), max(1, w // 4))).astype(np.float32), (w, h))
            planes.append(np.clip(base + i, 0, high - 1).astype(np.uint16 if high > 256 else np.uint8))
        out.append(planes)
    return out


def run_pipe(args: list[str], stdin: bytes, **kw) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(VSR + ["run", "-", "-o", "-", *args], input=stdin, capture_output=True, timeout=120, **kw)


# -- tests ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("chroma", ["420jpeg", "444", "420p10 XYSCSS=420P10"])
def test_y4m_in_y4m_out_through_pipes(nearest2: Path, chroma: str) -> None:
    frames = random_frames(5, 40, 24, chroma.split(" ")[0])
    data = make_y4m(frames, rate="30000:1001", aspect="4:3", chroma=chroma, extra=" XCOLORRANGE=FULL")
    r = run_pipe(["-f", "y4m", *model_args(nearest2)], data)
    assert r.returncode == 0, r.stderr.decode()
    fields, out = parse_y4m(r.stdout)  # stdout holds the stream and nothing else
    assert (fields["W"], fields["H"], fields["F"], fields["A"], fields["I"]) == ("80", "48", "30000:1001", "4:3", "p")
    assert fields["C"].split(" ")[0] == chroma.split(" ")[0] and fields["COLORRANGE"] == "FULL"
    assert len(out) == len(frames)
    for src, got in zip(frames, out):
        assert np.array_equal(got[0], np.repeat(np.repeat(src[0], 2, 0), 2, 1))  # the network's luma
        for s, g in zip(src[1:], got[1:]):
            assert np.array_equal(g, cv2.resize(s, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_CUBIC))
    err = r.stderr.decode()
    assert "-> standard output" in err and "Traceback" not in err


def test_interlacing_limited_range_and_frame_rate_are_read(nearest2: Path) -> None:
    data = make_y4m(random_frames(3, 32, 16), rate="25:1", interlace="t", aspect="16:15",
                    extra=" XCOLORRANGE=LIMITED")
    r = run_pipe(["-f", "y4m", *model_args(nearest2)], data)
    assert r.returncode == 0, r.stderr.decode()
    fields, out = parse_y4m(r.stdout)
    assert (fields["F"], fields["A"], fields["COLORRANGE"], len(out)) == ("25:1", "16:15", "LIMITED", 3)
    # Whole frames went through the network, so the output is marked progressive, and the user is told.
    assert fields["I"] == "p" and "interlaced video is upscaled as whole frames" in r.stderr.decode()


def test_progress_and_notes_never_reach_stdout(tmp_path: Path, nearest2: Path) -> None:
    config = tmp_path / "always.yaml"
    config.write_text("progress: always\n")
    src = make_clip(tmp_path / "in.mkv", frames=8, audio={"channels": 1})
    r = subprocess.run(VSR + ["run", "-", "-o", "-", "-f", "y4m", "--config", str(config), *model_args(nearest2)],
                       stdin=open(src, "rb"), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    _, out = parse_y4m(r.stdout)
    assert len(out) == 8
    err = r.stderr.decode()
    assert "frames" in err and "fps" in err  # the bar and the summary went to stderr
    assert "Y4M holds only the picture: audio stream 1 (aac) dropped" in err  # one note for all it drops


@pytest.mark.parametrize("suffix, codec", [(".mkv", "libx264"), (".ts", "libx264")])
def test_containers_read_from_a_pipe(tmp_path: Path, nearest2: Path, suffix: str, codec: str) -> None:
    src = make_clip(tmp_path / f"in{suffix}", width=48, height=32, frames=6, codec=codec)
    r = run_pipe(["-f", "y4m", *model_args(nearest2)], src.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    fields, out = parse_y4m(r.stdout)
    assert (fields["W"], fields["H"], len(out)) == ("96", "64", 6)


def test_stdout_without_format_is_matroska_with_audio(tmp_path: Path, nearest2: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=6, audio={"channels": 1})
    r = run_pipe([*model_args(nearest2), "--preset", "ultrafast"], src.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    with av.open(io.BytesIO(r.stdout)) as c:
        assert c.format.name.startswith("matroska")
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert len(list(c.decode(video=0))) == 6


def test_file_output_in_y4m_keeps_constant_rate_and_notes_variable_rate(tmp_path: Path, nearest2: Path) -> None:
    src = make_clip(tmp_path / "vfr.mkv", frames=5, pts=[0, 40, 100, 110, 200], time_base=Fraction(1, 1000),
                    rate=25)
    r = subprocess.run(VSR + ["run", str(src), "-f", "y4m", *model_args(nearest2)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    out = tmp_path / "vfr_x2.y4m"  # the default name takes the format's extension
    fields, frames = parse_y4m(out.read_bytes())
    assert len(frames) == 5 and fields["F"] == "25:1"
    assert "variable frame rate" in r.stderr.decode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "-"], "give -o FILE, or -o - -f y4m"),
        (["run", "-", "-o", "-", "-f", "y5m"], "unknown output format 'y5m'"),
        (["run", "a.mp4", "b.mp4", "-o", "-"], "-o - (standard output) takes one input"),
    ],
)
def test_pipe_usage_errors_are_one_line(args: list[str], message: str, tmp_path: Path, capsys,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from vsr.cli import main as vsr_main

    monkeypatch.chdir(tmp_path)
    code = vsr_main(args)  # in-process: these fail before anything is read
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert out == ""


def test_garbage_on_stdin_is_one_line(nearest2: Path) -> None:
    r = run_pipe(["-f", "y4m", *model_args(nearest2)], b"this is not a video stream " * 100)
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("vsr: error: -:"), r.stderr.decode()
    assert r.stdout == b""


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg binary is not installed")
def test_ffmpeg_to_vsr_to_ffmpeg(tmp_path: Path, nearest2: Path) -> None:
    """ffmpeg -i in.mkv -f yuv4mpegpipe - | vsr run - -o - -f y4m | ffmpeg -i - out.mkv"""
    src = make_clip(tmp_path / "in.mkv", width=64, height=48, frames=12, rate=Fraction(30000, 1001),
                    audio={"channels": 1}, sample_aspect_ratio=Fraction(4, 3))
    out = tmp_path / "out.mkv"
    dec = subprocess.Popen(["ffmpeg", "-v", "error", "-i", str(src), "-f", "yuv4mpegpipe", "-"],
                           stdout=subprocess.PIPE)
    vsr = subprocess.Popen(VSR + ["run", "-", "-o", "-", "-f", "y4m", *model_args(nearest2)], stdin=dec.stdout,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dec.stdout.close()  # type: ignore[union-attr]  # vsr owns the pipe now
    enc = subprocess.Popen(["ffmpeg", "-v", "error", "-f", "yuv4mpegpipe", "-i", "-", "-c:v", "ffv1", str(out)],
                           stdin=vsr.stdout, stderr=subprocess.PIPE)
    vsr.stdout.close()  # type: ignore[union-attr]
    enc_err = enc.communicate(timeout=120)[1]
    vsr_err = vsr.communicate(timeout=120)[1]
    assert dec.wait(timeout=60) == 0
    assert vsr.returncode == 0, vsr_err.decode()
    assert enc.returncode == 0, enc_err.decode()
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (128, 96)
        assert v.average_rate == Fraction(30000, 1001) and v.sample_aspect_ratio == Fraction(4, 3)
        frames = list(c.decode(v))
    # What the first ffmpeg fed in (it may repeat a frame to keep a constant rate), parsed here:
    fed = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-f", "yuv4mpegpipe", "-"], capture_output=True,
                         timeout=60).stdout
    _, lows = parse_y4m(fed)
    assert len(frames) == len(lows) >= 12
    for lo, hi in zip(lows, frames):
        assert np.array_equal(frame_planes(hi)[0], np.repeat(np.repeat(lo[0], 2, 0), 2, 1))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg binary is not installed")
def test_ffmpeg_reads_what_vsr_writes_as_y4m_file(tmp_path: Path, nearest2: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", width=48, height=32, frames=4, pix_fmt="yuv422p", codec="libx264")
    dst = tmp_path / "out.y4m"
    r = subprocess.run(VSR + ["run", str(src), "-o", str(dst), *model_args(nearest2)], capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=width,height,pix_fmt,nb_read_frames", "-of", "csv=p=0", str(dst)],
                           capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    assert probe.stdout.strip() == "96,64,yuv422p,4"


@pytest.mark.parametrize("which", ["stdin", "stdout"])
def test_a_terminal_is_not_taken_for_a_stream(tmp_path: Path, which: str) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        if which == "stdin":
            r = subprocess.run(VSR + ["run", "-", "-o", str(tmp_path / "o.mkv")], stdin=slave, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            err = r.stderr.decode()
        else:
            src = make_clip(tmp_path / "in.mkv", frames=2)
            r = subprocess.run(VSR + ["run", str(src), "-o", "-", "-f", "y4m"], stdout=slave, stderr=subprocess.PIPE,
                               timeout=60)
            err = r.stderr.decode()
    finally:
        os.close(master)
        os.close(slave)
    lines = err.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "is a terminal here" in lines[0], err


def test_a_format_y4m_cannot_hold_is_one_line_with_the_fix(tmp_path: Path, nearest2: Path, capsys) -> None:
    from vsr.cli import main as vsr_main

    src = make_clip(tmp_path / "in.mkv", width=32, height=16, frames=2, pix_fmt="yuv440p", codec="ffv1")
    dst = tmp_path / "out.y4m"
    assert vsr_main(["run", str(src), "-o", str(dst), *model_args(nearest2)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "yuv440p has no Y4M form; pass --pix-fmt yuv444p" in lines[0] and not dst.exists()
    assert vsr_main(["run", str(src), "-o", str(dst), "--pix-fmt", "yuv444p", "-q", *model_args(nearest2)]) == 0
    fields, frames = parse_y4m(dst.read_bytes())
    assert fields["C"] == "444" and len(frames) == 2 and frames[0][1].shape == (32, 64)


def test_y4m_on_stdin_to_a_file_keeps_rate_aspect_and_range(tmp_path: Path, nearest2: Path) -> None:
    data = make_y4m(random_frames(4, 32, 24), rate="24000:1001", aspect="10:11", extra=" XCOLORRANGE=FULL")
    dst = tmp_path / "out.mkv"
    # libx264: the aspect travels in the bitstream too. (PyAV cannot set the AVStream's aspect that
    # Matroska's muxer reads, so codecs without one in their bitstream, such as ffv1, lose it there.)
    r = subprocess.run(VSR + ["run", "-", "-o", str(dst), "--preset", "ultrafast", *model_args(nearest2)], input=data,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b""
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (64, 48)
        assert v.average_rate == Fraction(24000, 1001) and v.sample_aspect_ratio == Fraction(10, 11)
        frames = list(c.decode(v))
    assert len(frames) == 4 and frames[0].color_range == 2  # full range, as XCOLORRANGE=FULL said
    assert [float(f.pts * f.time_base) for f in frames] == pytest.approx([i * 1001 / 24000 for i in range(4)], abs=1e-3)
