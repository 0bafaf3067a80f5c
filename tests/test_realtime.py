"""``speed: realtime`` / ``vsr run --realtime``, and the line naming the stage that held a slow run back.

The choice is tested with fake stage speeds (the machine's real ones vary); the probe, the
run it configures and the hints run for real on small clips made here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import vsr
import vsr.realtime as rt
from vsr.cli import main
from vsr.config import PipelineConfig, load_config_and_keys
from vsr.pipeline import RunReport, StageReport

from media_utils import make_clip, probe


@dataclass
class FakeSpeeds:
    """A :class:`vsr.realtime.Measure` with given stage speeds; counts what was asked."""

    infer: dict[tuple[str, str], float]
    encode: dict[str | None, float]
    source_fps: float | None = 30.0
    decode_fps: float = 1e9  # decoding is free unless a test says otherwise
    cuda: bool = False
    asked: list[tuple] = field(default_factory=list)

    def infer_fps(self, model: str, precision: str) -> float:
        self.asked.append(("infer", model, precision))
        return self.infer[model, precision]

    def encode_fps(self, preset: str | None) -> float:
        self.asked.append(("encode", preset))
        return self.encode[preset]


ENCODE = {"medium": 10.0, "faster": 20.0, "veryfast": 40.0, "ultrafast": 120.0}


@pytest.fixture
def three_precisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU that offers fp32, bf16 and a faster int8, with bf16 as ``auto``'s choice."""
    monkeypatch.setattr(rt, "precision_candidates", lambda device, **kw: ("fp32", "bf16", "int8"))
    monkeypatch.setattr(rt, "resolve_precision", lambda spec, device: {"auto": torch.bfloat16, "fp32": torch.float32,
                                                                        "bf16": torch.bfloat16}[spec])


def test_ladders_start_from_the_configuration(three_precisions: None) -> None:
    lad = rt.ladders(PipelineConfig(), frozenset())
    assert lad.models == ("espcn", "espcn-fast")
    assert lad.presets == ("medium", "faster", "veryfast", "ultrafast")
    assert lad.precisions == {"espcn": ("int8",), "espcn-fast": ("int8",)}  # auto takes int8 where it is offered
    assert lad.kept == ()
    bf16 = rt.ladders(PipelineConfig().replace({"precision": "bf16"}), frozenset())
    assert bf16.precisions["espcn"] == ("bf16", "int8")  # never more exact than the configured precision
    fast = PipelineConfig().replace({"model.name": "espcn-fast", "encoder.preset": "veryfast", "precision": "fp32"})
    lad = rt.ladders(fast, frozenset())
    assert lad.models == ("espcn-fast",) and lad.presets == ("veryfast", "ultrafast")
    assert lad.precisions["espcn-fast"] == ("fp32", "bf16", "int8")


def test_explicit_keys_are_never_varied(three_precisions: None) -> None:
    cfg = PipelineConfig().replace({"model.name": "espcn", "encoder.preset": "slow", "precision": "bf16"})
    lad = rt.ladders(cfg, {"model.name", "encoder.preset", "precision"})
    assert lad.models == ("espcn",) and lad.presets == ("slow",) and lad.precisions == {"espcn": ("bf16",)}
    assert lad.kept == ("model.name", "precision", "encoder.preset")
    # Weights belong to a model: setting them pins the model too.
    assert rt.ladders(PipelineConfig(), {"model.weights"}).models == ("espcn",)
    # A codec without x264's presets keeps its own.
    vp9 = PipelineConfig().replace({"encoder.codec": "libvpx-vp9", "encoder.preset": None})
    assert rt.ladders(vp9, {"encoder.codec"}).presets == ("medium",)  # replace() ignores None: still medium
    assert rt.ladders(dataclass_replace_preset(vp9, None), {"encoder.codec"}).presets == (None,)


def dataclass_replace_preset(cfg: PipelineConfig, preset: str | None) -> PipelineConfig:
    import dataclasses

    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, preset=preset))


def test_yaml_keys_count_as_explicit(tmp_path: Path, three_precisions: None) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("speed: realtime\nmodel:\n  name: espcn\nencoder:\n  crf: 20\n", encoding="utf-8")
    cfg, keys = load_config_and_keys(path, {"encoder.preset": "fast", "batch": None})
    assert cfg.speed == "realtime"
    assert keys == {"speed", "model.name", "encoder.crf", "encoder.preset"}  # None overrides were not set
    lad = rt.ladders(cfg, keys)
    assert lad.models == ("espcn",) and lad.presets == ("fast",)
    assert lad.precisions == {"espcn": ("int8",)}  # precision was not in the file: auto's choice, int8 here


