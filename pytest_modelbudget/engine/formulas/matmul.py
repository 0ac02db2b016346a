"""Matmul-like ops: PyTorch's own ``torch.utils.flop_counter`` formulas (MACs = its FLOPs / 2,
the convention of torchvision's ``_ops`` and fvcore), and the fused ops it does not know."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

from .table import COSTS, Cost, Formula, aten, register_cost


def _from_torch(formula: Callable) -> Formula:
    on_shapes = _shape_formula(formula)
    if on_shapes is not None:

        def cost(args: tuple, kwargs: dict, out: Any) -> Cost:
            flops = int(on_shapes(*_shapes(args), out_shape=_shapes(out), **_shapes(kwargs)))
            return Cost(flops // 2, flops)

        return cost

    def raw_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
        flops = int(formula(*args, **kwargs, out_val=out))
        return Cost(flops // 2, flops)

    return raw_cost


def _shape_formula(formula: Callable) -> Callable | None:
    """The formula on shapes behind ``flop_counter.shape_wrapper``, whose own walk of the
    arguments (a pytree ``tree_map``) costs more than the formula: called with the shapes taken
    here instead. None for formulas registered raw (they take the tensors)."""
    inner = getattr(formula, "__wrapped__", None)
    code = getattr(formula, "__code__", None)
    if inner is None or code is None or code.co_name != "nf" or "out_val" not in code.co_varnames:
        return None
    return inner


def _shapes(value: Any) -> Any:
    """``value`` with each tensor replaced by its shape, as ``shape_wrapper`` passes it."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_shapes(item) for item in value)
    if isinstance(value, dict):
        return {key: _shapes(item) for key, item in value.items()}
    return value


for _packet, _formula in flop_counter.flop_registry.items():
    COSTS[_packet] = _from_torch(_formula)


@register_cost("_addmm_activation")
def _addmm_activation(args: tuple, kwargs: dict, out: Any) -> Cost:
    matmul = COSTS[aten.addmm](args[:3], {}, out)
    return Cost(matmul.macs, matmul.flops + out.numel())


@register_cost("linalg_solve_triangular")
def _solve_triangular(args: tuple, kwargs: dict, out: Any) -> Cost:
    # Substitution: unknown i of each right-hand side takes i multiply-adds with the unknowns
    # already solved, n(n-1)/2 per column in all, and a division unless the diagonal is ones.
    n = args[0].shape[-1]
    columns = out.numel() // n if n else 0
    macs = columns * n * (n - 1) // 2
    unitriangular = kwargs.get("unitriangular", args[4] if len(args) > 4 else False)
    return Cost(macs, 2 * macs + (0 if unitriangular else out.numel()))


@register_cost("_euclidean_dist")
def _euclidean_dist(args: tuple, kwargs: dict, out: Any) -> Cost:
    # torch.cdist's matmul path (Mimi's codebook lookup): x (.., P, M) against y (.., R, M) as
    # ||x||^2 + ||y||^2 - 2 x.y: the P x R x M products, then per distance two adds and a root.
    x, y = args[0], args[1]
    macs = out.numel() * x.shape[-1]
    return Cost(macs, 2 * macs + x.numel() + y.numel() + 3 * out.numel())
