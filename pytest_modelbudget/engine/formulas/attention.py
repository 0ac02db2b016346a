"""Attention: the fused scaled-dot-product kernels and the ``nn.MultiheadAttention`` /
``TransformerEncoderLayer`` fast paths, all priced as the math path they replace, so that every
kernel choice gives the same figures."""

from __future__ import annotations

import math
from typing import Any

import torch

from .table import Cost, Formula, register_cost


def _attention_macs(batch_heads: int, q_len: int, kv_len: int, qk_dim: int, v_dim: int) -> int:
    # Q @ K^T and P @ V; softmax is priced as a pointwise-like op elsewhere in FLOPs.
    return batch_heads * q_len * kv_len * (qk_dim + v_dim)


def _sdpa_cost(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float = 0.0) -> Cost:
    # Priced as the math path it replaces, so that every kernel choice gives the same FLOPs:
    # two matmuls, softmax (5 per score) and, in training, dropout (1 per score).
    *lead, q_len, qk_dim = query.shape
    kv_len, v_dim = key.shape[-2], value.shape[-1]
    macs = _attention_macs(math.prod(lead), q_len, kv_len, qk_dim, v_dim)
    scores = math.prod(lead) * q_len * kv_len
    return Cost(macs, 2 * macs + 5 * scores + (scores if dropout_p else 0))


def _fused_attention(dropout_index: int) -> Formula:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        dropout_p = args[dropout_index] if len(args) > dropout_index else kwargs.get("dropout_p", 0.0)
        return _sdpa_cost(args[0], args[1], args[2], dropout_p)

    return cost


# The fused attention kernels, by where their schema puts dropout_p.
register_cost("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention")(_fused_attention(3))
register_cost("_scaled_dot_product_fused_attention_overrideable")(_fused_attention(4))
register_cost("_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")(_fused_attention(5))


def _mha_macs(query: torch.Tensor, key: torch.Tensor, embed_dim: int) -> int:
    # The fused kernels take (B, L, E) or unbatched (L, E); every projection is E x E.
    batch = query.shape[0] if query.dim() == 3 else 1
    q_len, kv_len = query.shape[-2], key.shape[-2]
    projections = batch * (q_len + 2 * kv_len) * embed_dim * embed_dim
    attention = _attention_macs(batch, q_len, kv_len, embed_dim, embed_dim)
    out_projection = batch * q_len * embed_dim * embed_dim
    return projections + attention + out_projection


@register_cost("_native_multi_head_attention")
def _native_mha(args: tuple, kwargs: dict, out: Any) -> Cost:
    query, key, embed_dim = args[0], args[1], args[3]
    macs = _mha_macs(query, key, embed_dim)
    batch = query.shape[0] if query.dim() == 3 else 1
    softmax = 5 * batch * args[4] * query.shape[-2] * key.shape[-2]
    return Cost(macs, 2 * macs + softmax)


@register_cost("_transformer_encoder_layer_fwd")
def _encoder_layer(args: tuple, kwargs: dict, out: Any) -> Cost:
    src, embed_dim, heads = args[0], args[1], args[2]
    ffn_weight_1, ffn_weight_2 = args[14], args[16]
    tokens = src.numel() // embed_dim
    attention = _mha_macs(src, src, embed_dim)
    ffn = tokens * (ffn_weight_1.numel() + ffn_weight_2.numel())
    macs = attention + ffn
    seq = src.shape[-2]
    other = 5 * (tokens // seq) * heads * seq * seq  # softmax
    other += 2 * 6 * tokens * embed_dim  # two layer norms with affine
    other += tokens * ffn_weight_1.shape[0] + 2 * tokens * embed_dim  # activation, residuals
    return Cost(macs, 2 * macs + other)
