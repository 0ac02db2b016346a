"""``ModelStats`` put together from one run: the model's own tensors (``inventory.py``: params,
bytes), what the counter priced per module (``tracking.py``: MACs, FLOPs, traffic, roofline time,
output shapes) and the memory the step took (``memory.py``), each module's figures including its
children's."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..stats import LayerStats, ModelStats
from .inventory import SUB_BYTE_BITS, TensorInventory, tensor_bytes
from .memory import StepMemory, storage_key
from .tracking import OpCounter

#: Where an exported program's unflattened module keeps the type each of its modules had when it
#: was exported (its own modules are all InterpreterModules).
EXPORTED_TYPES = "_modelbudget_exported_types"


def assemble_stats(
    tensors: TensorInventory,
    model: torch.nn.Module,
    counter: OpCounter,
    memory: StepMemory,
    *,
    mode: str,
    execution: str,
    notes: list[str],
) -> ModelStats:
    exported = model.__dict__.get(EXPORTED_TYPES, {})
    layers = {
        name: LayerStats(type=exported.get(name, type(module).__name__), calls=counter.calls.get(name, 0))
        for name, module in model.named_modules(remove_duplicate=True)
    }
    layers[""].calls = max(layers[""].calls, 1)
    _add_tensors(layers, tensors)
    _add_priced_ops(layers, counter)
    _add_memory(layers, memory)
    _add_cache(layers, counter.kv_cache)
    root = layers[""]
    params = sum(t.numel() for t in (*tensors.params.values(), *tensors.packed.values()))
    trainable = sum(t.numel() for t in tensors.params.values() if t.requires_grad)
    return ModelStats(
        params=params,
        trainable_params=trainable,
        frozen_params=params - trainable,
        buffer_elements=sum(t.numel() for t in tensors.buffers.values()),
        bytes=root.bytes,
        macs=root.macs,
        flops=root.flops,
        memory_traffic=root.memory_traffic,
        roofline_time=root.roofline_time,
        gpu=counter.gpu.name if counter.gpu is not None else None,
        peak_memory=root.peak_memory,
        kv_cache=root.kv_cache,
        peak_memory_source="estimate" if memory.exact is None else "cuda",
        peak_memory_estimate=memory.estimate,
        peak_memory_approximations=memory.approximations if memory.exact is None else [],
        peak_memory_steps=memory.steps,
        peak_memory_step=memory.step,
        unused_params=[name for name in tensors.params if name not in counter.params_read],
        shared_params=tensors.shared_groups(),
        uncounted_ops=dict(sorted(counter.uncounted.items())),
        layers=layers,
        mode=mode,
        execution=execution,
        notes=notes,
        model_type=exported.get("", type(model).__name__),
    )


def _add_tensors(layers: dict[str, LayerStats], tensors: TensorInventory) -> None:
    """Params and bytes of the tensors each layer holds. Bytes by storage, so that tensors viewing
    one storage (parameters kept as views of a flat buffer) count what they cover once."""
    ranges: dict[str, list[tuple[int, int, int]]] = {name: [] for name in layers}
    for name, tensor in [*tensors.params.items(), *tensors.buffers.items()]:
        is_param = name in tensors.params
        span = _byte_range(tensor)
        for layer_name, layer in _ancestors_named(layers, name):
            if span is None:
                layer.bytes += tensor_bytes(tensor)
            else:
                ranges[layer_name].append(span)
            if is_param:
                layer.params += tensor.numel()
    for name, spans in ranges.items():
        layers[name].bytes += covered_bytes(spans)
    for name, tensor in tensors.packed.items():
        for layer in _ancestors(layers, name):
            layer.bytes += tensor_bytes(tensor)
            layer.params += tensor.numel()


def _add_priced_ops(layers: dict[str, LayerStats], counter: OpCounter) -> None:
    """What the counter priced in each module's own ops, added to it and its ancestors."""
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


def _add_memory(layers: dict[str, LayerStats], memory: StepMemory) -> None:
    for name, peak in memory.layers.items():
        # A container that never ran itself (ModuleList) peaks where its busiest child did.
        for layer in _ancestors(layers, name + ".") if name else [layers[""]]:
            layer.peak_memory = max(layer.peak_memory or 0, peak)
    layers[""].peak_memory = memory.exact if memory.exact is not None else memory.estimate


def _add_cache(layers: dict[str, LayerStats], by_module: dict[str, int] | None) -> None:
    """A serving step's cache bytes, on the module that made each part and its ancestors."""
    if by_module is None:
        return
    layers[""].kv_cache = 0
    for name, size in by_module.items():
        for layer in _ancestors(layers, name + ".") if name else [layers[""]]:
            layer.kv_cache = (layer.kv_cache or 0) + size


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
    if tensor.is_quantized or tensor.dtype in SUB_BYTE_BITS or not tensor.is_contiguous():
        return None
    storage = storage_key(tensor)
    if storage is None:
        return None
    start = int(tensor.storage_offset()) * tensor.element_size()
    return storage, start, start + int(tensor.numel()) * tensor.element_size()


def covered_bytes(spans: list[tuple[int, int, int]]) -> int:
    """Bytes the spans cover, each storage's overlaps counted once."""
    total, storage, reach = 0, None, 0
    for this_storage, start, end in sorted(spans):
        if this_storage != storage:
            storage, reach = this_storage, start
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
