"""Which device's memory a measurement reports: the CUDA device to measure on when there is one,
else the device whose allocator and kernel choices the estimate simulates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import MeasureError
from .memory import CUDA_BLOCK

if TYPE_CHECKING:
    from .inventory import TensorInventory


@dataclass(frozen=True)
class MemoryTarget:
    """The device whose memory is estimated, and the CUDA device to measure on, if any."""

    simulated: str
    exact: torch.device | None = None
    unavailable: bool = False

    @property
    def block(self) -> int:
        return CUDA_BLOCK if self.simulated == "cuda" else 1

    @classmethod
    def choose(cls, device: Any, tensors: TensorInventory) -> MemoryTarget:
        if device is None:
            where = tensors.device
            if where.type == "cuda" and torch.cuda.is_available():
                return cls("cuda", where)
            return cls("cuda")
        named: torch.device | None
        try:
            named = torch.device(device)
        except (RuntimeError, TypeError):
            named = None
        if named is None or named.type not in ("cpu", "cuda"):
            raise MeasureError(f"device must be 'cuda', 'cuda:N' or 'cpu', found {device!r}")
        if named.type == "cpu":
            return cls("cpu")
        if torch.cuda.is_available() and not tensors.on_meta:
            return cls("cuda", named if named.index is not None else torch.device("cuda", torch.cuda.current_device()))
        return cls("cuda", unavailable=True)
