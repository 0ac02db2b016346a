"""End-of-run reports: the terminal table, ``--budget-json`` and the Markdown table (also sent to
``$GITHUB_STEP_SUMMARY`` so a pull request shows it)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..figures import BASELINE_ORDER, BY_NAME, COMPARED, FIGURES, NARROWING, SUMMARY_COLUMNS
from ..quantities import Kind, format_percent, format_quantity
from ..record import REPORT_VERSION, BudgetRecord, FigureCheck
from .render import details, elide_start, markdown_table, text_table
from .verdict import not_allowed


def summary_rows(
    records: Iterable[BudgetRecord], columns: Iterable[str] = SUMMARY_COLUMNS
) -> tuple[list[str], list[list[str]]]:
    columns = tuple(columns)
    records = list(records)
    # One figure for the column, the most telling that moved anywhere, so that rows compare.
    common = next((f for f in BASELINE_ORDER if any(_moved(r, f) for r in records)), None)
    headers = ["budget", *columns, "% of limit", f"vs baseline ({common})" if common else "vs baseline", "verdict"]
    rows = []
    # Failures first: with many budgets, the ones a reviewer needs are on top.
    for record in sorted(records, key=lambda r: (_verdict(r) in ("passed", "tighten"), r.name)):
        figures = record.figures
        row = [record.name]
        row += ["-" if figures.get(f) is None else format_quantity(figures[f], FIGURES[f]) for f in columns]
        row.append(_limit_use(figures, record.limits))
        row.append(_baseline_change(figures, record.baseline, common))
        row.append(_verdict(record))
        rows.append(row)
    return headers, rows


def _verdict(record: BudgetRecord) -> str:
    status = record.verdict.status
    if record.test_outcome == "failed" and status in ("passed", "tighten"):
        return f"{status}, test failed"  # within budget, but the test failed its own assertion
    return status


def _moved(record: BudgetRecord, figure: str) -> bool:
    baseline, now = record.baseline or {}, record.figures.get(figure)
    return baseline.get(figure) is not None and now is not None and now != baseline[figure]


def _limit_use(figures: Mapping[str, int], limits: Mapping[str, int]) -> str:
    # How close each figure is to failing: a floor (max_batch) nears its limit from above.
    used = [
        ((limit / figures[f] if figures[f] else float("inf")) if BY_NAME[f].floor else figures[f] / limit, f)
        for f, limit in limits.items()
        if limit and figures.get(f) is not None
    ]
    if not used:
        return "-"
    fraction, figure = max(used)
    digits = 0
    while digits < 6 and fraction != 1 and round(fraction * 100, digits) == 100:
        digits += 1  # just over or under the limit never reads "100%"
    return f"{fraction * 100:.{digits}f}% {figure}"


def _baseline_change(figures: Mapping[str, int], baseline: Mapping[str, int] | None, common: str | None = None) -> str:
    if not baseline:
        return "new"
    changes = {
        f: (figures[f] - old) / old
        for f, old in baseline.items()
        if old and figures.get(f) is not None and figures[f] != old
    }
    if not changes:
        return "="
    if common in changes:
        return format_percent(changes[common])
    figure = max(changes, key=lambda f: abs(changes[f]))  # the column's figure held; another moved
    return f"{format_percent(changes[figure])} {figure}"


def terminal_table(
    records: Iterable[BudgetRecord], columns: Iterable[str] | None = None, width: int | None = None
) -> str:
    """The summary table with ``columns`` (default: every figure, less those that do not fit in
    ``width``, in NARROWING order)."""
    records = list(records)
    if columns is not None:
        return text_table(*summary_rows(records, columns))
    shown = list(SUMMARY_COLUMNS)
    table = text_table(*summary_rows(records, shown))
    for figure in NARROWING:
        if width is None or _widest(table) <= width:
            break
        shown.remove(figure)
        table = text_table(*summary_rows(records, shown))
    if width is not None and _widest(table) > width:
        # Still too wide: long budget names (node ids) give up their start, the test's name stays.
        headers, rows = summary_rows(records, shown)
        names = max(len(row[0]) for row in rows)
        fit = max(24, names - (_widest(table) - width))
        shortened = [elide_start(row[0], fit) for row in rows]
        if len(set(shortened)) == len(shortened):  # never two budgets under one name
            table = text_table(headers, [[name, *row[1:]] for name, row in zip(shortened, rows)])
    return table


def _widest(table: str) -> int:
    return max(map(len, table.splitlines()))


#: The mark before each budget in the Markdown table, by its verdict cell: what a reviewer scans.
MARKS = {
    "failed": "❌",
    "error": "⚠️",
    "passed, test failed": "❌",
    "tighten, test failed": "❌",
    "tighten": "⬇️",
    "passed": "✅",
}


def markdown_report(records: Iterable[BudgetRecord]) -> str:
    """The table (failures first, a mark per budget), the notes, then each failure's message,
    per-layer diff included, folded in a ``<details>`` block under its headline."""
    records = list(records)
    headers, rows = summary_rows(records)
    rows = [[f"{MARKS.get(row[-1], '')} {row[0]}".strip(), *row[1:]] for row in rows]
    changes = [f"{r.name}: {line}" for r in sorted(records, key=lambda r: r.name) for line in structure_lines(r)]
    notes = "".join(f"\n- {line}" for line in [*changes, *caveat_lines(records)])
    text = "### Model budgets\n\n" + markdown_table(headers, rows) + "\n" + (notes[1:] + "\n" if notes else "")
    for record in sorted(records, key=lambda r: r.name):
        if not record.failure:
            continue
        headline, _, rest = record.failure.partition("\n")
        text += "\n" + details(f"❌ {headline}", rest.strip("\n") or headline) + "\n"
    return text


def _checks(records: Iterable[BudgetRecord], status: str) -> Iterable[tuple[str, FigureCheck, Kind]]:
    """(budget name, check, the figure's kind) of every check with ``status``, by budget name."""
    for record in sorted(records, key=lambda r: r.name):
        for check in record.verdict.checks:
            if check.status == status:
                yield record.name, check, FIGURES[check.figure]


def tighten_lines(records: Iterable[BudgetRecord]) -> list[str]:
    return [
        f"{name}: {check.figure} fell to {format_quantity(check.value or 0, kind)} "
        f"from a baseline of {format_quantity(check.baseline or 0, kind)}; run pytest --update-budgets to tighten it"
        for name, check, kind in _checks(records, "tighten")
    ]


def move_text(figure: str, before: int, now: int) -> str:
    """``params 3.41M -> 3.67M (+7.6%)``: a figure that moved, for --update-budgets and
    --budget-compare."""
    change = f" ({format_percent(now / before - 1)})" if before else ""
    return f"{figure} {format_quantity(before, FIGURES[figure])} -> {format_quantity(now, FIGURES[figure])}{change}"


def moved_lines(records: Iterable[BudgetRecord]) -> list[str]:
    """What ``--update-budgets`` changed, budget by budget, and a count: what a reviewer checks
    before committing budgets.toml."""
    lines, changed, unchanged, new = [], 0, 0, 0
    for record in sorted(records, key=lambda r: r.name):
        if record.verdict.errored:  # nothing measured, nothing written
            continue
        old, now = record.baseline, record.figures
        moves = [
            move_text(figure, old[figure], now[figure])
            for figure in COMPARED
            if old and old.get(figure) is not None and now.get(figure) is not None and old[figure] != now[figure]
        ]
        if not old:
            new += 1
            lines.append(f"{record.name}: new baseline")
        elif moves:
            changed += 1
            lines.append(f"{record.name}: {', '.join(moves)}")
        else:
            unchanged += 1
        for name, check, kind in _checks([record], "over_limit"):
            lines.append(
                f"{name}: baseline written although {check.figure} {format_quantity(check.value or 0, kind)} "
                f"is {'under' if BY_NAME[check.figure].floor else 'over'} its limit {format_quantity(check.limit or 0, kind)} "
                "(the test fails until the model or the "
                "limit changes)"
            )
    lines.append(f"{changed} changed, {unchanged} unchanged, {new} new")
    return lines


def structure_lines(record: BudgetRecord) -> list[str]:
    """What changed in the model's structure beside its figures: ties undone or made, and the
    parameters forward never reads (a dead head is params that buy nothing)."""
    lines = list(record.sharing_changes)
    unused = record.unused_params
    if unused:
        shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        lines.append(f"unused: forward never reads {shown}")
    return lines


def caveats(record: BudgetRecord) -> list[str]:
    """What makes a budget's figures less than the engine's usual exact fake run: a fall-back to
    a real run, and ops that did arithmetic no formula prices (left out of macs and flops)."""
    lines = []
    if record.execution == "real":
        why = next((note for note in record.notes if note.startswith("fake execution failed")), "")
        lines.append(f"measured by a real CPU run, not a fake one{': ' + why if why else ''}")
    uncounted = not_allowed(record.uncounted_ops, record.allowed_uncounted)
    if uncounted:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(uncounted.items()))
        lines.append(f"{len(uncounted)} op(s) did arithmetic with no formula, left out of macs and flops: {ops}")
    return lines


def caveat_lines(records: Iterable[BudgetRecord]) -> list[str]:
    return [f"{record.name}: {line}" for record in sorted(records, key=lambda r: r.name) for line in caveats(record)]


def json_report(records: Mapping[str, BudgetRecord], extra: Mapping[str, Any]) -> str:
    """``--budget-json``: every budget's record, versioned (``report_version``)."""
    budgets = {name: record.to_dict() for name, record in records.items()}
    return json.dumps({**extra, "report_version": REPORT_VERSION, "budgets": budgets}, indent=2, sort_keys=True)


def write_text(path: Path, text: str, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)
