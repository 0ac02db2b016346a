"""The loss of a training step when the user gives none: the sum of every output that can carry a
gradient, whatever structure ``forward`` returned it in."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from ..errors import MeasureError


def default_loss(output: Any) -> torch.Tensor:
    """The sum of every floating-point tensor in the output (dicts, tuples, dataclasses,
    Hugging Face ``ModelOutput`` included)."""
    tensors = [t for t in _output_tensors(output) if t.is_floating_point() and t.requires_grad]
    if not tensors:
        raise MeasureError(
            f"mode='training' needs a loss: forward returned {describe_output(output)}, with no "
            "floating-point tensor that requires grad; pass loss_fn=..."
        )
    return sum(t.sum() for t in tensors)  # type: ignore[return-value]


def _output_tensors(output: Any) -> list[torch.Tensor]:
    if is_dataclass(output) and not isinstance(output, type):
        return [t for f in fields(output) for t in _output_tensors(getattr(output, f.name))]
    leaves, _ = tree_flatten(output)
    found: list[torch.Tensor] = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            found.append(leaf)
        elif is_dataclass(leaf) and not isinstance(leaf, type):
            found.extend(_output_tensors(leaf))
    return found


def describe_output(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
