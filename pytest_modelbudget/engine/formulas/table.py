"""The one table every figure comes from: aten op -> formula -> multiply-accumulates and FLOPs.

The formulas live beside this module, one family per module (matmul, attention, recurrent,
elementwise, data movement), each registering into ``COSTS`` or ``FREE_OPS`` when imported by
``formulas/__init__.py``. ``cost_of`` is the one lookup: a registered formula, else free (views,
copies, factories), else the pointwise rule. An op that does arithmetic and matches no rule
returns ``None`` and is reported as uncounted, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

aten = torch.ops.aten

Formula = Callable[[tuple, dict, Any], "Cost"]


class Cost(NamedTuple):
    macs: int
    flops: int


FREE = Cost(0, 0)

#: op packet -> formula(args, kwargs, out) -> Cost.
COSTS: dict[Any, Formula] = {}

#: Ops that move, select or create data without arithmetic a user would count.
FREE_OPS: set[Any] = set()

# id(op overload) -> the rule that prices it. Which rule applies never changes (the cache is
# cleared when one is registered), and looping models run the same ops tens of thousands of
# times: the rules are walked once per op. Keyed by id, as op overloads are never freed and
# their own hash is a Python method.
_PRICERS: dict[int, Any] = {}


def _packet(target: str) -> Any:
    """``"mm"`` -> ``aten.mm``; ``"quantized::linear"`` -> ``torch.ops.quantized.linear``; None if
    this build of torch has no such op."""
    namespace, _, name = target.rpartition("::")
    try:
        return getattr(getattr(torch.ops, namespace or "aten"), name)
    except (AttributeError, RuntimeError):
        return None


#: Formulas for ops whose library registers them later (torchvision's ops exist once it is
#: imported), by qualified name; moved into ``COSTS`` when first seen.
_BY_NAME: dict[str, Formula] = {}


def register_cost(*targets: str) -> Callable[[Formula], Formula]:
    def register(formula: Formula) -> Formula:
        for target in targets:
            packet = _packet(target)
            if packet is not None:
                COSTS[packet] = formula
            elif "::" in target:
                _BY_NAME[target] = formula
        _PRICERS.clear()
        return formula

    return register


def register_formula(*ops: str) -> Callable[[Callable[[tuple, dict, Any], tuple[int, int]]], Any]:
    """Price a team's own op, as ``torch.utils.flop_counter.register_flop_formula`` does for
    FlopCounterMode: ``@register_formula("teamlib::fused_act")`` on a function of the op's
    ``(args, kwargs, out)`` returning one call's ``(macs, flops)``. The op may be registered with
    PyTorch before or after; a formula replaces any the op had."""

    for op in ops:
        if not isinstance(op, str) or not op.replace(".", "::").partition("::")[2]:
            raise ValueError(f"register_formula: {op!r}; expected an op's qualified name such as 'teamlib::fused_act'")

    def register(formula: Callable[[tuple, dict, Any], tuple[int, int]]) -> Any:
        for op in ops:
            qualified = op if "::" in op else op.replace(".", "::", 1)

            def priced(args: tuple, kwargs: dict, out: Any, _formula: Any = formula, _op: str = qualified) -> Cost:
                result = _formula(args, kwargs, out)
                if (
                    not isinstance(result, tuple)
                    or len(result) != 2
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in result)
                ):
                    raise ValueError(
                        f"the formula registered for {_op} returned {result!r}; expected (macs, flops), two whole "
                        "numbers of 0 or more"
                    )
                return Cost(*result)

            register_cost(qualified)(priced)
        return formula

    return register


def register_free(*targets: str) -> None:
    FREE_OPS.update(packet for packet in map(_packet, targets) if packet is not None)
    _PRICERS.clear()


def numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)):
        return sum(numel(item) for item in value)
    return 0


def first_numel(value: Any) -> int:
    if isinstance(value, (tuple, list)):
        return first_numel(value[0]) if value else 0
    return numel(value)


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
    return pricer(func)(args, kwargs, out)


Pricer = Callable[[tuple, dict, Any], "Cost | None"]


def pricer(func: Any) -> Pricer:
    """The rule that prices ``func``: a registered formula, free, the pointwise rule, or one
    returning ``None`` (arithmetic no rule prices)."""
    known = _PRICERS.get(id(func))
    if known is None:
        known = _PRICERS[id(func)] = _find_pricer(func)
    return known


def _free(args: tuple, kwargs: dict, out: Any) -> Cost:
    return FREE


def _pointwise(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost(0, first_numel(out))


def _unpriced(args: tuple, kwargs: dict, out: Any) -> None:
    return None


def _find_pricer(func: Any) -> Pricer:
    packet = func._overloadpacket
    formula = COSTS.get(packet)
    if formula is None and _BY_NAME:
        formula = _BY_NAME.pop(packet._qualified_op_name, None)
        if formula is not None:
            COSTS[packet] = formula
    if formula is not None:
        return formula
    if packet in FREE_OPS or func.is_view or func.namespace == "prim":
        return _free
    if _POINTWISE in func.tags:
        return _pointwise
    functional = _functional_form(func)
    if functional is not None:
        if functional in COSTS:
            return COSTS[functional]
        if functional in FREE_OPS or functional.__name__ in _VIEW_NAMES:
            return _free
        overloads = [getattr(functional, o) for o in functional.overloads()]
        if any(_POINTWISE in overload.tags for overload in overloads):
            return _pointwise
    return _unpriced


# In-place forms of view ops (as_strided_, squeeze_, t_) only restride: free.
_VIEW_NAMES = frozenset({"as_strided", "squeeze", "unsqueeze", "t", "transpose", "swapdims", "detach"})


def has_formula(func: Any) -> bool:
    """Ops priced as a whole: not decomposed into smaller ops before counting."""
    return func._overloadpacket in COSTS
