"""The code base stays lint-clean and formatted (ruff, configured in pyproject.toml), and the shape
annotations are checked at run time in this suite (tests/shape_checks.py, installed by conftest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["workbench", "tests", "benchmarks", "scripts"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), *command, *SOURCES], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shape_annotations_are_checked_at_run_time() -> None:
    from workbench.decoding.dola import jensen_shannon

    final, premature = torch.zeros(2, 7), torch.zeros(2, 3, 7)
    assert jensen_shannon(final, premature).shape == (2, 3)
    with pytest.raises(TypeError, match="premature"):
        jensen_shannon(final, torch.zeros(2, 3, 5))  # vocab 5 against the final row's 7
