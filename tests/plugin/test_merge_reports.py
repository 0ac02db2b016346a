"""``python -m pytest_modelbudget merge-reports``: the reports of CI jobs that each ran part of a
suite (a matrix) merged into the report one run of the whole suite writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pytest_modelbudget.cli import main

from .projects import scratch_project
from .test_plugin import BUDGETS, MODELS

#: Four marker budgets in two files, beside the budget file's entry for ``net``.
SHARDS = {
    "test_vision": """
        import pytest
        import torch


        @pytest.mark.budget
        def test_conv(model_budget):
            model_budget.check(torch.nn.Conv2d(3, 8, 3), input_size=(1, 3, 16, 16))


        @pytest.mark.budget
        def test_linear(model_budget):
            model_budget.check(torch.nn.Linear(16, 4), input_size=(2, 16))
        """,
    "test_text": """
        import pytest
        import torch


        @pytest.mark.budget
        def test_embedding(model_budget):
            model_budget.check(torch.nn.Embedding(100, 8), inputs=torch.zeros(2, 5, dtype=torch.long))


        @pytest.mark.budget(params="1K")
        def test_head(model_budget):
            model_budget.check(torch.nn.Linear(8, 10), input_size=(1, 8), name="head")
        """,
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS, BUDGETS)
    pytester.makepyfile(**SHARDS)
    pytester.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=5)
    return pytester


def _budgets(path) -> dict:
    return json.loads(path.read_text())["budgets"]


def test_two_shards_merge_into_the_report_of_one_run(project, capsys):
    project.runpytest("-p", "no:cacheprovider", "--budget-json", "whole.json").assert_outcomes(passed=5)
    # Two jobs of a matrix, each given its files (the budget file's entry is collected by both).
    project.runpytest("-p", "no:cacheprovider", "test_vision.py", "budgets.toml", "--budget-json", "a.json")
    project.runpytest("-p", "no:cacheprovider", "test_text.py", "budgets.toml", "--budget-json", "b.json")
    assert set(_budgets(project.path / "a.json")) == {"test_vision.py::test_conv", "test_vision.py::test_linear", "net"}
    paths = [str(project.path / name) for name in ("a.json", "b.json", "all.json", "all.md")]
    assert main(["merge-reports", paths[0], paths[1], "-o", paths[2], "--markdown", paths[3]]) == 0
    assert "merged 2 reports: 5 budgets (0 failed), 0 stale" in capsys.readouterr().out
    whole, merged = _budgets(project.path / "whole.json"), _budgets(project.path / "all.json")
    assert merged.keys() == whole.keys()
    assert {name: record["figures"] for name, record in merged.items()} == {
        name: record["figures"] for name, record in whole.items()
    }
    markdown = (project.path / "all.md").read_text()
    for name in ("test_vision.py::test_conv", "test_text.py::test_embedding", "head", "net"):
        assert f"✅ {name} |" in markdown


def test_the_merged_report_is_compared_with_the_base_and_names_failures(project, capsys):
    project.runpytest("-p", "no:cacheprovider", "--budget-json", "base.json")
    # The pull request widens the head past its limit; its job fails, the other passes.
    text = (project.path / "test_text.py").read_text().replace("torch.nn.Linear(8, 10)", "torch.nn.Linear(8, 200)")
    (project.path / "test_text.py").write_text(text)
    project.runpytest("-p", "no:cacheprovider", "test_vision.py", "--budget-json", "a.json").assert_outcomes(passed=2)
    project.runpytest("-p", "no:cacheprovider", "test_text.py", "--budget-json", "b.json").assert_outcomes(
        passed=1, failed=1
    )
    paths = [str(project.path / name) for name in ("a.json", "b.json")]
    out = str(project.path / "all.json")
    assert main(["merge-reports", *paths, "-o", out, "--compare", str(project.path / "base.json")]) == 0
    assert "merged 2 reports: 4 budgets (1 failed)" in capsys.readouterr().out
    compared = json.loads((project.path / "all.json").read_text())["compare"]
    assert compared["changed"]["head"]["params"] == {"base": 90, "now": 1800}
    # net ran in neither shard this time: the comparison says it is not in this run.
    assert compared["gone"] == ["net"]


def test_shards_that_measured_different_code_are_refused(project, capsys):
    project.runpytest("-p", "no:cacheprovider", "test_text.py", "--budget-json", "a.json")
    text = (project.path / "test_text.py").read_text().replace("torch.nn.Linear(8, 10)", "torch.nn.Linear(8, 12)")
    (project.path / "test_text.py").write_text(text)
    project.runpytest("-p", "no:cacheprovider", "test_text.py", "--budget-json", "b.json")
    a, b = str(project.path / "a.json"), str(project.path / "b.json")
    assert main(["merge-reports", a, b, "-o", str(project.path / "all.json")]) == 2
    err = capsys.readouterr().err
    assert f"error: merge-reports: budget 'head' is in {a} and {b} with different figures" in err
    assert not (project.path / "all.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "merge-reports: no such file"),
        ("{not json", "not JSON"),
        ('{"rows": []}', "is JSON but not a --budget-json report"),
    ],
)
def test_a_report_that_cannot_be_read_is_named(tmp_path, capsys, content, message):
    bad = tmp_path / "shard.json"
    if content is not None:
        bad.write_text(content)
    assert main(["merge-reports", str(bad), "-o", str(tmp_path / "all.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(bad) in err and "Traceback" not in err


def test_merging_imports_no_torch(project):
    project.runpytest("-p", "no:cacheprovider", "test_vision.py", "--budget-json", "a.json")
    code = (
        "import sys; from pytest_modelbudget.cli import main; "
        "code = main(['merge-reports', 'a.json', '-o', 'all.json']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=project.path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(_budgets(project.path / "all.json")) == {"test_vision.py::test_conv", "test_vision.py::test_linear"}
