"""Pipeline configuration: frozen dataclasses, read from YAML (the only place vsr reads YAML).

``pipeline.yaml`` at the repository root documents every key; its values are the
defaults of the dataclasses below, and a test keeps the two equal. Unknown keys and
bad values are refused with the key's dotted name and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from .errors import ConfigError

__all__ = [
    "EncoderConfig",
    "ExecutorConfig",
    "ModelConfig",
    "OutputConfig",
    "PipelineConfig",
    "config_from_dict",
    "explicit_keys",
    "load_config",
    "load_config_and_keys",
]

Device = str  # "auto", "cpu", "cuda" or "cuda:N"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = "espcn"
    scale: Literal[2, 3, 4] = 3
    weights: str | None = None  # None: the weights shipped with vsr for name and scale


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    codec: str = "auto"  # auto: h264_nvenc on a CUDA run whose GPU has NVENC, else libx264 (vsr.media._hwcodec)
    crf: int | None = 18  # None: the codec's default rate control
    preset: str | None = "medium"  # None: the codec's default
    pix_fmt: str = "auto"  # auto: the input's format when the codec takes it
    audio: Literal["copy", "reencode", "drop"] = "copy"
    subtitles: Literal["copy", "drop"] = "copy"

    def __post_init__(self) -> None:
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise ConfigError(f"encoder.crf must be between 0 and 63, got {self.crf}")


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    pattern: str = "{stem}_x{scale}{suffix}"  # default output name, beside the input
    overwrite: bool = False

    def __post_init__(self) -> None:
        try:
            self.pattern.format(stem="a", scale=2, suffix=".mp4")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"output.pattern {self.pattern!r} is not valid: use only {{stem}}, {{scale}} and {{suffix}}"
            ) from None


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """Where ``vsr run`` works: in this process (``local``) or on a Ray cluster (``ray``, :mod:`vsr.cluster`)."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # a Ray cluster ("host:port", "auto"); None: start a local Ray on loopback
    segment_seconds: int = 10  # a segment ends at the first keyframe this many seconds after its start
    cpus_per_worker: int = 2  # CPU cores per worker on CPU nodes (one worker per that many cores)
    gpus_per_worker: int = 1  # GPUs per worker on GPU nodes
    max_retries: int = 3  # times a segment is rerun after its worker or node died

    def __post_init__(self) -> None:
        for name, low in (("segment_seconds", 1), ("cpus_per_worker", 1), ("gpus_per_worker", 1),
                          ("max_retries", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"executor.{name} must be an integer >= {low}, got {getattr(self, name)}")
        if self.address is not None and not self.address.strip():
            raise ConfigError("executor.address must be host:port, auto, or null (a local Ray)")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    device: Device = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"
    batch: int = 1  # frames per inference call
    queue_depth: int = 8  # frames each bounded queue holds between stages
    tile: int = 0  # LR tile size in pixels; 0 = whole frames (auto-tiled on CUDA out-of-memory)
    threads: int = 0  # torch intra-op threads on CPU; 0 = one per core
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    progress: Literal["auto", "always", "never"] = "auto"
    resume_segment: int = 10  # seconds of video per segment of a resumable run (vsr run --resume)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    speed: Literal["quality", "realtime"] = "quality"  # realtime: vsr.realtime picks what keeps up

    def __post_init__(self) -> None:
        if not _DEVICE_RE.match(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name, low in (("batch", 1), ("queue_depth", 1), ("tile", 0), ("threads", 0), ("resume_segment", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {getattr(self, name)}")
        if 0 < self.tile < 16:
            raise ConfigError(f"tile must be 0 (whole frames) or at least 16 pixels, got {self.tile}")

    def replace(self, overrides: Mapping[str, Any]) -> "PipelineConfig":
        """A copy with dotted keys (``"encoder.crf"``) replaced; None values are ignored."""
        data = dataclasses.asdict(self)
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node[p]
            if leaf not in node:
                raise ConfigError(f"unknown option {dotted!r}")
            node[leaf] = value
        return config_from_dict(data)


def _type_ok(value: Any, tp: Any) -> tuple[bool, str]:
    """Whether ``value`` fits annotation ``tp``, and a description of what is allowed."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        return value in choices and type(value) in {type(c) for c in choices}, (
            "one of " + ", ".join(str(c) for c in choices)
        )
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        results = [_type_ok(value, a) for a in typing.get_args(tp)]
        return any(ok for ok, _ in results), " or ".join(d for _, d in results)
    if tp is type(None):
        return value is None, "null"
    if tp is bool:
        return isinstance(value, bool), "true or false"
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if tp is str:
        return isinstance(value, str), "a string"
    raise TypeError(f"unhandled annotation {tp!r}")  # pragma: no cover


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "the configuration"
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} (allowed: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
            continue
        ok, allowed = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"{prefix}{name} must be {allowed}, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(prefix) else f"{prefix}{msg}") from None


def config_from_dict(data: Mapping[str, Any]) -> PipelineConfig:
    """Validate a nested mapping (as parsed from YAML) into a :class:`PipelineConfig`."""
    return _build(PipelineConfig, data or {}, "")


def explicit_keys(data: Mapping[str, Any], prefix: str = "") -> frozenset[str]:
    """The dotted keys a nested mapping sets (``{"encoder": {"crf": 20}}`` → ``{"encoder.crf"}``).

    What the user wrote, as opposed to a default: ``speed: realtime`` changes only keys outside this set.
    """
    keys: set[str] = set()
    for name, value in (data or {}).items():
        if isinstance(value, Mapping):
            keys |= explicit_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return frozenset(keys)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Read a YAML file (``None``: the built-in defaults) and apply dotted-key overrides."""
    return load_config_and_keys(path, overrides)[0]


def load_config_and_keys(path: str | Path | None = None,
                         overrides: Mapping[str, Any] | None = None) -> tuple[PipelineConfig, frozenset[str]]:
    """:func:`load_config`, and the dotted keys the file or the (non-None) overrides set explicitly."""
    import yaml

    data: Any = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {str(p)!r} does not exist") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {str(p)!r}: {exc.__class__.__name__}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{str(p)!r} is not valid YAML{where}") from None
        try:
            config = config_from_dict(data if data is not None else {})
        except ConfigError as exc:
            raise ConfigError(f"{p.name}: {exc}") from None
    else:
        config = PipelineConfig()
    overrides = overrides or {}
    keys = explicit_keys(data or {}) | {k for k, v in overrides.items() if v is not None}
    return config.replace(overrides), keys
