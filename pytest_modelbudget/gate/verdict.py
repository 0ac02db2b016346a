"""Comparing measured figures with limits and a baseline, and saying so: the one place that owns
the pass / fail / can-be-tightened policy and the per-layer diff of a failure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..figures import BY_NAME, DIFF_ORDER, FIGURES, PEAK_MEMORY
from ..quantities import format_pair, format_percent, format_quantity
from .render import text_table

Status = Literal["ok", "over_limit", "over_baseline", "tighten", "unmeasured"]


@dataclass(frozen=True)
class FigureCheck:
    figure: str
    value: int | None
    limit: int | None
    baseline: int | None
    status: Status
    #: What the figure counts, where a reader needs it (the unused parameters' names).
    names: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status in ("over_limit", "over_baseline", "unmeasured")

    def line(self, tolerances: Mapping[str, float]) -> str:
        tolerance = tolerances.get(self.figure, 0.0)
        kind = FIGURES[self.figure]
        if self.status == "unmeasured":
            return f"{self.figure} has a limit of {format_quantity(self.limit or 0, kind)} but was not measured"
        assert self.value is not None
        if self.status == "over_limit":
            assert self.limit is not None
            value, limit = format_pair(self.value, self.limit, kind)
            line = f"{self.figure} {value} > limit {limit} ({_change(self.value, self.limit)}"
            if self.baseline is not None:
                # What the change did, beside how far over the line it landed.
                line += f"; {_change(self.value, self.baseline)} on baseline {format_pair(self.value, self.baseline, kind)[1]}"
            line += ")"
            return line + (f": {', '.join(self.names)}" if self.names else "")
        assert self.baseline is not None
        value, baseline = format_pair(self.value, self.baseline, kind)
        relation = ">" if self.status == "over_baseline" else "<"
        return f"{self.figure} {value} {relation} baseline {baseline} ({_change(self.value, self.baseline)}, tolerance {tolerance * 100:g}%)"


def _change(value: int, reference: int) -> str:
    delta = value - reference
    if reference == 0:
        return f"{delta:+,}"
    return format_percent(delta / reference)


@dataclass
class Verdict:
    name: str
    checks: list[FigureCheck] = field(default_factory=list)
    #: Per figure.
    tolerance: dict[str, float] = field(default_factory=dict)
    #: Failures that are not a figure over its limit: a baseline required but not recorded.
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(check.failed for check in self.checks)

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        if any(check.status == "tighten" for check in self.checks):
            return "tighten"
        return "passed"

    def to_dict(self) -> dict[str, Any]:
        distinct = set(self.tolerance.values())
        return {
            "status": self.status,
            # One number where every figure has the same (the common case), else the table.
            "tolerance": distinct.pop() if len(distinct) == 1 else self.tolerance,
            "checks": [asdict(c) for c in self.checks],
            "problems": self.problems,
        }


def evaluate(
    name: str,
    figures: dict[str, int],
    limits: dict[str, int],
    baseline: dict[str, int] | None,
    tolerance: float | Mapping[str, float],
    compared: tuple[str, ...] | list[str],
    *,
    require_baseline: bool = False,
    names: dict[str, tuple[str, ...]] | None = None,
) -> Verdict:
    """Each limited figure against its limit; each compared figure against the baseline. With
    ``require_baseline`` (strict mode, CI) a budget without one fails: a gate that compares
    nothing must not pass."""
    tolerances = dict(tolerance) if isinstance(tolerance, Mapping) else dict.fromkeys(FIGURES, tolerance)
    verdict = Verdict(name=name, tolerance=tolerances)
    if require_baseline and baseline is None:
        verdict.problems.append(
            f"no baseline recorded for {name!r}: run pytest --update-budgets and commit budgets.toml"
        )
    for figure in FIGURES:
        value = figures.get(figure)
        limit = limits.get(figure)
        reference = baseline.get(figure) if baseline and figure in compared else None
        if limit is None and reference is None:
            continue
        if value is None:
            if limit is not None:
                verdict.checks.append(FigureCheck(figure, None, limit, reference, "unmeasured"))
            continue
        status: Status = "ok"
        if limit is not None and value > limit:
            status = "over_limit"
        elif reference is not None and value > reference * (1 + tolerances.get(figure, 0.0)):
            status = "over_baseline"
        elif reference is not None and value < reference * (1 - tolerances.get(figure, 0.0)):
            status = "tighten"
        shown = (names or {}).get(figure, ()) if status == "over_limit" else ()
        verdict.checks.append(FigureCheck(figure, value, limit, reference, status, shown))
    return verdict


def sharing_changes(before: list[list[str]] | None, now: list[list[str]]) -> list[str]:
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


# --- the failure message -------------------------------------------------------------------------

MAX_LAYER_ROWS = 15
#: The per-layer diff shows at most this many figures (``figures.DIFF_ORDER``'s first) unless -vv.
MAX_DIFF_FIGURES = 3


def failure_message(
    verdict: Verdict,
    layers: dict[str, dict[str, Any]],
    baseline_layers: dict[str, dict[str, int]] | None,
    verbose: int = 0,
    memory_source: str | None = None,
    notes: list[str] | None = None,
) -> str:
    failing = [check for check in verdict.checks if check.failed]
    reasons = [*verdict.problems, *(check.line(verdict.tolerance) for check in failing)]
    # The first line alone tells the story in pytest's short summary (-rA, -rf).
    headline = f"{verdict.name}: {reasons[0]}" + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
    lines = [headline, f"model budget {verdict.name!r} {'exceeded' if failing else 'not checked'}:"]
    lines += [f"  {reason}" for reason in reasons]
    lines += [f"  note: {note}" for note in notes or []]
    if memory_source and any(check.figure == PEAK_MEMORY.name and check.value is not None for check in failing):
        # A figure estimated on CI and one measured on a GPU differ by the estimate's error.
        lines.append(f"  (peak_memory: {memory_source})")
    if not failing:
        return "\n".join(lines)
    failed = {c.figure for c in failing}
    # A figure that has no per-layer diff (roofline_time) is explained by the most telling two.
    figures = [f for f in DIFF_ORDER if f in failed] or list(DIFF_ORDER[:2])
    if verbose < 2:
        figures = figures[:MAX_DIFF_FIGURES]  # bytes and flops mostly follow params and macs
    limit = None if verbose >= 2 else MAX_LAYER_ROWS
    if baseline_layers:
        lines += ["", f"layers whose own {', '.join(figures)} changed (largest {figures[0]} change first):"]
        lines.append(_indent(layer_diff(layers, baseline_layers, figures, limit)))
    else:
        lines += ["", f"largest layers by {figures[0]} (no baseline recorded; run pytest --update-budgets):"]
        lines.append(_indent(largest_layers(layers, figures[0], limit)))
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def own_figures(layers: dict[str, dict[str, Any]], figures: list[str]) -> dict[str, dict[str, int]]:
    """Each layer's own figures: its total less its direct children's, so that a parent shows a
    change only where its own code (outside its children) changed. A figure that is not additive
    (``peak_memory``: what a layer's forward adds) is already a layer's own, and kept as it is."""
    own: dict[str, dict[str, int]] = {}
    for name, figures_of in layers.items():
        own[name] = {f: figures_of[f] for f in figures if figures_of.get(f) is not None}
    for name, figures_of in layers.items():
        if not name:
            continue
        parent = name.rpartition(".")[0]
        if parent not in own:
            continue
        for figure in figures:
            if BY_NAME[figure].additive and figures_of.get(figure) is not None and figure in own[parent]:
                own[parent][figure] -= figures_of[figure]
    return own


def layer_diff(
    layers: dict[str, dict[str, Any]],
    baseline_layers: dict[str, dict[str, int]],
    figures: list[str],
    limit: int | None,
) -> str:
    """One row per layer whose own figures changed (added, removed, grown, shrunk), ranked by the
    change of ``figures[0]``, the figure that failed; a column group per figure."""
    now, before = own_figures(layers, figures), own_figures(baseline_layers, figures)
    explained = {f: _explained_by_children(now, before, f) for f in figures if not BY_NAME[f].additive}
    rows: list[tuple[tuple[int, ...], list[str]]] = []
    for name in sorted(now.keys() | before.keys()):
        new, old = now.get(name), before.get(name)
        changes = [(new or {}).get(f, 0) - (old or {}).get(f, 0) for f in figures]
        # Ranked and listed by what changed in the layer itself.
        own_changes = [0 if name in explained.get(f, ()) else c for f, c in zip(figures, changes)]
        if not any(own_changes):
            continue
        status = (
            "added"
            if old is None
            else "removed"
            if new is None
            else "grown"
            if changes[0] > 0 or (changes[0] == 0 and any(c > 0 for c in changes))
            else "shrunk"
        )
        row = [name or "(root)", (layers.get(name) or {}).get("type", "-"), status]
        for figure, change in zip(figures, changes):
            kind = FIGURES[figure]
            before_value, after_value = (old or {}).get(figure), (new or {}).get(figure)
            percent = f" ({format_percent(change / before_value)})" if before_value and change else ""
            row += [
                "-" if old is None or before_value is None else format_quantity(before_value, kind),
                "-" if new is None or after_value is None else format_quantity(after_value, kind),
                ("=" if change == 0 else ("+" if change > 0 else "-") + format_quantity(abs(change), kind) + percent),
            ]
        rows.append((tuple(-abs(c) for c in own_changes), row))
    if not rows:
        return "(no layer's own figures changed)"
    rows.sort(key=lambda item: item[0])
    shown = rows if limit is None else rows[:limit]
    headers = ["layer", "type", ""]
    for figure in figures:
        headers += [f"{figure} before", "after", "change"]
    table = text_table(headers, [row for _, row in shown], right_align_from=3)
    if len(shown) < len(rows):
        table += f"\n... {len(rows) - len(shown)} more layers (-vv shows all)"
    return table


def _explained_by_children(now: dict[str, dict[str, int]], before: dict[str, dict[str, int]], figure: str) -> set[str]:
    """Parents whose change of a non-additive ``figure`` (peak memory) is no larger than their
    children's together: a parent's peak rises with what its grown children add and keep, which
    says nothing of its own code."""
    change = {
        name: (now.get(name) or {}).get(figure, 0) - (before.get(name) or {}).get(figure, 0)
        for name in now.keys() | before.keys()
    }
    children: dict[str, int] = {}
    for name, moved in change.items():
        if name:
            parent = name.rpartition(".")[0]
            children[parent] = children.get(parent, 0) + abs(moved)
    return {name for name, moved in change.items() if name in children and abs(moved) <= children[name]}


def largest_layers(layers: dict[str, dict[str, Any]], figure: str, limit: int | None) -> str:
    # Leaves only: parents repeat their children's figures.
    names = [
        n for n in layers if n and layers[n].get(figure) and not any(other.startswith(n + ".") for other in layers)
    ]
    ranked = sorted(names, key=lambda n: -(layers[n].get(figure) or 0))
    total = layers.get("", {}).get(figure) or 0
    kind = FIGURES[figure]
    rows = [
        [
            name,
            layers[name].get("type", ""),
            format_quantity(layers[name].get(figure) or 0, kind),
            f"{100 * (layers[name].get(figure) or 0) / total:.1f}%" if total else "-",
        ]
        for name in ranked[: limit or len(ranked)]
    ]
    return text_table(["layer", "type", figure, "share"], rows, right_align_from=2)
