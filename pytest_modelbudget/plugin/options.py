"""The plugin's command-line options and ini settings, and where they put the budget file."""

from __future__ import annotations

from pathlib import Path

import pytest

MARKER_HELP = (
    "budget(**limits, tolerance=None, name=None, mode=None): hold the models this test checks "
    "with the model_budget fixture to these limits, e.g. budget(params=\"12M\", macs=\"1.9G\")"
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
    group.addoption("--budgets-file", default=None, metavar="PATH", help="budget file (default: budgets.toml at the rootdir)")
    group.addoption("--budget-json", default=None, metavar="PATH", help="write every figure and verdict as JSON")
    group.addoption("--budget-markdown", default=None, metavar="PATH", help="write the summary table as Markdown")
    parser.addini("modelbudget_file", "budget file, relative to the ini file", default="budgets.toml")
    parser.addini("modelbudget_tolerance", 'default tolerance above a baseline, e.g. "1%"', default="1%")


def budget_path(config: pytest.Config) -> Path:
    option = config.getoption("budgets_file")
    if option:
        return Path(option).resolve()
    base = config.inipath.parent if config.inipath else config.rootpath
    return (base / config.getini("modelbudget_file")).resolve()
