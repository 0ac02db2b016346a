"""Exceptions a user sees. Each message names what was found and what was expected."""

from __future__ import annotations


class ModelBudgetError(Exception):
    """Base of every error raised by pytest-modelbudget."""


class MeasureError(ModelBudgetError):
    """The model could not be measured: bad arguments, inputs that do not fit ``forward``, or a
    ``forward`` that raised. Its own exception, with its whole traceback, is kept as ``error``
    (not chained: a failing test then shows the model's line once, not our frames)."""

    def __init__(self, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.error = error


class BudgetFileError(ModelBudgetError):
    """``budgets.toml`` (or the file given with ``--budgets-file``) is malformed."""


class BudgetUsageError(ModelBudgetError):
    """A marker, fixture call or option was given something it cannot use."""


class BudgetExceeded(AssertionError):
    """A measured figure is over its limit or above its baseline by more than the tolerance.

    An ``AssertionError`` so that pytest reports it as an ordinary test failure.
    """
