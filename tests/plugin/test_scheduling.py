"""Budgets under pytest-xdist (``plugin/scheduling.py``): the longest first, so that a long one is
not handed out last, and each worker on its share of the cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pytest_modelbudget.budgets.loader import load_text
from pytest_modelbudget.plugin.scheduling import expected_seconds, longest_first, worker_threads

from .projects import scratch_project
from .test_plugin import MODELS

FILE = """
[budgets.small.baseline]
params = 1000
[budgets.small.baseline.layers]
"a" = { params = 1000 }

[budgets.huge.baseline]
params = 600_000_000
[budgets.huge.baseline.layers]
"a" = { params = 600_000_000 }

[budgets.deep.baseline]
params = 1000
[budgets.deep.baseline.layers]
""" + "\n".join(f'"l{i}" = {{ params = 1 }}' for i in range(500))


class Item:
    def __init__(self, name: str) -> None:
        self.name = name


def test_the_longest_budgets_go_first_and_the_rest_keep_their_order():
    budgets = load_text(Path("budgets.toml"), FILE).budgets
    # Building 600M parameters (about 3 s) outweighs 500 layers of fake run (about 0.6 s).
    assert expected_seconds(budgets["huge"].baseline) > expected_seconds(budgets["deep"].baseline)
    assert expected_seconds(budgets["deep"].baseline) > expected_seconds(budgets["small"].baseline)
    items = [Item(name) for name in ["plain_test", "small", "new_budget", "deep", "huge", "other_test"]]
    longest_first(items, lambda item: budgets[item.name].baseline if item.name in budgets else None)
    assert [item.name for item in items] == ["huge", "deep", "small", "plain_test", "new_budget", "other_test"]


def test_each_worker_takes_its_share_of_the_cores_unless_the_user_chose():
    assert worker_threads(workers=2, threads=2, chosen=False) == 1
    assert worker_threads(workers=2, threads=16, chosen=False) == 8
    assert worker_threads(workers=4, threads=2, chosen=False) == 1
    assert worker_threads(workers=2, threads=16, chosen=True) is None
    assert worker_threads(workers=1, threads=16, chosen=False) is None


@pytest.mark.skipif(bool(os.environ.get("OMP_NUM_THREADS")), reason="the user's thread count is kept")
def test_under_xdist_a_budget_test_runs_on_its_workers_share(pytester):
    pytest.importorskip("xdist")
    scratch_project(pytester, MODELS)
    pytester.makepyfile(
        test_threads="""
        import pytest
        import torch


        @pytest.mark.budget
        def test_threads(model_budget):
            model_budget.check(torch.nn.Linear(4, 2), input_size=(1, 4))
            with open("threads.txt", "w") as handle:
                handle.write(str(torch.get_num_threads()))
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=1)
    assert int((pytester.path / "threads.txt").read_text()) == max(1, torch.get_num_threads() // 2)
