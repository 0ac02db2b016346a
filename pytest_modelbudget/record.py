"""The record of one budget's run: its figures, limits, baseline, verdict and notes. The session
makes it, xdist workers send it to the controller as a dict, the reports, ``--budget-compare`` and
the budget file's writer read it, and ``--budget-json`` writes it. Plain data, no torch.

``REPORT_VERSION`` versions the JSON report; a report without one is version 1 (before the
record was typed), which had the same keys and still loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from .figures import FIGURES

REPORT_VERSION = 2

Status = Literal["ok", "over_limit", "over_baseline", "tighten", "unmeasured"]


@dataclass(frozen=True)
class FigureCheck:
    """One figure held to its limit and its baseline."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "limit": self.limit,
            "baseline": self.baseline,
            "status": self.status,
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FigureCheck:
        return cls(
            figure=data["figure"],
            value=data.get("value"),
            limit=data.get("limit"),
            baseline=data.get("baseline"),
            status=data["status"],
            names=tuple(data.get("names") or ()),
        )


@dataclass(frozen=True)
class Verdict:
    """What the gate decided: each figure's check, the tolerances applied, and the failures that
    are not a figure (a baseline required but missing, a test that errored before measuring)."""

    checks: tuple[FigureCheck, ...] = ()
    #: Per figure.
    tolerance: Mapping[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    #: The budget's test errored before its figures were checked.
    errored: bool = False

    @property
    def failed(self) -> bool:
        return self.errored or bool(self.problems) or any(check.failed for check in self.checks)

    @property
    def status(self) -> str:
        if self.errored:
            return "error"
        if self.failed:
            return "failed"
        if any(check.status == "tighten" for check in self.checks):
            return "tighten"
        return "passed"

    def to_dict(self) -> dict[str, Any]:
        distinct = set(self.tolerance.values())
        tolerance: float | dict[str, float] | None = dict(self.tolerance) or None
        if len(distinct) == 1:
            tolerance = distinct.pop()  # one number where every figure has the same: the common case
        return {
            "status": self.status,
            "tolerance": tolerance,
            "checks": [check.to_dict() for check in self.checks],
            "problems": list(self.problems),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        tolerance = data.get("tolerance")
        return cls(
            checks=tuple(FigureCheck.from_dict(check) for check in data.get("checks") or ()),
            tolerance=dict.fromkeys(FIGURES, tolerance)
            if isinstance(tolerance, (int, float))
            else dict(tolerance or {}),
            problems=tuple(data.get("problems") or ()),
            errored=data.get("status") == "error",
        )


#: Keys written only when they say something.
_OPTIONAL = ("test_outcome", "failure", "error")


@dataclass(frozen=True)
class BudgetRecord:
    """One budget's run, as the reports and the JSON show it."""

    name: str
    nodeid: str
    #: Figure -> value, those measured.
    figures: Mapping[str, int]
    #: Figure -> ceiling, the marker's over the file's.
    limits: Mapping[str, int]
    #: The baseline's totals (None: none recorded).
    baseline: Mapping[str, int] | None
    verdict: Verdict
    #: Layer name -> {"type": class name, figure: value, ...}; the root is "".
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    mode: str | None = None
    #: "fake" or "real" (a fall-back run on the CPU).
    execution: str | None = None
    peak_memory_source: str | None = None
    parallel: Mapping[str, Any] | None = None
    peak_memory_split: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    uncounted_ops: Mapping[str, int] = field(default_factory=dict)
    #: Uncounted ops the budget allows (``allow_uncounted``): no caveat, no strict failure.
    allowed_uncounted: tuple[str, ...] = ()
    #: The torch version the figures were measured with.
    torch: str | None = None
    shared_params: tuple[tuple[str, ...], ...] = ()
    unused_params: tuple[str, ...] = ()
    #: Tied weights untied or newly tied since the baseline, in words.
    sharing_changes: tuple[str, ...] = ()
    #: The test's own outcome ("passed", "failed"): it can fail its own assert within budget.
    test_outcome: str | None = None
    #: The failure message, per-layer diff included.
    failure: str | None = None
    #: Why the budget's test errored before its figures were checked, in one line.
    error: str | None = None

    @classmethod
    def errored(cls, name: str, nodeid: str, outcome: str, error: str) -> BudgetRecord:
        return cls(
            name=name,
            nodeid=nodeid,
            figures={},
            limits={},
            baseline=None,
            verdict=Verdict(problems=(error,), errored=True),
            test_outcome=outcome,
            error=error,
        )

    def with_outcome(self, outcome: str) -> BudgetRecord:
        return replace(self, test_outcome=outcome)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what ``--budget-json`` writes per budget and xdist workers send."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in _OPTIONAL and value is None:
                continue
            data[item.name] = _plain(value)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetRecord:
        """A record from :meth:`to_dict`, or from a version-1 report (the same keys, untyped);
        keys it does not know are ignored, so a newer report's extra keys do not stop it."""
        known = {item.name for item in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["verdict"] = Verdict.from_dict(data.get("verdict") or {})
        for key in ("notes", "unused_params", "sharing_changes", "allowed_uncounted"):
            values[key] = tuple(values.get(key) or ())
        values["shared_params"] = tuple(tuple(group) for group in values.get("shared_params") or ())
        for key in ("figures", "limits", "layers", "peak_memory_split", "uncounted_ops"):
            values[key] = dict(values.get(key) or {})
        values.setdefault("nodeid", data.get("name", ""))
        values.setdefault("baseline", None)
        return cls(**values)


def _plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, recursively: what JSON and execnet carry."""
    if isinstance(value, Verdict):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
