"""Shape functions for ops whose meta kernel refuses what their real CPU kernel runs.

Fake and meta tensors run an op's meta kernel, which for some ops checks more than the shapes:
``_grouped_mm``'s accepts only bf16 (the CUDA kernel's dtype) where the CPU kernel also runs fp32,
so an fp32 mixture-of-experts model could not be measured without a real run. For those ops, on
tensors without data, the output is made here from the shapes alone.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch._subclasses.fake_tensor import FakeTensor

aten = torch.ops.aten


def _has_no_data(*tensors: torch.Tensor) -> bool:
    return all(isinstance(t, FakeTensor) or t.is_meta for t in tensors)


def _grouped_mm_output(
    mat_a: torch.Tensor,
    mat_b: torch.Tensor,
    offs: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor | None:
    if mat_a.dtype == torch.bfloat16 or not _has_no_data(mat_a, mat_b):
        return None  # the op's own kernels cope
    groups = offs.shape[0] if offs is not None else mat_a.shape[0]
    if mat_a.dim() == 2 and mat_b.dim() == 2:
        size = [groups, mat_a.shape[0], mat_b.shape[1]]
    elif mat_a.dim() == 3 and mat_b.dim() == 3:
        size = [mat_a.shape[0], mat_a.shape[1], mat_b.shape[-1]]
    else:
        size = [mat_a.shape[-2], mat_b.shape[-1]]
    return torch.empty(size, dtype=out_dtype or mat_a.dtype, device=mat_a.device)


#: op overload -> function(*args, **kwargs) returning the output, or None to run the op itself.
SHAPE_FUNCTIONS: dict[Any, Callable[..., torch.Tensor | None]] = {
    aten._grouped_mm.default: _grouped_mm_output,
}


def run(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)``, from its shape function where its meta kernel would refuse."""
    shape_function = SHAPE_FUNCTIONS.get(func)
    if shape_function is not None:
        out = shape_function(*args, **kwargs)
        if out is not None:
            return out
    return func(*args, **kwargs)
