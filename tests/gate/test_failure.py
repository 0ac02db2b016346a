"""A failed budget's message: the headline, each failure, the notes, the layers that moved."""

from __future__ import annotations

from pytest_modelbudget.gate.failure import RecordedBaseline, failure_message, own_figures
from pytest_modelbudget.gate.verdict import evaluate
from pytest_modelbudget.record import BudgetRecord

BEFORE = {
    "": {"type": "Net", "params": 58, "macs": 48, "peak_memory": 3_584},
    "body": {"type": "Sequential", "params": 40, "macs": 32, "peak_memory": 1_024},
    "body.0": {"type": "Linear", "params": 40, "macs": 32, "peak_memory": 512},
    "head": {"type": "Linear", "params": 18, "macs": 16, "peak_memory": 512},
}


def _grown(**changes):
    layers = {name: dict(figures) for name, figures in BEFORE.items()}
    for name, figures in changes.items():
        layers[name].update(figures)
    return layers


def _record(layers, limits=None, **extra):
    figures = {f: layers[""][f] for f in ("params", "macs", "peak_memory")}
    baseline = {f: BEFORE[""][f] for f in figures}
    verdict = evaluate("net", figures, limits or {}, baseline, 0.01, ("params", "macs", "peak_memory"))
    return BudgetRecord(
        name="net",
        nodeid="t.py::net",
        figures=figures,
        limits=limits or {},
        baseline=baseline,
        verdict=verdict,
        layers=layers,
        peak_memory_source="estimate",
        torch="2.14.1",
        **extra,
    )


def _baseline(**extra):
    layers = {name: {f: v for f, v in figures.items() if f != "type"} for name, figures in BEFORE.items() if name}
    return RecordedBaseline(totals={f: v for f, v in BEFORE[""].items() if f != "type"}, layers=layers, **extra)


def test_the_headline_tells_the_story_and_the_diff_names_the_layer_that_grew():
    layers = _grown(
        **{"": {"params": 98, "macs": 80}, "body": {"params": 80, "macs": 64}, "body.0": {"params": 80, "macs": 64}}
    )
    message = failure_message(_record(layers), _baseline())
    lines = message.splitlines()
    assert lines[0] == "net: params 98 > baseline 58 (+69.0%, tolerance 1%) (and 1 more)"
    assert lines[1] == "model budget 'net' exceeded:"
    assert "  macs 80 > baseline 48 (+66.7%, tolerance 1%)" in lines
    diff = lines[lines.index("layers whose own params, macs changed (largest params change first):") + 1 :]
    rows = [row.split() for row in diff[2:]]
    # body.0 grew; its parent body holds nothing of its own, so it is not listed.
    assert rows == [["body.0", "Linear", "grown", "40", "80", "+40", "(+100.0%)", "32", "64", "+32", "(+100.0%)"]]


def test_a_broken_limit_leads_the_headline_and_the_diff():
    # params moved past its baseline, but macs broke the limit a person wrote: that is the story.
    layers = _grown(
        **{"": {"params": 98, "macs": 80}, "body": {"params": 80, "macs": 64}, "body.0": {"params": 80, "macs": 64}}
    )
    message = failure_message(_record(layers, limits={"macs": 60}), _baseline())
    lines = message.splitlines()
    assert lines[0] == "net: macs 80 > limit 60 (+33.3%; +66.7% on baseline 48) (and 1 more)"
    assert "layers whose own macs, params changed (largest macs change first):" in lines


def test_a_parent_whose_peak_rose_only_with_its_child_is_not_blamed():
    layers = _grown(**{"": {"peak_memory": 4_096}, "body": {"peak_memory": 1_536}, "body.0": {"peak_memory": 1_024}})
    message = failure_message(_record(layers), _baseline(), memory_assumptions=["allocations rounded up to 512 bytes"])
    assert "  (peak_memory: estimate; allocations rounded up to 512 bytes)" in message.splitlines()
    table = message.split("(largest peak_memory change first):\n", 1)[1]
    names = [row.split()[0] for row in table.splitlines()[2:]]
    assert names[0] == "body.0" and "body" not in names


def test_own_figures_are_a_layers_total_less_its_childrens():
    own = own_figures(BEFORE, ["params", "peak_memory"])
    assert own["body"]["params"] == 0 and own[""]["params"] == 0
    assert own["body"]["peak_memory"] == 1_024  # not additive: a layer's peak is its own


def test_without_a_baseline_the_largest_leaves_are_listed():
    layers = _grown()
    record = _record(layers, limits={"params": 50})
    message = failure_message(record, None)
    assert "largest layers by params (no baseline recorded; run pytest --update-budgets):" in message
    rows = [row.split() for row in message.split("pytest --update-budgets):\n", 1)[1].splitlines()[2:]]
    assert rows == [["body.0", "Linear", "40", "69.0%"], ["head", "Linear", "18", "31.0%"]]


def test_notes_say_how_the_baseline_and_this_run_differ():
    layers = _grown(**{"": {"params": 98}, "body": {"params": 80}, "body.0": {"params": 80}})
    record = _record(
        layers,
        unused_params=("head.weight",),
        execution="real",
        notes=("fake execution failed (X: y); measured with a real run",),
    )
    message = failure_message(record, _baseline(peak_memory_source="cuda", torch="2.9.1"), torch_now="2.14.1")
    assert "  note: unused: forward never reads head.weight" in message
    assert (
        "  note: the baseline's peak_memory was measured on CUDA, this run's is estimated: they differ by the estimate's error (docs/MEMORY.md)"
        in message
    )
    assert "  note: the baseline was recorded with torch 2.9.1, this run uses torch 2.14.1" in message
    assert (
        "  note: measured by a real CPU run, not a fake one: fake execution failed (X: y); measured with a real run"
        in message
    )
