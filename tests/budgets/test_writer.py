"""``--update-budgets``' writer: baselines written into the file as people left it, limits and
comments untouched, nothing written when nothing changed."""

from __future__ import annotations

from pytest_modelbudget.budgets.loader import load_budget_file
from pytest_modelbudget.budgets.writer import update_baselines
from pytest_modelbudget.gate.verdict import evaluate
from pytest_modelbudget.record import BudgetRecord

FILE = """\
# our budgets: reviewed by the platform team
[settings]
tolerance = "1%"   # keep it tight

[budgets.mlp]
limits = { params = "1K" }  # a ceiling people wrote

[budgets.other]
limits = { macs = "1G" }
"""


def _record(name="mlp", params=58, **extra):
    figures = {"params": params, "macs": 48}
    layers = {
        "": {"type": "Sequential", "params": params, "macs": 48},
        "0": {"type": "Linear", "params": params, "macs": 48},
    }
    verdict = evaluate(name, figures, {}, None, 0.01, ())
    return BudgetRecord(
        name=name,
        nodeid=name,
        figures=figures,
        limits={},
        baseline=None,
        verdict=verdict,
        layers=layers,
        torch="2.14.1",
        **extra,
    )


def test_a_baseline_is_written_and_the_rest_kept_as_written(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text(FILE)
    assert update_baselines(path, {"mlp": _record(shared_params=(("a", "b"),))}) is True
    text = path.read_text()
    assert text.startswith(FILE.rstrip("\n").split("[budgets.other]")[0].rstrip("\n"))
    assert '[budgets.other]\nlimits = { macs = "1G" }' in text
    entry = load_budget_file(path).budgets["mlp"]
    assert entry.limits.as_dict() == {"params": 1000}
    assert entry.baseline is not None
    assert entry.baseline.totals() == {"params": 58, "macs": 48}
    assert entry.baseline.torch == "2.14.1" and entry.baseline.shared_params == [["a", "b"]]
    assert entry.baseline.layers["0"].model_dump(exclude_none=True) == {"params": 58, "macs": 48}
    assert "" not in entry.baseline.layers  # the root is the totals


def test_an_unchanged_file_is_not_touched_and_comments_on_values_survive(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text(FILE)
    update_baselines(path, {"mlp": _record()})
    # A reviewer's own formatting of a value that did not change stays.
    path.write_text(path.read_text().replace("params = 58\n", "params = 58  # checked by hand\n"))
    before = path.read_text()
    assert update_baselines(path, {"mlp": _record()}) is False
    assert path.read_text() == before
    update_baselines(path, {"mlp": _record(params=60)})
    assert "params = 60  # checked by hand\n" in path.read_text()  # the value moves, the comment stays


def test_stale_entries_are_removed_when_asked(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text(FILE)
    update_baselines(path, {}, remove=["other"])
    assert set(load_budget_file(path).budgets) == {"mlp"}
    assert "# our budgets: reviewed by the platform team" in path.read_text()
