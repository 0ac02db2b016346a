"""Peak memory of one step, estimated by following every tensor storage from allocation to free.

The estimate needs no device: the step runs on fake (or, as a fallback, real CPU) tensors, and the
ledger adds a storage's bytes when an op first returns it and subtracts them when the storage is
garbage collected. Views share their base's storage and in-place ops return a storage already held,
so neither allocates, as on a GPU. Sizes are rounded as the CUDA caching allocator rounds them
(``round_size`` in ``c10/cuda/CUDACachingAllocator.cpp``: up to a multiple of 512 bytes), because
``torch.cuda.max_memory_allocated`` counts the rounded blocks.
"""

from __future__ import annotations

import gc
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
from torch.utils._pytree import tree_leaves

#: The CUDA caching allocator's smallest block and rounding step (``kMinBlockSize``).
CUDA_BLOCK = 512


def allocator_size(nbytes: int, block: int) -> int:
    """Bytes an allocation of ``nbytes`` takes from an allocator that rounds up to ``block``
    (0 stays 0: the CUDA allocator hands out no block for an empty tensor)."""
    if nbytes <= 0 or block <= 1:
        return max(nbytes, 0)
    return -(-nbytes // block) * block


def _storage(tensor: torch.Tensor) -> Any:
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        # Sparse, nested and wrapper-subclass tensors have no single storage to follow.
        return None


class MemoryLedger:
    """Bytes held by live storages during a step: the current total, the peak, and for each
    module what its forward added at its own peak on top of what was held when it started (so
    that a layer whose code did not change shows no change, whatever ran before it)."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.current = 0
        self.peak = 0
        #: module name -> the most its forward added (over all its calls).
        self.module_peaks: dict[str, int] = {}
        # The modules running now: [name, held when it started, peak since].
        self._frames: list[list[Any]] = []
        # id(storage) -> (bytes charged, weak reference that un-charges them when it dies)
        self._held: dict[int, tuple[int, weakref.ref]] = {}

    def enter(self, name: str) -> None:
        self._frames.append([name, self.current, self.current])

    def leave(self, name: str) -> None:
        if self._frames and self._frames[-1][0] == name:
            _, start, peak = self._frames.pop()
            if peak - start > self.module_peaks.get(name, -1):
                self.module_peaks[name] = peak - start

    def hold(self, tensors: Iterable[Any]) -> None:
        """Charge the storages of ``tensors`` not held yet (an op's outputs, the model's weights)."""
        grew = False
        for tensor in tensors:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = _storage(tensor)
            if storage is None:
                continue
            key = id(storage)
            size = allocator_size(storage.nbytes(), self.block)
            held = self._held.get(key)
            if held is not None:
                if held[0] == size:
                    continue
                # Resized in place (``out=`` arguments, ``resize_``): charge the difference.
                self.current += size - held[0]
                self._held[key] = (size, held[1])
            else:
                self._held[key] = (size, weakref.ref(storage, self._freer(key)))
                self.current += size
            grew = True
        if grew:
            self.observe()

    def observe(self) -> None:
        """Record the current total as a candidate peak, for the step and each running module."""
        current = self.current
        if current > self.peak:
            self.peak = current
        for frame in self._frames:
            if current > frame[2]:
                frame[2] = current

    def _freer(self, key: int) -> Any:
        def free(_: weakref.ref) -> None:
            held = self._held.pop(key, None)
            if held is not None:
                self.current -= held[0]

        return free

    def hold_outputs(self, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            self.hold((out,))
        elif isinstance(out, (tuple, list)):
            self.hold(tree_leaves(out))


@contextmanager
def deterministic_frees() -> Iterator[None]:
    """Free by reference counting only, while the step runs.

    A garbage collection in the middle of a step frees cyclic garbage at a moment that depends on
    what else the process allocated; without it the same step gives the same peak every time.
    (No collection beforehand: garbage from before the step holds no storage the ledger follows,
    and a full collection would cost more than the whole measurement of a ResNet.)
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class StepMemory:
    """Peak memory of the step: the estimate, per module too, how it was approximated, and the
    CUDA figure if one was measured."""

    estimate: int
    layers: dict[str, int]
    approximations: list[str] = field(default_factory=list)
    exact: int | None = None
