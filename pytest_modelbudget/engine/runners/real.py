"""A real CPU run, for models that fake execution cannot run (data-dependent control flow, an op
with no fake kernel). It runs on private copies of every tensor of the model: a forward that
writes its weights (a WGAN critic clamping them), its buffers or a cached tensor writes only the
copies."""

from __future__ import annotations

import torch

from ..inputs import RandomInput, map_inputs
from ..inventory import TensorInventory
from ..step import Step, Watched


def run_real(step: Step, tensors: TensorInventory) -> Watched:
    def private_copy(tensor: torch.Tensor) -> torch.Tensor:
        copy = tensor.detach().clone()
        return copy.requires_grad_(tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else copy

    stand_ins = tensors.stand_ins(step.model, private_copy)
    return step.watched(stand_ins, *map_inputs((step.args, step.keywords), _same, RandomInput.make), shapes_only=False)


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor
