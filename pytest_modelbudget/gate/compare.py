"""``--budget-compare BASE.json``: this run's figures against another run's JSON report (the base
branch's artifact), every change reported, passing or not. It informs a review; it never changes
the run's verdict (the baseline in budgets.toml does that)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BudgetUsageError
from ..figures import COMPARED, FIGURES, LEADING
from ..quantities import format_percent, format_quantity
from ..record import REPORT_VERSION, BudgetRecord
from .failure import layer_diff
from .render import details
from .reports import move_text


@dataclass(frozen=True)
class BaseReport:
    """The report a run is compared with: its budgets, and what to call it."""

    path: Path
    budgets: dict[str, BudgetRecord]
    #: "main (abc1234)" where the report says which branch and commit it was made on, else the
    #: file's name.
    label: str
    #: What the report says beside its budgets (torch, budgets_file, stale, git), as written.
    header: dict[str, Any] = field(default_factory=dict)


def load_base(path: Path, source: str) -> BaseReport:
    """A ``--budget-json`` report, of this version or an earlier one; ``source`` names the option
    for the message."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BudgetUsageError(
            f"{source}: no such file ({path}); expected the --budget-json report of the base run"
        ) from None
    except OSError as exc:
        raise BudgetUsageError(f"{source}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BudgetUsageError(
            f"{source}: {path}:{exc.lineno}: not JSON ({exc.msg}); expected the --budget-json report of the base run"
        ) from None
    budgets = data.get("budgets") if isinstance(data, dict) else None
    if not isinstance(budgets, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("figures"), dict) for r in budgets.values()
    ):
        raise BudgetUsageError(
            f"{source}: {path} is JSON but not a --budget-json report: expected an object with "
            '"budgets": {name: {"figures": {...}, ...}}'
        )
    version = data.get("report_version", 1)
    if not isinstance(version, int) or version > REPORT_VERSION:
        raise BudgetUsageError(
            f"{source}: {path} is a report of version {version!r}, written by a newer pytest-modelbudget; this one "
            f"reads versions 1 to {REPORT_VERSION}: upgrade pytest-modelbudget, or compare with a report it wrote"
        )
    records: dict[str, BudgetRecord] = {}
    for name, record in budgets.items():
        try:
            records[name] = BudgetRecord.from_dict({"name": name, **record})
        except (KeyError, TypeError, ValueError) as exc:
            raise BudgetUsageError(
                f"{source}: {path}: budget {name!r} is not a --budget-json record ({type(exc).__name__}: {exc})"
            ) from None
    header = {key: value for key, value in data.items() if key != "budgets"}
    return BaseReport(path, records, _label(path, data.get("git")), header)


def _label(path: Path, git: Any) -> str:
    if isinstance(git, dict) and isinstance(git.get("commit"), str) and git["commit"]:
        commit = git["commit"][:7]
        return f"{git['branch']} ({commit})" if isinstance(git.get("branch"), str) and git["branch"] else commit
    return path.name


@dataclass
class Comparison:
    #: name -> [(figure, base, now)], only figures that moved
    changed: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    #: in this run, not in the base
    new: list[str] = field(default_factory=list)
    #: in the base, not in this run (removed, renamed, or not selected this time)
    gone: list[str] = field(default_factory=list)
    #: measured in only one of the two (a budget that errored)
    errored: list[str] = field(default_factory=list)

    def count_line(self) -> str:
        parts = [f"{len(self.changed)} changed", f"{len(self.unchanged)} unchanged", f"{len(self.new)} new"]
        if self.gone:
            parts.append(f"{len(self.gone)} not in this run")
        if self.errored:
            parts.append(f"{len(self.errored)} errored")
        return ", ".join(parts)


def compare(base: Mapping[str, BudgetRecord], records: Mapping[str, BudgetRecord]) -> Comparison:
    result = Comparison()
    for name in sorted(records.keys() | base.keys()):
        now, before = records.get(name), base.get(name)
        if before is None:
            result.new.append(name)
        elif now is None:
            result.gone.append(name)
        elif not now.figures or not before.figures:
            result.errored.append(name)
        else:
            moves = [
                (figure, before.figures[figure], now.figures[figure])
                for figure in COMPARED
                if _is_int(before.figures.get(figure))
                and _is_int(now.figures.get(figure))
                and before.figures[figure] != now.figures[figure]
            ]
            if moves:
                result.changed[name] = moves
            else:
                result.unchanged.append(name)
    return result


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def compare_lines(comparison: Comparison, base_name: str) -> list[str]:
    """The terminal's account: one line per budget that moved, then the count."""
    lines = [f"against {base_name}:"]
    lines += [
        f"  {name}: {', '.join(move_text(*move) for move in moves)}" for name, moves in comparison.changed.items()
    ]
    lines += [f"  {name}: new (not in {base_name})" for name in comparison.new]
    lines += [f"  {name}: in {base_name}, not in this run" for name in comparison.gone]
    lines += [f"  {name}: errored in one of the two runs, not compared" for name in comparison.errored]
    lines.append(f"  {comparison.count_line()}")
    return lines


def compare_markdown(
    comparison: Comparison,
    base: Mapping[str, BudgetRecord],
    records: Mapping[str, BudgetRecord],
    base_name: str,
) -> str:
    """A table of every figure that moved, and each moved budget's per-layer changes folded
    under it."""
    lines = [f"#### Against {base_name}", "", comparison.count_line() + "."]
    if comparison.changed:
        lines += ["", "| budget | figure | base | this run | change |", "| --- | --- | ---: | ---: | ---: |"]
        for name, moves in comparison.changed.items():
            for figure, before, now in moves:
                kind = FIGURES[figure]
                change = format_percent(now / before - 1) if before else f"{now - before:+,}"
                lines.append(
                    f"| {_cell(name)} | {figure} | {format_quantity(before, kind)} | {format_quantity(now, kind)} | {change} |"
                )
        for name, moves in comparison.changed.items():
            figures = [figure for figure, _, _ in moves if figure in LEADING][:3]
            if not figures or not records[name].layers or not base[name].layers:
                continue
            table = layer_diff(records[name].layers, base[name].layers, figures, None)
            lines += ["", details(f"{name}: layers whose own {', '.join(figures)} changed", table)]
    others = [
        *(f"- {name}: new" for name in comparison.new),
        *(f"- {name}: not in this run" for name in comparison.gone),
        *(f"- {name}: errored in one of the two runs" for name in comparison.errored),
    ]
    if others:
        lines += ["", *others]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def compare_json(comparison: Comparison, base_path: str) -> dict[str, Any]:
    return {
        "base": base_path,
        "changed": {
            name: {figure: {"base": before, "now": now} for figure, before, now in moves}
            for name, moves in comparison.changed.items()
        },
        "unchanged": comparison.unchanged,
        "new": comparison.new,
        "gone": comparison.gone,
        "errored": comparison.errored,
    }
