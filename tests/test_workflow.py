"""The example GitHub workflow works when copied into a user's repository."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "github-workflow.yml"


def test_the_workflow_installs_the_cpu_build_the_plugin_and_runs_plain_pytest():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    # YAML reads the key "on" as True.
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers
    steps = workflow["jobs"]["budgets"]["steps"]
    assert all("uses" in step or "run" in step for step in steps)
    runs = [step["run"] for step in steps if "run" in step]
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in runs
    assert runs.index("pip install pytest-modelbudget") > runs.index(
        "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    )
    pytest_runs = [run for run in runs if run.startswith("pytest")]
    assert pytest_runs and "examples" not in pytest_runs[0]
    setup = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip"
