"""The pytest plugin (entry point ``modelbudget``, this module): its hooks and the
``model_budget`` fixture. The pieces sit beside it: ``options.py``, ``marker.py`` (the ``budget``
marker), ``fixture.py``, ``declared.py`` (models declared in ``budgets.toml``) and ``session.py``
(one run's state and policy). It uses the budget file (``budgets/``), the gate (``gate/``) and,
only when a budget test runs, the engine.

Nothing here imports torch at import time: a run with no budget test never pays for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import BudgetExceeded, BudgetFileError
from .options import (
    MARKER_HELP,
    add_options,
    budget_path,
    budget_path_as_named,
    named_file,
    report_path,
    rootdir_moved_by_a_value,
    strict,
)

#: A budget marker that could not be read, on an xdist worker: the test fails at setup with it.
MARKER_PROBLEM_KEY = pytest.StashKey[str]()

if TYPE_CHECKING:
    from .fixture import ModelBudget
    from .session import BudgetSession


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    from ..budgets.loader import load_budget_file
    from .session import SESSION_KEY, BudgetSession, parse_tolerance_option

    columns, source = _columns(config)
    if columns:
        from ..stats import FIGURES

        unknown = [c for c in columns if c not in FIGURES]
        if unknown:
            raise pytest.UsageError(f"{source}: unknown figure {unknown[0]!r}; expected some of {', '.join(FIGURES)}")
    moved = rootdir_moved_by_a_value(config)
    if moved:
        raise pytest.UsageError(moved)
    path = budget_path(config)
    named = named_file(config)
    if named and not path.exists() and not config.getoption("update_budgets"):
        # A typo here would make every budget "new" and the run pass having checked nothing.
        raise pytest.UsageError(
            f"{named}: no such budget file ({path}); fix the path, or create it with pytest --update-budgets"
        )
    try:
        budget_file = load_budget_file(path)
    except BudgetFileError as exc:
        raise pytest.UsageError(str(exc)) from None
    session = BudgetSession(
        config=config,
        path=path,
        file=budget_file,
        update=config.getoption("update_budgets"),
        prune=config.getoption("prune_budgets"),
        default_tolerance=parse_tolerance_option(
            config.getini("modelbudget_tolerance"), "ini option modelbudget_tolerance"
        ),
        strict=strict(config),
    )
    compare_with = report_path(config, "budget_compare", "modelbudget_compare")
    if compare_with and not _is_worker(config):
        from ..errors import BudgetUsageError
        from ..gate.compare import load_base

        option = "--budget-compare" if config.getoption("budget_compare") else "ini option modelbudget_compare"
        try:  # read now: a wrong path is a usage error before any model is measured
            session.compare_base = load_base(Path(compare_with), option)
        except BudgetUsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "modelbudget-session")
    for name, entry in budget_file.budgets.items():
        if entry.kwargs is not None:
            config.issue_config_time_warning(
                pytest.PytestDeprecationWarning(
                    f"{session.line_of(name, 'kwargs')}: budgets.{name}.kwargs is now model_kwargs (the factory's "
                    "arguments; forward's are forward_kwargs): rename it"
                ),
                stacklevel=2,
            )
    declared = any(entry.factory for entry in budget_file.budgets.values())
    # Declared models live in the budget file, which collecting testpaths would not visit.
    if declared and _collects_directories(config) and path.exists() and str(path) not in config.args:
        config.args.append(str(path))


def _columns(config: pytest.Config) -> tuple[list[str] | None, str]:
    """The summary table's figures, from the option or the ini option, and where they came from."""
    given = config.getoption("budget_columns")
    if given:
        return [c.strip() for c in given.split(",") if c.strip()], "--budget-columns"
    configured = config.getini("modelbudget_columns")
    if configured:
        return [c.strip() for c in configured.split(",") if c.strip()], "ini option modelbudget_columns"
    return None, ""


def _collects_directories(config: pytest.Config) -> bool:
    """A run over testpaths or directories gets the declared models; one over named test files
    or node ids does not (``pytest budgets.toml`` runs only them)."""
    if getattr(config, "args_source", None) != pytest.Config.ArgsSource.ARGS:
        return True
    return any(Path(arg.split("::", 1)[0]).is_dir() for arg in config.args)


def _session(config: pytest.Config) -> BudgetSession | None:
    from .session import SESSION_KEY

    return config.stash.get(SESSION_KEY, None)


