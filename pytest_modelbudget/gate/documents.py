"""The reports a run leaves: its ``--budget-json`` document and its Markdown (the pull request's
comment), made from its budgets, its stale entries and, with a base report, the comparison with
it. One place, for the plugin at the end of a run and for ``merge-reports`` after several."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..record import BudgetRecord
from .compare import BaseReport, compare, compare_json, compare_markdown
from .reports import json_report, markdown_report


def report_documents(
    records: Mapping[str, BudgetRecord], extra: Mapping[str, Any], base: BaseReport | None
) -> tuple[str, str]:
    """(JSON, Markdown) of the budgets ``records``; ``extra`` holds ``stale`` and what the JSON
    says beside the budgets (torch, the budget file, git)."""
    comparison = compare(base.budgets, records) if base is not None else None
    extra = dict(extra)
    if comparison is not None and base is not None:
        extra["compare"] = compare_json(comparison, str(base.path))
    stale = list(extra.get("stale") or [])
    markdown = (
        markdown_report(records.values()) if records else "### Model budgets\n\nNo budget was measured in this run.\n"
    )
    if stale:
        markdown += f"- entries no test stands for (stale): {', '.join(sorted(stale))}\n"
    if comparison is not None and base is not None:
        markdown += "\n" + compare_markdown(comparison, base.budgets, records, base.label)
    return json_report(records, extra), markdown
