"""What a pull request shows: this run against the base branch's report (``--budget-compare``),
the Markdown comment (failures first, a mark per budget, each failure's diff folded), the
terminal's colours and ``[settings] units``."""

from __future__ import annotations

import json

import pytest

from .projects import scratch_project
from .test_plugin import BUDGETS, MODELS, grow_model


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS, BUDGETS)
    # A second budget that does not move: the comparison must say it is unchanged.
    pytester.makepyfile(
        test_head="""
        import pytest
        import torch


        @pytest.mark.budget
        def test_head(model_budget):
            model_budget.check(torch.nn.Linear(8, 10), input_size=(1, 8), name="head")
        """
    )
    return pytester


def _base_then_grown(project: pytest.Pytester) -> None:
    """The base branch's run (baselines recorded, its JSON kept), then a pull request that adds a
    layer to ``net``."""
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    project.runpytest("-p", "no:cacheprovider", "--budget-json", "base.json").assert_outcomes(passed=2)
    grow_model(project)


def test_compare_reports_every_change_in_the_terminal_markdown_and_json(project):
    _base_then_grown(project)
    result = project.runpytest(
        "-p",
        "no:cacheprovider",
        "--budget-compare",
        "base.json",
        "--budget-markdown",
        "report.md",
        "--budget-json",
        "now.json",
    )
    result.assert_outcomes(passed=1, failed=1)  # the verdict is the baseline's, not the comparison's
    result.stdout.fnmatch_lines(
        [
            "against base.json:",
            "  net: params 314 -> 424 (+35.0%), bytes 1.26KB -> 1.7KB (+35.0%)*",
            "  1 changed, 1 unchanged, 0 new",
        ]
    )
    report = (project.path / "report.md").read_text()
    assert "#### Against base.json" in report and "1 changed, 1 unchanged, 0 new." in report
    assert "| net | params | 314 | 424 | +35.0% |" in report
    # The layer that grew, folded under the table, and only it (the rest did not move).
    folded = report.split("<details><summary>net: layers whose own params", 1)[1].split("</details>", 1)[0]
    assert "extra" in folded and "Linear" in folded and "added" in folded and "conv" not in folded
    compared = json.loads((project.path / "now.json").read_text())["compare"]
    assert compared["base"] == "base.json" and compared["unchanged"] == ["head"]
    assert compared["changed"]["net"]["params"] == {"base": 314, "now": 424}


