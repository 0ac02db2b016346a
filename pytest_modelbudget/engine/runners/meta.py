"""A model on the meta device is already shape-only: run it as it is, on aliases of its tensors
(so that gradients do not land on it), without the cost of fake tensors."""

from __future__ import annotations

import torch

from ..inputs import is_size_table, map_inputs
from ..inventory import TensorInventory
from ..step import Step, Watched


def run_meta(step: Step, tensors: TensorInventory) -> Watched:
    def alias(tensor: torch.Tensor) -> torch.Tensor:
        if isinstance(tensor, torch.nn.Parameter):
            return tensor.detach().requires_grad_(tensor.requires_grad)
        return tensor.detach()

    stand_ins = tensors.stand_ins(step.model, alias)
    args, keywords = map_inputs(
        (step.args, step.keywords),
        lambda t: t if t.is_meta or is_size_table(t) else t.to("meta"),
        lambda spec: spec.make("meta"),
    )
    return step.watched(stand_ins, args, keywords, shapes_only=True)
