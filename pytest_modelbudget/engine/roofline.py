"""The roofline model of one op on a named GPU (``docs/ROOFLINE.md``): the op takes at least the
longer of its arithmetic at the GPU's peak for the op's compute dtype and its memory traffic at
the GPU's bandwidth. A lower bound, not a prediction: no launch overhead, no kernel below its
peak, no overlap lost."""

from __future__ import annotations

from typing import Any

import torch

from ..gpus import Gpu

_DTYPES = {
    torch.float32: "fp32",
    torch.float64: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.int8: "int8",
    torch.uint8: "int8",
}


def compute_dtype(func: Any, args: tuple, out: Any) -> str:
    """The dtype the op computes in: its first floating (or int8) tensor argument's; fp32 matmuls
    as PyTorch runs them on CUDA (TF32 for convolutions, cuDNN's default; full fp32 for matmuls
    unless ``torch.backends.cuda.matmul.allow_tf32``)."""
    tensors = [t for t in (*args, out) if isinstance(t, torch.Tensor)]
    dtype = next(
        (t.dtype for t in tensors if t.dtype.is_floating_point or t.dtype in (torch.int8, torch.uint8)), torch.float32
    )
    name = "fp8" if "float8" in str(dtype) else _DTYPES.get(dtype, "fp32")
    if name == "fp32":
        convolution = "conv" in func._overloadpacket.__name__
        if (convolution and torch.backends.cudnn.allow_tf32) or (
            not convolution and torch.backends.cuda.matmul.allow_tf32
        ):
            return "tf32"
    return name


def op_seconds(gpu: Gpu, func: Any, args: tuple, out: Any, flops: int, tensor_cores: bool, moved: int) -> float:
    """``max(flops / peak, bytes / bandwidth)``; matmuls and convolutions (ops with MACs) at the
    tensor-core peak of their dtype, everything else at the CUDA cores' fp32 rate."""
    if not flops and not moved:
        return 0.0
    dtype = compute_dtype(func, args, out) if tensor_cores else "fp32"
    return max(flops / gpu.peak(dtype, tensor_cores), moved / gpu.bandwidth)
