"""What every test of ``measure()`` checks besides its figures: the model is exactly as it was."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from pytest_modelbudget import ModelStats, measure


def _value(tensor: torch.Tensor) -> Any:
    if is_lazy(tensor):  # nothing to read before a lazy module's first forward
        return ("lazy", type(tensor))
    if is_traceable_wrapper_subclass(tensor):  # torchao's int8 weights: compare what they hold
        names, context = tensor.__tensor_flatten__()
        return ("subclass", repr(context), tuple(_value(getattr(tensor, name)) for name in names))
    # Meta tensors have no data: their shape and dtype are all there is to keep.
    return ("meta", tuple(tensor.shape), tensor.dtype) if tensor.is_meta else tensor.detach().clone()


def snapshot(model: nn.Module) -> dict[str, Any]:
    modules = list(model.named_modules(remove_duplicate=False))
    tensors = {
        f"{prefix}.{key}": value
        for prefix, module in modules
        for slots in (module._parameters, module._buffers, vars(module))
        for key, value in slots.items()
        if isinstance(value, torch.Tensor)
    }
    return {
        "identity": {name: id(tensor) for name, tensor in tensors.items()},
        "types": {name: type(tensor) for name, tensor in tensors.items()},
        "values": {name: _value(tensor) for name, tensor in tensors.items()},
        "grads": {
            name: _value(t.grad) if not is_lazy(t) and t.is_leaf and t.grad is not None else None
            for name, t in tensors.items()
        },
        "requires_grad": {name: t.requires_grad for name, t in tensors.items()},
        "attributes": [(prefix, sorted(vars(module))) for prefix, module in modules],
        "submodules": [(prefix, [id(m) for m in module._modules.values()]) for prefix, module in modules],
        "training": [module.training for _, module in modules],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for _, m in modules],
    }


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and a.device == b.device and torch.equal(a, b)
    return a == b


def assert_unchanged(before: dict[str, Any], model: nn.Module) -> None:
    after = snapshot(model)
    for key in ("identity", "types", "requires_grad", "attributes", "submodules", "training", "hooks"):
        assert before[key] == after[key], f"measure() changed the model's {key}"
    for key in ("values", "grads"):
        changed = [name for name in before[key] if not _equal(before[key][name], after[key][name])]
        assert not changed, f"measure() changed the {key} of {changed[:5]}"
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


def measure_checked(model: nn.Module, *args: Any, **kwargs: Any) -> ModelStats:
    """``measure()``, and the model is asserted unchanged afterwards, also when it raises."""
    if not isinstance(model, nn.Module):  # the error for that is under test
        return measure(model, *args, **kwargs)
    before = snapshot(model)
    try:
        return measure(model, *args, **kwargs)
    finally:
        assert_unchanged(before, model)
