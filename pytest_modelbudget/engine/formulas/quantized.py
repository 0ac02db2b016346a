"""Quantized kernels (``torch.ao.quantization``: eager-mode static and dynamic quantization, as
torchvision's quantized models use): the same multiply-accumulates as the float layers they
replace, on packed int8 weights. Quantizing and dequantizing only convert: free."""

from __future__ import annotations

import math
from typing import Any

from .table import Cost, first_numel, register_cost, register_free


def _matmul(macs: int) -> Cost:
    return Cost(macs, 2 * macs)


@register_cost(
    "quantized::linear",
    "quantized::linear_relu",
    "quantized::linear_dynamic",
    "quantized::linear_relu_dynamic",
    "quantized::linear_dynamic_fp16",
    "quantized::linear_relu_dynamic_fp16",
)
def _linear(args: tuple, kwargs: dict, out: Any) -> Cost:
    # Every output element is a dot product over the input's last dimension.
    return _matmul(first_numel(out) * args[0].shape[-1])


def _weight(packed: Any) -> Any:
    return packed.unpack()[0]


@register_cost(
    "quantized::conv1d",
    "quantized::conv2d",
    "quantized::conv3d",
    "quantized::conv1d_relu",
    "quantized::conv2d_relu",
    "quantized::conv3d_relu",
)
def _conv(args: tuple, kwargs: dict, out: Any) -> Cost:
    # Weight (C_out, C_in / groups, *kernel): each output element reads one filter.
    weight = _weight(args[1])
    return _matmul(first_numel(out) * math.prod(weight.shape[1:]))


@register_cost("quantized::conv_transpose1d", "quantized::conv_transpose2d", "quantized::conv_transpose3d")
def _conv_transpose(args: tuple, kwargs: dict, out: Any) -> Cost:
    # Weight (C_in, C_out / groups, *kernel): each input element is scattered through one filter.
    weight = _weight(args[1])
    return _matmul(first_numel(args[0]) * math.prod(weight.shape[1:]))


def _per_output(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost(0, first_numel(out))


register_cost(
    "quantized::add",
    "quantized::add_relu",
    "quantized::add_scalar",
    "quantized::add_scalar_relu",
    "quantized::mul",
    "quantized::mul_relu",
    "quantized::mul_scalar",
    "quantized::hardswish",
    "quantized::sigmoid",
    "quantized::leaky_relu",
    "quantized::relu6",
    "quantized::celu",
    "quantized::elu",
)(_per_output)
register_cost("quantized::batch_norm1d", "quantized::batch_norm2d", "quantized::batch_norm3d")(
    lambda args, kwargs, out: Cost(0, 2 * first_numel(out))
)
register_free(
    "quantize_per_tensor",
    "quantize_per_channel",
    "quantize_per_tensor_dynamic",
    "dequantize",
    "q_per_channel_scales",
    "q_per_channel_zero_points",
    "int_repr",
    "quantized::cat",
    "quantized::cat_relu",
)


# Tensor-subclass quantization (torchao): int8 activations times int8 weights, accumulated in int32.
@register_cost("_int_mm")
def _int_mm(args: tuple, kwargs: dict, out: Any) -> Cost:
    (m, k), n = args[0].shape, args[1].shape[-1]
    return _matmul(m * k * n)


@register_cost(
    "_weight_int8pack_mm",
    "_weight_int4pack_mm",
    "_weight_int4pack_mm_for_cpu",
    "_weight_int4pack_mm_with_scales_and_zeros",
)
def _weight_pack_mm(args: tuple, kwargs: dict, out: Any) -> Cost:
    # Activations (..., K) times a packed low-bit weight: each output element is a K-long dot product.
    return _matmul(first_numel(out) * args[0].shape[-1])
