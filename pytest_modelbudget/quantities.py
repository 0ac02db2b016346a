"""Human quantities: "12M" parameters, "48MB" / "46MiB" of memory, "1%" tolerance.

Counts use SI suffixes (K=1e3, M=1e6, G=1e9, T=1e12). Byte sizes need a unit: SI (``KB`` =
1000 bytes, ``MB`` = 10**6, ...) or binary (``KiB`` = 1024, ``MiB`` = 2**20, ...). A bare ``MB``
is 10**6 bytes, as on disk labels and in the SI, not 2**20. Sizes are shown in SI units unless
``[settings] units = "binary"`` (:func:`byte_units`) asks for MiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal, InvalidOperation
from typing import Literal

Kind = Literal["count", "bytes", "time"]
Units = Literal["si", "binary"]

# A context variable, not an argument: the choice is the budget file's, and threading it through
# every message that shows a size would put it in every signature of the gate.
_UNITS: ContextVar[Units] = ContextVar("modelbudget_units", default="si")


@contextmanager
def byte_units(units: Units) -> Iterator[None]:
    """Show byte sizes in ``units`` ("si": KB, MB; "binary": KiB, MiB) within the block."""
    token = _UNITS.set(units)
    try:
        yield
    finally:
        _UNITS.reset(token)


#: Count suffixes, case as written: SI's kilo is k (K is read too); M, G and T are upper case
#: only, since m is milli.
COUNT_SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
#: Byte units, case as written: B is a byte (b would be a bit), the binary ones end in iB.
BYTE_UNITS = {
    "B": 1,
    "kB": 10**3,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}

#: Durations, in nanoseconds (``roofline_time``), lower case as SI writes them.
TIME_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9}

_UNIT_TABLES = {"count": COUNT_SUFFIXES, "bytes": BYTE_UNITS, "time": TIME_UNITS}

_NUMBER = re.compile(r"^([0-9][0-9_]*(?:\.[0-9]+)?|\.[0-9]+)(\s*)([A-Za-zµ]*)$")


class QuantityError(ValueError):
    """A quantity that cannot be read; the message says what is expected."""


def parse_quantity(value: object, kind: Kind) -> int:
    """Read ``value`` (an int or a human string) as a whole number of elements, bytes or
    nanoseconds. Units are case-sensitive and follow the number with no space (``"12M"``,
    ``"46MiB"``, ``"2.5ms"``); a value that is not a whole number of the smallest unit is an error,
    never rounded."""
    if isinstance(value, bool):
        raise QuantityError(f"expected {_expected(kind)}, found a boolean {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise QuantityError(f"expected a non-negative {kind}, found {value}")
        return value
    if isinstance(value, float):
        if value < 0 or value != value or value in (float("inf"), float("-inf")):
            raise QuantityError(f"expected a finite, non-negative {kind}, found {value}")
        if not value.is_integer():
            raise QuantityError(f"expected a whole number, found {value} ({_expected(kind)})")
        return int(value)
    if not isinstance(value, str):
        raise QuantityError(f"expected {_expected(kind)}, found {type(value).__name__} {value!r}")
    match = _NUMBER.match(value.strip())
    if not match:
        raise QuantityError(f"expected {_expected(kind)}, found {value!r}")
    number, space, unit = match.groups()
    table = _UNIT_TABLES[kind]
    if unit not in table:
        raise QuantityError(f"expected {_expected(kind)}, found {value!r} ({_unit_problem(unit, kind)})")
    if space:
        raise QuantityError(f'expected {_expected(kind)}, found {value!r} (write "{number}{unit}", with no space)')
    if kind == "time" and unit == "":
        raise QuantityError(f"expected {_expected(kind)}, found {value!r} (a duration in a string needs a unit)")
    if kind == "bytes" and unit == "":
        raise QuantityError(f"expected {_expected(kind)}, found {value!r} (a byte size in a string needs a unit)")
    try:
        amount = Decimal(number.replace("_", "")) * table[unit]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise QuantityError(f"expected {_expected(kind)}, found {value!r}") from exc
    if amount != amount.to_integral_value():
        whole = {"count": "a whole count", "bytes": "a whole number of bytes", "time": "a whole number of nanoseconds"}
        raise QuantityError(f"{value!r} is {amount.normalize():f}, not {whole[kind]}")
    return int(amount)


def _unit_problem(unit: str, kind: Kind) -> str:
    """Why ``unit`` is not one, in a few words: the case-sensitive look-alike where there is one."""
    table = _UNIT_TABLES[kind]
    if kind == "count" and unit == "m":
        return "m is milli; millions are M"
    alike = [known for known in table if known and known.lower() == unit.lower()]
    if alike:
        return f"units are case-sensitive: {unit!r} is not a unit, {alike[0]!r} is"
    return f"unknown unit {unit!r}; the units are {', '.join(known for known in table if known)}"


def parse_bandwidth(value: object) -> int:
    """Read a bandwidth such as ``"2TB/s"`` or ``"900GB/s"`` as bytes per second."""
    expected = f'expected a bandwidth such as "2TB/s" or "900GB/s", found {value!r}'
    if not isinstance(value, str) or not value.strip().endswith("/s"):
        raise QuantityError(expected)
    try:
        return parse_quantity(value.strip()[:-2], "bytes")
    except QuantityError:
        raise QuantityError(expected) from None


def parse_percent(value: object) -> float:
    """Read a tolerance such as ``"1%"`` or ``"0.5%"`` as a fraction (0.01, 0.005)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if 0 <= percent < float("inf"):  # float() also reads "inf" and "nan"
                return percent / 100
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0.0
    raise QuantityError(f'expected a percentage such as "1%" or "0.5%", found {value!r}')