def pytest_report_header(config: pytest.Config) -> str | None:
    session = _session(config)
    if session is None:
        return None
    from .session import torch_version

    budgets = session.file.budgets
    declared = sum(1 for entry in budgets.values() if entry.factory)
    shown = session.path.name if not session.path.exists() else os.path.relpath(session.path, config.rootpath)
    state = "" if session.path.exists() else ", not found: it will be created by --update-budgets"
    return f"modelbudget: {shown} ({len(budgets)} budgets, {declared} declared models{state}), torch {torch_version()}"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    session = _session(parent.config)
    # The file where it was configured (or what that links to); a symlink to it elsewhere in the
    # tree is the same file, and its models would run twice.
    if session is not None and file_path.absolute() in (session.path, budget_path_as_named(parent.config)):
        from .declared import BudgetsFile

        return BudgetsFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    budget_session = _session(config)
    if budget_session is None:
        return
    from ..errors import BudgetUsageError
    from .fixture import MARKER_KEY
    from .marker import BudgetMarker

    problems = []
    for item in items:
        budget_session.collected_ids.add(item.nodeid)
        budget_session.collected_files.add(item.nodeid.split("::", 1)[0])
        markers = list(item.iter_markers("budget"))  # closest first: method, class, module
        if not markers:
            continue
        # A class's (or module's) limits hold for its tests; a closer marker overrides them
        # figure by figure, never drops them.
        merged: dict[str, Any] = {}
        for marker in reversed(markers):
            merged.update(marker.kwargs)
        args = next((marker.args for marker in markers if marker.args), ())
        try:
            parsed = BudgetMarker.from_kwargs(merged, args)
        except BudgetUsageError as exc:
            problems.append(f"{item.nodeid}: {exc}")
            item.stash[MARKER_PROBLEM_KEY] = f"{item.nodeid}: {exc}"
            continue
        item.stash[MARKER_KEY] = parsed
        if parsed.name:
            budget_session.marker_names.add(parsed.name)
    if problems and not _is_worker(config):
        raise pytest.UsageError("invalid budget marker(s):\n  " + "\n  ".join(problems))
    if _is_worker(config):
        from .scheduling import longest_first

        longest_first(items, lambda item: _baseline_of(budget_session, item))
    # An xdist worker cannot stop the run (xdist reports a crash and prints nothing of ours):
    # each such test fails at setup with the message instead.


def _baseline_of(budget_session: BudgetSession, item: pytest.Item) -> Any:
    """The recorded baseline of the budget ``item`` checks, where it is known at collection."""
    from .declared import DeclaredModel
    from .fixture import MARKER_KEY

    if isinstance(item, DeclaredModel):
        name = item.name
    elif MARKER_KEY in item.stash:
        name = item.stash[MARKER_KEY].name or item.nodeid
    else:
        return None
    entry = budget_session.file.budgets.get(name)
    return entry.baseline if entry is not None else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    problem = item.stash.get(MARKER_PROBLEM_KEY, None)
    if problem is not None:
        pytest.fail(f"invalid budget marker: {problem}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    crash = getattr(report.longrepr, "reprcrash", None)
    if call.excinfo is not None and crash is not None and call.excinfo.errisinstance(BudgetExceeded):
        # The short summary repeats this message in full on CI and with -vv: its first line
        # carries the numbers; the per-layer table stays in the long report.
        first_line = str(call.excinfo.value).splitlines()[0]
        from .declared import DeclaredModel

        # A declared model's item is a budget: the exception's name would say nothing more.
        crash.message = first_line if isinstance(item, DeclaredModel) else f"{call.excinfo.typename}: {first_line}"
    if report.when == "call" and report.passed and _session(item.config) is not None:
        from .fixture import MARKER_KEY
        from .session import RECORD_KEY

        marker = item.stash.get(MARKER_KEY, None)
        if marker is not None and not any(key == RECORD_KEY for key, _ in item.user_properties):
            # A budget marker that nothing held a model to would pass for ever.
            limits = ", ".join(f"{figure}={value}" for figure, value in marker.limits.items())
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid}: @pytest.mark.budget({limits}) but model_budget.check() was never called: "
                "call it on the model this test budgets, or remove the marker"
            )
    return report


