"""The ``model_budget`` fixture's object: measure a model and hold it to its budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import BudgetUsageError
from .marker import BudgetMarker

if TYPE_CHECKING:
    import torch

    from ..stats import ModelStats
    from .session import BudgetSession

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
        forward_kwargs: dict[str, Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        mode: str | None = None,
        device: Any = None,
        loss_fn: Callable[[Any], Any] | None = None,
        optimizer: Callable[[list[Any]], Any] | None = None,
        autocast: torch.dtype | None = None,
        outputs: str | None = None,
        parallel: Any = None,
        gpu: Any = None,
    ) -> ModelStats:
        """:func:`pytest_modelbudget.measure`, with ``mode``, ``outputs`` and ``parallel`` from
        the marker and ``device`` from ``[settings]`` when not given."""
        __tracebackhide__ = True
        from ..engine import measure

        return measure(
            model,
            inputs,
            input_size=input_size,
            dtype=dtype,
            forward_kwargs=forward_kwargs,
            kwargs=kwargs,
            mode=mode or (self._marker.mode if self._marker else None) or "inference",
            device=device or self._session.file.settings.device,
            loss_fn=loss_fn,
            optimizer=optimizer,
            autocast=autocast,
            outputs=outputs or (self._marker.outputs if self._marker else None) or "kept",
            parallel=parallel if parallel is not None else (self._marker.parallel if self._marker else None),
            gpu=self._gpu(gpu),
        )

    def _gpu(self, gpu: Any) -> Any:
        """The GPU of ``roofline_time``: the argument, else the marker's, else [settings]'; a
        name is looked up among the budget file's GPUs, then the built-in ones."""
        chosen = gpu if gpu is not None else (self._marker.gpu if self._marker and self._marker.gpu else None)
        if chosen is None:
            chosen = self._session.file.settings.gpu
        if isinstance(chosen, str):
            named = self._session.file.settings.gpu_named(chosen)
            if named is None:
                from ..gpus import GPUS

                raise BudgetUsageError(
                    f"{self._item.nodeid}: gpu {chosen!r} is not a known GPU; expected one of "
                    f"{', '.join([*GPUS, *self._session.file.settings.gpus])} or one in [settings.gpus]"
                )
            return named
        return chosen

    def check(
        self, model: torch.nn.Module, inputs: Any = None, *, name: str | None = None, **options: Any
    ) -> ModelStats:
        """Measure (``options`` as for :meth:`measure`) and hold the figures to the marker's
        limits, the ``budgets.toml`` entry ``name`` (default: the test's node id) and its baseline."""
        __tracebackhide__ = True
        budget_name = name or (self._marker.name if self._marker else None) or self._item.nodeid
        if not isinstance(budget_name, str):
            raise BudgetUsageError(f"model_budget.check(name=...) takes a string, found {name!r}")
        entry = self._session.file.budgets.get(budget_name)
        if not options.get("mode"):
            options["mode"] = (self._marker.mode if self._marker else None) or (entry.mode if entry else None)
        if not options.get("outputs"):
            options["outputs"] = (self._marker.outputs if self._marker else None) or (entry.outputs if entry else None)
        if options.get("device") is None and entry and entry.device:
            options["device"] = entry.device
        if options.get("gpu") is None and not (self._marker and self._marker.gpu) and entry and entry.gpu:
            options["gpu"] = entry.gpu
        if (
            options.get("parallel") is None
            and not (self._marker and self._marker.parallel)
            and entry
            and entry.parallel
        ):
            options["parallel"] = entry.parallel.model_dump(exclude_none=True)
        try:
            stats = self.measure(model, inputs, **options)
        except TypeError as exc:
            if "unexpected keyword argument" not in str(exc):
                raise
            raise BudgetUsageError(f"model_budget.check(): {exc.args[0].partition('() ')[2]}") from None
        self._session.check(self._item, stats, name=budget_name, marker=self._marker)
        return stats
