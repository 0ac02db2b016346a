"""The choices PyTorch makes on a CUDA device, made on a CPU-only machine.

The memory estimate runs on fake CPU (or meta) tensors: a CPU-only build cannot run autograd on
fake CUDA tensors. Where PyTorch picks a different implementation on CUDA, and the choice changes
memory, the simulated step makes the CUDA choice itself:

- ``scaled_dot_product_attention`` runs the flash or memory-efficient kernel, which never holds the
  L x S attention matrix; the CPU math path does (1.7x GPT-2's training memory in fp32). The rules
  follow ``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp`` for an Ampere-or-newer GPU:
  flash for fp16/bf16 without a mask (grouped-query attention included), memory-efficient
  otherwise (not for grouped-query attention), math when neither applies.
- optimizers left at ``foreach=None`` use their ``foreach`` implementation, PyTorch's default for
  CUDA tensors, whose temporaries are whole lists of tensors.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_HALF = (torch.float16, torch.bfloat16)


def attention_kernel(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Any,
    enable_gqa: bool,
    flash: bool = True,
) -> str:
    """``"flash"``, ``"efficient"`` or ``"math"``: the kernel CUDA would run.

    Grouped-query attention (``enable_gqa`` with fewer key/value heads than query heads) is taken
    by the flash kernel (``check_batch_size_and_num_heads_dense<true>``) and refused by the
    memory-efficient one (``<false>``), so it runs as flash or math. ``flash=False``: a GPU older
    than Ampere (a T4), which has no flash kernel (``check_sm_version``: sm80 or newer).
    """
    tensors = (query, key, value)
    if any(t.dim() != 4 for t in tensors) or len({t.dtype for t in tensors}) != 1:
        return "math"
    batch, heads, kv_heads = query.shape[0], query.shape[1], key.shape[1]
    if {key.shape[0], value.shape[0]} != {batch} or value.shape[1] != kv_heads:
        return "math"
    grouped = kv_heads != heads
    if grouped and not (enable_gqa and heads % kv_heads == 0):
        return "math"
    dtype, head_dim = query.dtype, query.shape[-1]
    if key.shape[-1] != head_dim:
        return "math"
    if (
        flash
        and dtype in _HALF
        and attn_mask is None
        and head_dim <= 256
        and head_dim % 8 == 0
        and value.shape[-1] == head_dim
    ):
        return "flash"
    alignment = 4 if dtype == torch.float32 else 8
    if grouped:
        return "math"
    if dtype in (*_HALF, torch.float32) and head_dim % alignment == 0 and value.shape[-1] % alignment == 0:
        return "efficient"
    return "math"


class CudaAttention(TorchFunctionMode):
    """Runs ``F.scaled_dot_product_attention`` as the fused kernel CUDA would choose.

    Only for fake tensors: the fused kernels have shape functions on every device but real
    kernels only on CUDA.
    """

    def __init__(self, flash: bool = True) -> None:
        super().__init__()
        self.kernels: Counter[str] = Counter()
        #: Whether the GPU has the flash kernel (Ampere or newer).
        self.flash = flash

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        return self._attention(*args, **kwargs)

    def _attention(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        kernel = attention_kernel(query, key, value, attn_mask, enable_gqa, self.flash)
        self.kernels[kernel] += 1
        if kernel == "flash":
            return torch.ops.aten._scaled_dot_product_flash_attention(
                query, key, value, dropout_p, is_causal, False, scale=scale
            )[0]
        if kernel == "efficient":
            if attn_mask is not None and attn_mask.dtype == torch.bool:
                # CUDA turns a boolean mask into an additive bias of the query's dtype first.
                attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill_(~attn_mask, float("-inf"))
            grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
            return torch.ops.aten._scaled_dot_product_efficient_attention(
                query, key, value, attn_mask, grad, dropout_p, is_causal, scale=scale
            )[0]
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
        )

    def approximations(self) -> list[str]:
        return [
            f"scaled_dot_product_attention ran as CUDA's {kernel} kernel ({count} call{'s' * (count != 1)})"
            for kernel, count in sorted(self.kernels.items())
        ]


def use_foreach(optimizer: torch.optim.Optimizer) -> bool:
    """Switch parameter groups left at ``foreach=None`` to ``foreach=True`` (CUDA's default);
    True if any was switched."""
    switched = False
    for group in optimizer.param_groups:
        if "foreach" in group and group["foreach"] is None and not group.get("fused"):
            group["foreach"] = True
            switched = True
    return switched
