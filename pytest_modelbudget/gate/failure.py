"""What a failed budget says: the figures over their limit or baseline, notes on how the figures
were obtained, and a per-layer diff against the baseline that names the layers that moved. Fed by
the budget's record (``record.py``) and the baseline it was held to; text out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..figures import BY_NAME, DIFF_ORDER, FIGURES, LAYER_FIGURES, PEAK_MEMORY
from ..quantities import format_pair, format_percent, format_quantity
from ..record import BudgetRecord, FigureCheck
from .render import elide_start, text_table
from .reports import caveats, structure_lines


@dataclass(frozen=True)
class RecordedBaseline:
    """What a failure reads of the baseline it was held to (``[budgets.NAME.baseline]``)."""

    totals: Mapping[str, int]
    layers: Mapping[str, Mapping[str, int]]
    #: How its peak_memory was obtained ("cuda" or "estimate"), and with which torch.
    peak_memory_source: str | None = None
    torch: str | None = None

    def all_layers(self) -> dict[str, dict[str, int]]:
        """Its layers, the root's line being the totals: what is left of them after the children
        is the code of the model's own forward."""
        layers = {"": {f: v for f, v in self.totals.items() if f in LAYER_FIGURES}}
        layers.update({name: dict(figures) for name, figures in self.layers.items()})
        return layers


def check_line(check: FigureCheck, tolerances: Mapping[str, float]) -> str:
    """One figure's failure (or move): value, limit or baseline, change and tolerance."""
    tolerance = tolerances.get(check.figure, 0.0)
    kind = FIGURES[check.figure]
    if check.status == "unmeasured":
        line = f"{check.figure} has a limit of {format_quantity(check.limit or 0, kind)} but was not measured"
        measured_by = BY_NAME[check.figure].measured_by
        return f"{line}: it needs {measured_by}" if measured_by else line
    assert check.value is not None
    if check.status == "over_limit":
        assert check.limit is not None
        value, limit = format_pair(check.value, check.limit, kind)
        beyond = "<" if BY_NAME[check.figure].floor else ">"
        line = f"{check.figure} {value} {beyond} limit {limit} ({_change(check.value, check.limit)}"
        if check.baseline is not None:
            # What the change did, beside how far over the line it landed.
            line += f"; {_change(check.value, check.baseline)} on baseline {format_pair(check.value, check.baseline, kind)[1]}"
        line += ")"
        return line + (f": {', '.join(check.names)}" if check.names else "")
    assert check.baseline is not None
    value, baseline = format_pair(check.value, check.baseline, kind)
    relation = ">" if (check.status == "over_baseline") != BY_NAME[check.figure].floor else "<"
    return f"{check.figure} {value} {relation} baseline {baseline} ({_change(check.value, check.baseline)}, tolerance {tolerance * 100:g}%)"


def _change(value: int, reference: int) -> str:
    delta = value - reference
    if reference == 0:
        return f"{delta:+,}"
    return format_percent(delta / reference)


MAX_LAYER_ROWS = 15
#: The per-layer diff shows at most this many figures (``figures.DIFF_ORDER``'s first) unless -vv.
MAX_DIFF_FIGURES = 3


