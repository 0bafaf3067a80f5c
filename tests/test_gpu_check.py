"""tools/gpu_check.py keeps working without a GPU: its --dry-run runs every section's logic on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_passes_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, "tools/gpu_check.py", "--dry-run", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                             "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["failed"] == 0
    sections = {row["section"] for row in result["checks"]}
    assert sections == {"environment", "accuracy", "stress", "end_to_end", "speed", "memory", "video"}
    asserted = [row for row in result["checks"] if row["ok"] is not None]
    assert len(asserted) >= 50 and all(row["ok"] for row in asserted)
    assert "0 failed of" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_without_cuda_and_without_dry_run_says_so(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "tools/gpu_check.py", "--out", str(tmp_path / "x.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "CUDA is not available here" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x.json").exists()


def test_a_failed_assertion_or_a_crashed_section_exits_1(tmp_path: Path, monkeypatch, capsys) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "tools"))
    monkeypatch.setattr(gpu_check, "make_frames", lambda n, w, h: (_ for _ in ()).throw(RuntimeError("boom")))
    code = gpu_check.main(["--dry-run", "--only", "stress", "--out", str(tmp_path / "c.json")])
    assert code == 1
    out = capsys.readouterr().out
    assert "section ran" in out and "RuntimeError: boom" in out and "FAIL" in out
    assert json.loads((tmp_path / "c.json").read_text())["failed"] == 1
