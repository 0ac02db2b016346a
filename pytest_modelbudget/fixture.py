"""The ``model_budget`` fixture's object: measure a model and hold it to its budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pytest

from .errors import BudgetUsageError
from .marker import BudgetMarker

if TYPE_CHECKING:
    import torch

    from .session import BudgetSession
    from .stats import ModelStats

MARKER_KEY = pytest.StashKey[BudgetMarker]()


class ModelBudget:
    """Given to a test as ``model_budget``.

    ``check(model, ...)`` measures and fails the test if a limit (marker, then ``budgets.toml``)
    or the recorded baseline is exceeded; ``measure(model, ...)`` only measures.
    """

    def __init__(self, item: pytest.Item, session: BudgetSession) -> None:
        self._item = item
        self._session = session
        self._marker = item.stash.get(MARKER_KEY, None)

    def measure(
        self,
        model: torch.nn.Module,
        inputs: Any = None,
        *,
        input_size: Any = None,
        dtype: torch.dtype | None = None,
        kwargs: dict[str, Any] | None = None,
        mode: str | None = None,
        device: Any = None,
        loss_fn: Callable[[Any], Any] | None = None,
        optimizer: Callable[[list[Any]], Any] | None = None,
    ) -> ModelStats:
        __tracebackhide__ = True
        from .engine import measure

        return measure(
            model,
            inputs,
            input_size=input_size,
            dtype=dtype,
            kwargs=kwargs,
            mode=mode or (self._marker.mode if self._marker else None) or "inference",
            device=device,
            loss_fn=loss_fn,
            optimizer=optimizer,
        )

    def check(
        self,
        model: torch.nn.Module,
        inputs: Any = None,
        *,
        input_size: Any = None,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        kwargs: dict[str, Any] | None = None,
        mode: str | None = None,
        device: Any = None,
        loss_fn: Callable[[Any], Any] | None = None,
        optimizer: Callable[[list[Any]], Any] | None = None,
    ) -> ModelStats:
        __tracebackhide__ = True
        budget_name = name or (self._marker.name if self._marker else None) or self._item.nodeid
        if not isinstance(budget_name, str):
            raise BudgetUsageError(f"model_budget.check(name=...) takes a string, found {name!r}")
        entry = self._session.file.budgets.get(budget_name)
        mode = mode or (self._marker.mode if self._marker else None) or (entry.mode if entry else None)
        stats = self.measure(
            model,
            inputs,
            input_size=input_size,
            dtype=dtype,
            kwargs=kwargs,
            mode=mode,
            device=device,
            loss_fn=loss_fn,
            optimizer=optimizer,
        )
        self._session.check(self._item, stats, name=budget_name, marker=self._marker)
        return stats
