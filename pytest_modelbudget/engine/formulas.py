"""What each aten op costs, in one table: multiply-accumulates and floating point operations.

Matmul-like ops reuse PyTorch's own ``torch.utils.flop_counter`` formulas (MACs = its FLOPs / 2,
the convention of torchvision's ``_ops`` and fvcore). Ops that PyTorch has no formula for but
that do matmul work (the CPU attention kernel, fused MultiheadAttention / TransformerEncoderLayer
fast paths, oneDNN's LSTM layer) are registered here. Everything else is priced by the rules in
``docs/FLOPS.md``: pointwise ops one FLOP per output element, reductions one per input element,
softmax five, normalisation four plus affine; views, copies and factories cost nothing. An op
that does arithmetic and matches no rule is reported as uncounted, never silently dropped.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
from torch.utils import flop_counter

aten = torch.ops.aten


class Cost(NamedTuple):
    macs: int
    flops: int


FREE = Cost(0, 0)

#: op packet -> formula(args, kwargs, out) -> Cost. The one table every figure comes from.
COSTS: dict[Any, Callable[[tuple, dict, Any], Cost]] = {}


def register_cost(*targets: Any) -> Callable:
    def register(formula: Callable[[tuple, dict, Any], Cost]) -> Callable:
        for target in targets:
            if hasattr(aten, target):
                COSTS[getattr(aten, target)] = formula
        return formula

    return register


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_numel(item) for item in value)
    return 0


def _first_numel(value: Any) -> int:
    if isinstance(value, (tuple, list)):
        return _first_numel(value[0]) if value else 0
    return _numel(value)


# --- matmul-like ops: PyTorch's own formulas --------------------------------------------------


def _from_torch(formula: Callable) -> Callable[[tuple, dict, Any], Cost]:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        flops = int(formula(*args, **kwargs, out_val=out))
        return Cost(flops // 2, flops)

    return cost


for _packet, _formula in flop_counter.flop_registry.items():
    COSTS[_packet] = _from_torch(_formula)


def _matmul(macs: int) -> Cost:
    return Cost(macs, 2 * macs)


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


def _fused_attention(dropout_index: int) -> Callable[[tuple, dict, Any], Cost]:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        dropout_p = args[dropout_index] if len(args) > dropout_index else kwargs.get("dropout_p", 0.0)
        return _sdpa_cost(args[0], args[1], args[2], dropout_p)

    return cost


# The fused attention kernels, by where their schema puts dropout_p.
register_cost("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention")(
    _fused_attention(3)
)
register_cost("_scaled_dot_product_fused_attention_overrideable")(_fused_attention(4))
register_cost("_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")(
    _fused_attention(5)
)


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


@register_cost("mkldnn_rnn_layer")
def _mkldnn_rnn_layer(args: tuple, kwargs: dict, out: Any) -> Cost:
    # oneDNN runs one direction of one LSTM layer: input (T, B, I), w_ih (4H, I), w_hh (4H, H).
    inputs, w_ih, w_hh = args[0], args[1], args[2]
    steps_times_batch = inputs.numel() // inputs.shape[-1]
    macs = steps_times_batch * (w_ih.numel() + w_hh.numel())
    hidden = w_hh.shape[1]
    gates = steps_times_batch * hidden * 9  # 4 activations, 3 products, 1 sum, 1 tanh
    return Cost(macs, 2 * macs + gates)


@register_cost("_addmm_activation")
def _addmm_activation(args: tuple, kwargs: dict, out: Any) -> Cost:
    matmul = COSTS[aten.addmm](args[:3], {}, out)
    return Cost(matmul.macs, matmul.flops + out.numel())


# --- everything else: per-element rules ------------------------------------------------------


def _per_output(weight: int) -> Callable[[tuple, dict, Any], Cost]:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        return Cost(0, weight * _first_numel(out))

    return cost


def _per_input(weight: int) -> Callable[[tuple, dict, Any], Cost]:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        return Cost(0, weight * _numel(args[0]))

    return cost


register_cost(
    "sum", "mean", "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean",
    "logsumexp", "norm", "linalg_vector_norm", "cumsum", "cumprod", "argmax", "argmin", "any",
    "all", "nansum", "aminmax",
)(_per_input(1))
register_cost("_softmax", "_log_softmax", "_safe_softmax")(_per_input(5))


def _norm(stats_per_element: int, affine_args: tuple[int, ...]) -> Callable:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        elements = _numel(args[0])
        affine = sum(1 for index in affine_args if len(args) > index and args[index] is not None)
        return Cost(0, (stats_per_element + affine) * elements)

    return cost


# Statistics (mean, centre, square, normalise) are 4 FLOPs an element; weight and bias 1 each.
register_cost("native_layer_norm")(_norm(4, (2, 3)))
register_cost("native_group_norm")(_norm(4, (1, 2)))
register_cost("_fused_rms_norm")(_norm(3, (2,)))
register_cost("native_batch_norm", "_native_batch_norm_legit", "_batch_norm_with_update")(
    _norm(4, (1, 2))
)


@register_cost("_native_batch_norm_legit_no_training", "_batch_norm_no_update")
def _batch_norm_eval(args: tuple, kwargs: dict, out: Any) -> Cost:
    # With running statistics the normalisation folds into one scale and one shift.
    return Cost(0, 2 * _numel(args[0]))


def _pool(args: tuple, kwargs: dict, out: Any) -> Cost:
    kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size", 1)
    size = math.prod(kernel) if isinstance(kernel, (tuple, list)) else int(kernel)
    return Cost(0, size * _first_numel(out))


register_cost(
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
)(_pool)
register_cost(
    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "_adaptive_avg_pool1d",
)(_per_input(1))
register_cost("upsample_linear1d")(_per_output(2))
register_cost("upsample_bilinear2d", "_upsample_bilinear2d_aa")(_per_output(4))
register_cost("upsample_trilinear3d")(_per_output(8))
register_cost("upsample_bicubic2d", "_upsample_bicubic2d_aa")(_per_output(16))
register_cost("native_dropout")(_per_output(1))
# Activations that PyTorch does not tag ``pointwise``: one FLOP per output element like the rest.
_ACTIVATIONS = (
    "hardswish", "hardsigmoid", "hardtanh", "mish", "elu", "celu", "selu", "leaky_relu",
    "rrelu_with_noise", "softplus", "softshrink", "hardshrink", "glu", "_prelu_kernel",
    "log_sigmoid_forward", "threshold", "silu", "gelu", "relu", "relu6", "sigmoid", "tanh",
)
register_cost(*_ACTIVATIONS, *(name + "_" for name in _ACTIVATIONS))(_per_output(1))

#: Ops that move, select or create data without arithmetic a user would count.
FREE_OPS: frozenset[Any] = frozenset(
    getattr(aten, name)
    for name in (
        "_to_copy", "copy", "copy_", "clone", "contiguous", "cat", "stack", "empty", "empty_like",
        "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros",
        "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "fill", "fill_", "zero_",
        "arange", "linspace", "logspace", "eye", "scalar_tensor", "lift_fresh", "lift_fresh_copy",
        "index", "index_select", "gather", "scatter", "slice_scatter", "select_scatter",
        "diagonal_scatter", "as_strided_scatter", "index_put", "index_put_", "masked_fill",
        "masked_fill_", "where", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d",
        "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
        "repeat", "repeat_interleave", "flip", "roll", "tril", "triu", "tril_", "triu_",
        "embedding", "bernoulli", "bernoulli_", "rand", "rand_like", "randn", "randn_like",
        "randint", "randint_like", "randperm", "normal", "normal_", "uniform_", "detach",
        "alias", "_unsafe_view", "_local_scalar_dense", "resize_", "set_", "upsample_nearest1d",
        "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "pixel_shuffle",
        "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "_unsafe_index",
        "unfold", "im2col", "col2im", "one_hot", "_assert_async", "_assert_tensor_metadata",
        "_functional_assert_async", "sym_constrain_range_for_size", "_make_dep_token",
        "record_stream", "_efficientzerotensor", "sort", "topk", "nonzero", "masked_select",
        "bitwise_not", "logical_not", "unique_consecutive", "_unique2", "searchsorted",
        "bucketize", "tensor_split", "split_with_sizes_copy", "cat_", "item",
    )
    if hasattr(aten, name)
)

_POINTWISE = torch.Tag.pointwise


def _functional_form(func: Any) -> Any:
    """``aten.hardswish_`` -> ``aten.hardswish``: an in-place op costs what its functional form
    does (many in-place overloads carry no ``pointwise`` tag)."""
    name = func._overloadpacket.__name__
    if name.endswith("_") and not name.endswith("__"):
        functional = getattr(aten, name[:-1], None)
        if functional is not None:
            return functional
    return None


def cost_of(func: Any, args: tuple, kwargs: dict, out: Any) -> Cost | None:
    """What one call of ``func`` cost, or ``None`` if it did arithmetic no rule prices."""
    packet = func._overloadpacket
    formula = COSTS.get(packet)
    if formula is not None:
        return formula(args, kwargs, out)
    if packet in FREE_OPS or func.is_view or func.namespace == "prim":
        return FREE
    if _POINTWISE in func.tags:
        return Cost(0, _first_numel(out))
    functional = _functional_form(func)
    if functional is not None:
        if functional in COSTS:
            return COSTS[functional](args, kwargs, out)
        if functional in FREE_OPS or functional.__name__ in _VIEW_NAMES:
            return FREE
        overloads = [getattr(functional, o) for o in functional.overloads()]
        if any(_POINTWISE in overload.tags for overload in overloads):
            return Cost(0, _first_numel(out))
    return None


# In-place forms of view ops (as_strided_, squeeze_, t_) only restride: free.
_VIEW_NAMES = frozenset({"as_strided", "squeeze", "unsqueeze", "t", "transpose", "swapdims", "detach"})


def has_formula(func: Any) -> bool:
    """Ops priced as a whole: not decomposed into smaller ops before counting."""
    return func._overloadpacket in COSTS