@pytest.fixture
def model_budget(request: pytest.FixtureRequest) -> ModelBudget:
    """Measure models and hold them to their budget: ``model_budget.check(model, input_size=...)``."""
    from .fixture import ModelBudget
    from .scheduling import share_cores

    session = _session(request.config)
    assert session is not None
    share_cores()  # before the test builds its model
    return ModelBudget(request.node, session)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    budget_session = _session(config)
    if budget_session is None or _is_worker(config):
        return
    from ..budgets.writer import hand_written, update_baselines

    budget_session.stale = budget_session.stale_entries()
    for name in budget_session.conflicts:
        budget_session.records.pop(name, None)  # which test's figures would be a coin toss
    if budget_session.conflicts and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    # A budget that errored has no figures to record: its baseline stays as it was.
    records = (
        {n: r for n, r in budget_session.records.items() if not r.verdict.errored} if budget_session.update else {}
    )
    # What people wrote in a stale entry (limits, comments) is never removed by --prune-budgets:
    # a renamed test's limits must be moved, not lost.
    budget_session.hand_written = hand_written(budget_session.path, budget_session.stale)
    remove = [n for n in budget_session.stale if n not in budget_session.hand_written] if budget_session.prune else []
    budget_session.removed = remove
    if records or remove:
        try:
            budget_session.written = update_baselines(budget_session.path, records, remove)
        except (OSError, BudgetFileError) as exc:
            # One line, the tests' verdicts kept, the reports still written; the file untouched.
            # The tests' verdict stands (as for the reports): the line says what was not done.
            budget_session.write_error = (
                str(exc) if isinstance(exc, BudgetFileError) else f"{budget_session.path}: not written: {exc}"
            )
    left = [n for n in budget_session.stale if n not in budget_session.removed]
    if budget_session.strict and left and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _write_reports(config, budget_session)


def _write_reports(config: pytest.Config, budget_session: BudgetSession) -> None:
    from ..quantities import byte_units

    with byte_units(budget_session.file.settings.units):
        _write_reports_in_units(config, budget_session)


def _write_reports_in_units(config: pytest.Config, budget_session: BudgetSession) -> None:
    from ..gate.documents import comparison_with, json_document, markdown_document
    from ..gate.reports import write_text
    from .session import torch_version

    def write(option: str, path: str, text: str, append: bool = False) -> None:
        # A report that cannot be written (a directory, a full disk, no permission) is one line
        # in the summary: the tests' verdicts stand, and the other reports are still written.
        try:
            write_text(Path(path), text, append=append)
        except OSError as exc:
            budget_session.report_errors.append(f"{option} {path}: not written: {exc.strerror or exc}")

    records = budget_session.records
    base = budget_session.compare_base
    comparison = comparison_with(base, records)
    json_path = report_path(config, "budget_json", "modelbudget_json")
    if json_path:
        extra: dict[str, Any] = {
            "torch": torch_version(),
            "budgets_file": str(budget_session.path),
            "stale": sorted(budget_session.stale),
        }
        # The branch and commit the report was made on: a later --budget-compare names its base so.
        revision = git_revision(config.rootpath)
        if revision:
            extra["git"] = revision
        write("--budget-json", json_path, json_document(records, extra, base, comparison))
    markdown_path = report_path(config, "budget_markdown", "modelbudget_markdown")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if markdown_path or (step_summary and records):
        markdown = markdown_document(records, budget_session.stale, base, comparison)
        if markdown_path:  # written on every run: a file left from an earlier one would tell its story
            write("--budget-markdown", markdown_path, markdown)
        if step_summary and records:
            write("GITHUB_STEP_SUMMARY", step_summary, markdown + "\n", append=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    budget_session = _session(config)
    if budget_session is None or _is_worker(config):
        return
    from ..quantities import byte_units

    with byte_units(budget_session.file.settings.units):
        _terminal_summary(terminalreporter, config, budget_session)


#: pytest's markup for a verdict cell (shown only where pytest colours: a tty, or --color=yes).
VERDICT_MARKUP = {
    "failed": {"red": True, "bold": True},
    "error": {"red": True, "bold": True},
    "tighten": {"yellow": True},
    "passed": {"green": True},
}


def _terminal_summary(terminalreporter: Any, config: pytest.Config, budget_session: BudgetSession) -> None:
    from ..gate.compare import compare, compare_lines
    from ..gate.reports import caveat_lines, moved_lines, terminal_table, tighten_lines

    records = budget_session.records
    stale = budget_session.stale
    _on_the_last_line(terminalreporter, budget_session)
    if (
        not records
        and not stale
        and not budget_session.conflicts
        and not budget_session.report_errors
        and not budget_session.compare_base
    ):
        return
    terminalreporter.section("model budgets")
    for line in budget_session.report_errors:
        terminalreporter.write_line(line, red=True)
    for name, node_ids in sorted(budget_session.conflicts.items()):
        terminalreporter.write_line(
            f"budget {name!r} is checked by {len(node_ids)} tests ({', '.join(sorted(node_ids))}): one name, one "
            "budget; give each model its own name=... (not recorded, the run fails)",
            red=True,
        )
    if records and config.get_verbosity() < 0:
        failed = sum(1 for r in records.values() if r.verdict.failed)
        terminalreporter.write_line(f"{len(records)} budget(s), {failed} failed (the table is shown without -q)")
    elif records:
        columns, _ = _columns(config)
        # Fitted to a terminal; a CI log (not a tty) is read scrolled sideways, and keeps every column.
        width = terminalreporter._tw.fullwidth if getattr(terminalreporter, "isatty", False) else None
        for line in terminal_table(records.values(), columns, width).splitlines():
            _write_row(terminalreporter, line)
    for line in caveat_lines(records.values()):
        terminalreporter.write_line(line, yellow=True)
    for line in tighten_lines(records.values()):
        terminalreporter.write_line(line)
    if budget_session.write_error:
        terminalreporter.write_line(budget_session.write_error, red=True)
    elif budget_session.update:
        for line in moved_lines(records.values()):
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            f"baselines of {len(records)} budget(s) "
            f"{'written to' if budget_session.written else 'unchanged in'} {budget_session.path}"
        )
    if budget_session.compare_base:
        base = budget_session.compare_base
        for line in compare_lines(compare(base.budgets, records), base.label):
            terminalreporter.write_line(line)
    if stale:
        _stale_summary(terminalreporter, budget_session)


