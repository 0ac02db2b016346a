"""Mixture-of-experts: ``aten._grouped_mm``, transformers' default experts kernel (Mixtral, Qwen-MoE,
OLMoE, DeepSeek-V3, GPT-OSS, Jamba). Each group is one expert's matmul on the rows routed to it, so
the cost is that of the rows actually routed, not of every expert on every token."""

from __future__ import annotations

from typing import Any

from .table import Cost, register_cost


def grouped_mm_macs(mat_a: Any, mat_b: Any) -> int:
    """MACs of ``_grouped_mm(mat_a, mat_b, offs)`` in its four layouts (``offs`` splits the 2-D
    operands into groups):

    - 2-D x 3-D, (M, K) x (G, K, N) -> (M, N): each of the M rows through its group's K x N.
    - 3-D x 2-D, (G, M, K) x (K, N) split along N -> (M, N): likewise M x K x N.
    - 3-D x 3-D, (G, M, K) x (G, K, N) -> (G, M, N): a batched matmul.
    - 2-D x 2-D, (M, K) x (K, N) split along K -> (G, M, N): the groups share out K, M x K x N
      in all (the weight gradient of the 2-D x 3-D case).
    """
    if mat_a.dim() == 2 and mat_b.dim() == 2:
        return mat_a.shape[0] * mat_a.shape[1] * mat_b.shape[1]
    rows = mat_a.shape[0] * mat_a.shape[1] if mat_a.dim() == 3 and mat_b.dim() == 3 else mat_a.shape[-2]
    return rows * mat_a.shape[-1] * mat_b.shape[-1]


@register_cost("_grouped_mm")
def _grouped_mm(args: tuple, kwargs: dict, out: Any) -> Cost:
    macs = grouped_mm_macs(args[0], args[1])
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    return Cost(macs, 2 * macs + (out.numel() if bias is not None else 0))
