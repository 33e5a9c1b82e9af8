"""Every bad value is one ``error:`` line and exit 2, quickly, naming the value at fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

HEAVY = {"torch", "lightning", "pytorch_lightning"}


def _run(script: str, *args: str, cwd: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, str(REPO_ROOT / script), *args, f"paths.log_dir={cwd}/out"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "error: optimizer.lr=-1 must be a positive number"),
        ("resume=sometimes", "error: resume='sometimes' must be null or 'latest' (or give ckpt_path=PATH)"),
        ("checkpoint_every_n_steps=0", "error: checkpoint_every_n_steps=0 must be a positive integer or null"),
    ],
)
def test_config_errors_answer_before_torch_or_lightning_is_imported(tmp_path, override, message):
    """The README's promise of a quick answer: no heavy import happens before the checks."""
    result = _run("train.py", override, cwd=tmp_path, importtime=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert _error_lines(result) == [message]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "cifar_lab" in imported  # -X importtime did report
    assert not imported & HEAVY, f"imported before the config check: {sorted(imported & HEAVY)}"
