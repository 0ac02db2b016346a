"""The table of figures (``figures.py``) is the one place a figure is listed: the rest of the
package reads it, and every row is a figure the engine computes."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from pytest_modelbudget.budgets.schema import Baseline, LayerBaseline, Limits
from pytest_modelbudget.figures import (
    BASELINE_ORDER,
    BY_NAME,
    COMPARED,
    DIFF_ORDER,
    LAYER_FIGURES,
    NARROWING,
    SUMMARY_COLUMNS,
    TABLE,
)
from pytest_modelbudget.stats import LayerStats, ModelStats

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_modelbudget"


def _files_with_literal(text: str) -> set[str]:
    files = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == text:
                files.add(path.relative_to(PACKAGE).as_posix())
    return files


@pytest.mark.parametrize("name", ["params", "bytes", "macs", "flops", "peak_memory", "memory_traffic", "roofline_time"])
def test_a_figure_is_named_in_the_table_alone(name):
    files = _files_with_literal(name)
    # "bytes" is also a kind of quantity (quantities.py), the figure's own kind.
    assert files <= {"figures.py", "quantities.py"}, files
    assert "figures.py" in files


def test_every_row_is_a_figure_the_engine_computes():
    stats_fields = {f.name for f in dataclasses.fields(ModelStats)}
    layer = LayerStats(type="Linear")
    for figure in TABLE:
        assert figure.name in stats_fields, f"{figure.name}: no ModelStats field of that name"
        if figure.per_layer:
            assert hasattr(layer, figure.name), f"{figure.name}: per layer, but no LayerStats field"


def test_the_schema_follows_the_table():
    assert list(Limits.model_fields) == [figure.name for figure in TABLE]
    assert list(LayerBaseline.model_fields) == list(LAYER_FIGURES)
    assert set(Baseline.model_fields) >= set(BY_NAME)


def test_the_orders_the_reports_use():
    # Written out: what a reader of a failure, the end-of-run table and --budget-compare sees.
    assert COMPARED == (
        "params",
        "bytes",
        "macs",
        "flops",
        "peak_memory",
        "kv_cache",
        "memory_traffic",
        "max_batch",
        "max_context",
    )
    assert SUMMARY_COLUMNS == ("params", "bytes", "macs", "flops", "peak_memory")
    assert DIFF_ORDER == ("params", "macs", "peak_memory", "kv_cache", "memory_traffic", "bytes", "flops")
    assert BASELINE_ORDER == ("params", "macs", "peak_memory", "bytes", "flops", "kv_cache", "memory_traffic")
    assert NARROWING == ("flops", "bytes")


def test_a_figure_row_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLE[0].name = "parameters"  # type: ignore[misc]
