"""No silent zeros: in strict mode (CI) a budget whose model ran arithmetic no formula prices fails,
naming each op and how often it ran, unless the marker or the entry allows it; outside strict
mode it is a line of the summary."""

from __future__ import annotations

import pytest

KERNEL = """
import torch
from torch import nn


@torch.library.custom_op("teamlib::fused_act", mutates_args=())
def fused_act(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


@fused_act.register_fake
def _(x):
    return torch.empty_like(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.second(fused_act(fused_act(self.first(x))))


def net():
    return Net()
"""

TEST = """
import pytest
from teamlib import Net


@pytest.mark.budget({allow})
def test_net(model_budget):
    model_budget.check(Net(), input_size=(4, 16))
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    # Subprocess runs: the custom op registers with PyTorch once per process.
    pytester.makepyfile(teamlib=KERNEL)
    pytester.syspathinsert()
    pytester.makefile(".toml", budgets='[budgets.declared]\nfactory = "teamlib:net"\ninput_size = [4, 16]\n')
    return pytester


def test_a_strict_run_fails_on_an_unpriced_op_until_it_is_allowed(project):
    project.makepyfile(test_net=TEST.format(allow=""))
    project.runpytest_subprocess("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--budget-strict")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*1 op(s) did arithmetic with no formula, left out of macs and flops: teamlib.fused_act x2; price them "
            "(pytest_modelbudget.register_formula) or list them in allow_uncounted*"
        ]
    )
    # Allowed by the marker for the test, by the entry for the declared model.
    project.makepyfile(test_net=TEST.format(allow='allow_uncounted=["teamlib::fused_act"]'))
    (project.path / "budgets.toml").write_text(
        (project.path / "budgets.toml")
        .read_text()
        .replace("[budgets.declared]\n", '[budgets.declared]\nallow_uncounted = ["teamlib.fused_act"]\n')
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--budget-strict")
    result.assert_outcomes(passed=2)
    assert "did arithmetic with no formula" not in result.stdout.str()


def test_outside_strict_mode_an_unpriced_op_is_a_line_of_the_summary(project):
    project.makepyfile(test_net=TEST.format(allow=""))
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--update-budgets")
    result.assert_outcomes(passed=2)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_net.py::test_net: 1 op(s) did arithmetic with no formula*teamlib.fused_act x2*"]
    )


def test_allow_uncounted_must_be_a_list_of_op_names(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.budget(allow_uncounted="teamlib.fused_act")
        def test_it(model_budget):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*allow_uncounted='teamlib.fused_act'; expected a list of op names*"])
