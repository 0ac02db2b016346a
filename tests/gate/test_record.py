"""One budget's record: what workers send the controller and ``--budget-json`` writes, typed; a
report written by the previous version still loads for ``--budget-compare``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_modelbudget.errors import BudgetUsageError
from pytest_modelbudget.gate.compare import compare, load_base
from pytest_modelbudget.gate.reports import json_report
from pytest_modelbudget.gate.verdict import evaluate
from pytest_modelbudget.record import REPORT_VERSION, BudgetRecord

#: Written by pytest-modelbudget 0.1.0 before the record was typed (no report_version): two
#: budgets measured, one over its limit, one whose test errored.
REPORT_V1 = Path(__file__).parent / "data" / "report_v1.json"


def _record():
    figures = {"params": 58, "macs": 48}
    return BudgetRecord(
        name="mlp",
        nodeid="t.py::test_mlp",
        figures=figures,
        limits={"params": 50},
        baseline={"params": 40, "macs": 48},
        verdict=evaluate("mlp", figures, {"params": 50}, {"params": 40, "macs": 48}, 0.01, ("params", "macs")),
        layers={"": {"type": "Sequential", "params": 58}},
        shared_params=(("a.weight", "b.weight"),),
        notes=("a note",),
        failure="mlp: params 58 > limit 50",
    )


def test_a_record_survives_the_trip_through_json():
    record = _record()
    data = json.loads(json.dumps(record.to_dict()))
    assert BudgetRecord.from_dict(data) == record
    assert data["verdict"]["status"] == "failed"
    assert data["verdict"]["tolerance"] == 0.01  # one number where every figure has the same
    assert "error" not in data and "test_outcome" not in data  # written only when they say something


def test_an_errored_record():
    record = BudgetRecord.errored("b", "t.py::b", "failed", "ValueError: no")
    data = record.to_dict()
    assert data["verdict"] == {"status": "error", "tolerance": None, "checks": [], "problems": ["ValueError: no"]}
    assert BudgetRecord.from_dict(data).verdict.status == "error"


def test_the_report_is_versioned(tmp_path):
    report = json.loads(json_report({"mlp": _record()}, {"torch": "2.14.1"}))
    assert report["report_version"] == REPORT_VERSION
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**report, "report_version": REPORT_VERSION + 1}))
    with pytest.raises(BudgetUsageError, match="version 3, written by a newer pytest-modelbudget"):
        load_base(path, "--budget-compare")


def test_a_report_of_the_previous_version_loads_for_budget_compare():
    report = load_base(REPORT_V1, "--budget-compare")
    assert report.label == "report_v1.json"  # a report that names no commit is called by its file
    base = report.budgets
    over = base["test_models.py::test_over"]
    assert over.figures["params"] == 58 and over.verdict.status == "failed"
    assert over.verdict.checks[0].figure == "params" and over.verdict.checks[0].limit == 50
    assert over.layers["0"]["params"] == 40
    assert base["test_models.py::test_broken"].verdict.status == "error"
    now = {name: record for name, record in base.items() if name != "test_models.py::test_small"}
    grown = BudgetRecord.from_dict({**over.to_dict(), "figures": {**over.figures, "params": 60}})
    comparison = compare(base, {**now, "test_models.py::test_over": grown})
    assert comparison.changed == {"test_models.py::test_over": [("params", 58, 60)]}
    assert comparison.gone == ["test_models.py::test_small"]
    assert comparison.errored == ["test_models.py::test_broken"]


def test_a_report_with_a_broken_record_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"budgets": {"mlp": {"figures": {}, "verdict": {"checks": [{"value": 1}]}}}}))
    with pytest.raises(BudgetUsageError, match="budget 'mlp' is not a --budget-json record"):
        load_base(path, "--budget-compare")
