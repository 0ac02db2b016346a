"""The scratch project most plugin tests start from: a module of models on the path and, if
given, a budget file."""

from __future__ import annotations

import pytest


def scratch_project(
    pytester: pytest.Pytester, models: str, budgets: str | None = None, module: str = "mymodels"
) -> pytest.Pytester:
    pytester.makepyfile(**{module: models})
    pytester.syspathinsert()
    if budgets is not None:
        pytester.makefile(".toml", budgets=budgets)
    return pytester
