"""Turning what the user gave (a tensor, a tuple, a dict, an ``input_size``) into the positional
and keyword arguments of one ``forward`` call, checked against its signature.

``input_size`` tensors are not made here: they are ``RandomInput`` specs that each runner makes
where it runs (fake, on meta, real on CPU or CUDA), so that ``input_size=(16, 3, 1024, 1024)``
takes no memory unless a real run needs it."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.utils._pytree import tree_map_only

from ..errors import MeasureError

Shape = Sequence[int]


def model_device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in what floating dtype the model lives (CPU float32 for a stateless model)."""
    device = None
    for tensor in (*model.parameters(), *model.buffers()):
        device = device or tensor.device
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return device or torch.device("cpu"), torch.get_default_dtype()


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in value
    )


@dataclass(frozen=True)
class RandomInput:
    """A tensor of ``input_size``, made by the runner that needs it: random normal for floating
    dtypes, zeros for integer ones (token ids: a valid index for any embedding)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def make(self, device: torch.device | str | None = None) -> torch.Tensor:
        where = self.device if device is None else device
        if self.dtype.is_floating_point or self.dtype.is_complex:
            return torch.randn(self.shape, dtype=self.dtype, device=where)
        return torch.zeros(self.shape, dtype=self.dtype, device=where)


def map_inputs(
    values: Any, tensor: Callable[[torch.Tensor], Any], random: Callable[[RandomInput], torch.Tensor]
) -> Any:
    """``values`` (arguments, keywords) with each tensor and each ``RandomInput`` converted."""
    return tree_map_only(
        (torch.Tensor, RandomInput), lambda v: random(v) if isinstance(v, RandomInput) else tensor(v), values
    )


def tensors_from_size(
    input_size: Shape | Sequence[Shape], model: torch.nn.Module, dtype: torch.dtype | None
) -> tuple[RandomInput, ...]:
    """One input per shape (a 0-d shape is a scalar), on the model's device, in ``dtype`` or the
    model's floating dtype."""
    if _is_shape(input_size) and len(input_size) > 0:
        shapes = [input_size]
    elif isinstance(input_size, (tuple, list)) and input_size and all(map(_is_shape, input_size)):
        shapes = list(input_size)
    else:
        raise MeasureError(
            f"input_size must be a shape such as (1, 3, 224, 224) or a list of shapes, found {input_size!r}"
        )
    device, model_dtype = model_device_and_dtype(model)
    return tuple(RandomInput(tuple(cast(Sequence[int], shape)), dtype or model_dtype, device) for shape in shapes)


def call_arguments(
    model: torch.nn.Module,
    inputs: Any,
    input_size: Any,
    dtype: torch.dtype | None,
    kwargs: dict[str, Any] | None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if inputs is not None and input_size is not None:
        raise MeasureError("give either inputs or input_size, not both")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise MeasureError(f"kwargs must be a dict of keyword arguments, found {type(kwargs).__name__}")
    args: tuple[Any, ...]
    keywords: dict[str, Any] = dict(kwargs or {})
    if input_size is not None:
        args = tensors_from_size(input_size, model, dtype)
    elif inputs is None:
        args = ()
    elif isinstance(inputs, dict):
        args, keywords = (), {**inputs, **keywords}
    elif isinstance(inputs, tuple):
        args = inputs
    else:  # a list is one argument (detection models take a list of images)
        args = (inputs,)
    _check_signature(model, args, keywords, missing_hint=inputs is None and input_size is None)
    return args, keywords


def _check_signature(
    model: torch.nn.Module, args: tuple[Any, ...], keywords: dict[str, Any], missing_hint: bool
) -> None:
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # builtins and C extensions: let forward itself complain
        return
    try:
        signature.bind(*args, **keywords)
    except TypeError as exc:
        name = type(model).__name__
        if missing_hint:
            raise MeasureError(
                f"{name}.forward{signature} needs inputs: pass inputs=... or input_size=(...) to measure ({exc})"
            ) from None
        given = ", ".join([*(_describe(a) for a in args), *(f"{k}={_describe(v)}" for k, v in keywords.items())])
        raise MeasureError(f"the inputs do not match {name}.forward{signature}: {exc}; given ({given})") from None


def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, RandomInput)):
        return f"Tensor{tuple(value.shape)}"
    return type(value).__name__


#: Off while a shape-only run starts over without real size tables (``size_tables_unknown``).
_KEEP_SIZE_TABLES: ContextVar[bool] = ContextVar("keep_size_tables", default=True)


def is_size_table(tensor: torch.Tensor, *, made_on: str | None = None) -> bool:
    """A small integer table of sizes given as an input, such as a vision tower's ``grid_thw``
    (one row of frames, height, width per image) or ``image_sizes``: the model reads its values
    to lay out its patches, so a shape-only run keeps it real (it takes a few bytes).
    ``made_on``: a table made in forward on that device (``"meta"``) qualifies too."""
    return (
        _KEEP_SIZE_TABLES.get()
        and (
            (tensor.device.type == "cpu" and not tensor.is_meta)
            or (made_on is not None and tensor.device.type == made_on)
        )
        and not tensor.dtype.is_floating_point
        and tensor.dtype != torch.bool
        and tensor.dim() == 2
        and tensor.shape[-1] in (2, 3)
        and tensor.shape[0] <= 64
    )


def keeps_size_tables() -> bool:
    return _KEEP_SIZE_TABLES.get()


@contextlib.contextmanager
def size_tables_unknown() -> Iterator[None]:
    """Shape-only runs keep no table of sizes real: for the rare model that writes values only
    a real run knows into one."""
    token = _KEEP_SIZE_TABLES.set(False)
    try:
        yield
    finally:
        _KEEP_SIZE_TABLES.reset(token)
