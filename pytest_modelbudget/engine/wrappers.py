"""Modules that wrap the model rather than being it: ``nn.DataParallel`` and
``DistributedDataParallel`` (which would scatter the inputs to devices) and ``torch.compile``'s
``OptimizedModule``. The model they wrap is measured, under its own layer names."""

from __future__ import annotations

import sys
from typing import cast

import torch


def unwrap(model: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """The model inside any wrappers, and a note per wrapper taken off."""
    notes: list[str] = []
    while True:
        inner = _wrapped(model)
        if inner is None:
            return model, notes
        notes.append(f"measured the module {type(model).__name__} wraps ({type(inner).__name__})")
        model = inner


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether ``model`` is, or wraps, a ``torch.compile``'d module."""
    compiled = _optimized_module_class()
    while True:
        if compiled is not None and isinstance(model, compiled):
            return True
        inner = _wrapped(model)
        if inner is None:
            return False
        model = inner


def _wrapped(model: torch.nn.Module) -> torch.nn.Module | None:
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return cast(torch.nn.Module, model.module)
    compiled = _optimized_module_class()
    if compiled is not None and isinstance(model, compiled):
        return cast(torch.nn.Module, model._orig_mod)
    return None


def _optimized_module_class() -> type | None:
    # A compiled model means dynamo is imported already; importing it here would cost a second.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(eval_frame, "OptimizedModule", None)
