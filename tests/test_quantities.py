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


def test_a_change_that_exists_never_reads_zero():
    from pytest_modelbudget.quantities import format_pair, format_percent

    assert format_percent(0.217) == "+21.7%"
    assert format_percent(30_000 / 125_000_000) == "+0.024%"  # 125.03M against 125M
    assert format_percent(0) == "+0.0%"
    assert format_percent(-3.1e-6) == "-0.00031%"
    # Short forms that would read the same are written in full.
    assert format_pair(125_030_000, 125_000_000, "count") == ("125.03M", "125M")
    assert format_pair(125_000_001, 125_000_000, "count") == ("125,000,001", "125,000,000")
    assert format_pair(1_000_001, 1_000_000, "bytes") == ("1,000,001 B", "1,000,000 B")
