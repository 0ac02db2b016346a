"""The step on a CUDA device for real: the allocator's peak above what was allocated before it,
plus the model's own tensors (``docs/MEMORY.md``)."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_map_only

from ...errors import MeasureError
from ..inventory import TensorInventory
from ..memory import CUDA_BLOCK
from ..step import ForwardError, Step, first_line


def run_cuda(step: Step, tensors: TensorInventory, device: torch.device) -> int:
    cuda = torch.cuda
    copy_params = step.mode == "training" and step.optimizer is not None

    def to_device(tensor: torch.Tensor) -> torch.Tensor:
        if isinstance(tensor, torch.nn.Parameter):
            if tensor.device == device and not copy_params:
                # A new leaf on the same storage: no memory, and gradients land on it, not
                # on the model's parameter.
                return tensor.detach().requires_grad_(tensor.requires_grad)
            return tensor.detach().to(device, copy=True).requires_grad_(tensor.requires_grad)
        return tensor.detach().to(device, copy=True)

    state, read_names = tensors.substitute(to_device)
    cuda.synchronize(device)
    before = cuda.memory_allocated(device)
    cuda.reset_peak_memory_stats(device)
    args, keywords = tree_map_only(torch.Tensor, lambda t: t.to(device, copy=True), (step.args, step.keywords))
    try:
        step.run(state, read_names, args, keywords, None)
    except ForwardError as error:
        raise MeasureError(
            f"{type(step.model).__name__}.forward raised {type(error.error).__name__} on {device}: "
            f"{first_line(error.error)}"
        ) from error.error
    cuda.synchronize(device)
    peak = cuda.max_memory_allocated(device) - before
    del state, args, keywords
    return peak + tensors.allocated_bytes(CUDA_BLOCK)
