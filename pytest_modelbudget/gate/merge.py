"""``python -m pytest_modelbudget merge-reports a.json b.json -o all.json``: the ``--budget-json``
reports of several CI jobs that split one suite (a GitHub matrix, one job per shard) made into the
one report a single run would have written, so that one comment, one comparison with the base
branch and one artifact cover the whole suite.

A budget measured by two shards must have the same figures in both (a budget file entry collected
by every shard, say); different figures mean the shards did not run the same code, and the merge
refuses rather than pick one. Reports of different commits are refused for the same reason. An
entry is stale in the merged report only when every shard found it stale: a shard that did not
collect a test sees its entry as one no test stands for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetUsageError
from ..record import BudgetRecord
from .compare import load_base

SOURCE = "merge-reports"


@dataclass(frozen=True)
class Merged:
    budgets: dict[str, BudgetRecord]
    #: What the report says beside its budgets: torch, budgets_file, stale, git.
    extra: dict[str, Any]


def merge_reports(paths: Sequence[Path]) -> Merged:
    if not paths:
        raise BudgetUsageError(f"{SOURCE}: no report given; expected the --budget-json reports of the jobs to merge")
    budgets: dict[str, BudgetRecord] = {}
    found_in: dict[str, Path] = {}
    headers = []
    for path in paths:
        report = load_base(path, SOURCE)  # every report is checked as --budget-compare checks one
        headers.append({key: report.header.get(key) for key in ("torch", "budgets_file", "stale", "git")})
        for name, record in report.budgets.items():
            if name in budgets and budgets[name].figures != record.figures:
                raise BudgetUsageError(
                    f"{SOURCE}: budget {name!r} is in {found_in[name]} and {path} with different figures: the jobs did "
                    "not measure the same code (reports of different commits or environments?)"
                )
            if name not in budgets or (not budgets[name].figures and record.figures):
                budgets[name], found_in[name] = record, path
    commits = {h["git"]["commit"] for h in headers if isinstance(h["git"], dict) and h["git"].get("commit")}
    if len(commits) > 1:
        raise BudgetUsageError(
            f"{SOURCE}: the reports were made on different commits ({', '.join(sorted(c[:7] for c in commits))}); "
            "merge the reports of one run"
        )
    extra: dict[str, Any] = {}
    torches = sorted({h["torch"] for h in headers if h["torch"]})
    if torches:
        extra["torch"] = torches[0] if len(torches) == 1 else ", ".join(torches)
    files = sorted({h["budgets_file"] for h in headers if h["budgets_file"]})
    if files:
        extra["budgets_file"] = files[0] if len(files) == 1 else ", ".join(files)
    stale_sets = [set(h["stale"] or []) for h in headers]
    extra["stale"] = sorted(set.intersection(*stale_sets)) if stale_sets else []
    git = next((h["git"] for h in headers if isinstance(h["git"], dict)), None)
    if git is not None:
        extra["git"] = git
    extra["merged_from"] = [str(path) for path in paths]
    return Merged(budgets, extra)
