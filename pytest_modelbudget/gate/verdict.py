"""Comparing measured figures with limits and a baseline: the one place that owns the pass / fail /
can-be-tightened policy. What a failure says is ``failure.py``'s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..figures import BY_NAME, FIGURES
from ..record import FigureCheck, Status, Verdict


def evaluate(
    name: str,
    figures: Mapping[str, int],
    limits: Mapping[str, int],
    baseline: Mapping[str, int] | None,
    tolerance: float | Mapping[str, float],
    compared: Sequence[str],
    *,
    require_baseline: bool = False,
    names: Mapping[str, tuple[str, ...]] | None = None,
    unpriced: Mapping[str, int] | None = None,
) -> Verdict:
    """Each limited figure against its limit; each compared figure against the baseline. With
    ``require_baseline`` (strict mode, CI) a budget without one fails: a gate that compares
    nothing must not pass; nor one whose model did arithmetic no formula prices (``unpriced``: the
    uncounted ops not allowed, with how often each ran), part of its macs and flops a silent zero."""
    tolerances = dict(tolerance) if isinstance(tolerance, Mapping) else dict.fromkeys(FIGURES, tolerance)
    problems = []
    if require_baseline and baseline is None:
        problems.append(f"no baseline recorded for {name!r}: run pytest --update-budgets and commit budgets.toml")
    if unpriced:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(unpriced.items()))
        problems.append(
            f"{len(unpriced)} op(s) did arithmetic with no formula, left out of macs and flops: {ops}; price them "
            "(pytest_modelbudget.register_formula) or list them in allow_uncounted"
        )
    checks = []
    for figure in FIGURES:
        value = figures.get(figure)
        limit = limits.get(figure)
        reference = baseline.get(figure) if baseline and figure in compared else None
        if limit is None and reference is None:
            continue
        if value is None:
            if limit is not None:
                checks.append(FigureCheck(figure, None, limit, reference, "unmeasured"))
            continue
        status: Status = "ok"
        # A floor (how many sequences fit) fails going down; every other figure going up.
        sign = -1 if BY_NAME[figure].floor else 1
        slack = tolerances.get(figure, 0.0)
        if limit is not None and sign * value > sign * limit:
            status = "over_limit"
        elif reference is not None and sign * value > sign * reference * (1 + sign * slack):
            status = "over_baseline"
        elif reference is not None and sign * value < sign * reference * (1 - sign * slack):
            status = "tighten"
        shown = (names or {}).get(figure, ()) if status == "over_limit" else ()
        checks.append(FigureCheck(figure, value, limit, reference, status, shown))
    return Verdict(checks=tuple(checks), tolerance=tolerances, problems=tuple(problems))


def sharing_changes(before: Sequence[Sequence[str]] | None, now: Sequence[Sequence[str]]) -> list[str]:
    """Tied weights untied or newly tied since the baseline, named: removing ``lm_head``'s tie
    otherwise reads as ``lm_head`` growing."""
    if before is None:
        return []
    now_sets = [set(group) for group in now]
    before_sets = [set(group) for group in before]
    lines = []
    for group in before:
        kept = next((g for g in now_sets if set(group) <= g), None)
        if kept is None:
            first, *others = group
            lines.append(f"{first} no longer shared with {', '.join(others)}")
    for group in now:
        if not any(set(group) <= g for g in before_sets):
            first, *others = group
            lines.append(f"{first} now shared with {', '.join(others)}")
    return lines


def op_name(text: str) -> str:
    """An op as ``uncounted_ops`` names it: ``"teamlib::fused_act"`` and ``"teamlib.fused_act"`` are
    ``"teamlib.fused_act"``; PyTorch's own go without ``aten``."""
    name = text.replace("::", ".")
    return name.removeprefix("aten.")


def not_allowed(uncounted: Mapping[str, int], allowed: Sequence[str]) -> dict[str, int]:
    """The uncounted ops that no ``allow_uncounted`` lists."""
    permitted = {op_name(op) for op in allowed}
    return {op: count for op, count in uncounted.items() if op_name(op) not in permitted}