def choose(infer: dict[tuple[str, str], float], **kw) -> tuple[rt.Choice, FakeSpeeds]:
    speeds = FakeSpeeds(infer, ENCODE, **kw)
    lad = rt.Ladders(("espcn", "espcn-fast"), {"espcn": ("bf16", "int8"), "espcn-fast": ("bf16", "int8")},
                     ("medium", "faster", "veryfast", "ultrafast"))
    return rt.choose(lad, speeds), speeds


def test_the_best_candidate_that_keeps_up_wins() -> None:
    assert rt.HEADROOM == 1.2  # the arithmetic below
    infer = {("espcn", "bf16"): 60.0, ("espcn", "int8"): 100.0, ("espcn-fast", "bf16"): 150.0,
             ("espcn-fast", "int8"): 250.0}
    # CPU: times add. espcn bf16 + veryfast: 1/(1/60 + 1/40) = 24 < 36; int8: 1/(1/100 + 1/40) = 28.6 < 36;
    # espcn bf16 + ultrafast: 40 >= 36 (30 fps x 1.2 headroom).
    choice, speeds = choose(infer)
    c = choice.candidate
    assert (c.model, c.precision, c.preset) == ("espcn", "bf16", "ultrafast") and choice.keeps_up
    assert c.fps == pytest.approx(40.0)
    # Each stage speed measured once; from the fastest preset up, stopping at veryfast, the first that does not
    # keep up (medium and faster, the slowest to measure, never timed), and espcn-fast never needed.
    assert speeds.asked == [("infer", "espcn", "bf16"), ("encode", "ultrafast"), ("encode", "veryfast"),
                            ("infer", "espcn", "int8")]
    line = choice.line()
    assert "espcn bf16 preset ultrafast" in line and "40.0 fps predicted" in line and "30.00 fps source" in line
    assert "next better setting, espcn int8 preset veryfast, 28.6 fps" in line  # too slow


def test_precision_goes_before_the_preset_and_the_preset_before_the_model() -> None:
    # bf16 would keep up at ultrafast (1/(1/60 + 1/120) = 40), int8 already at veryfast (1/(1/1000 + 1/40) = 38.5).
    choice, _ = choose({("espcn", "bf16"): 60.0, ("espcn", "int8"): 1000.0,
                        ("espcn-fast", "bf16"): 500.0, ("espcn-fast", "int8"): 900.0})
    assert (choice.candidate.model, choice.candidate.precision, choice.candidate.preset) == ("espcn", "int8", "veryfast")
    choice, _ = choose({("espcn", "bf16"): 20.0, ("espcn", "int8"): 25.0,
                        ("espcn-fast", "bf16"): 60.0, ("espcn-fast", "int8"): 80.0})
    c = choice.candidate
    assert (c.model, c.precision, c.preset) == ("espcn-fast", "bf16", "ultrafast")  # 1/(1/60+1/120) = 40


def test_nothing_keeps_up_takes_the_fastest_and_says_so() -> None:
    choice, _ = choose({("espcn", "bf16"): 5.0, ("espcn", "int8"): 8.0,
                        ("espcn-fast", "bf16"): 12.0, ("espcn-fast", "int8"): 15.0})
    c = choice.candidate
    assert (c.model, c.precision, c.preset) == ("espcn-fast", "int8", "ultrafast") and choice.keeps_up is False
    assert len(choice.tried) == 4  # each model's precisions at ultrafast: slower presets cannot be faster
    assert "nothing is predicted to keep up with the 30.00 fps source" in choice.line() and "fastest" in choice.line()


def test_decode_and_cuda_rules() -> None:
    infer = {("espcn", "bf16"): 1000.0, ("espcn", "int8"): 1000.0, ("espcn-fast", "bf16"): 1000.0,
             ("espcn-fast", "int8"): 1000.0}
    choice, _ = choose(infer, decode_fps=60.0)  # 1/(1/60 + 1/1000 + 1/120) = 38.5 >= 36: ultrafast
    assert choice.candidate.preset == "ultrafast"
    choice, _ = choose(infer, decode_fps=60.0, cuda=True)  # CUDA: the slowest stage, min(60, 1000, 40) = 40
    assert choice.candidate.preset == "veryfast" and choice.candidate.fps == 40.0