def failure_message(
    record: BudgetRecord,
    baseline: RecordedBaseline | None,
    *,
    verbose: int = 0,
    memory_assumptions: Sequence[str] = (),
    torch_now: str | None = None,
    width: int | None = None,
) -> str:
    """The message of a failed budget: a headline that tells the story alone (pytest's short
    summary shows it), each failure, notes, then the layers that moved. ``memory_assumptions`` are
    what a peak memory estimate assumed; ``torch_now`` the torch of this run."""
    verdict = record.verdict
    layers = {name: dict(figures) for name, figures in record.layers.items()}
    notes = [*structure_lines(record), *provenance_notes(baseline, record, torch_now), *caveats(record)]
    memory_source = _memory_source(record.peak_memory_source, memory_assumptions)
    # A limit someone wrote, broken, is the headline; a move past the baseline comes after.
    failing = sorted((check for check in verdict.checks if check.failed), key=lambda c: c.status != "over_limit")
    reasons = [*verdict.problems, *(check_line(check, verdict.tolerance) for check in failing)]
    headline = f"{record.name}: {reasons[0]}" + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
    lines = [headline, f"model budget {record.name!r} {'exceeded' if failing else 'not checked'}:"]
    lines += [f"  {reason}" for reason in reasons]
    lines += [f"  note: {note}" for note in notes]
    if memory_source and any(check.figure == PEAK_MEMORY.name and check.value is not None for check in failing):
        # A figure estimated on CI and one measured on a GPU differ by the estimate's error.
        lines.append(f"  ({PEAK_MEMORY.name}: {memory_source})")
    measured = [check for check in failing if check.status != "unmeasured"]
    if not measured:
        return "\n".join(lines)
    failed = {c.figure for c in measured}
    over_limit = {c.figure for c in measured if c.status == "over_limit"}
    # The figures whose limits broke lead, then the most telling of the rest; a figure that has
    # no per-layer diff (roofline_time) is explained by the most telling two.
    figures = sorted((f for f in DIFF_ORDER if f in failed), key=lambda f: f not in over_limit) or list(DIFF_ORDER[:2])
    if verbose < 2:
        figures = figures[:MAX_DIFF_FIGURES]  # bytes and flops mostly follow params and macs
    limit = None if verbose >= 2 else MAX_LAYER_ROWS
    if baseline is not None:
        lines += ["", f"layers whose own {', '.join(figures)} changed (largest {figures[0]} change first):"]
        # -vv: every figure, whatever the terminal's width.
        fit = None if verbose >= 2 or width is None else width - 2
        lines.append(_indent(layer_diff(layers, baseline.all_layers(), figures, limit, fit)))
    else:
        lines += ["", f"largest layers by {figures[0]} (no baseline recorded; run pytest --update-budgets):"]
        lines.append(_indent(largest_layers(layers, figures[0], limit)))
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def own_figures(layers: Mapping[str, Mapping[str, Any]], figures: Sequence[str]) -> dict[str, dict[str, int]]:
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
    layers: Mapping[str, Mapping[str, Any]],
    baseline_layers: Mapping[str, Mapping[str, Any]],
    figures: list[str],
    limit: int | None,
    width: int | None = None,
) -> str:
    """One row per layer whose own figures changed (added, removed, grown, shrunk), ranked by the
    change of ``figures[0]``, the figure that failed; a column group per figure. Given a
    ``width``, a table wider than it drops what says least first: the later figures' groups, the
    layers' types, the changes' percentages, then the start of long layer names."""
    now, before = own_figures(layers, figures), own_figures(baseline_layers, figures)
    explained = {f: _explained_by_children(now, before, f) for f in figures if not BY_NAME[f].additive}
    rows: list[tuple[tuple[int, ...], list[str], list[tuple[str, str, str, str]]]] = []
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
        groups = []
        for figure, change in zip(figures, changes):
            kind = FIGURES[figure]
            before_value, after_value = (old or {}).get(figure), (new or {}).get(figure)
            percent = f" ({format_percent(change / before_value)})" if before_value and change else ""
            groups.append(
                (
                    "-" if old is None or before_value is None else format_quantity(before_value, kind),
                    "-" if new is None or after_value is None else format_quantity(after_value, kind),
                    "=" if change == 0 else ("+" if change > 0 else "-") + format_quantity(abs(change), kind),
                    percent,
                )
            )
        head = [name or "(root)", (layers.get(name) or {}).get("type", "-"), status]
        rows.append((tuple(-abs(c) for c in own_changes), head, groups))
    if not rows:
        return "(no layer's own figures changed)"
    rows.sort(key=lambda item: item[0])
    shown = rows if limit is None else rows[:limit]

    def render(groups: int, types: bool, percents: bool, name_width: int | None) -> str:
        headers = ["layer", *(["type"] if types else []), ""]
        for figure in figures[:groups]:
            headers += [f"{figure} before", "after", "change"]
        body = []
        # Narrowed to fewer figures: the layers that moved in those (the rest are counted below).
        listed = [row for row in shown if any(row[0][:groups])]
        for _, (name, kind, status), cells in listed:
            if name_width is not None:
                name = elide_start(name, name_width)
            row = [name, *([kind] if types else []), status]
            for before_cell, after_cell, change, percent in cells[:groups]:
                row += [before_cell, after_cell, change + (percent if percents else "")]
            body.append(row)
        return text_table(headers, body, right_align_from=3 if types else 2)

    def footnote(groups: int) -> str:
        if groups == len(figures):
            return ""
        hidden = sum(1 for row in shown if not any(row[0][:groups]))
        more = f", and {hidden} more layer{'s' if hidden > 1 else ''}" if hidden else ""
        return f"\n(-vv shows {', '.join(figures[groups:])} too{more})"

    narrowed = len(figures)
    table = render(narrowed, True, True, None)
    if width is not None:
        choices = [(n, True, True, None) for n in range(len(figures) - 1, 0, -1)]
        choices += [(1, False, True, None), (1, False, False, None)]
        for choice in choices:
            if _widest(table) <= width:
                break
            narrowed = choice[0]
            table = render(*choice)
        if _widest(table) > width:
            # Still too wide: the start of long names goes (the end says which layer).
            names = max(len(head[0]) for _, head, _ in shown)
            table = render(1, False, False, max(12, names - (_widest(table) - width)))
    table += footnote(narrowed)
    if len(shown) < len(rows):
        table += f"\n... {len(rows) - len(shown)} more layers (-vv shows all)"
    return table


def _widest(table: str) -> int:
    return max(len(line) for line in table.splitlines())


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


def largest_layers(layers: Mapping[str, Mapping[str, Any]], figure: str, limit: int | None) -> str:
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


def provenance_notes(baseline: RecordedBaseline | None, record: BudgetRecord, torch_now: str | None) -> list[str]:
    """Where the baseline and this run were not obtained alike, so figures may differ for that
    alone: peak memory measured on one side and estimated on the other, another torch."""
    if baseline is None:
        return []
    notes = []
    recorded = baseline.peak_memory_source
    if recorded and record.peak_memory_source and recorded != record.peak_memory_source:
        words = {"cuda": "measured on CUDA", "estimate": "estimated"}
        notes.append(
            f"the baseline's peak_memory was {words[recorded]}, this run's is {words[record.peak_memory_source]}: "
            "they differ by the estimate's error (docs/MEMORY.md)"
        )
    now = torch_now or record.torch
    if baseline.torch and now and _minor(baseline.torch) != _minor(now):
        notes.append(f"the baseline was recorded with torch {baseline.torch}, this run uses torch {now}")
    return notes


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def _memory_source(source: str | None, assumptions: Sequence[str]) -> str | None:
    """How ``peak_memory`` was obtained, in words."""
    if source == "cuda":
        return "measured on CUDA"
    if source == "estimate":
        return "estimate; " + "; ".join(assumptions)
    return None