def test_a_budget_new_in_the_pull_request_or_gone_from_it_is_said(project):
    _base_then_grown(project)
    project.makepyfile(
        test_head="""
        import pytest
        import torch


        @pytest.mark.budget
        def test_head(model_budget):
            model_budget.check(torch.nn.Linear(8, 10), input_size=(1, 8), name="renamed_head")
        """
    )
    result = project.runpytest("-p", "no:cacheprovider", "--budget-compare", "base.json")
    result.stdout.fnmatch_lines(
        [
            "  renamed_head: new (not in base.json)",
            "  head: in base.json, not in this run",
            "*1 changed, 0 unchanged, 1 new, 1 not in this run",
        ]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--budget-compare: no such file (*missing.json); expected the --budget-json report of the base run"),
        (
            "{not json",
            "--budget-compare: *missing.json:1: not JSON (*); expected the --budget-json report of the base run",
        ),
        (
            '{"tests": []}',
            '--budget-compare: *missing.json is JSON but not a --budget-json report: expected an object with "budgets"*',
        ),
    ],
    ids=["missing", "not-json", "not-a-report"],
)
def test_a_base_report_that_cannot_be_read_is_a_usage_error_naming_it(project, content, message):
    if content is not None:
        (project.path / "missing.json").write_text(content)
    result = project.runpytest("-p", "no:cacheprovider", "--budget-compare", "missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()


def test_the_markdown_report_marks_each_budget_and_folds_each_failures_diff(project):
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    grow_model(project)
    project.runpytest("-p", "no:cacheprovider", "--budget-markdown", "report.md").assert_outcomes(passed=1, failed=1)
    report = (project.path / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| ❌ net |") and rows[1].startswith("| ✅ head |")  # failures first
    summary = "<details><summary>❌ net: params 424 &gt; baseline 314 (+35.0%, tolerance 1%) (and 2 more)</summary>"
    assert summary in report
    folded = report.split(summary, 1)[1].split("</details>", 1)[0]
    assert "```text" in folded and "layers whose own params" in folded and "extra" in folded


def test_verdicts_are_coloured_with_color_yes_and_plain_without(project):
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    grow_model(project)
    coloured = project.runpytest("-p", "no:cacheprovider", "--color=yes").stdout.lines
    failed_row = next(line for line in coloured if line.startswith("net "))
    passed_row = next(line for line in coloured if line.startswith("head "))
    assert failed_row.endswith("\x1b[31m\x1b[1mfailed\x1b[0m")
    assert passed_row.endswith("\x1b[32mpassed\x1b[0m")
    plain = project.runpytest("-p", "no:cacheprovider", "--color=no").stdout.lines
    assert next(line for line in plain if line.startswith("net ")).endswith("  failed")
    assert not any("\x1b[" in line for line in plain)


def test_binary_units_are_used_everywhere_a_size_is_shown(project):
    project.makefile(".toml", budgets=BUDGETS.replace('tolerance = "1%"', 'tolerance = "1%"\nunits = "binary"'))
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    grow_model(project)
    result = project.runpytest("-p", "no:cacheprovider", "--budget-markdown", "report.md")
    # 424 float32 parameters are 1,696 bytes: 1.66KiB (1696 / 1024), where SI says 1.7KB.
    result.stdout.fnmatch_lines(["*bytes 1.66KiB > baseline 1.23KiB (+35.0%, tolerance 1%)*", "net *1.66KiB*failed"])
    assert "1.7KB" not in result.stdout.str()
    assert "| 1.66KiB |" in (project.path / "report.md").read_text()
    # Limits are read as written, whatever the units shown.
    text = (project.path / "budgets.toml").read_text()
    assert 'limits = { params = "1K" }' in text


def test_units_must_be_si_or_binary(project):
    project.makefile(".toml", budgets=BUDGETS.replace('tolerance = "1%"', 'tolerance = "1%"\nunits = "MiB"'))
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*budgets.toml:4: settings.units*'si' or 'binary'*"])


def test_columns_and_the_comparison_have_ini_options(project):
    project.runpytest("-p", "no:cacheprovider", "--budget-json", "base.json").assert_outcomes(passed=2)
    project.makeini("[pytest]\nmodelbudget_columns = params,macs\nmodelbudget_compare = base.json\n")
    result = project.runpytest("-p", "no:cacheprovider")
    header = next(line for line in result.stdout.lines if line.startswith("budget "))
    assert header.split()[:3] == ["budget", "params", "macs"] and "bytes" not in header
    result.stdout.fnmatch_lines(["against base.json:", "  0 changed, 2 unchanged, 0 new"])
    project.makeini("[pytest]\nmodelbudget_columns = params,parameters\n")
    result = project.runpytest("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["ERROR: ini option modelbudget_columns: unknown figure 'parameters'*"])


def test_the_comparison_names_its_base_by_branch_and_commit(pytester, monkeypatch):
    # The report records the branch and commit it was made on; the comparison's heading says
    # "against main (abc1234)", not the artifact's file name, which both runs share.
    import subprocess

    for variable in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "GITHUB_SHA"):
        monkeypatch.delenv(variable, raising=False)
    pytester.makepyfile(
        test_a="""
        import torch

        def test_a(model_budget):
            model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))
        """
    )

    def git(*args):
        return subprocess.run(["git", *args], cwd=pytester.path, capture_output=True, text=True, check=True).stdout

    try:
        git("init", "-q", "-b", "main")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not usable here")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "base")
    commit = git("rev-parse", "HEAD").strip()
    pytester.runpytest("-p", "no:cacheprovider", "--budget-json=base.json").assert_outcomes(passed=1)
    report = json.loads((pytester.path / "base.json").read_text())
    assert report["git"] == {"branch": "main", "commit": commit}
    result = pytester.runpytest("-p", "no:cacheprovider", "--budget-compare=base.json", "--budget-markdown=pr.md")
    result.stdout.fnmatch_lines([f"against main ({commit[:7]}):"])
    assert f"#### Against main ({commit[:7]})" in (pytester.path / "pr.md").read_text()
