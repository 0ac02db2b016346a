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

from collections.abc import Callable, Hashable
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily

from .memory import storage_key

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
        lambda t: (
            t
            if t.is_meta or isinstance(t, FakeTensor)
            else _no_data_tensor(t.shape, t.stride(), t.dtype, torch.device("meta"), None)
        ),
        values,
    )


#: id(op overload) -> function(func, args, kwargs) returning the output, or None to run the op
#: itself. By id: looked up on every op, and an op overload's own hash is a Python method.
SHAPE_FUNCTIONS: dict[int, Callable[[Any, tuple, dict], Any]] = {
    id(aten._grouped_mm.default): _grouped_mm_output,
    id(aten.mkldnn_rnn_layer.default): _mkldnn_rnn_layer_output,
}


def run(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)``, from its shape function where its meta kernel would refuse or
    get a size wrong."""
    shape_function = SHAPE_FUNCTIONS.get(id(func))
    if shape_function is not None:
        out = shape_function(func, args, kwargs)
        if out is not None:
            return out
    return func(*args, **kwargs)


def memo_kind(func: Any) -> str | None:
    kind = _KINDS.get(id(func), "?")
    if kind == "?":
        kind = _KINDS[id(func)] = _memo_kind(func)
    return kind


class _NotConstant(Exception):
    pass


def folded(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A functional op on fake tensors that all keep their value (one-element weights, scalars
    made in forward), computed on those values: the fake mode does the same, but remakes each
    result through its converter, 0.35 ms apiece (half of a WavTokenizer's run). None when an
    argument has no value, or the result is more than one element (the fake mode keeps none)."""
    fake_mode = None

    def value(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal fake_mode
        if not isinstance(tensor, FakeTensor) or tensor.constant is None:
            raise _NotConstant
        fake_mode = tensor.fake_mode
        return tensor.constant

    try:
        values = pytree.tree_map_only(torch.Tensor, value, (args, kwargs))
    except _NotConstant:
        return None
    if fake_mode is None:
        return None
    with unset_fake_temporarily():
        out = func(*values[0], **values[1])
    if type(out) is not torch.Tensor or out.numel() > 1 or out.layout != torch.strided or out.device.type == "meta":
        return None
    with torch._C._DisableTorchDispatch():
        meta = torch.empty_strided(out.shape, out.stride(), dtype=out.dtype, device="meta")
    return FakeTensor(fake_mode, meta, out.device, constant=out)


class ShapeMemo:
    """Outputs of repeated ops by their inputs' metadata, for one shape-only run.

    Three kinds of op are made from their first call's outputs: functional ops returning a new
    tensor (its shape, strides and dtype), views of their first argument (the view's shape,
    strides and offset from its base, taken again on the new base, so the new view shares its
    storage), and in-place ops on their first argument (the argument itself: the op's checks
    passed on the same shapes, and autograd has already bumped its version above this mode).
    """

    def __init__(self) -> None:
        self._outputs: dict[Hashable, tuple[Any, ...]] = {}

    def run(self, func: Any, args: tuple, kwargs: dict) -> Any:
        kind = memo_kind(func)
        key = self._key(func, args, kwargs) if kind is not None else None
        if key is not None:
            known = self._outputs.get(key)
            if known is not None:
                if kind == "fresh":
                    return _no_data_tensor(*known)
                if kind == "fresh tuple":
                    return tuple(_no_data_tensor(*one) for one in known)
                if kind == "view":
                    return _view_of(args[0], *known)
                return args[0]
        out = run(func, args, kwargs)
        if key is not None and kind == "fresh tuple":
            if isinstance(out, tuple) and all(_no_data(one) for one in out):
                self._outputs[key] = tuple(_fresh(one) for one in out)
        elif key is not None and _no_data(out):
            # (A real CPU tensor made in a meta run, a position table from torch.arange: its
            # values may be read, so it is made again.)
            if kind == "fresh":
                self._outputs[key] = _fresh(out)
            elif kind == "view" and _plain_view(out, args[0]):
                self._outputs[key] = (tuple(out.shape), out.stride(), out.storage_offset() - args[0].storage_offset())
            elif kind == "inplace" and out is args[0]:
                self._outputs[key] = ()
        return out

    def _key(self, func: Any, args: tuple, kwargs: dict) -> Hashable | None:
        try:
            key = (id(func), _meta_key(args), _meta_key(tuple(kwargs.items())) if kwargs else ())
            hash(key)
        except _NotMemoizable:
            return None
        except TypeError:  # an unhashable argument
            return None
        return key


def _no_data(out: Any) -> bool:
    return (type(out) is FakeTensor or (type(out) is torch.Tensor and out.is_meta)) and not out.is_quantized


def _fresh(out: torch.Tensor) -> tuple:
    """What ``_no_data_tensor`` needs to make ``out`` again."""
    return (
        tuple(out.shape),
        out.stride(),
        out.dtype,
        out.device,
        out.fake_mode if isinstance(out, FakeTensor) else None,
    )


def _plain_view(out: torch.Tensor, base: torch.Tensor) -> bool:
    """A view that ``as_strided`` on its base remakes: same dtype, storage, no conj/neg bit."""
    return (
        out.dtype == base.dtype
        and out.device == base.device
        and not (out.is_conj() or out.is_neg() or base.is_conj() or base.is_neg())
        and storage_key(out) == storage_key(base) is not None  # one storage (no data pointer on fakes)
        and isinstance(out, FakeTensor) == isinstance(base, FakeTensor)
    )


def _view_of(base: torch.Tensor, size: tuple, stride: tuple, offset: int) -> torch.Tensor:
    # Below the dispatch modes, as the fake mode itself runs a view on its meta tensor.
    with torch._C._DisableTorchDispatch():
        view = torch.ops.aten.as_strided.default(base, size, stride, base.storage_offset() + offset)
    return FakeTensor(base.fake_mode, view, base.device) if isinstance(base, FakeTensor) else view


class _NotMemoizable(Exception):
    pass


_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


def _meta_key(values: Any) -> tuple:
    key: list[tuple[Any, ...]] = []
    for value in values:
        if isinstance(value, torch.Tensor):
            if not (isinstance(value, FakeTensor) or value.is_meta) or value.is_quantized or value.is_sparse:
                raise _NotMemoizable  # a tensor with values: an output may depend on them
            if isinstance(value, FakeTensor) and value.constant is not None:
                # A small tensor made in forward keeps its value on fake tensors (an optimizer's
                # step count): its ops must run, so that the value follows.
                raise _NotMemoizable
            key.append((type(value), tuple(value.shape), value.stride(), value.dtype, value.device))
        elif isinstance(value, (tuple, list)):
            key.append((type(value), _meta_key(value)))
        elif isinstance(value, _SCALARS):
            key.append((type(value), value))
        else:
            raise _NotMemoizable  # SymInts, script objects, anything else
    return tuple(key)


#: id(op overload) -> its ``_memo_kind``, a property of its schema.
_KINDS: dict[int, str | None] = {}

#: In-place ops that change their argument's size or storage: their output is not their input's
#: metadata (those that only restride carry the ``inplace_view`` tag).
_RESIZING = frozenset({"resize_", "resize_as_", "set_", "_resize_output_", "resize_as_sparse_"})


def _memo_kind(func: Any) -> str | None:
    """``"fresh"``: a functional op returning one new tensor whose shape depends on its inputs'
    shapes only; ``"fresh tuple"``: one returning several (BatchNorm's output and statistics,
    which its Python meta kernel takes a millisecond to make); ``"view"``: a view of its first
    argument; ``"inplace"``: an op writing its first argument only and returning it; None:
    anything else (run every time)."""
    schema = func._schema
    if func.namespace not in ("aten", "prims"):
        return None
    if any(tag in func.tags for tag in (torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output)):
        return None
    if not schema.arguments or not schema.returns or any(str(r.type) != "Tensor" for r in schema.returns):
        return None
    if len(schema.returns) > 1:
        fresh = not schema.is_mutable and not func.is_view and all(r.alias_info is None for r in schema.returns)
        return "fresh tuple" if fresh else None
    returned, first = schema.returns[0].alias_info, schema.arguments[0]
    if func.is_view:
        if schema.is_mutable or returned is None or first.alias_info is None:
            return None
        if func._overloadpacket.__name__ == "as_strided":
            return None  # its offset is absolute, not the base's plus a fixed amount
        return "view" if returned.before_set == first.alias_info.before_set else None
    if schema.is_mutable:
        writes = [a for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        if writes != [first] or returned is None or not returned.is_write or torch.Tag.inplace_view in func.tags:
            return None
        return None if func._overloadpacket.__name__ in _RESIZING else "inplace"
    return "fresh" if returned is None else None
