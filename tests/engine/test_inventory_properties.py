"""``bytes`` counts each storage's bytes once however its tensors overlap: the union of their
byte ranges, checked against a byte-by-byte set on random ranges."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_modelbudget.engine.assembly import covered_bytes  # noqa: E402

spans = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 64), st.integers(0, 64)).map(
        lambda t: (t[0], min(t[1], t[2]), max(t[1], t[2]))
    ),
    max_size=12,
)


@given(spans)
def test_covered_bytes_is_the_union_of_each_storages_ranges(ranges):
    covered = {(storage, byte) for storage, start, end in ranges for byte in range(start, end)}
    assert covered_bytes(ranges) == len(covered)