def test_unknown_source_rate_keeps_the_configuration() -> None:
    choice, speeds = choose({}, source_fps=None)
    assert (choice.candidate.model, choice.candidate.preset) == ("espcn", "medium") and choice.keeps_up is None
    assert speeds.asked == [] and "frame rate is unknown" in choice.line()
    assert choice.candidate.precision == "bf16"


# -- for real: the CLI and the API --------------------------------------------------------------------
@pytest.fixture
def fake_probe_speeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real probe (frames decoded, pipelines built), fake timings: only espcn-fast at ultrafast keeps up."""
    infer = {"espcn": 25.0, "espcn-fast": 200.0}
    monkeypatch.setattr(rt.FrameProbe, "infer_fps", lambda self, model, precision: infer[model])
    monkeypatch.setattr(rt.FrameProbe, "encode_fps", lambda self, preset: {**ENCODE, "slow": 5.0}[preset])


def test_cli_realtime_chooses_and_says_what(tmp_path: Path, fake_probe_speeds: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=10, rate=30)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    assert main(["run", str(clip), "-o", str(out), "--scale", "2", "--realtime", "--report", str(report)]) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "realtime:" in ln)
    assert "espcn-fast" in line and "preset ultrafast" in line and "30.00 fps source" in line
    data = json.loads(report.read_text())
    assert data["model"] == "espcn-fast" and data["realtime"]["preset"] == "ultrafast"
    assert data["realtime"]["probe_frames"] == 8 and data["realtime"]["keeps_up"] is True
    assert data["encoder"] == {"codec": "libx264", "preset": "ultrafast", "crf": 18}  # what the video got
    assert probe(out)["frames"] == 10


def test_cli_realtime_leaves_explicit_flags_and_yaml_alone(tmp_path: Path, fake_probe_speeds: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=10, rate=30)
    yaml = tmp_path / "my.yaml"
    yaml.write_text("model:\n  name: espcn\nspeed: realtime\n", encoding="utf-8")
    report = tmp_path / "r.json"
    assert main(["run", str(clip), "-o", str(tmp_path / "o.mp4"), "--scale", "2", "--config", str(yaml),
                 "--preset", "slow", "--report", str(report)]) == 0
    err = capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["model"] == "espcn" and data["realtime"]["preset"] == "slow"  # neither could change
    assert data["encoder"]["preset"] == "slow"
    assert data["realtime"]["keeps_up"] is False and "nothing is predicted to keep up" in err
    assert "kept as set: model.name, encoder.preset" in err


def test_api_speed_realtime(tmp_path: Path, fake_probe_speeds: None) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=6, rate=30)
    report = vsr.upscale_video(clip, tmp_path / "o.mp4", scale=2, speed="realtime", model="espcn")
    assert report.model == "espcn" and report.realtime is not None
    assert report.realtime["preset"] == "ultrafast" and report.realtime["kept"] == ["model.name"]
    plain = vsr.upscale_video(clip, tmp_path / "p.mp4", scale=2)
    assert plain.realtime is None and plain.model == "espcn"


def test_realtime_probe_measures_for_real(tmp_path: Path) -> None:
    """No fakes: the probe times the stages on the clip's first frames, and the run uses its choice."""
    clip = make_clip(tmp_path / "in.mp4", frames=12, rate=24, audio={"channels": 1, "rate": 44100})
    with rt.FrameProbe(clip, PipelineConfig().replace({"model.scale": 2}), frames=4) as p:
        assert len(p.frames) == 4 and p.source_fps == pytest.approx(24.0)
        assert p.infer_fps("espcn-fast", "fp32") > 0 and p.encode_fps("ultrafast") > 0
        assert p.infer_fps("espcn-fast", "fp32") == p.infer_fps("espcn-fast", "fp32")  # memoised
    report = vsr.upscale_video(clip, tmp_path / "o.mp4", scale=2, speed="realtime")
    assert report.realtime is not None and report.realtime["tried"]
    assert (report.model, report.precision) == (report.realtime["model"], report.realtime["precision"])
    info = probe(tmp_path / "o.mp4")
    assert info["frames"] == 12 and info["audio"]  # the probe's dropped audio is only for its own timing


