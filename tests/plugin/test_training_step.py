"""A training budget holds the larger of the first and the steady step unless it names one: by
argument, marker or entry, and the JSON report says which step the figure is."""

from __future__ import annotations

import json

import pytest

from .projects import scratch_project

MODELS = """
import torch


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))


def x():
    return torch.randn(2048, 64)
"""

TESTS = """
import pytest
import torch

from mymodels import mlp


def adamw(params):
    return torch.optim.AdamW(params)


@pytest.mark.budget(mode="training")
def test_default(model_budget):
    model_budget.check(mlp(), input_size=(2048, 64), optimizer=adamw)


@pytest.mark.budget(mode="training", step="first")
def test_first(model_budget):
    model_budget.check(mlp(), input_size=(2048, 64), optimizer=adamw)
"""

BUDGETS = """
[budgets.declared_steady]
factory = "mymodels:mlp"
inputs = "mymodels:x"
mode = "training"
optimizer = "torch.optim:AdamW"
step = "steady"
"""


def test_the_step_is_chosen_by_marker_or_entry_and_reported(pytester):
    scratch_project(pytester, MODELS, BUDGETS)
    pytester.makepyfile(test_steps=TESTS)
    pytester.runpytest("-p", "no:cacheprovider", "--budget-json=report.json").assert_outcomes(passed=3)
    budgets = json.loads((pytester.path / "report.json").read_text())["budgets"]
    default = budgets["test_steps.py::test_default"]["figures"]["peak_memory"]
    first = budgets["test_steps.py::test_first"]["figures"]["peak_memory"]
    steady = budgets["declared_steady"]["figures"]["peak_memory"]
    # AdamW's two moments, 2 x 33,088 params x 4 B, are alive through the steady step's backward
    # (with activations this large, the peak is there, not at the optimizer's step).
    assert default == steady > first
    assert steady - first >= 2 * 33_088 * 4 - 4096


def test_an_unknown_step_stops_the_run_naming_the_test(pytester):
    scratch_project(pytester, MODELS)
    pytester.makepyfile(test_steps=TESTS.replace('step="first"', 'step="second"'))
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_steps.py::test_first: budget marker: step='second'; expected one of first, steady*"]
    )