def _expected(kind: Kind) -> str:
    if kind == "count":
        return 'an integer or a count such as "350K", "12M", "1.9G" (K, M, G, T)'
    if kind == "time":
        return 'an integer number of nanoseconds or a duration such as "2.5ms", "300us", "1s"'
    return 'an integer number of bytes or a size such as "300MB", "46MiB", "1.5GB"'


def format_count(value: int | float) -> str:
    """``11689512`` -> ``"11.69M"``: three or four significant digits with an SI suffix."""
    return _format(value, [("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)], "")


def format_bytes(value: int | float) -> str:
    """``46827520`` -> ``"46.83MB"`` (SI, as the budget file's ``MB`` reads), or ``"44.66MiB"``
    within ``byte_units("binary")``."""
    if _UNITS.get() == "binary":
        return _format(value, [("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)], "B", step=1024)
    return _format(value, [("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)], "B")


def format_time(nanoseconds: int | float) -> str:
    """``238_806`` -> ``"238.81us"``."""
    return _format(nanoseconds, [("s", 10**9), ("ms", 10**6), ("us", 10**3)], "ns")


def format_quantity(value: int | float, kind: Kind) -> str:
    if kind == "time":
        return format_time(value)
    return format_bytes(value) if kind == "bytes" else format_count(value)


def format_pair(value: int, reference: int, kind: Kind) -> tuple[str, str]:
    """Both numbers short, unless short they would read the same (``125M > limit 125M``): then
    both in full, with separators."""
    shown, shown_reference = format_quantity(value, kind), format_quantity(reference, kind)
    if shown == shown_reference and value != reference:
        unit = " B" if kind == "bytes" else ""
        return f"{value:,}{unit}", f"{reference:,}{unit}"
    return shown, shown_reference


def _format(value: int | float, steps: list[tuple[str, int]], unit: str, step: int = 1000) -> str:
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    for index, (suffix, scale) in enumerate(steps):
        if magnitude >= scale:
            shown = round(magnitude / scale, 2)
            if shown >= step and index > 0:  # 999,999 B is "1MB", not "1000KB"
                suffix, scale = steps[index - 1]
                shown = round(magnitude / scale, 2)
            return f"{sign}{shown:.2f}".rstrip("0").rstrip(".") + suffix
    return f"{sign}{int(magnitude)}{unit}"


def format_percent(fraction: float) -> str:
    """``0.217`` -> ``"+21.7%"``; a change too small for one decimal gets the digits it needs
    (``"+0.024%"``): a change that exists never reads ``+0.0%``."""
    percent = fraction * 100
    digits = 1
    while digits < 8 and percent != 0 and round(abs(percent), digits) == 0:
        digits += 1
    if percent != 0 and digits > 1:
        digits += 1  # two significant digits
    return f"{percent:+.{digits}f}%"
