"""Everything of the input that is not the picture survives the run, or the run says what it dropped.

Fixtures are made by ffmpeg (chapters, timecode, cover art, attachments, tags, dispositions)
and by PyAV (a data stream). Outputs are compared with their inputs through ``ffprobe
-show_chapters -show_streams -show_format -of json`` (PyAV for the bytes of pictures,
attachments and data packets), on a single run, a batch, a resumed run, a pipe and the API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from media_utils import stream_packets
from vsr.cli import main as vsr_main
from vsr.config import load_config
from vsr.errors import PipelineError
from vsr.pipeline import Pipeline, Progress, RunReport

pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                reason="needs ffmpeg and ffprobe")

REPO = Path(__file__).resolve().parents[1]
TIMECODE = "01:02:03:04"
CHAPTERS = [(0.0, 0.75, "Opening"), (0.75, 1.5, "Ending")]
FONT = b"\x00\x01\x00\x00" + b"vsr test font " * 8  # the bytes matter, not that it is a real font
HOLDS = {  # what each output container keeps of what the fixtures hold
    "mkv": {"attachment", "cover", "hearing_impaired"},
    "mp4": {"tmcd", "cover", "hearing_impaired", "data"},
    "mov": {"tmcd", "data"},
}


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_chapters", "-show_streams", "-show_format",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """in.mkv (attachment), in.mp4 (cover art), in.mov; all: chapters, timecode, tagged audio; data.mp4."""
    d = tmp_path_factory.mktemp("carry-src")
    meta = d / "meta.txt"
    meta.write_text(";FFMETADATA1\ntitle=Global title\n" + "".join(
        f"[CHAPTER]\nTIMEBASE=1/1000\nSTART={int(a * 1000)}\nEND={int(b * 1000)}\ntitle={t}\n" for a, b, t in CHAPTERS))
    (d / "font.ttf").write_bytes(FONT)
    _ffmpeg("-f", "lavfi", "-i", "color=red:size=32x32", "-frames:v", "1", str(d / "cover.png"))
    common = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=24:duration=1.5", "-f", "lavfi", "-i",
              "sine=duration=1.5", "-i", str(meta)]
    tags = ["-map_metadata", "2", "-map_chapters", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
            "-timecode", TIMECODE, "-metadata:s:a:0", "language=fra", "-metadata:s:a:0", "title=French",
            "-disposition:a:0", "default+hearing_impaired"]
    _ffmpeg(*common, "-map", "0", "-map", "1", *tags, "-attach", str(d / "font.ttf"),
            "-metadata:s:t", "mimetype=application/x-truetype-font", str(d / "in.mkv"))
    _ffmpeg(*common, "-i", str(d / "cover.png"), "-map", "0", "-map", "1", "-map", "3", *tags, "-c:v:1", "png",
            "-disposition:v:1", "attached_pic", str(d / "in.mp4"))
    _ffmpeg(*common, "-map", "0", "-map", "1", *tags, str(d / "in.mov"))
    return {"mkv": d / "in.mkv", "mp4": d / "in.mp4", "mov": d / "in.mov", "data": make_data_clip(d / "data.mp4")}


def make_data_clip(path: Path) -> Path:
    """An MP4 with a timed data stream beside the video (as cameras write telemetry): PyAV's bin_data."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.codec_context.options = {"preset": "ultrafast"}
        data = out.add_data_stream("bin_data")
        data.time_base = Fraction(1, 1000)
        for i in range(12):
            frame = av.VideoFrame(64, 48, "yuv420p")
            frame.pts = i
            out.mux(v.encode(frame))
            packet = av.Packet(b"TELEMETRY%02d" % i)
            packet.stream, packet.time_base = data, Fraction(1, 1000)
            packet.pts = packet.dts = round(i * 1000 / 24)
            out.mux(packet)
        out.mux(v.encode(None))
    return path


def pipeline(weights: Path, **overrides: Any) -> Pipeline:
    base = {"model.name": "espcn-fast", "model.scale": 2, "model.weights": str(weights), "device": "cpu",
            "encoder.preset": "ultrafast"}
    return Pipeline(load_config(None, {**base, **overrides}))


# -- what the output holds ------------------------------------------------------------------------
def _tag(tags: dict[str, str] | None, key: str) -> str | None:
    return next((v for k, v in (tags or {}).items() if k.lower() == key), None)


def _chapters(probe: dict[str, Any]) -> list[tuple[float, float, str | None]]:
    return [(round(float(c["start_time"]), 3), round(float(c["end_time"]), 3), c.get("tags", {}).get("title"))
            for c in probe["chapters"]]


