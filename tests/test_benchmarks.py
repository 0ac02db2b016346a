"""The benchmark script runs as documented (peers are optional: only our tool and PyTorch's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_tools_reports_the_tied_model_against_its_arithmetic():
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/compare_tools.py",
            "--models",
            "tied_lm",
            "--tools",
            "pytest-modelbudget,FlopCounterMode",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| tied_lm | pytest-modelbudget | 16,909,312 | 0 | 2,164,260,864 | 0 |" in done.stdout
    assert "| tied_lm | FlopCounterMode | - | - | 2,164,260,864 | 0 |" in done.stdout


def test_compare_tools_rejects_an_unknown_tool():
    done = subprocess.run(
        [sys.executable, "benchmarks/compare_tools.py", "--tools", "torchsummary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown model or tool: torchsummary" in done.stderr
