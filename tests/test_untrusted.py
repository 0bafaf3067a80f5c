"""Untrusted files: weights and YAML never run code; no shell ever sees a user-supplied string.

tests/test_models.py already shows a pickled nn.Module is refused; here the payloads would
run code if they were unpickled / constructed, and the test checks that they did not.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch

import vsr
from vsr.config import load_config
from vsr.errors import ConfigError, WeightsError
from vsr.models import create_model

PACKAGE = Path(vsr.__file__).resolve().parent


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_weights_with_code_are_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = create_model("espcn", scale=2, weights=None).state_dict()
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "metadata": {"x": _Payload(marker)}}, evil)
    # Sanity: the file really does run code when unpickled without weights_only.
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(WeightsError, match="cannot read weights"):
        create_model("espcn", scale=2, weights=evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(WeightsError, match="cannot read weights"):
        create_model("espcn", scale=2, weights=raw)
    assert not marker.exists()


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:pathlib.Path.touch [{marker!r}]",
    "!!python/object/new:pathlib.Path [{marker!r}]",
    "!!python/name:os.system",
])
def test_yaml_python_tags_are_refused(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"device: cpu\nthreads: {tag.format(marker=str(marker))}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cfg)
    assert not marker.exists()


# -- static checks of the package source ------------------------------------------------------

def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def risky_calls(source: str) -> list[str]:
    """Calls that run a shell, unpickle, or read YAML unsafely, found in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kwargs = {k.arg: k.value for k in node.keywords}
        shell = kwargs.get("shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{name}(shell=...) at line {node.lineno}")
        if name in ("os.system", "os.popen", "os.execl", "os.execlp", "os.spawnl", "subprocess.getoutput",
                    "subprocess.getstatusoutput", "pty.spawn", "eval", "exec"):
            found.append(f"{name} at line {node.lineno}")
        if name in ("pickle.load", "pickle.loads", "marshal.loads", "yaml.load", "yaml.unsafe_load",
                    "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "dill.load"):
            found.append(f"{name} at line {node.lineno}")
        if name == "torch.load":
            wo = kwargs.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"torch.load without weights_only=True at line {node.lineno}")
    return found


def test_the_checker_finds_what_it_looks_for() -> None:
    bad = (
        "import os, subprocess, yaml, torch\n"
        "subprocess.run(cmd, shell=True)\nos.system(cmd)\nos.popen(cmd)\n"
        "yaml.load(text, Loader=yaml.Loader)\ntorch.load(path)\ntorch.load(path, weights_only=False)\n"
    )
    assert len(risky_calls(bad)) == 6
    good = "subprocess.run(['ffprobe', path], shell=False)\nyaml.safe_load(t)\ntorch.load(p, weights_only=True)\n"
    assert risky_calls(good) == []


def test_package_source_has_no_shell_no_unsafe_loads() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    problems = [f"{f.relative_to(PACKAGE)}: {p}" for f in files for p in risky_calls(f.read_text(encoding="utf-8"))]
    assert problems == []
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    assert "yaml.safe_load" in text and "weights_only=True" in text  # the safe forms are what is used