def _pictures(path: Path) -> list[bytes]:
    """The attached pictures' bytes (a stream's one packet; Matroska: an image attachment, read as such)."""
    with av.open(str(path)) as c:
        streams = [s for s in c.streams.video if s.disposition & av.stream.Disposition.attached_pic]
        return [bytes(next(p for p in c.demux(s) if p.size)) for s in streams]


def _attachments(path: Path) -> list[tuple[str, str, bytes]]:
    with av.open(str(path)) as c:
        return [(s.name, s.mimetype, bytes(s.data)) for s in c.streams if s.type == "attachment"]


def _audio_title(path: Path) -> str | None:
    with av.open(str(path)) as c:  # MP4/MOV titles are read back by FFmpeg as 'name'
        tags = c.streams.audio[0].metadata
        return tags.get("title") or tags.get("name")


def assert_audio_copied_in_sync(src: Path, dst: Path) -> None:
    """The same audio packets, starting and ending within a video frame of where they did (1/24 s)."""
    a, b = stream_packets(src, "audio")[0], stream_packets(dst, "audio")[0]
    assert [p[2] for p in b] == [p[2] for p in a]
    video_start = []
    for path in (src, dst):
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            video_start.append(float(frame.pts * frame.time_base))
    for i in (0, -1):
        assert abs((b[i][0] - video_start[1]) - (a[i][0] - video_start[0])) <= 1 / 24


def assert_carried(src: Path, dst: Path, notes: tuple[str, ...] | list[str]) -> None:
    """``dst`` holds what its container can of ``src``; one note says what it dropped (and where it would stay)."""
    kind = dst.suffix[1:]
    holds = HOLDS[kind]
    a, b = ffprobe(src), ffprobe(dst)
    # Chapters, times and titles, and the container's own tags.
    assert _chapters(a) == CHAPTERS
    assert _chapters(b) == _chapters(a)
    assert b["format"]["tags"].get("title") == a["format"]["tags"]["title"] == "Global title"
    # Timecode: a tag on the video (Matroska: TIMECODE); MOV/MP4 also a tmcd track.
    video = next(s for s in b["streams"] if s["codec_type"] == "video" and not s["disposition"]["attached_pic"])
    assert _tag(video.get("tags"), "timecode") == TIMECODE
    tmcd = [s for s in b["streams"] if s.get("codec_tag_string") == "tmcd"]
    assert bool(tmcd) == ("tmcd" in holds) and all(_tag(s.get("tags"), "timecode") == TIMECODE for s in tmcd)
    # The audio: its tags and dispositions, and its packets, copied and in place (A/V sync as copied).
    audio = [s for s in b["streams"] if s["codec_type"] == "audio"]
    assert len(audio) == 1 and audio[0]["tags"]["language"] == "fra"
    assert _audio_title(dst) == "French"
    assert audio[0]["disposition"]["default"] == 1
    had = next(s for s in a["streams"] if s["codec_type"] == "audio")["disposition"]["hearing_impaired"] == 1
    assert audio[0]["disposition"]["hearing_impaired"] == (had and "hearing_impaired" in holds)
    lost = [n for n in notes if n.startswith("audio stream 1 (aac, fra): disposition") and "hearing_impaired" in n]
    assert len(lost) == (had and "hearing_impaired" not in holds)
    assert_audio_copied_in_sync(src, dst)
    # Cover art: the same picture, not upscaled, where the container keeps it.
    pictures = _pictures(src)
    if pictures:
        if "cover" in holds:
            assert _pictures(dst) == pictures
        else:
            assert _pictures(dst) == []
            assert sum("cover art" in n and "dropped" in n and ".mp4" in n for n in notes) == 1
    # Attachments (a font), with name and MIME type.
    attached = _attachments(src)
    if attached:
        if "attachment" in holds:
            assert _attachments(dst) == attached == [("font.ttf", "application/x-truetype-font", FONT)]
        else:
            assert [s for s in b["streams"] if s["codec_type"] == "attachment"] == []
            assert sum("attachment font.ttf dropped" in n and ".mkv keeps it" in n for n in notes) == 1


