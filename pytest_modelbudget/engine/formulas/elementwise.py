"""Per-element rules (``docs/FLOPS.md``): reductions one FLOP per input element, softmax five,
normalisation four plus affine, pooling the window size per output, activations one per output."""

from __future__ import annotations

import math
from typing import Any

from .table import Cost, Formula, first_numel, numel, register_cost


def _per_output(weight: int) -> Formula:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        return Cost(0, weight * first_numel(out))

    return cost


def _per_input(weight: int) -> Formula:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        return Cost(0, weight * numel(args[0]))

    return cost


register_cost(
    "sum",
    "mean",
    "amax",
    "amin",
    "max",
    "min",
    "prod",
    "var",
    "std",
    "var_mean",
    "std_mean",
    "logsumexp",
    "norm",
    "linalg_vector_norm",
    "cumsum",
    "cumprod",
    "argmax",
    "argmin",
    "any",
    "all",
    "nansum",
    "aminmax",
)(_per_input(1))
register_cost("histc", "_is_all_true", "_is_any_true")(_per_input(1))
register_cost("_softmax", "_log_softmax", "_safe_softmax")(_per_input(5))
# Weight norm, w = g * v / ||v||: square and sum for the norm, one scale, per element of v.
register_cost("_weight_norm_interface")(_per_input(3))
# Losses: the difference, its square or absolute value, and the reduction: 3 an element.
register_cost("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")(_per_input(3))


@register_cost("nll_loss_forward", "nll_loss2d_forward")
def _nll_loss(args: tuple, kwargs: dict, out: Any) -> Cost:
    # (self, target, weight, ...): picking each target's log-probability moves data; summing
    # them is one FLOP per target, and a class weight one more. Cross-entropy's log-softmax is
    # priced on its own.
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    return Cost(0, (2 if weight is not None else 1) * numel(args[1]))


def _norm(stats_per_element: int, affine_args: tuple[int, ...]) -> Formula:
    def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        elements = numel(args[0])
        affine = sum(1 for index in affine_args if len(args) > index and args[index] is not None)
        return Cost(0, (stats_per_element + affine) * elements)

    return cost


# Statistics (mean, centre, square, normalise) are 4 FLOPs an element; weight and bias 1 each.
register_cost("native_layer_norm")(_norm(4, (2, 3)))
register_cost("native_group_norm")(_norm(4, (1, 2)))
register_cost("_fused_rms_norm")(_norm(3, (2,)))
register_cost("_batch_norm_with_update")(_norm(4, (1, 2)))
_batch_norm_training = _norm(4, (1, 2))


@register_cost("_native_batch_norm_legit_no_training", "_batch_norm_no_update")
def _batch_norm_eval(args: tuple, kwargs: dict, out: Any) -> Cost:
    # With running statistics the normalisation folds into one scale and one shift.
    return Cost(0, 2 * numel(args[0]))


@register_cost("native_batch_norm", "_native_batch_norm_legit")
def _batch_norm(args: tuple, kwargs: dict, out: Any) -> Cost:
    # (input, weight, bias, running_mean, running_var, training, ...): eval-mode BatchNorm is
    # dispatched here with training=False. The no_stats overload has no running statistics.
    has_running_stats = len(args) > 7
    training = args[5] if has_running_stats else True
    if has_running_stats and not training and args[3] is not None:
        return _batch_norm_eval(args, kwargs, out)
    return _batch_norm_training(args, kwargs, out)


def _pool(args: tuple, kwargs: dict, out: Any) -> Cost:
    kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size", 1)
    size = math.prod(kernel) if isinstance(kernel, (tuple, list)) else int(kernel)
    return Cost(0, size * first_numel(out))


register_cost(
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "quantized_max_pool1d",
    "quantized_max_pool2d",
    "quantized_max_pool3d",
)(_pool)
register_cost(
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "_adaptive_avg_pool1d",
)(_per_input(1))
register_cost("upsample_linear1d")(_per_output(2))
register_cost("upsample_bilinear2d", "_upsample_bilinear2d_aa")(_per_output(4))
register_cost("upsample_trilinear3d")(_per_output(8))
register_cost("upsample_bicubic2d", "_upsample_bicubic2d_aa")(_per_output(16))
register_cost("native_dropout")(_per_output(1))
# Pointwise arithmetic that PyTorch does not tag ``pointwise``.
register_cost("floor_divide", "floor_divide_", "remainder", "fmod")(_per_output(1))
# Activations that PyTorch does not tag ``pointwise``: one FLOP per output element like the rest.
_ACTIVATIONS = (
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "mish",
    "elu",
    "celu",
    "selu",
    "leaky_relu",
    "rrelu_with_noise",
    "softplus",
    "softshrink",
    "hardshrink",
    "glu",
    "_prelu_kernel",
    "log_sigmoid_forward",
    "threshold",
    "silu",
    "gelu",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
)
register_cost(*_ACTIVATIONS, *(name + "_" for name in _ACTIVATIONS))(_per_output(1))


@register_cost("grid_sampler_2d", "grid_sampler_3d", "cudnn_grid_sampler")
def _grid_sampler(args: tuple, kwargs: dict, out: Any) -> Cost:
    # As upsampling, per output element: bilinear 4, trilinear 8, bicubic 16, nearest 0
    # (interpolation_mode 0, 1, 2); plus 2 per grid coordinate to map it from [-1, 1] to pixels.
    grid = args[1]
    volumetric = grid.shape[-1] == 3
    mode = args[2] if len(args) > 2 else 0
    per_output = {0: 8 if volumetric else 4, 1: 0, 2: 16}.get(mode, 4)
    return Cost(0, per_output * first_numel(out) + 2 * grid.numel())


@register_cost(
    "scatter_reduce", "scatter_reduce_", "scatter_add", "scatter_add_", "index_add", "index_add_", "index_reduce"
)
def _scatter_reduce(args: tuple, kwargs: dict, out: Any) -> Cost:
    # One reduction step (add, multiply, max, min) per source element folded into the output.
    source = args[3] if len(args) > 3 else kwargs.get("src", kwargs.get("source"))
    return Cost(0, numel(source))


# torch.polar (Llama 4's rotary frequencies): abs * cos(angle) and abs * sin(angle), 4 per element.
register_cost("polar")(_per_output(4))
