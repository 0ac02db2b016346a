"""The reports a run leaves: its ``--budget-json`` document and its Markdown (the pull request's
comment), made from its budgets, its stale entries and, with a base report, the comparison with
it. One place, for the plugin at the end of a run and for ``merge-reports`` after several."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..record import BudgetRecord
from .compare import BaseReport, Comparison, compare, compare_json, compare_markdown
from .reports import json_report, markdown_report


def comparison_with(base: BaseReport | None, records: Mapping[str, BudgetRecord]) -> Comparison | None:
    return compare(base.budgets, records) if base is not None else None


def json_document(
    records: Mapping[str, BudgetRecord],
    extra: Mapping[str, Any],
    base: BaseReport | None,
    comparison: Comparison | None,
) -> str:
    """``extra``: what the JSON says beside the budgets (torch, the budget file, stale, git)."""
    extra = dict(extra)
    if comparison is not None and base is not None:
        extra["compare"] = compare_json(comparison, str(base.path))
    return json_report(records, extra)


def markdown_document(
    records: Mapping[str, BudgetRecord],
    stale: Iterable[str],
    base: BaseReport | None,
    comparison: Comparison | None,
) -> str:
    stale = sorted(stale)
    markdown = (
        markdown_report(records.values()) if records else "### Model budgets\n\nNo budget was measured in this run.\n"
    )
    if stale:
        markdown += f"- entries no test stands for (stale): {', '.join(stale)}\n"
    if comparison is not None and base is not None:
        markdown += "\n" + compare_markdown(comparison, base.budgets, records, base.label)
    return markdown
