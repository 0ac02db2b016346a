"""The plugin's command-line options and ini settings, and where they put the budget file."""

from __future__ import annotations

import inspect
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from ..options import MARKER_KEYS

DEFAULT_FILE = "budgets.toml"

MARKER_HELP = (
    f"budget(**limits, {', '.join(f'{key}=None' for key in MARKER_KEYS)}): hold the models "
    'this test checks with the model_budget fixture to these limits, e.g. budget(params="12M", macs="1.9G")'
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("modelbudget", "model budgets (pytest-modelbudget)")
    group.addoption(
        "--update-budgets",
        action="store_true",
        default=False,
        help="record the figures of the budget tests that ran as their new baselines",
    )
    group.addoption(
        "--prune-budgets",
        action="store_true",
        default=False,
        help="with a full run, remove budget entries whose test no longer exists",
    )
    group.addoption(
        "--budget-strict",
        action="store_true",
        default=None,
        help="fail budgets without a baseline, markers never checked and stale entries "
        "(the default when the CI environment variable is set)",
    )
    group.addoption(
        "--budgets-file", default=None, metavar="PATH", help="budget file (default: budgets.toml at the rootdir)"
    )
    group.addoption("--budget-json", default=None, metavar="PATH", help="write every figure and verdict as JSON")
    group.addoption("--budget-markdown", default=None, metavar="PATH", help="write the summary table as Markdown")
    group.addoption(
        "--budget-columns",
        default=None,
        metavar="FIGURES",
        help="figures in the summary table, e.g. params,macs (default: all that fit the terminal)",
    )
    group.addoption(
        "--budget-compare",
        default=None,
        metavar="BASE.json",
        help="compare this run with another run's --budget-json report (the base branch's) and report every "
        "change, passing or not; the verdict is unchanged",
    )
    parser.addini("modelbudget_file", "budget file, relative to the ini file", default=DEFAULT_FILE)
    parser.addini("modelbudget_columns", "figures in the summary table (as --budget-columns), e.g. params,macs")
    parser.addini(
        "modelbudget_compare", "compare with this --budget-json report (as --budget-compare), relative to the ini file"
    )
    parser.addini("modelbudget_tolerance", 'default tolerance above a baseline, e.g. "1%"', default="1%")
    parser.addini(
        "modelbudget_strict", "strict mode (as --budget-strict); default: on when CI is set", type="bool", default=None
    )
    # The one-shot actions (--update-budgets, --prune-budgets) have no ini twin: a setting that
    # rewrote the budget file on every run would record every regression as the new baseline.
    parser.addini(
        "modelbudget_json", "write the JSON report here on every run (as --budget-json), relative to the ini file"
    )
    parser.addini(
        "modelbudget_markdown",
        "write the Markdown report here on every run (as --budget-markdown), relative to the ini file",
    )


def report_path(config: pytest.Config, option: str, ini: str) -> str | None:
    """A report's path: the command line's, else the ini option's (relative to the ini file)."""
    given = config.getoption(option)
    if given:
        return given
    configured = config.getini(ini)
    if not configured:
        return None
    base = config.inipath.parent if config.inipath else config.rootpath
    return str(base / configured)


def budget_path(config: pytest.Config) -> Path:
    return budget_path_as_named(config).resolve()


def budget_path_as_named(config: pytest.Config) -> Path:
    """The budget file's path as configured, links not followed."""
    option = config.getoption("budgets_file")
    if option:
        return Path(option).absolute()
    base = config.inipath.parent if config.inipath else config.rootpath
    return (base / config.getini("modelbudget_file")).absolute()


def strict(config: pytest.Config) -> bool:
    """Strict mode: ``--budget-strict``, else the ini option, else whether ``CI`` is set (GitHub,
    GitLab, CircleCI, Travis, Buildkite and Azure set it), as syrupy fails a missing snapshot in CI."""
    if config.getoption("budget_strict"):
        return True
    configured = config.getini("modelbudget_strict")
    if configured is not None:
        return bool(configured)
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def named_file(config: pytest.Config) -> str | None:
    """The budget file the user named (option or ini), as written; None for the default."""
    option = config.getoption("budgets_file")
    if option:
        return f"--budgets-file {option}"
    configured = config.getini("modelbudget_file")
    if configured != DEFAULT_FILE:
        return f"modelbudget_file = {configured}"
    return None


#: The options that take a value: before the plugin is loaded, pytest does not know they do.
VALUE_OPTIONS = ("--budget-json", "--budget-markdown", "--budget-compare", "--budgets-file", "--budget-columns")


def rootdir_moved_by_a_value(config: pytest.Config) -> str | None:
    """Why the run cannot go on, when pytest took one of our options' values for a test path.

    pytest chooses its rootdir (and so the ini file, the node ids and the budget file) before it
    loads plugins: ``--budget-json /elsewhere/r.json`` with a space reads to it as an unknown flag
    and a path, and once that file exists its folder joins the rootdir's search. Every budget's
    name would change and ``--update-budgets`` would write a budget file outside the project.
    """
    args = list(config.invocation_params.args)
    given = [
        (option, value)
        for option, value in itertools.pairwise(args)
        if option in VALUE_OPTIONS and not value.startswith("-") and (config.invocation_params.dir / value).exists()
    ]
    if not given or config.getoption("rootdir", None):
        return None
    intended = _rootdir_of(config, [str(arg) for arg in config.option.file_or_dir or []])
    if intended is None or intended == config.rootpath:
        return None
    option, value = given[0]
    return (
        f"{option} {value}: pytest read this value as a test path before the plugin was loaded, and so chose "
        f"{config.rootpath} as the rootdir, not {intended}: the budgets' names and the budget file would all be "
        f"wrong. Write {option}={value} (with '='), or a path inside the project"
    )


def _rootdir_of(config: pytest.Config, args: list[str]) -> Path | None:
    """The rootdir pytest would choose for these arguments (its own rule, called as it calls it)."""
    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:  # pragma: no cover - pytest moved it: no check rather than a wrong one
        return None
    namespace = config.known_args_namespace
    arguments: dict[str, Any] = {
        "inifile": getattr(namespace, "inifilename", None),
        "override_ini": getattr(namespace, "override_ini", None),
        "args": args,
        "rootdir_cmd_arg": None,
        "invocation_dir": config.invocation_params.dir,
    }
    accepted = inspect.signature(determine_setup).parameters
    try:
        found = determine_setup(**{k: v for k, v in arguments.items() if k in accepted})
    except Exception:  # pragma: no cover - a pytest whose rule differs: no check
        return None
    return Path(found[0])