def git_revision(root: Path) -> dict[str, str] | None:
    """The branch and commit this run is of: GitHub's variables in a workflow (a pull request's
    own branch), else git's, else None (not a repository, no git)."""
    branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME")
    commit = os.environ.get("GITHUB_SHA")
    if not commit:
        import subprocess

        def git(*args: str) -> str | None:
            try:
                done = subprocess.run(
                    ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
                )
            except (OSError, subprocess.SubprocessError):
                return None
            return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None

        commit = git("rev-parse", "HEAD")
        branch = branch or git("rev-parse", "--abbrev-ref", "HEAD")
        if branch == "HEAD":  # detached: no branch to name
            branch = None
    if not commit:
        return None
    return {"branch": branch or "", "commit": commit}


def _on_the_last_line(terminalreporter: Any, budget_session: BudgetSession) -> None:
    """What fails the run besides its tests, counted in pytest's last line ("4 passed, 1 stale
    budget entry failing the run"): a red job whose last line read "4 passed" would send the
    reader looking for a test that failed."""
    stats = terminalreporter.stats
    left = [n for n in budget_session.stale if n not in budget_session.removed] if budget_session.strict else []
    if left:
        stats.setdefault(f"stale budget entr{'y' if len(left) == 1 else 'ies'} failing the run", []).extend(left)
    conflicts = sorted(budget_session.conflicts)
    if conflicts:
        stats.setdefault(f"budget name{'' if len(conflicts) == 1 else 's'} checked by several tests", []).extend(
            conflicts
        )


def _entries(count: int) -> str:
    return f"{count} stale budget entr{'y' if count == 1 else 'ies'}"


def _stale_summary(terminalreporter: Any, budget_session: BudgetSession) -> None:
    """Stale entries: those removed, those --prune-budgets would remove, and those it never
    removes because people wrote in them (a renamed test's limits), each with what to do."""
    removed = budget_session.removed
    if removed:
        terminalreporter.write_line(f"{_entries(len(removed))} (removed):")
        for name in removed:
            terminalreporter.write_line(f"  {name}")
    prunable = [n for n in budget_session.stale if n not in removed and n not in budget_session.hand_written]
    if prunable:
        terminalreporter.write_line(f"{_entries(len(prunable))} (no test stands for them):")
        for name in prunable:
            terminalreporter.write_line(f"  {name}")
        terminalreporter.write_line(
            "  remove them with pytest --update-budgets --prune-budgets"
            + (" (strict mode: they fail the run)" if budget_session.strict else ""),
            red=budget_session.strict,
        )
    kept = budget_session.hand_written
    if kept:
        terminalreporter.write_line(
            f"{_entries(len(kept))} with what people wrote in them (no test stands for them; "
            "--prune-budgets never removes these):",
            red=budget_session.strict,
        )
        for name, written in kept.items():
            successor = budget_session.successor_of(name)
            hint = f"; {successor} has the figures of its baseline: renamed? move them there" if successor else ""
            terminalreporter.write_line(f"  {name}: {', '.join(written)}{hint}")
        terminalreporter.write_line(
            "  move what they hold to the budget that replaced them (or delete them by hand)"
            + (" (strict mode: they fail the run)" if budget_session.strict else ""),
            red=budget_session.strict,
        )


def _write_row(terminalreporter: Any, line: str) -> None:
    """A table line, its verdict (the last cell) coloured where pytest colours."""
    verdict = next(
        (v for v in ("passed, test failed", "tighten, test failed", *VERDICT_MARKUP) if line.endswith("  " + v)), None
    )
    if verdict is None:
        terminalreporter.write_line(line)
        return
    markup = VERDICT_MARKUP["failed"] if verdict.endswith("test failed") else VERDICT_MARKUP[verdict]
    terminalreporter.write(line[: len(line) - len(verdict)])
    terminalreporter.write_line(verdict, **markup)
