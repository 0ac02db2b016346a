"""Human quantities as reports print them."""

from __future__ import annotations

import pytest

from pytest_modelbudget import format_bytes, format_count


@pytest.mark.parametrize(
    ("value", "count", "size"),
    [
        (999, "999", "999B"),
        (999_499, "999.5K", "999.5KB"),
        (999_999, "1M", "1MB"),  # not "1000K": rounding crosses into the next unit
        (1_000_000, "1M", "1MB"),
        (999_995_000, "1G", "1GB"),
        (-999_999, "-1M", "-1MB"),
        (11_689_512, "11.69M", "11.69MB"),
    ],
)
def test_rounding_never_prints_a_thousand_of_a_unit(value, count, size):
    assert format_count(value) == count
    assert format_bytes(value) == size
