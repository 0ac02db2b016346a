"""A model on the meta device is already shape-only: run it as it is, on aliases of its tensors
(so that gradients do not land on it), without the cost of fake tensors."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_map_only

from ..inventory import TensorInventory
from ..step import Step, Watched


def run_meta(step: Step, tensors: TensorInventory) -> Watched:
    def alias(tensor: torch.Tensor) -> torch.Tensor:
        if isinstance(tensor, torch.nn.Parameter):
            return tensor.detach().requires_grad_(tensor.requires_grad)
        return tensor.detach()

    state, read_names = tensors.substitute(alias)
    args, keywords = tree_map_only(torch.Tensor, lambda t: t if t.is_meta else t.to("meta"), (step.args, step.keywords))
    return step.watched(state, read_names, args, keywords, shapes_only=True)
