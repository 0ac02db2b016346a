"""The model's own tensors: each unique parameter and buffer under its first (canonical) name, and
what they take in memory. ``assembly.py`` turns them and a run into ``ModelStats``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from .memory import allocator_size
from .standins import StandIns


class TensorInventory:
    """The model's unique parameters and buffers, each under its first (canonical) name."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = dict(model.named_parameters(remove_duplicate=True))
        self.buffers = dict(model.named_buffers(remove_duplicate=True))
        self.all_params = list(model.named_parameters(remove_duplicate=False))
        #: Packed weights of quantized layers, unpacked: name -> tensor (frozen parameters).
        self.packed = dict(packed_weights(model))
        self.on_meta = any(t.is_meta for t in (*self.params.values(), *self.buffers.values()))
        first = next(iter((*self.params.values(), *self.buffers.values())), None)
        self.device = first.device if first is not None else torch.device("cpu")

    def allocated_bytes(self, block: int) -> int:
        """What the model's own tensors take from an allocator rounding to ``block``: one
        allocation per unique storage."""
        storages = {}
        for tensor in _storage_holders((*self.params.values(), *self.buffers.values())):
            storage = tensor.untyped_storage()
            storages[id(storage)] = storage.nbytes()
        return sum(allocator_size(nbytes, block) for nbytes in storages.values())

    def shared_groups(self) -> list[list[str]]:
        names_by_tensor: dict[int, list[str]] = {}
        for name, tensor in self.all_params:
            names_by_tensor.setdefault(id(tensor), []).append(name)
        return [names for names in names_by_tensor.values() if len(names) > 1]

    def stand_ins(self, model: torch.nn.Module, convert: Callable[[torch.Tensor], torch.Tensor]) -> StandIns:
        """Stand-ins for every tensor of the model, converted once per unique tensor."""
        return StandIns(model, self.params, convert)


def packed_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights and biases that quantized layers keep packed in TorchScript objects
    (``torch.ao.nn.quantized``: ``_packed_params``), named after the module that holds them."""
    for prefix, module in model.named_modules():
        for value in vars(module).values():
            script: Any = value  # TorchScript objects' methods are not in torch's stubs
            if isinstance(value, torch.ScriptObject) and script._has_method("unpack"):
                unpacked = script.unpack()
                tensors = unpacked if isinstance(unpacked, (tuple, list)) else (unpacked,)
                for role, tensor in zip(("weight", "bias"), tensors):
                    if isinstance(tensor, torch.Tensor):
                        yield f"{prefix}.{role}" if prefix else role, tensor


def inner_tensors(tensor: torch.Tensor) -> list[torch.Tensor] | None:
    """The plain tensors a wrapper subclass (``__tensor_flatten__``: torchao's quantized weights,
    DTensor) stores its data in; None for a tensor that holds its own storage."""
    if not is_traceable_wrapper_subclass(tensor):
        return None
    names, _ = tensor.__tensor_flatten__()
    return [part for name in names if isinstance(part := getattr(tensor, name), torch.Tensor)]


def _storage_holders(tensors: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    # A wrapper subclass has no storage of its own; its inner tensors are what the allocator holds.
    for tensor in tensors:
        inner = inner_tensors(tensor)
        if inner is None:
            yield tensor
        else:
            yield from _storage_holders(inner)


SUB_BYTE_BITS = {
    getattr(torch, f"{kind}{bits}"): bits
    for kind in ("uint", "int")
    for bits in range(1, 8)
    if hasattr(torch, f"{kind}{bits}")
}


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Storage a tensor needs at its dtype: packed and sub-byte dtypes by their real width, a
    per-channel quantized tensor's scales and zero points with it, and a tensor subclass (torchao's
    int8 weights, say) by the tensors it really holds, not by its logical dtype."""
    inner = inner_tensors(tensor)
    if inner is not None:
        return sum(tensor_bytes(part) for part in inner)
    bits = SUB_BYTE_BITS.get(tensor.dtype)
    if bits is not None:
        return (tensor.numel() * bits + 7) // 8
    size = tensor.numel() * tensor.element_size()
    if tensor.is_quantized and tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales, zero_points = tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points()
        size += scales.numel() * scales.element_size() + zero_points.numel() * zero_points.element_size()
    return size
