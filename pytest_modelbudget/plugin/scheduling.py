"""Budgets under pytest-xdist: the longest first, and each worker on its share of the cores.

xdist hands the first tests out in collection order, then one to whichever worker is free. A
budget that takes seconds (a 600M-parameter model built for real) handed out last keeps one
worker busy while the others wait; handed out first, the short ones fill in around it. How long a
budget takes is known from its baseline: building the model costs about its parameters, the fake
run about its layers.

Each worker is a process with PyTorch's default of one thread per core: two workers on two cores
run four threads, and spend the difference switching. A worker takes ``cores // workers`` threads
unless the user chose a number with ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

#: Seconds per parameter built (random initialisation) and per layer run on fake tensors, on a
#: 2-core x86 machine (40 torchvision models: regnet_y_128gf 3.9 s, densenet161 0.8 s).
SECONDS_PER_PARAM = 5e-9
SECONDS_PER_LAYER = 1.2e-3


def expected_seconds(baseline: Any) -> float | None:
    """A budget's time to measure, from its recorded baseline (None without one)."""
    if baseline is None or baseline.params is None:
        return None
    return baseline.params * SECONDS_PER_PARAM + len(baseline.layers) * SECONDS_PER_LAYER


def longest_first(items: list[pytest.Item], baseline_of: Callable[[pytest.Item], Any]) -> None:
    """Reorder ``items`` in place: the budgets with a baseline, longest first, then everything
    else in its own order. The order depends on the budget file alone, so every worker collects
    the same one (xdist requires it)."""
    timed = [(expected_seconds(baseline_of(item)), index, item) for index, item in enumerate(items)]
    known = sorted((t for t in timed if t[0] is not None), key=lambda t: (-t[0], t[1]))  # type: ignore[operator]
    rest = [t for t in timed if t[0] is None]
    items[:] = [item for _, _, item in known + rest]


def worker_threads(workers: int, threads: int, chosen: bool) -> int | None:
    """The threads one of ``workers`` worker processes should use, of the ``threads`` PyTorch
    would use alone (one per physical core), or None to leave them as they are."""
    if chosen or workers <= 1:
        return None
    return max(1, threads // workers)


def share_cores() -> None:
    """In an xdist worker, PyTorch's threads set to this worker's share of the cores, once."""
    global _shared
    if _shared:
        return
    _shared = True
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    chosen = any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    if workers <= 1 or chosen:
        return
    import torch

    threads = worker_threads(workers, torch.get_num_threads(), chosen)
    if threads is not None:
        torch.set_num_threads(threads)


_shared = False
