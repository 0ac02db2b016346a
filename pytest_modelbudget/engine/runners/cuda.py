"""The step on a CUDA device for real: the allocator's peak above what was allocated before it,
plus the model's own tensors (``docs/MEMORY.md``)."""

from __future__ import annotations

import torch

from ...errors import MeasureError
from ..inputs import map_inputs
from ..inventory import TensorInventory
from ..memory import CUDA_BLOCK
from ..step import ForwardError, Step, first_line


def run_cuda(step: Step, tensors: TensorInventory, device: torch.device) -> int:
    cuda = torch.cuda

    def to_device(tensor: torch.Tensor) -> torch.Tensor:
        # Private copies, also of tensors already on the device: forward may write them.
        copy = tensor.detach().to(device, copy=True)
        return copy.requires_grad_(tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else copy

    stand_ins = tensors.stand_ins(step.model, to_device)
    # The step takes its cuBLAS workspace from the allocator as a fresh process would (its
    # first matmul), not whatever an earlier matmul of this process left: the same figure
    # whatever ran before.
    with torch.cuda.device(device):
        clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear is not None:
            cuda.synchronize(device)
            clear()
    cuda.synchronize(device)
    before = cuda.memory_allocated(device)
    cuda.reset_peak_memory_stats(device)
    args, keywords = map_inputs(
        (step.args, step.keywords), lambda t: t.to(device, copy=True), lambda spec: spec.make(device)
    )
    # A decode step's cache is built first by the model's own prefill: the step's peak starts there.
    step.decode_started = lambda: cuda.reset_peak_memory_stats(device)
    if step.step_kind == "steady":
        # The steady step alone: the allocator's peak from where the first step left it.
        step.steady_started = lambda: cuda.reset_peak_memory_stats(device)
    try:
        step.run(stand_ins, args, keywords, None)
    except ForwardError as error:
        raise MeasureError(
            f"{type(step.model).__name__}.forward raised {type(error.error).__name__} on {device}: "
            f"{first_line(error.error)}"
        ) from error.error
    finally:
        step.steady_started = None
        step.decode_started = None
    cuda.synchronize(device)
    peak = cuda.max_memory_allocated(device) - before
    del stand_ins, args, keywords
    return peak + tensors.allocated_bytes(CUDA_BLOCK)
