"""Modules that wrap the model rather than being it: ``nn.DataParallel`` and
``DistributedDataParallel`` (which would scatter the inputs to devices) and ``torch.compile``'s
``OptimizedModule``. The model they wrap is measured, under its own layer names."""

from __future__ import annotations

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


def _wrapped(model: torch.nn.Module) -> torch.nn.Module | None:
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return model.module
    compiled = _optimized_module_class()
    if compiled is not None and isinstance(model, compiled):
        return model._orig_mod
    return None


def _optimized_module_class() -> type | None:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except ImportError:  # pragma: no cover - a torch without dynamo
        return None
    return OptimizedModule
