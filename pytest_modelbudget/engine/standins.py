"""Stand-ins for a model's tensors during one run, and putting the model back exactly as it was.

Every tensor the model holds (parameters, buffers and plain tensor attributes that ``forward``
may write in place) is replaced, for one run, by a stand-in made by the runner (a fake copy, a
meta alias, a private real copy). Tensors are converted once each, so tied weights stay tied,
and every module is visited once, however many names it is registered under: a module shared
between two containers is swapped and restored once, where ``torch.func.functional_call`` swaps it
per name and leaves the second name's stand-ins behind.

Afterwards each module's attributes, parameters, buffers and submodules are restored from a
snapshot: whatever ``forward`` assigned or added (a cache, a counter, weight norm's recomputed
``weight``) never reaches the user's model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, cast

import torch

Convert = Callable[[torch.Tensor], torch.Tensor]


class Slots(Protocol):
    """What a step needs of the tensors it runs on: the ones to hold in memory from the start,
    parameter names by stand-in id, the trainable ones, and a block with them in place."""

    held: list[torch.Tensor]
    read_names: dict[int, str]

    def trainable(self) -> list[torch.Tensor]: ...

    def installed(self) -> contextlib.AbstractContextManager[None]: ...


class StandIns:
    """One stand-in per unique tensor of the model, made by ``convert``."""

    def __init__(self, model: torch.nn.Module, params: Mapping[str, torch.Tensor], convert: Convert) -> None:
        self.model = model
        self.modules = list(model.modules())  # each module once, whatever its names
        self._by_id: dict[int, torch.Tensor] = {}
        canonical = {id(tensor): name for name, tensor in params.items()}
        #: id of a parameter's stand-in -> the parameter's canonical name.
        self.read_names: dict[int, str] = {}
        self.held: list[torch.Tensor] = []  # the parameters' and buffers' stand-ins
        for module in self.modules:
            for slots in (module._parameters, module._buffers):
                for tensor in slots.values():
                    if tensor is not None and id(tensor) not in self._by_id:
                        stand_in = self._by_id[id(tensor)] = convert(tensor)
                        self.held.append(stand_in)
                        if id(tensor) in canonical:
                            self.read_names[id(stand_in)] = canonical[id(tensor)]
        for module in self.modules:
            for tensor in _tensor_attributes(module).values():
                if id(tensor) not in self._by_id:
                    self._by_id[id(tensor)] = convert(tensor)

    def trainable(self) -> list[torch.Tensor]:
        return [tensor for tensor in self.held if tensor.requires_grad]

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The stand-ins in the model's slots for the duration of the block; then every module
        exactly as it was, also when the block raises."""
        saved = [
            (module, dict(module.__dict__), dict(module._parameters), dict(module._buffers), dict(module._modules))
            for module in self.modules
        ]
        try:
            for module in self.modules:
                for slots in cast("tuple[dict[str, Any], ...]", (module._parameters, module._buffers)):
                    for key, tensor in slots.items():
                        if tensor is not None:
                            slots[key] = self._by_id[id(tensor)]
                for key, tensor in _tensor_attributes(module).items():
                    module.__dict__[key] = self._by_id[id(tensor)]
            yield
        finally:
            for module, attributes, parameters, buffers, submodules in saved:
                pairs: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
                    (module._parameters, parameters),
                    (module._buffers, buffers),
                    (module._modules, submodules),
                    (module.__dict__, attributes),
                )
                for current, before in pairs:
                    if not isinstance(current, dict):  # a TorchScript module's slots: no clear()
                        for key, value in before.items():
                            current[key] = value
                    elif current.keys() != before.keys() or any(current[k] is not v for k, v in before.items()):
                        current.clear()
                        current.update(before)


def own_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor a module holds itself: parameters, buffers, plain tensor attributes."""
    tensors = [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
    return tensors + list(_tensor_attributes(module).values())


def _tensor_attributes(module: torch.nn.Module) -> dict[str, Any]:
    """Plain tensor attributes: not registered, but ``forward`` may read or write them."""
    return {key: value for key, value in vars(module).items() if isinstance(value, torch.Tensor)}
