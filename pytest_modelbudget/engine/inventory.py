"""The model's own tensors: each unique parameter and buffer under its first (canonical) name, and
the per-layer totals of ``ModelStats`` built from them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from ..stats import LayerStats, ModelStats
from .memory import StepMemory, allocator_size, storage_key
from .standins import StandIns
from .tracking import OpCounter


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

    def stats(
        self,
        model: torch.nn.Module,
        counter: OpCounter,
        memory: StepMemory,
        *,
        mode: str,
        execution: str,
        notes: list[str],
    ) -> ModelStats:
        layers = {
            name: LayerStats(type=type(module).__name__, calls=counter.calls.get(name, 0))
            for name, module in model.named_modules(remove_duplicate=True)
        }
        layers[""].calls = max(layers[""].calls, 1)
        # Bytes by storage, so that tensors viewing one storage (parameters kept as views of a
        # flat buffer) count what they cover once.
        ranges: dict[str, list[tuple[int, int, int]]] = {name: [] for name in layers}
        for name, tensor in [*self.params.items(), *self.buffers.items()]:
            is_param = name in self.params
            span = _byte_range(tensor)
            for layer_name, layer in _ancestors_named(layers, name):
                if span is None:
                    layer.bytes += tensor_bytes(tensor)
                else:
                    ranges[layer_name].append(span)
                if is_param:
                    layer.params += tensor.numel()
        for name, spans in ranges.items():
            layers[name].bytes += _covered_bytes(spans)
        for name, tensor in self.packed.items():
            for layer in _ancestors(layers, name):
                layer.bytes += tensor_bytes(tensor)
                layer.params += tensor.numel()
        for name in counter.macs.keys() | counter.flops.keys():
            for layer in _ancestors(layers, name + ".") if name else [layers[""]]:
                layer.macs += counter.macs.get(name, 0)
                layer.flops += counter.flops.get(name, 0)
        for name in counter.read.keys() | counter.written.keys():
            for layer in _ancestors(layers, name + ".") if name else [layers[""]]:
                layer.memory_read += counter.read.get(name, 0)
                layer.memory_written += counter.written.get(name, 0)
        if counter.gpu is not None:
            seconds: dict[str, float] = dict.fromkeys(layers, 0.0)
            for name, spent in counter.seconds.items():
                # A module's own ops and its ancestors' totals (the root's name is "").
                parts = name.split(".") if name else []
                for end in range(len(parts) + 1):
                    prefix = ".".join(parts[:end])
                    if prefix in seconds:
                        seconds[prefix] += spent
            for name, layer in layers.items():
                layer.roofline_time = round(seconds[name] * 1e9)
        for name, shapes in counter.output_shapes.items():
            if name in layers:
                layers[name].output_shapes = shapes
        for name, peak in memory.layers.items():
            # A container that never ran itself (ModuleList) peaks where its busiest child did.
            for layer in _ancestors(layers, name + ".") if name else [layers[""]]:
                layer.peak_memory = max(layer.peak_memory or 0, peak)
        layers[""].peak_memory = memory.exact if memory.exact is not None else memory.estimate
        params = sum(t.numel() for t in (*self.params.values(), *self.packed.values()))
        trainable = sum(t.numel() for t in self.params.values() if t.requires_grad)
        return ModelStats(
            params=params,
            trainable_params=trainable,
            frozen_params=params - trainable,
            buffer_elements=sum(t.numel() for t in self.buffers.values()),
            bytes=layers[""].bytes,
            macs=layers[""].macs,
            flops=layers[""].flops,
            memory_traffic=layers[""].memory_traffic,
            roofline_time=layers[""].roofline_time,
            gpu=counter.gpu.name if counter.gpu is not None else None,
            peak_memory=layers[""].peak_memory,
            peak_memory_source="estimate" if memory.exact is None else "cuda",
            peak_memory_estimate=memory.estimate,
            peak_memory_approximations=memory.approximations if memory.exact is None else [],
            unused_params=[name for name in self.params if name not in counter.params_read],
            shared_params=self.shared_groups(),
            uncounted_ops=dict(sorted(counter.uncounted.items())),
            layers=layers,
            mode=mode,
            execution=execution,
            notes=notes,
            model_type=type(model).__name__,
        )


def packed_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights and biases that quantized layers keep packed in TorchScript objects
    (``torch.ao.nn.quantized``: ``_packed_params``), named after the module that holds them."""
    for prefix, module in model.named_modules():
        for value in vars(module).values():
            if isinstance(value, torch.ScriptObject) and value._has_method("unpack"):
                unpacked = value.unpack()
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


def _ancestors(layers: dict[str, LayerStats], name: str) -> Iterator[LayerStats]:
    """The layers that contain ``name`` (a tensor's or, with a trailing dot, a module's)."""
    for _, layer in _ancestors_named(layers, name):
        yield layer


def _ancestors_named(layers: dict[str, LayerStats], name: str) -> Iterator[tuple[str, LayerStats]]:
    parts = name.split(".")
    for end in range(len(parts)):
        prefix = ".".join(parts[:end])
        layer = layers.get(prefix)
        if layer is not None:
            yield prefix, layer


def _byte_range(tensor: torch.Tensor) -> tuple[int, int, int] | None:
    """(storage, first byte, end) of a plain contiguous tensor; None for anything else (a
    strided view, a subclass, a quantized or sub-byte tensor), which counts its own bytes."""
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.layout != torch.strided:
        return None
    if tensor.is_quantized or tensor.dtype in _SUB_BYTE_BITS or not tensor.is_contiguous():
        return None
    storage = storage_key(tensor)
    if storage is None:
        return None
    start = tensor.storage_offset() * tensor.element_size()
    return storage, start, start + tensor.numel() * tensor.element_size()


def _covered_bytes(spans: list[tuple[int, int, int]]) -> int:
    """Bytes the spans cover, each storage's overlaps counted once."""
    total, storage, reach = 0, None, 0
    for this_storage, start, end in sorted(spans):
        if this_storage != storage:
            storage, reach = this_storage, start
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


_SUB_BYTE_BITS = {
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
    bits = _SUB_BYTE_BITS.get(tensor.dtype)
    if bits is not None:
        return (tensor.numel() * bits + 7) // 8
    size = tensor.numel() * tensor.element_size()
    if tensor.is_quantized and tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales, zero_points = tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points()
        size += scales.numel() * scales.element_size() + zero_points.numel() * zero_points.element_size()
    return size
