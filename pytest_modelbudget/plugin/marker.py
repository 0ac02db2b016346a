"""``@pytest.mark.budget(...)``: its keyword arguments, read once and checked at collection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..budgets.schema import parse_tolerance
from ..errors import BudgetUsageError
from ..quantities import QuantityError, parse_quantity
from ..stats import FIGURES

OPTIONS = ("tolerance", "name", "mode", "outputs", "parallel", "gpu")
OUTPUTS = ("kept", "released")
MODES = ("inference", "training")


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
            elif key not in OPTIONS:
                raise BudgetUsageError(
                    f"budget marker: unknown key {key!r}; expected a figure ({', '.join(FIGURES)}) "
                    f"or an option ({', '.join(OPTIONS)})"
                )
        tolerance = kwargs.get("tolerance")
        if tolerance is not None:
            try:
                tolerance = parse_tolerance(tolerance)
            except ValueError as exc:  # QuantityError is one
                raise BudgetUsageError(f"budget marker: tolerance={kwargs['tolerance']!r}: {exc}") from None
        mode = kwargs.get("mode")
        if mode is not None and mode not in MODES:
            raise BudgetUsageError(f"budget marker: mode={mode!r}; expected one of {', '.join(MODES)}")
        outputs = kwargs.get("outputs")
        if outputs is not None and outputs not in OUTPUTS:
            raise BudgetUsageError(f"budget marker: outputs={outputs!r}; expected one of {', '.join(OUTPUTS)}")
        name = kwargs.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise BudgetUsageError(f"budget marker: name={name!r}; expected a non-empty string")
        parallel = kwargs.get("parallel")
        if parallel is not None:
            from ..budgets.schema import ParallelSpec

            try:  # the budget file's rules, checked at collection, without importing torch
                parallel = ParallelSpec.model_validate(parallel).model_dump(exclude_none=True)
            except ValueError as exc:
                problem = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc), "loc": ()}
                where = ".".join(map(str, problem.get("loc", ())))
                raise BudgetUsageError(
                    f"budget marker: parallel={kwargs['parallel']!r}: {where + ': ' if where else ''}{problem['msg']}"
                ) from None
        gpu = kwargs.get("gpu")
        if gpu is not None and (not isinstance(gpu, str) or not gpu):
            raise BudgetUsageError(f'budget marker: gpu={gpu!r}; expected a GPU\'s name such as "h100-sxm"')
        return cls(
            limits=limits, tolerance=tolerance, name=name, mode=mode, outputs=outputs, parallel=parallel, gpu=gpu
        )
