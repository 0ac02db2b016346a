"""Property tests of the quantity and tolerance parsers: any input gives an exact value or our own
error, never another exception."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_modelbudget.quantities import QuantityError, format_quantity, parse_percent, parse_quantity  # noqa: E402

ANYTHING = st.one_of(
    st.text(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@given(ANYTHING, st.sampled_from(["count", "bytes"]))
def test_a_quantity_is_a_non_negative_int_or_a_quantity_error(value, kind):
    try:
        parsed = parse_quantity(value, kind)
    except QuantityError:
        return
    assert isinstance(parsed, int) and parsed >= 0


@given(ANYTHING)
def test_a_tolerance_is_a_finite_fraction_or_a_quantity_error(value):
    try:
        parsed = parse_percent(value)
    except QuantityError:
        return
    assert 0 <= parsed < float("inf")


@given(st.integers(min_value=0, max_value=10**15), st.sampled_from(["count", "bytes"]))
def test_whole_numbers_and_their_spelled_forms_read_exactly(value, kind):
    assert parse_quantity(value, kind) == value
    assert parse_quantity(f"{value:_}" + ("B" if kind == "bytes" else ""), kind) == value
    # What a report prints reads back within its rounding (3-4 significant digits).
    shown = parse_quantity(format_quantity(value, kind), kind)
    assert abs(shown - value) <= max(value * 0.005, 0.5)


@given(
    st.one_of(
        ANYTHING,
        st.dictionaries(
            st.one_of(st.sampled_from(["params", "macs", "peak_memory"]), st.text(max_size=8)), ANYTHING, max_size=3
        ),
    )
)
def test_a_tolerance_table_is_fractions_per_known_figure_or_a_value_error(value):
    from pytest_modelbudget.budgets.schema import parse_tolerance
    from pytest_modelbudget.stats import FIGURES

    try:
        parsed = parse_tolerance(value)
    except ValueError:  # QuantityError is one; the schema turns it into file:line
        return
    if isinstance(parsed, dict):
        assert set(parsed) <= set(FIGURES) and all(0 <= v < float("inf") for v in parsed.values())
    else:
        assert 0 <= parsed < float("inf")


@given(
    st.dictionaries(
        st.sampled_from(["params", "bytes", "macs", "flops", "peak_memory"]), st.integers(0, 10_000), min_size=1
    )
)
def test_a_tolerance_table_reads_exactly(table):
    from pytest_modelbudget.budgets.schema import parse_tolerance

    assert parse_tolerance({k: f"{v / 100:g}%" for k, v in table.items()}) == {
        k: (v / 100) / 100 for k, v in table.items()
    }
