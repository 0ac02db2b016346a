"""The state of one pytest run: the loaded budget file, what each budget test measured, and the
policy that turns a measurement into pass, fail or a new baseline."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from ..budgets.loader import locate
from ..budgets.schema import BudgetFile, Entry
from ..errors import BudgetExceeded, BudgetUsageError
from ..figures import COMPARED, FIGURES, UNUSED_PARAMS
from ..gate.failure import RecordedBaseline, failure_message
from ..gate.verdict import evaluate, not_allowed, sharing_changes
from ..quantities import byte_units, parse_percent
from ..record import BudgetRecord
from .marker import BudgetMarker

if TYPE_CHECKING:
    from ..gate.compare import BaseReport
    from ..stats import ModelStats

RECORD_KEY = "modelbudget"


def torch_version() -> str:
    # From package metadata: the report header must not import torch.
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "not installed"


@dataclass(eq=False)  # registered as a plugin: must stay hashable
class BudgetSession:
    config: pytest.Config
    path: Path
    file: BudgetFile
    update: bool
    prune: bool
    default_tolerance: float
    #: Fail what would pass without checking anything: budgets without a baseline, markers never
    #: checked, stale entries (``--budget-strict``, or CI).
    strict: bool = False
    #: name -> record, filled from test reports (so it works the same under pytest-xdist)
    records: dict[str, BudgetRecord] = field(default_factory=dict)
    collected_ids: set[str] = field(default_factory=set)
    collected_files: set[str] = field(default_factory=set)
    marker_names: set[str] = field(default_factory=set)
    deselected: int = 0
    stale: list[str] = field(default_factory=list)
    #: Stale entries people wrote in, with what (limits, a comment): never pruned.
    hand_written: dict[str, list[str]] = field(default_factory=dict)
    #: Stale entries --prune-budgets removed.
    removed: list[str] = field(default_factory=list)
    written: bool = False
    #: Why --update-budgets could not write the file, in one line.
    write_error: str | None = None
    #: Reports (--budget-json, --budget-markdown, the step summary) that could not be written.
    report_errors: list[str] = field(default_factory=list)
    #: Budget names checked by more than one test: name -> their node ids. Never written.
    conflicts: dict[str, set[str]] = field(default_factory=dict)
    #: ``--budget-compare``: the base report's path and its budgets.
    compare_base: BaseReport | None = None

    # -- hooks: this object is registered as a plugin for the run ----------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Under xdist the controller sees every worker's reports here: one place gathers all.
        if (
            report.failed
            and "budget" in report.keywords
            and not any(key == RECORD_KEY for key, _ in report.user_properties)
        ):
            # A budget test that errored before its figures were checked (its factory raised, the
            # model would not run): the reports list it, so that it is not silently missing.
            # A declared model's budget is named after its entry; an in-code test's, its node id.
            file, _, rest = report.nodeid.partition("::")
            name = rest if (self.config.rootpath / file).resolve() == self.path else report.nodeid
            if name not in self.records:
                self.records[name] = errored_record(name, report)
            return
        if report.when == "call":
            for key, value in report.user_properties:
                if key == RECORD_KEY:
                    record = BudgetRecord.from_dict(cast(dict[str, Any], value))
                    earlier = self.records.get(record.name)
                    if earlier is not None and earlier.nodeid != record.nodeid:
                        # Under xdist each test ran in its own worker: only here do both meet.
                        self.conflicts.setdefault(record.name, {earlier.nodeid}).add(record.nodeid)
                        continue
                    # The budget's verdict is not the test's: a test can fail its own assert.
                    self.records[record.name] = record.with_outcome(report.outcome)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Under xdist the controller collects nothing itself: the workers say what they did.
        self.collected_ids.update(ids)
        self.collected_files.update(nodeid.split("::", 1)[0] for nodeid in ids)

    # -- resolving what applies to a test -----------------------------------------------------------
    def tolerance(self, entry: Entry | None, marker: BudgetMarker | None) -> dict[str, float]:
        """Each figure's tolerance: the marker's, else the entry's, else [settings]', else the ini
        option's; a per-figure table leaves the figures it does not name to the next level."""
        levels = [
            marker.tolerance if marker else None,
            entry.tolerance if entry else None,
            self.file.settings.tolerance,
        ]
        chosen: dict[str, float] = {}
        for figure in FIGURES:
            for level in levels:
                value = level.get(figure) if isinstance(level, dict) else level
                if value is not None:
                    chosen[figure] = value
                    break
            else:
                chosen[figure] = self.default_tolerance
        return chosen

    def compared_figures(self) -> tuple[str, ...]:
        figures = self.file.settings.figures
        # [] means "compare no figure with the baseline" (limits only), not "the default".
        return tuple(COMPARED if figures is None else figures)

    def line_of(self, *loc: str) -> str:
        text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        line = locate(text, ["budgets", *loc])
        return f"{self.path.name}:{line}" if line else self.path.name

    # -- the policy --------------------------------------------------------------------------------
    def check(
        self,
        item: pytest.Item,
        stats: ModelStats,
        *,
        name: str,
        marker: BudgetMarker | None,
    ) -> None:
        """Compare ``stats`` with limits (marker > file entry) and the baseline; record the result
        on the test report; raise :class:`BudgetExceeded` on failure."""
        __tracebackhide__ = True
        entry = self.file.budgets.get(name)
        limits = {**(entry.limits.as_dict() if entry else {}), **(dict(marker.limits) if marker else {})}
        tolerance = self.tolerance(entry, marker)
        baseline = entry.baseline if entry and entry.baseline and not self.update else None
        allowed = tuple(
            sorted({*(marker.allow_uncounted if marker else ()), *((entry.allow_uncounted or []) if entry else [])})
        )
        unpriced = not_allowed(stats.uncounted_ops, allowed)
        verdict = evaluate(
            name,
            stats.figures(),
            limits,
            baseline.totals() if baseline else None,
            tolerance,
            self.compared_figures(),
            require_baseline=self.strict and not self.update,
            names={UNUSED_PARAMS.name: tuple(stats.unused_params)},
            # Outside strict mode a silent zero is a line of the summary (reports.caveats).
            unpriced=unpriced if self.strict else None,
        )
        record = BudgetRecord(
            name=name,
            nodeid=item.nodeid,
            figures=stats.figures(),
            limits=limits,
            baseline=entry.baseline.totals() if entry and entry.baseline else None,
            verdict=verdict,
            layers=stats.layer_figures(),
            mode=stats.mode,
            execution=stats.execution,
            peak_memory_source=stats.peak_memory_source,
            parallel=stats.parallel,
            peak_memory_split=stats.peak_memory_split,
            notes=tuple(stats.notes),
            uncounted_ops=stats.uncounted_ops,
            allowed_uncounted=allowed,
            torch=torch_version(),
            shared_params=tuple(tuple(group) for group in stats.shared_params),
            unused_params=tuple(stats.unused_params),
            sharing_changes=tuple(sharing_changes(baseline.shared_params, stats.shared_params) if baseline else ()),
        )
        earlier = self.records.get(name)
        if earlier is not None and earlier.nodeid != item.nodeid:
            self.conflicts.setdefault(name, {earlier.nodeid}).add(item.nodeid)
            raise BudgetUsageError(
                f"{item.nodeid}: budget {name!r} is also checked by {earlier.nodeid}: one name, one "
                "budget; give each model its own name=..."
            )
        if any(
            key == RECORD_KEY and cast(dict[str, Any], value)["name"] == name for key, value in item.user_properties
        ):
            raise BudgetUsageError(
                f"{item.nodeid}: budget {name!r} was checked twice in one test; pass name=... to "
                "model_budget.check() for each model"
            )
        if verdict.failed:
            recorded = None
            if baseline:
                recorded = RecordedBaseline(
                    totals=baseline.totals(),
                    layers={n: layer.model_dump(exclude_none=True) for n, layer in baseline.layers.items()},
                    peak_memory_source=baseline.peak_memory_source,
                    torch=baseline.torch,
                )
            with byte_units(self.file.settings.units):
                message = failure_message(
                    record,
                    recorded,
                    verbose=self.config.get_verbosity(),
                    memory_assumptions=stats.peak_memory_approximations,
                    width=self.config.get_terminal_writer().fullwidth,
                )
            # The Markdown report shows it under the budget's row.
            record = replace(record, failure=message)
        # A dict: under xdist it travels to the controller through execnet.
        item.user_properties.append((RECORD_KEY, record.to_dict()))
        if record.failure is not None:
            raise BudgetExceeded(record.failure)

    # -- end of run -----------------------------------------------------------------------------------
    def stale_entries(self) -> list[str]:
        """Entries keyed by a node id whose test file was collected but whose test was not.

        Entries named with ``name=`` are never judged: which test uses a name is only known when
        that test runs, and a run over part of the suite must not call the rest stale.
        """
        option = self.config.option
        # Under xdist the workers deselect, and the controller is not told: -k or -m narrows.
        distributed = getattr(option, "dist", "no") != "no"
        narrowed = distributed and (getattr(option, "keyword", "") or getattr(option, "markexpr", ""))
        if self.deselected or narrowed:
            return []  # a narrowed run says nothing about the tests it did not select
        by_node_id = self._files_selected_by_node_id()
        stale = []
        for name, entry in self.file.budgets.items():
            if entry.factory is not None or "::" not in name:
                continue
            if name in self.records or name in self.collected_ids or name in self.marker_names:
                continue
            test_file = name.split("::", 1)[0]
            if test_file in self.collected_files and test_file not in by_node_id:
                stale.append(name)
        return stale

    def successor_of(self, stale: str) -> str | None:
        """A budget new in this run whose figures are what the stale entry's baseline recorded:
        most likely the same model under a new test name."""
        entry = self.file.budgets.get(stale)
        recorded = entry.baseline.totals() if entry and entry.baseline else {}
        if not recorded:
            return None
        for name, record in sorted(self.records.items()):
            if record.baseline is None and all(record.figures.get(f) == v for f, v in recorded.items()):
                return name
        return None

    def _files_selected_by_node_id(self) -> set[str]:
        """Files named with a node id on the command line (``test_a.py::test_one``): only part of
        them was collected, so their other entries are not stale."""
        files = set()
        for arg in self.config.args:
            if "::" in arg:
                path = Path(self.config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
                try:
                    files.add(path.relative_to(self.config.rootpath).as_posix())
                except ValueError:
                    files.add(path.as_posix())
        return files


SESSION_KEY = pytest.StashKey[BudgetSession]()


def parse_tolerance_option(value: str, source: str) -> float:
    try:
        return parse_percent(value)
    except ValueError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


def errored_record(name: str, report: pytest.TestReport) -> BudgetRecord:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    first_line = next((line for line in message.splitlines() if line.strip()), "errored")
    return BudgetRecord.errored(name, report.nodeid, report.outcome, first_line)
