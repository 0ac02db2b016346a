"""A report path outside the project, given with a space (``--budget-json /elsewhere/r.json``):
pytest reads it as a test path before the plugin is loaded, which moves its rootdir once the file
exists. The run stops with what to write instead, rather than rename every budget."""

from __future__ import annotations

import json

import pytest

from .projects import scratch_project

MODELS = """
import torch


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
"""

TESTS = """
from mymodels import mlp


def test_mlp(model_budget):
    model_budget.check(mlp(), input_size=(1, 4))
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_models=TESTS)
    return pytester


@pytest.mark.parametrize("option", ["--budget-json", "--budget-markdown", "--budget-compare"])
def test_an_outside_path_after_a_space_stops_the_run_instead_of_moving_the_rootdir(project, tmp_path_factory, option):
    report = tmp_path_factory.mktemp("elsewhere") / "report.json"
    project.runpytest("-p", "no:cacheprovider", "--update-budgets", f"--budget-json={report}").assert_outcomes(passed=1)
    assert report.exists()  # the second run is the one pytest misreads
    result = project.runpytest("-p", "no:cacheprovider", "--update-budgets", option, str(report))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option} {report}: pytest read this value as a test path*Write {option}={report}*"])
    # Nothing written anywhere: not a budget file beside the report, not the project's.
    assert not (report.parent / "budgets.toml").exists()
    assert '"test_models.py::test_mlp"' in (project.path / "budgets.toml").read_text()


def test_with_an_equals_sign_the_same_path_works_on_every_run(project, tmp_path_factory):
    report = tmp_path_factory.mktemp("elsewhere") / "report.json"
    for _ in range(2):
        project.runpytest("-p", "no:cacheprovider", "--update-budgets", f"--budget-json={report}").assert_outcomes(
            passed=1
        )
    assert list(json.loads(report.read_text())["budgets"]) == ["test_models.py::test_mlp"]


def test_a_path_inside_the_project_after_a_space_is_fine(project):
    for _ in range(2):
        project.runpytest("-p", "no:cacheprovider", "--budget-json", "report.json").assert_outcomes(passed=1)
    assert list(json.loads((project.path / "report.json").read_text())["budgets"]) == ["test_models.py::test_mlp"]
