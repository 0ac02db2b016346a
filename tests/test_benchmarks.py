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


def test_the_gpu_memory_benchmark_runs_on_the_cpu_against_the_allocator(tmp_path):
    # On a machine without CUDA it compares the estimate with the CPU allocator's record; the same
    # script adds the CUDA columns where a GPU is (the README says how to run it there).
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_memory.py", "--quick", "--cpu", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| mlp 16x128x256 AdamW | training |" in done.stdout
    import json

    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 3
    # The quick cases are ones the estimate is exact on: the benchmark reports the error it sees.
    assert all(row["error"] == 0 for row in rows), rows
    help_text = subprocess.run(
        [sys.executable, "benchmarks/gpu_memory.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0 and "--quick" in help_text.stdout


def test_the_decode_sweep_checks_a_type_against_its_own_run(tmp_path):
    out = tmp_path / "decode.jsonl"
    done = subprocess.run(
        [sys.executable, "benchmarks/decode_sweep.py", "--family", "llama", "--out", str(out), "--jobs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "exact            hf:LlamaForCausalLM" in done.stdout
    assert "1 generative types, 1 checked against their own run: 1 exact" in done.stdout