def test_realtime_probe_discards_the_first_encode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's first encode pays one-time costs; the probe times a second one, and warms up only once."""
    clip = make_clip(tmp_path / "in.mp4", frames=6, rate=24)
    calls: list[tuple[int, str | None]] = []

    def fake_encode(pipe, source, dst, frames, lumas, encoder=None):  # noqa: ANN001, ANN202
        calls.append((len(frames), encoder.preset))
        return 1.0 if len(calls) == 1 else 50.0 + len(calls)

    monkeypatch.setattr(rt, "measure_encode", fake_encode)
    with rt.FrameProbe(clip, PipelineConfig().replace({"model.scale": 2}), frames=4) as p:
        assert p.encode_fps("ultrafast") == 52.0 and p.encode_fps("veryfast") == 53.0
        assert p.encode_fps("ultrafast") == 52.0  # memoised
    assert calls == [(rt._WARM_UP, "ultrafast"), (4, "ultrafast"), (4, "veryfast")]


# -- the stage that held a slow run back --------------------------------------------------------------
def _report(busy: dict[str, float], factor: float = 0.5, model: str = "espcn", precision: str = "bf16") -> RunReport:
    stages = {k: StageReport(frames=10, busy_s=v, fps=10 / v, busy_fraction=v) for k, v in busy.items()}
    return RunReport(input="a", output="b", frames=10, elapsed_s=1.0, fps=15.0, source_fps=30.0,
                     realtime_factor=factor, device="cpu", precision=precision, model=model, scale=3,
                     input_size=(8, 8), output_size=(24, 24), stages=stages, latency_ms={})


def test_slow_stage_hint_names_the_stage_and_the_option() -> None:
    cfg = PipelineConfig()
    hint = rt.slow_stage_hint(_report({"decode": 0.1, "infer": 0.4, "encode": 0.95}), cfg)
    assert hint is not None and "held back by encode (busy 95% of the run" in hint
    assert "--preset veryfast" in hint and "--realtime" in hint
    hint = rt.slow_stage_hint(_report({"decode": 0.1, "infer": 0.9, "encode": 0.3}), cfg)
    assert hint is not None and "held back by infer" in hint and "--model espcn-fast" in hint
    hint = rt.slow_stage_hint(_report({"decode": 0.9, "infer": 0.2, "encode": 0.3}), cfg)
    assert hint is not None and "held back by decode" in hint
    realtime = cfg.replace({"speed": "realtime", "encoder.preset": "ultrafast"})
    hint = rt.slow_stage_hint(_report({"decode": 0.1, "infer": 0.3, "encode": 0.9}), realtime)
    assert hint is not None and "already the fastest" in hint and "--realtime" not in hint
    assert rt.slow_stage_hint(_report({"encode": 0.9}, factor=1.2), cfg) is None  # real time: nothing to say


@pytest.mark.parametrize("slow, expect", [("encode", "--preset veryfast"), ("infer", "--model espcn-fast")])
def test_a_slow_stage_is_named_after_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], slow: str, expect: str) -> None:
    """A stage slowed on purpose (0.1 s a frame, a 30 fps source) is the one the summary names."""
    from vsr.engine import LumaUpscaler
    from vsr.media import VideoWriter

    target = (VideoWriter, "write") if slow == "encode" else (LumaUpscaler, "__call__")
    original = getattr(*target)

    def slowed(self, *args, **kw):
        time.sleep(0.1)
        return original(self, *args, **kw)

    monkeypatch.setattr(*target, slowed)
    clip = make_clip(tmp_path / "in.mp4", frames=12, rate=30)
    assert main(["run", str(clip), "-o", str(tmp_path / "o.mp4"), "--scale", "2", "--batch", "1"]) == 0
    lines = capsys.readouterr().err.splitlines()
    hint = next(ln for ln in lines if "slower than real time" in ln)
    assert f"held back by {slow}" in hint and expect in hint and "--realtime" in hint