@pytest.mark.parametrize("out", ["mkv", "mp4", "mov"])
@pytest.mark.parametrize("src", ["mkv", "mp4", "mov"])
def test_single_run_carries_what_the_container_holds(src: str, out: str, sources: dict[str, Path],
                                                     tmp_path: Path, random_weights) -> None:
    dst = tmp_path / f"out.{out}"
    report = pipeline(random_weights("espcn-fast", 2)).run(sources[src], dst)
    assert_carried(sources[src], dst, report.notes)
    kinds = {i["kind"]: i["action"] for i in report.streams}
    assert kinds["chapters"] == kinds["timecode"] == kinds["metadata"] == kinds["audio"] == "copy"
    assert kinds["video"] == "re-encode"


def test_data_stream_copied_where_the_container_takes_it(sources: dict[str, Path], tmp_path: Path,
                                                         random_weights) -> None:
    p = pipeline(random_weights("espcn-fast", 2))
    src = sources["data"]
    want = stream_packets(src, "data")
    assert len(want) == 1 and len(want[0]) >= 10
    for out in ("mp4", "mov", "mkv"):
        dst = tmp_path / f"data.{out}"
        report = p.run(src, dst)
        data = [s for s in ffprobe(dst)["streams"] if s["codec_type"] == "data"]
        item = next(i for i in report.streams if i["kind"] == "data")
        if "data" in HOLDS[out]:
            assert [s["codec_tag_string"] for s in data] == ["gpmd"]
            assert stream_packets(dst, "data") == want
            assert item["action"] == "copy" and not report.notes
        else:
            assert data == []
            assert item["action"] == "drop"
            assert report.notes == ("data stream 1 (bin_data) dropped: Matroska cannot hold bin_data data; "
                                    ".mp4 keeps it",)


def test_container_that_cannot_hold_them_drops_each_with_one_note(sources: dict[str, Path], tmp_path: Path,
                                                                  random_weights) -> None:
    dst = tmp_path / "out.ts"  # MPEG-TS: no chapters, tags, timecode or attachments
    report = pipeline(random_weights("espcn-fast", 2)).run(sources["mkv"], dst)
    b = ffprobe(dst)
    assert b["chapters"] == [] and not [s for s in b["streams"] if s["codec_type"] == "attachment"]
    for item, keeper in (("attachment font.ttf", ".mkv"), ("chapters (2, 2 titled)", ".mkv, .mp4 or .mov"),
                         (f"timecode {TIMECODE}", ".mov, .mp4 or .mkv"), ("metadata (", ".mkv")):
        matching = [n for n in report.notes if n.startswith(item)]
        assert len(matching) == 1 and "dropped: MPEG-TS cannot hold" in matching[0] and keeper in matching[0]
    dropped = {i["item"] for i in report.streams if i["action"] == "drop"}
    assert {"attachment font.ttf", "chapters (2, 2 titled)", f"timecode {TIMECODE}"} <= dropped


def test_report_lists_each_stream_with_its_action_and_why(sources: dict[str, Path], tmp_path: Path,
                                                          random_weights) -> None:
    dst, report = tmp_path / "out.mov", tmp_path / "run.json"
    args = ["run", str(sources["mp4"]), "-o", str(dst), "--model", "espcn-fast", "--scale", "2", "--weights",
            str(random_weights("espcn-fast", 2)), "--device", "cpu", "-q", "--report", str(report)]
    assert vsr_main(args) == 0
    items = {i["item"]: i for i in json.loads(report.read_text())["streams"]}
    assert items["video stream 0 (h264)"]["action"] == "re-encode"
    assert items["audio stream 1 (aac, fra)"] == {"item": "audio stream 1 (aac, fra)", "kind": "audio",
                                                  "action": "copy", "reason": "packets copied", "stream": 1}
    cover = items["cover art (stream 5, png)"]
    assert (cover["action"], cover["reason"]) == ("drop", "MOV cannot hold cover art")
    assert items[f"timecode {TIMECODE}"]["reason"] == "as the video's timecode tag and a tmcd track"
    assert items["audio stream 1 (aac, fra): disposition hearing_impaired+captions"]["action"] == "drop"
    assert all(set(i) == {"item", "kind", "action", "reason", "stream"} for i in items.values())


