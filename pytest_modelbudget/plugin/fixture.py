"""The ``model_budget`` fixture's object: measure a model and hold it to its budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import BudgetUsageError
from ..gpus import GPUS
from ..options import OPTIONS, resolve
from .marker import BudgetMarker

if TYPE_CHECKING:
    import torch

    from ..budgets.schema import Entry
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
        step: str | None = None,
        accumulation_steps: int | None = None,
        set_to_none: bool | None = None,
        context: int | None = None,
        batch: int | None = None,
        execution: str | None = None,
    ) -> ModelStats:
        """:func:`pytest_modelbudget.measure`; the options not given (``mode``, ``outputs``,
        ``parallel``, ``gpu``, ``device``) come from the marker, then ``[settings]``."""
        __tracebackhide__ = True
        given = {
            "mode": mode,
            "outputs": outputs,
            "device": device,
            "gpu": gpu,
            "parallel": parallel,
            "autocast": autocast,
            "step": step,
            "accumulation_steps": accumulation_steps,
            "set_to_none": set_to_none,
            "context": context,
            "batch": batch,
            "execution": execution,
        }
        return self._measure(
            model,
            inputs,
            self._options(given, entry=None),
            input_size=input_size,
            dtype=dtype,
            forward_kwargs=forward_kwargs,
            kwargs=kwargs,
            loss_fn=loss_fn,
            optimizer=optimizer,
        )

    def check(
        self, model: torch.nn.Module, inputs: Any = None, *, name: str | None = None, **options: Any
    ) -> ModelStats:
        """Measure (``options`` as for :meth:`measure`) and hold the figures to the marker's
        limits, the ``budgets.toml`` entry ``name`` (default: the test's node id) and its baseline.
        An option not given comes from the marker, then the entry, then ``[settings]``."""
        __tracebackhide__ = True
        budget_name = name or (self._marker.name if self._marker else None) or self._item.nodeid
        if not isinstance(budget_name, str):
            raise BudgetUsageError(f"model_budget.check(name=...) takes a string, found {name!r}")
        entry = self._session.file.budgets.get(budget_name)
        given = {key: options.pop(key) for key in OPTIONS if key in options}
        try:
            stats = self._measure(model, inputs, self._options(given, entry), **options)
        except TypeError as exc:
            if "unexpected keyword argument" not in str(exc):
                raise
            raise BudgetUsageError(f"model_budget.check(): {exc.args[0].partition('() ')[2]}") from None
        self._session.check(self._item, stats, name=budget_name, marker=self._marker)
        return stats

    def _options(self, given: dict[str, Any], entry: Entry | None) -> dict[str, Any]:
        return resolve(
            {
                "argument": given,
                "marker": self._marker.options() if self._marker else None,
                "entry": entry.options() if entry else None,
                "settings": self._session.file.settings.options(),
            }
        )

    def _measure(self, model: Any, inputs: Any, chosen: dict[str, Any], **rest: Any) -> ModelStats:
        __tracebackhide__ = True
        import torch

        from ..engine import measure

        autocast = chosen["autocast"]
        return measure(
            model,
            inputs,
            mode=chosen["mode"],
            outputs=chosen["outputs"],
            device=chosen["device"],
            parallel=chosen["parallel"],
            autocast=getattr(torch, autocast) if isinstance(autocast, str) else autocast,
            gpu=self._gpu(chosen["gpu"]),
            step=chosen["step"],
            accumulation_steps=chosen["accumulation_steps"],
            set_to_none=chosen["set_to_none"],
            context=chosen["context"],
            batch=chosen["batch"],
            execution=chosen["execution"],
            **rest,
        )

    def _gpu(self, chosen: Any) -> Any:
        """A GPU's name is looked up among the budget file's GPUs, then the built-in ones."""
        if not isinstance(chosen, str):
            return chosen
        named = self._session.file.settings.gpu_named(chosen)
        if named is None:
            raise BudgetUsageError(
                f"{self._item.nodeid}: gpu {chosen!r} is not a known GPU; expected one of "
                f"{', '.join([*GPUS, *self._session.file.settings.gpus])} or one in [settings.gpus]"
            )
        return named