def test_a_fast_machine_keeps_the_configuration() -> None:
    speeds = FakeSpeeds({("espcn", "bf16"): 500.0}, {"medium": 200.0, "faster": 300.0, "veryfast": 400.0,
                                                    "ultrafast": 900.0})
    lad = rt.Ladders(("espcn", "espcn-fast"), {"espcn": ("bf16",), "espcn-fast": ("bf16",)},
                     ("medium", "faster", "veryfast", "ultrafast"))
    choice = rt.choose(lad, speeds)
    c = choice.candidate
    assert (c.model, c.precision, c.preset) == ("espcn", "bf16", "medium") and choice.keeps_up
    assert "next better" not in choice.line()  # nothing better was tried


def test_standard_input_cannot_be_probed_and_says_so(tmp_path: Path) -> None:
    import subprocess
    import sys

    clip = make_clip(tmp_path / "in.mkv", frames=4, rate=25)
    out = tmp_path / "out.mkv"
    r = subprocess.run([sys.executable, "-m", "vsr", "run", "-", "-o", str(out), "--scale", "2", "--realtime",
                        "--model", "espcn-fast"], stdin=clip.open("rb"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "standard input cannot be probed" in r.stderr and probe(out)["frames"] == 4


def test_batch_realtime_chooses_per_file(tmp_path: Path, fake_probe_speeds: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "a.mp4", frames=4, rate=30)
    make_clip(folder / "b.mp4", frames=4, rate=30)
    report = tmp_path / "r.json"
    assert main(["run", str(folder), "-o", str(tmp_path / "out"), "--scale", "2", "--realtime",
                 "--report", str(report)]) == 0
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if "realtime: espcn-fast" in ln]) == 2
    files = json.loads(report.read_text())["files"]
    assert [f["realtime"]["preset"] for f in files] == ["ultrafast", "ultrafast"]


def test_int8_outside_the_bound_is_a_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 files that ship but are not within auto's 0.05 dB bound: tried only when no float setting of any
    model keeps up, and the line says so (with the file's measured cost on a real clip)."""
    lad = rt.Ladders(("espcn", "espcn-fast"), {"espcn": ("bf16",), "espcn-fast": ("bf16",)},
                     ("medium", "faster", "veryfast", "ultrafast"),
                     last_resort={"espcn": ("int8",), "espcn-fast": ("int8",)}, scale=3)
    # espcn int8 would keep up at veryfast (1/(1/1000 + 1/40) = 38.5 >= 36), but espcn-fast bf16 does at
    # ultrafast (1/(1/60 + 1/120) = 40): the float model step comes first.
    infer = {("espcn", "bf16"): 20.0, ("espcn", "int8"): 1000.0, ("espcn-fast", "bf16"): 60.0,
             ("espcn-fast", "int8"): 1000.0}
    c = rt.choose(lad, FakeSpeeds(infer, ENCODE)).candidate
    assert (c.model, c.precision, c.preset) == ("espcn-fast", "bf16", "ultrafast")
    # Nothing in floats keeps up: espcn's int8 at the slowest preset that still does.
    infer.update({("espcn-fast", "bf16"): 30.0})
    choice = rt.choose(lad, FakeSpeeds(infer, ENCODE))
    c = choice.candidate
    assert (c.model, c.precision, c.preset) == ("espcn", "int8", "veryfast") and choice.keeps_up
    assert "outside auto's 0.05 dB bound for espcn" in choice.line()
    assert "dB on a real clip" in choice.line()  # read from the shipped file's quality record
    # Without a last resort (the user set precision, or no int8 ships) the fastest float is taken.
    plain = rt.Ladders(lad.models, lad.precisions, lad.presets)
    assert rt.choose(plain, FakeSpeeds(infer, ENCODE)).candidate.precision == "bf16"


def test_ladders_offer_int8_outside_the_bound_only_as_a_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    def offered(device, *, within_bound: bool = True, **kw):
        return ("fp32", "bf16") if within_bound else ("fp32", "bf16", "int8")

    monkeypatch.setattr(rt, "precision_candidates", offered)
    monkeypatch.setattr(rt, "resolve_precision", lambda spec, device: torch.bfloat16)
    lad = rt.ladders(PipelineConfig(), frozenset())
    assert lad.precisions == {"espcn": ("bf16",), "espcn-fast": ("bf16",)}
    assert lad.last_resort == {"espcn": ("int8",), "espcn-fast": ("int8",)}
    assert rt.ladders(PipelineConfig(), {"precision"}).last_resort == {}  # the user's precision stands
    assert rt.ladders(PipelineConfig().replace({"precision": "bf16"}), frozenset()).last_resort == {}