def test_batch_carries_for_every_file(sources: dict[str, Path], tmp_path: Path, random_weights) -> None:
    folder, report = tmp_path / "up", tmp_path / "batch.json"
    inputs = {kind: tmp_path / f"{kind}_in.{kind}" for kind in ("mkv", "mp4", "mov")}  # distinct output names
    for kind, path in inputs.items():
        shutil.copy(sources[kind], path)
    args = ["run", *map(str, inputs.values()), "-o", str(folder), "-f", "mp4",
            "--model", "espcn-fast", "--scale", "2", "--weights", str(random_weights("espcn-fast", 2)),
            "--device", "cpu", "-q", "--report", str(report)]
    assert vsr_main(args) == 0
    files = json.loads(report.read_text())["files"]
    assert [f["status"] for f in files] == ["ok"] * 3
    for kind, entry in zip(("mkv", "mp4", "mov"), files):
        assert_carried(inputs[kind], Path(entry["output"]), entry["notes"])
        assert any(i["kind"] == "chapters" and i["action"] == "copy" for i in entry["streams"])


class _Crash(Exception):
    """Stops a resumable run half-way, as an interruption would."""


@pytest.mark.parametrize("src, out", [("mp4", "mp4"), ("mkv", "mkv"), ("mov", "mov"), ("mp4", "mkv")])
def test_resumed_run_carries_as_a_plain_one(src: str, out: str, sources: dict[str, Path], tmp_path: Path,
                                            random_weights) -> None:
    p = pipeline(random_weights("espcn-fast", 2), resume_segment=1)
    dst = tmp_path / f"out.{out}"

    def crash(progress: Progress) -> None:
        if progress.frames == 30:  # segment 0 (frames 0-23) finished, segment 1 under way
            raise _Crash

    with pytest.raises(PipelineError, match="_Crash"):
        p.run(sources[src], dst, resume=True, progress=crash)
    report = p.run(sources[src], dst, resume=True)
    assert any("finished segment(s) kept" in n for n in report.notes)
    assert report.encoder is not None and report.encoder["codec"] == "libx264"  # the segments' encoder
    assert_carried(sources[src], dst, report.notes)
    plain = tmp_path / f"plain.{out}"
    p.run(sources[src], plain)
    a, b = ffprobe(plain), ffprobe(dst)
    assert [(s["codec_type"], s.get("codec_tag_string"), s["disposition"]) for s in b["streams"]] == \
        [(s["codec_type"], s.get("codec_tag_string"), s["disposition"]) for s in a["streams"]]
    assert b["chapters"] == a["chapters"]


def test_api_upscale_video_carries(sources: dict[str, Path], tmp_path: Path, random_weights) -> None:
    import vsr

    dst = tmp_path / "api.mkv"
    report = vsr.upscale_video(sources["mp4"], dst, scale=2, model="espcn-fast",
                               weights=random_weights("espcn-fast", 2), device="cpu")
    assert isinstance(report, RunReport)
    assert_carried(sources["mp4"], dst, report.notes)
    assert report.to_dict()["streams"] == [dict(i) for i in report.streams]


def _vsr(*args: str, stdout: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsr", "run", *args], cwd=REPO, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_pipe_carries_where_the_container_allows(sources: dict[str, Path], tmp_path: Path, random_weights) -> None:
    model = ["--model", "espcn-fast", "--scale", "2", "--weights", str(random_weights("espcn-fast", 2)),
             "--device", "cpu"]  # not -q: notes go to stderr
    dst = tmp_path / "pipe.mkv"
    with open(dst, "wb") as f:
        _vsr(str(sources["mkv"]), "-o", "-", "-f", "mkv", *model, stdout=f)
    b = ffprobe(dst)
    assert _chapters(b) == CHAPTERS and _tag(b["format"]["tags"], "timecode") == TIMECODE
    assert _attachments(dst) == _attachments(sources["mkv"])
    # Fragmented MP4 (what a pipe gets) cannot hold cover art: one note; the rest is kept.
    with open(tmp_path / "pipe.mp4", "wb") as f:
        r = _vsr(str(sources["mp4"]), "-o", "-", "-f", "mp4", *model, stdout=f)
    assert r.stderr.count("cover art (stream 5, png) dropped: fragmented MP4") == 1
    assert _chapters(ffprobe(tmp_path / "pipe.mp4")) == CHAPTERS and _pictures(tmp_path / "pipe.mp4") == []
    # Y4M holds nothing but the picture: one note lists it all.
    with open(tmp_path / "pipe.y4m", "wb") as f:
        r = _vsr(str(sources["mp4"]), "-o", "-", "-f", "y4m", *model, stdout=f)
    notes = [line for line in r.stderr.splitlines() if "dropped" in line]
    assert notes == ["vsr: note: Y4M holds only the picture: audio stream 1 (aac, fra), cover art (stream 5, png), "
                     f"chapters (2, 2 titled), timecode {TIMECODE}, metadata (2 tags) dropped; write -f mkv "
                     "(or nut) to keep them"]
