"""``execution`` in the marker and the budget file: where a budget's model is run for real."""

from __future__ import annotations

import json

import pytest

from .projects import scratch_project

MODELS = """
import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x) if x.sum() > 0 else x


def branchy():
    return Branchy()
"""


def test_the_marker_and_the_entry_choose_the_execution(pytester: pytest.Pytester):
    scratch_project(
        pytester,
        MODELS,
        '[budgets.declared]\nfactory = "mymodels:branchy"\ninput_size = [2, 8]\nexecution = "real"\n',
    )
    pytester.makepyfile(
        test_it="""
        import pytest
        import torch
        from mymodels import Branchy


        @pytest.mark.budget(execution="real")
        def test_real(model_budget):
            assert model_budget.check(Branchy(), torch.ones(2, 8)).execution == "real"


        @pytest.mark.budget(execution="fake")
        def test_fake(model_budget):
            model_budget.check(Branchy(), torch.ones(2, 8))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--budget-json", "r.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*execution='fake' never falls back to a real run*"])
    budgets = json.loads((pytester.path / "r.json").read_text())["budgets"]
    assert budgets["declared"]["execution"] == budgets["test_it.py::test_real"]["execution"] == "real"
    assert any(note.startswith("execution='real'") for note in budgets["declared"]["notes"])


def test_an_unknown_execution_is_refused_where_it_is_written(pytester: pytest.Pytester):
    scratch_project(pytester, MODELS, '[budgets.declared]\nfactory = "mymodels:branchy"\nexecution = "eager"\n')
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert "budgets.declared.execution" in result.stderr.str() + result.stdout.str()
    assert "'auto', 'fake' or 'real'" in result.stderr.str() + result.stdout.str()
