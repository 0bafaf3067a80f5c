from pathlib import Path

import pytest

from vsr.config import PipelineConfig, config_from_dict, load_config
from vsr.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_yaml_documents_the_defaults() -> None:
    assert load_config(REPO / "pipeline.yaml") == PipelineConfig()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"encoder": {"crff": 1}}, r"unknown key encoder\.crff \(allowed: audio, codec, crf, pix_fmt, preset, subtitles\)"),
        ({"modle": {}}, r"unknown key modle \(allowed: .*model"),
        ({"model": {"scale": 5}}, r"model\.scale must be one of 2, 3, 4, got 5"),
        ({"model": {"scale": "3"}}, r"model\.scale must be one of 2, 3, 4, got '3'"),
        ({"device": "gpu"}, r"device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ({"precision": "int4"}, r"precision must be one of auto, fp32, bf16, fp16"),
        ({"encoder": {"audio": "keep"}}, r"encoder\.audio must be one of copy, reencode, drop"),
        ({"encoder": {"crf": 99}}, r"encoder\.crf must be between 0 and 63, got 99"),
        ({"batch": 0}, r"batch must be an integer >= 1, got 0"),
        ({"queue_depth": True}, r"queue_depth must be an integer, got True"),
        ({"output": {"pattern": "{name}.mp4"}}, r"output\.pattern .* use only \{stem\}, \{scale\} and \{suffix\}"),
        ({"model": 3}, r"model must be a mapping"),
    ],
)
def test_bad_keys_and_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml' is not valid YAML at line"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("encoder:\n  crf: 20\n  presett: fast\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key encoder\.presett"):
        load_config(typo)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("device: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_overrides_replace_only_what_is_set(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  scale: 2\nencoder:\n  crf: 30\n  preset: fast\n")
    c = load_config(f, {"encoder.crf": 20, "encoder.preset": None, "model.name": None})
    assert (c.model.scale, c.encoder.crf, c.encoder.preset, c.model.name) == (2, 20, "fast", "espcn")
    with pytest.raises(ConfigError, match="unknown option 'encoder.nope'"):
        load_config(None, {"encoder.nope": 1})
    with pytest.raises(ConfigError, match="model.scale must be one of 2, 3, 4"):
        load_config(None, {"model.scale": 7})


def test_config_is_frozen() -> None:
    c = PipelineConfig()
    with pytest.raises(AttributeError):
        c.batch = 3  # type: ignore[misc]
