"""The public surface of ``vsr``: exactly these names, sorted, importable; the exception tree."""

from __future__ import annotations

import importlib

import pytest

import vsr

PUBLIC = [
    "ConfigError",
    "DeviceError",
    "ESPCN",
    "ESPCNConfig",
    "EncodeError",
    "MediaError",
    "ModelError",
    "OutputExistsError",
    "PipelineError",
    "RunReport",
    "UnsupportedMediaError",
    "Upscaler",
    "VsrError",
    "WeightsError",
    "__version__",
    "create_model",
    "export_mpv",
    "export_onnx",
    "list_models",
    "load_weights",
    "ops",
    "register_model",
    "save_weights",
    "upscale_video",
]

# Each error, its vsr parent and the builtin a caller may catch it as (see vsr/errors.py).
TREE = {
    "ConfigError": ("VsrError", ValueError),
    "ModelError": ("VsrError", LookupError),
    "WeightsError": ("VsrError", ValueError),
    "DeviceError": ("VsrError", RuntimeError),
    "MediaError": ("VsrError", OSError),
    "UnsupportedMediaError": ("MediaError", ValueError),
    "EncodeError": ("MediaError", OSError),
    "OutputExistsError": ("VsrError", FileExistsError),
    "PipelineError": ("VsrError", RuntimeError),
}


def test_all_is_exactly_the_public_names_and_sorted() -> None:
    assert vsr.__all__ == PUBLIC
    assert vsr.__all__ == sorted(vsr.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_each_name_imports(name: str) -> None:
    module = importlib.import_module("vsr")
    assert getattr(module, name) is not None
    exec(f"from vsr import {name}", {})  # the form users write


def test_star_import_gives_the_public_names_only() -> None:
    namespace: dict[str, object] = {}
    exec("from vsr import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC)


def test_every_error_is_public() -> None:
    errors = {n for n in PUBLIC if isinstance(getattr(vsr, n), type) and issubclass(getattr(vsr, n), BaseException)}
    assert errors == set(TREE) | {"VsrError"}


@pytest.mark.parametrize("name", sorted(TREE))
def test_exception_tree(name: str) -> None:
    cls = getattr(vsr, name)
    parent, builtin = TREE[name]
    assert issubclass(cls, getattr(vsr, parent)) and issubclass(cls, vsr.VsrError)
    assert issubclass(cls, builtin)
    err = cls("how to fix it")
    assert str(err) == "how to fix it"  # one line, not quoted (LookupError would quote it)
    with pytest.raises(builtin):
        raise err
    with pytest.raises(vsr.VsrError):
        raise cls("x")


def test_vsr_error_is_an_exception_not_a_base_exception() -> None:
    assert issubclass(vsr.VsrError, Exception)
    assert vsr.VsrError.__bases__ == (Exception,)


def test_api_options_are_keyword_only() -> None:
    import inspect

    for fn in (vsr.Upscaler.__init__, vsr.export_onnx, vsr.export_mpv):
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert positional in ([], ["path"]), positional
    params = inspect.signature(vsr.upscale_video).parameters.values()
    assert [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY] == ["src", "dst"]
