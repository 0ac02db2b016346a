"""The example GitHub workflow works when copied into a user's repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "github-workflow.yml"


def _steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["budgets"]["steps"]


def test_the_workflow_installs_the_cpu_build_the_plugin_and_runs_plain_pytest():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # The least a comment on the pull request needs, nothing more.
    assert workflow["permissions"] == {"contents": "read", "actions": "read", "pull-requests": "write"}
    # YAML reads the key "on" as True.
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers
    steps = _steps()
    assert all("uses" in step or "run" in step for step in steps)
    runs = [step["run"] for step in steps if "run" in step]
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in runs
    # The plugin from where it can be installed today (a git URL or a wheel the repository names),
    # PyPI's release once there is one; after the CPU build of torch, before the project.
    install = "pip install \"${{ vars.MODELBUDGET_SOURCE || 'pytest-modelbudget' }}\""
    assert "pip install pytest-modelbudget" not in runs
    assert (
        runs.index("pip install torch --index-url https://download.pytorch.org/whl/cpu")
        < runs.index(install)
        < runs.index("pip install -e .")
    )
    pytest_run = next(run for run in runs if "\npytest " in "\n" + run)
    assert "examples" not in pytest_run
    setup = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip"


def test_the_pull_request_gets_the_report_compared_with_main_as_one_comment():
    steps = _steps()
    pytest_run = next(step["run"] for step in steps if "\npytest " in "\n" + step.get("run", ""))
    assert "--budget-markdown budget-report.md" in pytest_run and "--budget-json budget-report.json" in pytest_run
    assert "--budget-compare base/budget-report.json" in pytest_run
    download = next(step for step in steps if "gh run download" in step.get("run", ""))
    assert "--name budget-report --dir base" in download["run"]
    # main's last run, passed or failed (its report is uploaded either way), and never silently
    # no base: a notice or a warning says why the budgets were not compared.
    assert "--status completed" in download["run"] and "--status success" not in download["run"]
    assert "::notice::no run of this workflow on" in download["run"]
    assert "::warning::run $run_id on" in download["run"]
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["name"] == "budget-report" and upload["if"] == "always()"
    comment = next(step for step in steps if step.get("uses", "").startswith("marocchino/sticky-pull-request-comment"))
    # One comment found again by its header and rewritten, not a new one per push.
    assert comment["with"] == {"header": "model-budgets", "path": "budget-report.md"}
    assert "always()" in comment["if"]


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (pip install -e .[dev])")
    # The schema is the one check-jsonschema vendors from SchemaStore: no network needed.
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True, timeout=120
    )


def test_the_workflow_is_valid_against_githubs_schema(tmp_path):
    result = _validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator does reject a broken workflow: a permission GitHub does not have.
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("actions: read", "actions: maybe"))
    result = _validate(broken)
    assert result.returncode != 0 and "actions" in result.stdout + result.stderr


MATRIX = WORKFLOW.with_name("github-workflow-matrix.yml")


def test_the_matrix_workflow_is_valid_and_merges_every_part_before_it_comments():
    result = _validate(MATRIX)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = yaml.safe_load(MATRIX.read_text())["jobs"]
    parts = jobs["budgets"]["strategy"]["matrix"]["part"]
    assert len(parts) >= 2
    runs = [step["run"] for step in jobs["budgets"]["steps"] if "run" in step]
    assert any("--budget-json budget-report-${{ matrix.part }}.json" in run for run in runs)
    report = jobs["report"]
    assert report["needs"] == "budgets" and report["if"] == "always()"
    merge = next(step["run"] for step in report["steps"] if step.get("name") == "merge")
    assert "python -m pytest_modelbudget merge-reports budget-report-*.json -o budget-report.json" in merge
    uploads = [step for step in report["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["name"] == "budget-report"  # the name the base step downloads
