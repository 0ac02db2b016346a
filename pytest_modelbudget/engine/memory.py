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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

#: The CUDA caching allocator's smallest block and rounding step (``kMinBlockSize``).
CUDA_BLOCK = 512


def allocator_size(nbytes: int, block: int) -> int:
    """Bytes an allocation of ``nbytes`` takes from an allocator that rounds up to ``block``
    (0 stays 0: the CUDA allocator hands out no block for an empty tensor)."""
    if nbytes <= 0 or block <= 1:
        return max(nbytes, 0)
    return -(-nbytes // block) * block


def storage_of(tensor: torch.Tensor) -> Any:
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        # Sparse, nested and wrapper-subclass tensors have no single storage to follow.
        return None


def storage_key(tensor: torch.Tensor) -> int | None:
    """The address of the tensor's StorageImpl: equal for every view of one storage, fake and
    meta ones too (which have no data pointer); None for a tensor with no storage of its own."""
    storage = storage_of(tensor)
    return None if storage is None else storage._cdata


class MemoryLedger:
    """Bytes held by live storages during a step: the current total, the peak, and for each
    module what its forward added at its own peak on top of what was held when it started (so
    that a layer whose code did not change shows no change, whatever ran before it)."""

    def __init__(self, block: int, keep_peak: bool = False) -> None:
        self.block = block
        #: ``keep_peak``: what was held at the peak, storage by storage (for a sharded step's
        #: split of its peak by kind): id(storage) -> (bytes, weak reference).
        self._keep_peak = keep_peak
        self.peak_held: dict[int, tuple[int, weakref.ref]] = {}
        #: Storages returned by collectives (and FSDP's copies for them), for a sharded step's
        #: split: each by the id of its weak reference in ``_held`` (a storage's own id may be
        #: reused once it is freed; its reference, kept in ``peak_held``, is not).
        self.communication_refs: set[int] = set()
        self.current = 0
        self._peak = 0
        #: The peak since ``start_window``.
        self._window_peak = 0
        #: Bytes allocated for the rest of the step that no tensor holds (``keep``), and of
        #: them, those held at the peak (with ``keep_peak``).
        self.kept = 0
        self.peak_kept = 0
        #: A gradient accumulation not settled yet: (the total with its output held, the keys of
        #: its operands' storages, what was held then if ``keep_peak``).
        self._pending: tuple[int, list[int], dict[int, tuple[int, weakref.ref]] | None] | None = None
        #: module name -> the most its forward added (over all its calls).
        self.module_peaks: dict[str, int] = {}
        # The modules running now: [name, held when it started, peak since].
        self._frames: list[list[Any]] = []
        # id(storage) -> (bytes charged, weak reference that un-charges them when it dies)
        self._held: dict[int, tuple[int, weakref.ref]] = {}

    @property
    def peak(self) -> int:
        self._settle()
        return self._peak

    @property
    def window_peak(self) -> int:
        self._settle()
        return self._window_peak

    def start_window(self) -> int:
        """Start following a new peak from what is held now (a training loop's next step);
        returns the peak so far."""
        before = self.peak
        self._window_peak = self.current
        return before

    def enter(self, name: str) -> None:
        self._settle()
        self._frames.append([name, self.current, self.current])

    def leave(self, name: str) -> None:
        self._settle()
        if self._frames and self._frames[-1][0] == name:
            _, start, peak = self._frames.pop()
            if peak - start > self.module_peaks.get(name, -1):
                self.module_peaks[name] = peak - start

    def hold(self, tensors: Iterable[Any]) -> None:
        """Charge the storages of ``tensors`` not held yet (an op's outputs, the model's weights)."""
        self._settle()
        if self._charge(tensors):
            self.observe()

    def hold_accumulation(self, out: torch.Tensor, earlier: torch.Tensor) -> None:
        """Charge the sum autograd's engine makes of two gradients bound for one input. The
        real engine adds in place into an operand only it holds (``InputBuffer::accumulate``
        checks the use counts); the estimate's run cannot (a fake tensor is never reused that
        way, and this dispatch holds references of its own), so it adds out of place. Whether
        the real engine could is seen right after: an operand only the engine held is freed as
        the sum replaces it. Until then the new total is not a candidate peak."""
        self._settle()
        storage = storage_of(earlier)
        keys = [id(storage)] if storage is not None else []
        if self._charge((out,)):
            self._pending = (self.current, keys, dict(self._held) if self._keep_peak else None)

    def _settle(self) -> None:
        """Decide the pending accumulation: in place (nothing allocated: no new candidate) if an
        operand was freed since, else out of place (its total a candidate)."""
        if self._pending is None:
            return
        total, keys, held = self._pending
        self._pending = None
        if all(key in self._held for key in keys):
            self._observe(total, held)

    def _charge(self, tensors: Iterable[Any]) -> bool:
        grew = False
        for tensor in plain_tensors(tensors):
            storage = storage_of(tensor)
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
        return grew

    def keep(self, nbytes: int) -> None:
        """An allocation no tensor holds, kept to the end of the step (a library's workspace). It
        is no module's: the modules running now start from it, as if it were held before them."""
        self._settle()
        size = allocator_size(nbytes, self.block)
        if size:
            self.current += size
            self.kept += size
            for frame in self._frames:
                frame[1] += size
                frame[2] += size
            self.observe()

    def transient(self, nbytes: int) -> None:
        """An allocation a kernel makes and frees within one op (a workspace, a copy of an
        operand), on top of what is held with the op's outputs."""
        self._settle()
        size = allocator_size(nbytes, self.block)
        if size:
            self.current += size
            self.observe()
            self.current -= size

    def observe(self) -> None:
        """Record the current total as a candidate peak, for the step and each running module."""
        self._settle()
        self._observe(self.current, None)

    def _observe(self, current: int, held: dict[int, tuple[int, weakref.ref]] | None) -> None:
        if current > self._window_peak:
            self._window_peak = current
        if current > self._peak:
            self._peak = current
            if self._keep_peak:
                self.peak_held = held if held is not None else dict(self._held)
                self.peak_kept = self.kept
        for frame in self._frames:
            if current > frame[2]:
                frame[2] = current

    def _freer(self, key: int) -> Any:
        def free(_: weakref.ref) -> None:
            held = self._held.pop(key, None)
            if held is not None:
                self.current -= held[0]

        return free

    def resized(self, storage: Any) -> None:
        """A held storage resized in place (FSDP frees and re-allocates its all-gathered
        parameters with ``untyped_storage().resize_()``, which no op reports)."""
        held = self._held.get(id(storage))
        if held is None:
            return
        size = allocator_size(storage.nbytes(), self.block)
        if size != held[0]:
            self.current += size - held[0]
            self._held[id(storage)] = (size, held[1])
            if size > held[0]:
                self.observe()

    def mark_communication(self, out: Any) -> None:
        for tensor in plain_tensors(tree_leaves(out)):
            storage = storage_of(tensor)
            held = self._held.get(id(storage)) if storage is not None else None
            if held is not None:
                self.communication_refs.add(id(held[1]))

    def hold_outputs(self, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            self.hold((out,))
        elif isinstance(out, (tuple, list)):
            self.hold(tree_leaves(out))


def plain_tensors(tensors: Iterable[Any]) -> Iterator[torch.Tensor]:
    """The tensors that hold memory: a wrapper subclass (a DTensor: its local shard; a
    quantized weight: its data and scales) holds none of its own."""
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            continue
        if is_traceable_wrapper_subclass(tensor):
            names, _ = tensor.__tensor_flatten__()
            yield from plain_tensors(getattr(tensor, name) for name in names)
        else:
            yield tensor


@contextmanager
def following_resizes(ledger: MemoryLedger) -> Iterator[None]:
    """Charge in-place storage resizes to ``ledger`` within the block (patched as PyTorch's own
    MemTracker does: ``UntypedStorage.resize_`` reaches no dispatch mode)."""
    original = torch.UntypedStorage.resize_

    def resize_(storage: torch.UntypedStorage, size: int) -> Any:
        result = original(storage, size)
        ledger.resized(storage)
        return result

    torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        torch.UntypedStorage.resize_ = original  # type: ignore[method-assign]


@contextmanager
def following_rng_states(ledger: MemoryLedger) -> Iterator[None]:
    """Charge the CPU generator's state to ``ledger`` each time code takes a copy (activation
    checkpointing keeps one per checkpointed call until its recomputation, 5,056 bytes): a real
    CPU tensor made without an op. Host memory: only a CPU estimate counts it."""
    original = torch.get_rng_state

    def get_rng_state() -> torch.Tensor:
        state = original()
        ledger.hold((state,))
        return state

    torch.get_rng_state = get_rng_state
    try:
        yield
    finally:
        torch.get_rng_state = original


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
    #: Training with an optimizer: each step's estimated peak ("first", "steady"), and the one
    #: ``estimate`` is of.
    steps: dict[str, int] = field(default_factory=dict)
    step: str | None = None
    exact: int | None = None
