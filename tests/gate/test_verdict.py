"""The gate's policy: each figure against its limit and its baseline, within the tolerance."""

from __future__ import annotations

import pytest

from pytest_modelbudget.gate.verdict import evaluate, sharing_changes

COMPARED = ("params", "macs")


@pytest.mark.parametrize(
    ("value", "limit", "baseline", "status"),
    [
        (100, 100, None, "ok"),  # at the limit is within it
        (101, 100, None, "over_limit"),
        (101, None, 100, "ok"),  # +1%: the tolerance's edge
        (102, None, 100, "over_baseline"),
        (99, None, 100, "ok"),
        (98, None, 100, "tighten"),
        (150, 200, 100, "over_baseline"),  # under the limit, above the baseline
        (250, 200, 100, "over_limit"),  # the limit is said first
    ],
)
def test_a_figure_against_its_limit_and_its_baseline(value, limit, baseline, status):
    verdict = evaluate(
        "b",
        {"params": value},
        {"params": limit} if limit else {},
        {"params": baseline} if baseline else None,
        0.01,
        COMPARED,
    )
    assert [check.status for check in verdict.checks] == [status]
    assert verdict.status == {"ok": "passed", "tighten": "tighten"}.get(status, "failed")


@pytest.mark.parametrize(
    ("value", "limit", "baseline", "status"),
    [
        (8, 8, None, "ok"),  # as many sequences as the limit asks for
        (7, 8, None, "over_limit"),  # fewer fit: a floor fails going down
        (99, None, 100, "ok"),
        (98, None, 100, "over_baseline"),
        (102, None, 100, "tighten"),  # more fit than recorded: the baseline can be raised
        (90, 80, 100, "over_baseline"),  # above the limit, below the baseline
        (70, 80, 100, "over_limit"),
    ],
)
def test_a_floor_fails_going_down(value, limit, baseline, status):
    verdict = evaluate(
        "b",
        {"max_batch": value},
        {"max_batch": limit} if limit else {},
        {"max_batch": baseline} if baseline else None,
        0.01,
        ("max_batch",),
    )
    assert [check.status for check in verdict.checks] == [status]


def test_a_floor_failure_says_below():
    from pytest_modelbudget.gate.failure import check_line

    verdict = evaluate("b", {"max_batch": 6}, {"max_batch": 8}, {"max_batch": 10}, 0.01, ("max_batch",))
    assert check_line(verdict.checks[0], verdict.tolerance) == "max_batch 6 < limit 8 (-25.0%; -40.0% on baseline 10)"
    verdict = evaluate("b", {"max_batch": 6}, {}, {"max_batch": 10}, 0.01, ("max_batch",))
    assert check_line(verdict.checks[0], verdict.tolerance) == "max_batch 6 < baseline 10 (-40.0%, tolerance 1%)"


def test_figures_not_compared_with_the_baseline_are_held_to_their_limits_only():
    verdict = evaluate("b", {"bytes": 500}, {}, {"bytes": 100}, 0.01, COMPARED)
    assert verdict.checks == () and verdict.status == "passed"


def test_a_limit_on_a_figure_that_was_not_measured_fails():
    verdict = evaluate("b", {"params": 1}, {"roofline_time": 1_000}, None, 0.01, COMPARED)
    assert [(c.figure, c.status) for c in verdict.checks] == [("roofline_time", "unmeasured")]
    assert verdict.failed


def test_per_figure_tolerances():
    verdict = evaluate(
        "b", {"params": 104, "macs": 104}, {}, {"params": 100, "macs": 100}, {"params": 0.05, "macs": 0.0}, COMPARED
    )
    assert {c.figure: c.status for c in verdict.checks} == {"params": "ok", "macs": "over_baseline"}


def test_strict_mode_fails_a_budget_without_a_baseline():
    verdict = evaluate("b", {"params": 1}, {"params": 10}, None, 0.01, COMPARED, require_baseline=True)
    assert verdict.failed
    assert verdict.problems == ("no baseline recorded for 'b': run pytest --update-budgets and commit budgets.toml",)


def test_the_names_a_figure_counts_are_kept_when_it_is_over_its_limit():
    verdict = evaluate(
        "b",
        {"unused_params": 2},
        {"unused_params": 0},
        None,
        0.01,
        COMPARED,
        names={"unused_params": ("head.weight", "head.bias")},
    )
    assert verdict.checks[0].names == ("head.weight", "head.bias")


def test_ties_undone_and_made_are_named():
    before = [["wte.weight", "lm_head.weight"]]
    assert sharing_changes(before, []) == ["wte.weight no longer shared with lm_head.weight"]
    assert sharing_changes([], before) == ["wte.weight now shared with lm_head.weight"]
    assert sharing_changes(before, before) == []
    assert sharing_changes(None, []) == []
