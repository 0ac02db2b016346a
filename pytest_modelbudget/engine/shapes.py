"""Outputs of ops on tensors without data (fake or meta), made here where that is faster or
where the op's own meta kernel would refuse.

- Some meta kernels check more than shapes: ``_grouped_mm``'s accepts only bf16 (the CUDA
  kernel's dtype) where the CPU kernel also runs fp32, so an fp32 mixture-of-experts model could
  not be measured without a real run. For those ops the output is made from the shapes alone.
- Some meta kernels get a size wrong: oneDNN's LSTM layer (``mkldnn_rnn_layer``, ``nn.LSTM`` on
  CPU) returns an empty workspace, where in training the real kernel keeps one of about 15 KB per
  time step and batch row for backward (an LSTM language model's training peak was 37% low).
  Its size follows oneDNN's own layout; it is taken from the kernel, run once per shape on
  uninitialised CPU tensors.
- Meta kernels of pointwise ops are Python (``torch._refs``) and fake tensors add a cache of their
  own: 100-300 us an op, against a few us on the CPU. Models that loop in Python over time steps
  (RWKV, Mamba, LSTM cells) run the same op on the same shapes thousands of times; ``ShapeMemo``
  makes each repeat's output from the first call's output metadata.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import torch
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensor

aten = torch.ops.aten


def _has_no_data(*tensors: torch.Tensor) -> bool:
    return all(isinstance(t, FakeTensor) or t.is_meta for t in tensors)


def _grouped_mm_output(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    mat_a, mat_b, *rest = args
    options = dict(zip(("offs", "bias", "out_dtype"), rest), **kwargs)
    offs, out_dtype = options.get("offs"), options.get("out_dtype")
    if mat_a.dtype == torch.bfloat16 or not _has_no_data(mat_a, mat_b):
        return None  # the op's own kernels cope
    groups = offs.shape[0] if offs is not None else mat_a.shape[0]
    if mat_a.dim() == 2 and mat_b.dim() == 2:
        size = [groups, mat_a.shape[0], mat_b.shape[1]]
    elif mat_a.dim() == 3 and mat_b.dim() == 3:
        size = [mat_a.shape[0], mat_a.shape[1], mat_b.shape[-1]]
    else:
        size = [mat_a.shape[-2], mat_b.shape[-1]]
    return torch.empty(size, dtype=out_dtype or mat_a.dtype, device=mat_a.device)


def _mkldnn_rnn_layer_output(func: Any, args: tuple, kwargs: dict) -> Any:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    train = args[15] if len(args) > 15 else kwargs.get("train", False)
    if not train or not _has_no_data(*tensors):
        return None
    output, hy, cy, _ = func(*args, **kwargs)
    return output, hy, cy, _no_data_like(output, (_rnn_workspace_bytes(args),), torch.uint8)


_RNN_WORKSPACES: dict[Hashable, int] = {}


def _rnn_workspace_bytes(args: tuple) -> int:
    key = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args)
    if key not in _RNN_WORKSPACES:
        with torch._C._DisableTorchDispatch():
            real = [torch.empty(a.shape, dtype=a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
            _RNN_WORKSPACES[key] = aten.mkldnn_rnn_layer.default(*real)[3].numel()
    return _RNN_WORKSPACES[key]


def _no_data_like(reference: torch.Tensor, size: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A new contiguous tensor without data beside ``reference`` (fake or meta)."""
    stride = tuple(int(s) for s in torch.empty(size, device="meta").stride())
    fake_mode = reference.fake_mode if isinstance(reference, FakeTensor) else None
    return _no_data_tensor(size, stride, dtype, reference.device, fake_mode)


def _no_data_tensor(size: Any, stride: Any, dtype: torch.dtype, device: torch.device, fake_mode: Any) -> torch.Tensor:
    # Made directly, below the dispatch modes: through the fake mode even a factory costs as
    # much as the op it stands for.
    with torch._C._DisableTorchDispatch():
        meta = torch.empty_strided(size, stride, dtype=dtype, device="meta")
        return meta if fake_mode is None else FakeTensor(fake_mode, meta, device)


