"""The end-of-run table and ``--update-budgets``' account, from records."""

from __future__ import annotations

from pytest_modelbudget.gate.reports import markdown_report, moved_lines, terminal_table, tighten_lines
from pytest_modelbudget.gate.verdict import evaluate
from pytest_modelbudget.record import BudgetRecord, Verdict


def _record(name, figures, limits=None, baseline=None, **extra):
    limits = limits or {}
    verdict = evaluate(name, figures, limits, baseline, 0.01, ("params", "macs"))
    return BudgetRecord(
        name=name, nodeid=name, figures=figures, limits=limits, baseline=baseline, verdict=verdict, **extra
    )


def test_on_a_narrow_terminal_flops_and_bytes_make_room_first():
    record = _record(
        "tests/test_models.py::test_a_long_budget_name",
        {"params": 15130, "bytes": 61440, "macs": 2212480, "flops": 4515072, "peak_memory": 211456},
        {"macs": 2_500_000},
    )
    wide = terminal_table([record])
    assert "flops" in wide.splitlines()[0]
    narrow = terminal_table([record], width=110)
    assert all(len(line) <= 110 for line in narrow.splitlines())
    assert narrow.splitlines()[0].split()[1:4] == ["params", "macs", "peak_memory"]


def test_the_vs_baseline_column_follows_one_figure_and_the_limit_column_never_rounds_to_100():
    def record(name, params, macs, limit=None):
        return BudgetRecord(
            name=name,
            nodeid=name,
            figures={"params": params, "macs": macs},
            limits={"params": limit} if limit else {},
            baseline={"params": 100, "macs": 100},
            verdict=Verdict(),
        )

    lines = terminal_table(
        [record("a", 110, 100, 110), record("b", 100, 120), record("c", 100, 100, 99_990)], ["params"]
    ).splitlines()
    assert "vs baseline (params)" in lines[0]
    assert lines[2].split()[-2:] == ["+10.0%", "passed"]  # the column's figure: no name repeated
    assert lines[3].split()[-3:] == ["+20.0%", "macs", "passed"]  # another figure moved: it is named
    assert lines[4].split()[-2:] == ["=", "passed"]
    just_over = terminal_table([record("z", 125_030_000, 100, 125_000_000)], ["params"])
    assert "100.02% params" in just_over


def test_failures_come_first_and_a_test_that_failed_within_budget_says_so():
    passing = _record("a_passes", {"params": 10, "macs": 10}, {"params": 100})
    failing = _record("z_fails", {"params": 200, "macs": 10}, {"params": 100})
    own_assert = _record("m_own_assert", {"params": 10, "macs": 10}).with_outcome("failed")
    rows = terminal_table([passing, failing, own_assert], ["params"]).splitlines()[2:]
    # A test that failed its own assert is with the failures, by name.
    assert [row.split()[0] for row in rows] == ["m_own_assert", "z_fails", "a_passes"]
    assert rows[0].endswith("passed, test failed")
    markdown = markdown_report([passing, failing, own_assert])
    assert "| ❌ z_fails |" in markdown and "| ✅ a_passes |" in markdown


def test_update_budgets_names_what_moved_and_counts_the_rest():
    moved = _record("moved", {"params": 120, "macs": 100}, baseline={"params": 100, "macs": 100})
    same = _record("same", {"params": 100, "macs": 100}, baseline={"params": 100, "macs": 100})
    new = _record("new", {"params": 1, "macs": 1})
    over = _record("over", {"params": 300, "macs": 1}, {"params": 200}, baseline={"params": 300, "macs": 1})
    errored = BudgetRecord.errored("broken", "test_x.py::broken", "failed", "ValueError: no")
    lines = moved_lines([moved, same, new, over, errored])
    assert "moved: params 100 -> 120 (+20.0%)" in lines
    assert "new: new baseline" in lines
    assert any(line.startswith("over: baseline written although params 300 is over its limit 200") for line in lines)
    assert lines[-1] == "1 changed, 2 unchanged, 1 new"


def test_a_figure_that_fell_below_its_baseline_can_be_tightened():
    record = _record("shrunk", {"params": 50, "macs": 100}, baseline={"params": 100, "macs": 100})
    assert record.verdict.status == "tighten"
    assert tighten_lines([record]) == [
        "shrunk: params fell to 50 from a baseline of 100; run pytest --update-budgets to tighten it"
    ]


def test_at_100_columns_the_example_projects_table_fits_by_eliding_the_start_of_long_names():
    # The example project's five budgets (README), figures as they were measured.
    def record(name, params, bytes_, macs, flops, peak, limit):
        figures = {"params": params, "bytes": bytes_, "macs": macs, "flops": flops, "peak_memory": peak}
        return _record(name, figures, limit, baseline=dict(figures))

    records = [
        record("cnn_training", 15130, 61440, 17_700_000, 37_040_000, 10_980_000, {"peak_memory": 12_000_000}),
        record("examples/test_budgets.py::test_tiny_cnn", 15130, 61440, 2212480, 4515072, 8617472, {"macs": 2500000}),
        record(
            "examples/test_budgets.py::test_transformer_block_long_context",
            788480,
            3153920,
            1_340_000_000,
            2_710_000_000,
            26_350_000,
            {"params": 800_000},
        ),
        record("tiny_cnn", 15130, 61440, 2212480, 4515072, 8617472, {"macs": 2500000}),
        record("transformer_block", 788480, 3153920, 104_860_000, 210_470_000, 13_510_000, {"params": 800_000}),
    ]
    assert max(len(line) for line in terminal_table(records).splitlines()) > 140  # a CI log keeps it all
    lines = terminal_table(records, width=100).splitlines()
    assert max(len(line) for line in lines) <= 100
    names = [line.split()[0] for line in lines[2:]]
    # The end of a node id names the test; names that fit are whole; peak_memory and the verdict stay.
    long = next(name for name in names if name.endswith("_block_long_context"))
    assert long.startswith("…") and len(long) < len("examples/test_budgets.py::test_transformer_block_long_context")
    assert {"tiny_cnn", "cnn_training", "transformer_block"} <= set(names)
    assert "peak_memory" in lines[0] and all(line.endswith("passed") for line in lines[2:])
