"""What a shape-only run (fake or meta tensors) needs from models of known libraries.

transformers' mixture-of-experts layers with ``experts_implementation="eager"`` loop over the
experts that routing picked (``nonzero``, ``torch.where``): a loop whose length is a value, which
tensors without data do not have. Their ``grouped_mm`` implementation does the same arithmetic,
every routed token through its expert's matmuls, with shapes that do not depend on the routing; a
shape-only run uses it, and says so. The model's config is put back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def _eager_experts_configs(model: torch.nn.Module) -> list[Any]:
    configs: dict[int, Any] = {}
    for module in model.modules():
        # Set on experts classes by transformers' ``use_experts_implementation`` decorator.
        config = getattr(module, "config", None)
        if (
            hasattr(module, "is_concatenated")
            and hasattr(module, "_apply_gate")
            and config is not None
            and getattr(config, "_experts_implementation", None) == "eager"
        ):
            configs[id(config)] = config
    return list(configs.values())


def _set_implementation(config: Any, value: str) -> None:
    # transformers 5 keeps it behind a property whose setter also rewrites the sub-configs.
    if isinstance(getattr(type(config), "_experts_implementation", None), property):
        config._experts_implementation_internal = value
    else:
        config._experts_implementation = value


@contextlib.contextmanager
def shape_only(model: torch.nn.Module) -> Iterator[list[str]]:
    """Adapt the model for a run without values; yields the notes that say how."""
    configs = _eager_experts_configs(model)
    notes: list[str] = []
    if configs and _grouped_mm_registered():
        notes.append(
            "mixture-of-experts layers with experts_implementation='eager' ran as 'grouped_mm' "
            "(same arithmetic; eager's loop over routed experts needs values)"
        )
        for config in configs:
            _set_implementation(config, "grouped_mm")
    try:
        yield notes
    finally:
        for config in configs:
            _set_implementation(config, "eager")


def _grouped_mm_registered() -> bool:
    try:
        from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
    except ImportError:  # pragma: no cover - a transformers without experts implementations
        return False
    return "grouped_mm" in ALL_EXPERTS_FUNCTIONS
