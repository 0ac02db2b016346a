"""The reference for peak memory on the CPU: the allocator's own record of real steps.

torch.profiler's memory events are every allocation and free the CPU allocator made, with its
sizes. The peak of a step is the bytes alive before the first profiled step (the model, its
inputs: ``alive``) plus the highest running sum of the events within that step. Several steps run
under one profile: the profiler reports no free of a block allocated before it started, so a later
step's frees of an earlier step's tensors (its outputs, its optimizer state) are seen only when
the earlier step was profiled too.

A better reference than MemTracker, which reads about 2% under it (it sees tensors, not the
allocator's blocks). Used by the tests of ``tests/engine/test_training_memory.py`` and by
``benchmarks/gpu_memory.py`` on a machine without CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function


def storage_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages of ``tensors`` (views of one storage once)."""
    storages: dict[int, int] = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            storage = tensor.untyped_storage()
            storages[storage._cdata] = storage.nbytes()
    return sum(storages.values())


def allocator_peaks(step: Callable[[], Any], alive: Iterable[Any], steps: int = 2) -> list[int]:
    """The CPU allocator's peak in each of ``steps`` calls of ``step``, made one after the other
    as a training loop makes them; ``alive``: the tensors that exist before the first (weights,
    buffers, inputs)."""
    before = storage_bytes(alive)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for index in range(steps):
            with record_function(f"modelbudget-step-{index}"):
                step()
    events = prof.profiler.kineto_results.events()
    windows = sorted(
        (event.start_ns(), event.end_ns()) for event in events if event.name().startswith("modelbudget-step-")
    )
    memory = sorted((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]")
    peaks = [0] * len(windows)
    running = 0
    for time, nbytes in memory:
        for index, (start, end) in enumerate(windows):
            if start <= time <= end:
                # What was held as the step began counts too, even if it only frees.
                peaks[index] = max(peaks[index], running, running + nbytes)
        running += nbytes
    return [before + peak for peak in peaks]
