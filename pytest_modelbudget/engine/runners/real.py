"""A real CPU run, for models that fake execution cannot run (data-dependent control flow, an op
with no fake kernel). The model's own tensors are never written: a forward that writes its
weights (a WGAN critic clamping them), its buffers or a cached tensor writes only copies.

An inference run first works on aliases of the model's tensors, watched by ``WriteGuard``: a
detector or a 600M-parameter encoder that only reads its weights is not copied whole (copying
took most of such a run). The first op that would write one of them stops the run before it
writes, and the step runs again on private copies of every tensor; so does every training run
(its optimizer and its BatchNorm statistics write the model's tensors by design).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..inputs import RandomInput, map_inputs
from ..inventory import TensorInventory
from ..memory import storage_key
from ..step import ForwardError, Step, Watched
from ..tracking import written_arguments, written_tensors


def run_real(step: Step, tensors: TensorInventory) -> Watched:
    if step.mode == "inference":
        guard = WriteGuard()
        try:
            with guard:
                return _run(step, tensors, guard.alias)
        except ForwardError as error:
            if not isinstance(error.error, WouldWrite):
                raise
    return _run(step, tensors, _private_copy)


def _run(step: Step, tensors: TensorInventory, convert: Any) -> Watched:
    stand_ins = tensors.stand_ins(step.model, convert)
    args, keywords = map_inputs((step.args, step.keywords), _same, RandomInput.make)
    return step.watched(stand_ins, args, keywords, shapes_only=False)


def _private_copy(tensor: torch.Tensor) -> torch.Tensor:
    copy = tensor.detach().clone()
    return copy.requires_grad_(tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else copy


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class WouldWrite(Exception):
    """An op was about to write one of the model's own tensors."""


class WriteGuard(TorchDispatchMode):
    """Stops any op that would write the storage of a tensor it handed out as an alias."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # as OpCounter: nothing is compiled under a dispatch mode

    def __init__(self) -> None:
        super().__init__()
        self._storages: set[int | None] = set()  # the model's storages (their StorageImpl addresses)
        self._written: dict[int, list[tuple[int, str]]] = {}  # id(op) -> the arguments it writes

    def alias(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor itself under another name (no copy), watched; a copy where it cannot be
        watched by its storage (quantized, sparse, a tensor subclass)."""
        if (
            type(tensor) not in (torch.Tensor, torch.nn.Parameter)
            or tensor.layout != torch.strided
            or tensor.is_quantized
        ):
            return _private_copy(tensor)
        self._storages.add(storage_key(tensor))
        return tensor.detach()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        written = self._written.get(id(func))
        if written is None:
            written = self._written[id(func)] = written_arguments(func)
        for tensor in written_tensors(written, args, kwargs):
            key = storage_key(tensor)
            if key is not None and key in self._storages:
                raise WouldWrite(f"{func} would write one of the model's tensors")
        return func(*args, **kwargs)
