"""pytest-modelbudget: parameters, bytes, MACs and peak memory of PyTorch models as pytest tests.

Importing this package does not import torch; ``measure`` and the other torch-bound names load
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import BudgetExceeded, BudgetFileError, BudgetUsageError, MeasureError, ModelBudgetError
from .quantities import format_bytes, format_count, parse_quantity
from .stats import FIGURES, LayerStats, ModelStats

if TYPE_CHECKING:
    from .engine import Parallel, measure
    from .engine.formulas import register_formula

__version__ = "0.1.0"

__all__ = [
    "FIGURES",
    "BudgetExceeded",
    "BudgetFileError",
    "BudgetUsageError",
    "LayerStats",
    "MeasureError",
    "ModelBudgetError",
    "ModelStats",
    "Parallel",
    "format_bytes",
    "format_count",
    "measure",
    "parse_quantity",
    "register_formula",
]


def __getattr__(name: str) -> Any:
    if name in ("measure", "Parallel"):
        from . import engine

        return getattr(engine, name)
    if name == "register_formula":
        from .engine.formulas import register_formula

        return register_formula
    raise AttributeError(f"module 'pytest_modelbudget' has no attribute {name!r}")
