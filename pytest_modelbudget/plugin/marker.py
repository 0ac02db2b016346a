"""``@pytest.mark.budget(...)``: its keyword arguments, read once and checked at collection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..budgets.schema import parse_tolerance
from ..errors import BudgetUsageError
from ..gate.verdict import op_name
from ..options import MARKER_KEYS, MARKER_OPTIONS, OPTIONS, check_choice
from ..quantities import QuantityError, parse_quantity
from ..stats import FIGURES


@dataclass(frozen=True)
class BudgetMarker:
    limits: Mapping[str, int] = field(default_factory=dict)
    tolerance: float | dict[str, float] | None = None
    name: str | None = None
    mode: str | None = None
    outputs: str | None = None
    #: ``measure(parallel=...)``'s dict, for every model the test checks.
    parallel: Mapping[str, Any] | None = None
    #: The GPU of ``roofline_time`` (checked against the budget file's when the test runs).
    gpu: str | None = None
    #: Training with an optimizer: the step whose peak memory is the figure.
    step: str | None = None
    accumulation_steps: int | None = None
    set_to_none: bool | None = None
    #: Prefill and decode: the tokens each sequence holds, and the sequences.
    context: int | None = None
    batch: int | None = None
    #: auto, fake or real (``measure(execution=...)``).
    execution: str | None = None
    #: Ops that may do arithmetic no formula prices without failing a strict run.
    allow_uncounted: tuple[str, ...] = ()

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], args: tuple[Any, ...] = ()) -> BudgetMarker:
        """Reject unknown keys and unreadable values, naming what is accepted."""
        if args:
            raise BudgetUsageError(
                f'budget marker takes keyword arguments only (e.g. params="12M"), found positional {args!r}'
            )
        limits: dict[str, int] = {}
        for key, value in kwargs.items():
            if key in FIGURES:
                try:
                    limits[key] = parse_quantity(value, FIGURES[key])
                except QuantityError as exc:
                    raise BudgetUsageError(f"budget marker: {key}={value!r}: {exc}") from None
            elif key not in MARKER_KEYS:
                raise BudgetUsageError(
                    f"budget marker: unknown key {key!r}; expected a figure ({', '.join(FIGURES)}) "
                    f"or an option ({', '.join(MARKER_KEYS)})"
                )
        tolerance = kwargs.get("tolerance")
        if tolerance is not None:
            try:
                tolerance = parse_tolerance(tolerance)
            except ValueError as exc:  # QuantityError is one
                raise BudgetUsageError(f"budget marker: tolerance={kwargs['tolerance']!r}: {exc}") from None
        for option in OPTIONS.values():
            problem = check_choice(option, kwargs.get(option.name))
            if problem:
                raise BudgetUsageError(f"budget marker: {problem}")
        name = kwargs.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise BudgetUsageError(f"budget marker: name={name!r}; expected a non-empty string")
        parallel = kwargs.get("parallel")
        if parallel is not None:
            from pydantic import ValidationError

            from ..budgets.schema import ParallelSpec

            try:  # the budget file's rules, checked at collection, without importing torch
                parallel = ParallelSpec.model_validate(parallel).model_dump(exclude_none=True)
            except ValueError as exc:
                first = exc.errors()[0] if isinstance(exc, ValidationError) else {"msg": str(exc), "loc": ()}
                where = ".".join(map(str, first.get("loc", ())))
                raise BudgetUsageError(
                    f"budget marker: parallel={kwargs['parallel']!r}: {where + ': ' if where else ''}{first['msg']}"
                ) from None
        for key in ("accumulation_steps", "context", "batch"):
            value = kwargs.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise BudgetUsageError(f"budget marker: {key}={value!r}; expected a whole number, 1 or more")
        steps = kwargs.get("accumulation_steps")
        set_to_none = kwargs.get("set_to_none")
        if set_to_none is not None and not isinstance(set_to_none, bool):
            raise BudgetUsageError(f"budget marker: set_to_none={set_to_none!r}; expected True or False")
        allowed = kwargs.get("allow_uncounted", ())
        if isinstance(allowed, str) or not all(isinstance(op, str) and op for op in allowed):
            raise BudgetUsageError(
                f'budget marker: allow_uncounted={allowed!r}; expected a list of op names such as ["teamlib.fused_act"]'
            )
        gpu = kwargs.get("gpu")
        if gpu is not None and (not isinstance(gpu, str) or not gpu):
            raise BudgetUsageError(f'budget marker: gpu={gpu!r}; expected a GPU\'s name such as "h100-sxm"')
        return cls(
            limits=limits,
            allow_uncounted=tuple(op_name(op) for op in allowed),
            tolerance=tolerance,
            name=name,
            mode=kwargs.get("mode"),
            outputs=kwargs.get("outputs"),
            parallel=parallel,
            gpu=gpu,
            step=kwargs.get("step"),
            accumulation_steps=steps,
            set_to_none=set_to_none,
            execution=kwargs.get("execution"),
            context=kwargs.get("context"),
            batch=kwargs.get("batch"),
        )

    def options(self) -> dict[str, Any]:
        """The measurement options it sets, for ``options.resolve``."""
        return {name: getattr(self, name) for name in MARKER_OPTIONS}
