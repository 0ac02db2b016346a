"""A real CPU run, for models that fake execution cannot run (data-dependent control flow, an op
with no fake kernel): forward writes only private copies of the buffers."""

from __future__ import annotations

import torch

from ..inventory import TensorInventory
from ..step import Step, Watched


def run_real(step: Step, tensors: TensorInventory) -> Watched:
    training = step.mode == "training"

    def to_private(tensor: torch.Tensor) -> torch.Tensor:
        # Buffers (running statistics, caches) are written by forward: give it copies.
        if isinstance(tensor, torch.nn.Parameter):
            if training:
                return tensor.detach().clone().requires_grad_(tensor.requires_grad)
            return tensor
        return tensor.detach().clone()

    state, read_names = tensors.substitute(to_private)
    return step.watched(state, read_names, step.args, step.keywords, shapes_only=False)