def cpu_to_meta(values: Any) -> Any:
    """``values`` with its real CPU tensors replaced by meta ones of the same metadata, when it
    holds both meta and real CPU tensors; None otherwise."""
    tensors = [t for t in pytree.tree_leaves(values) if isinstance(t, torch.Tensor)]
    if not any(t.is_meta and not isinstance(t, FakeTensor) for t in tensors):
        return None
    if not any(t.device.type == "cpu" and not isinstance(t, FakeTensor) for t in tensors):
        return None
    return pytree.tree_map_only(
        torch.Tensor,
        lambda t: t if t.is_meta or isinstance(t, FakeTensor) else _no_data_tensor(t.shape, t.stride(), t.dtype, torch.device("meta"), None),
        values,
    )


#: op overload -> function(func, args, kwargs) returning the output, or None to run the op itself.
SHAPE_FUNCTIONS: dict[Any, Callable[[Any, tuple, dict], Any]] = {
    aten._grouped_mm.default: _grouped_mm_output,
    aten.mkldnn_rnn_layer.default: _mkldnn_rnn_layer_output,
}


def run(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)``, from its shape function where its meta kernel would refuse or
    get a size wrong."""
    shape_function = SHAPE_FUNCTIONS.get(func)
    if shape_function is not None:
        out = shape_function(func, args, kwargs)
        if out is not None:
            return out
    return func(*args, **kwargs)


class ShapeMemo:
    """Output metadata of functional ops by their inputs' metadata, for one shape-only run."""

    def __init__(self) -> None:
        self._outputs: dict[Hashable, tuple[Any, ...]] = {}
        self._memoizable: dict[Any, bool] = {}

    def run(self, func: Any, args: tuple, kwargs: dict) -> Any:
        key = self._key(func, args, kwargs)
        if key is not None:
            known = self._outputs.get(key)
            if known is not None:
                return _no_data_tensor(*known)
        out = run(func, args, kwargs)
        if key is not None and type(out) in _NO_DATA and not out.is_quantized:
            fake_mode = out.fake_mode if isinstance(out, FakeTensor) else None
            self._outputs[key] = (tuple(out.shape), out.stride(), out.dtype, out.device, fake_mode)
        return out

    def _key(self, func: Any, args: tuple, kwargs: dict) -> Hashable | None:
        memoizable = self._memoizable.get(func)
        if memoizable is None:
            memoizable = self._memoizable[func] = _fresh_tensor_out(func)
        if not memoizable:
            return None
        try:
            key = (func, _meta_key(args), _meta_key(tuple(kwargs.items())))
            hash(key)
        except _NotMemoizable:
            return None
        except TypeError:  # an unhashable argument
            return None
        return key


class _NotMemoizable(Exception):
    pass


_NO_DATA = {FakeTensor, torch.Tensor}
_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


def _meta_key(values: Any) -> tuple:
    key = []
    for value in values:
        if isinstance(value, torch.Tensor):
            if not (isinstance(value, FakeTensor) or value.is_meta) or value.is_quantized or value.is_sparse:
                raise _NotMemoizable  # a tensor with values: an output may depend on them
            key.append((type(value), tuple(value.shape), value.stride(), value.dtype, value.device))
        elif isinstance(value, (tuple, list)):
            key.append((type(value), _meta_key(value)))
        elif isinstance(value, _SCALARS):
            key.append((type(value), value))
        else:
            raise _NotMemoizable  # SymInts, script objects, anything else
    return tuple(key)


def _fresh_tensor_out(func: Any) -> bool:
    """A functional op returning one new tensor whose shape depends on its inputs' shapes only."""
    schema = func._schema
    if func.is_view or schema.is_mutable or func.namespace not in ("aten", "prims"):
        return False
    if any(tag in func.tags for tag in (torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output)):
        return False
    if len(schema.returns) != 1:
        return False
    returned = schema.returns[0]
    return str(returned.type) == "Tensor" and returned.alias_info is None
