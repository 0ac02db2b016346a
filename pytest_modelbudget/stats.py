"""The figures of a measured model, as plain data: no torch here, so reports and the budget file
can read and write them without importing it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .figures import FIGURES, LAYER_FIGURES

__all__ = ["FIGURES", "LAYER_FIGURES", "MAX_SHAPES", "LayerStats", "ModelStats"]

#: Output shapes kept per module: a module called in a loop (an RNN cell) would list thousands.
MAX_SHAPES = 64


@dataclass
class LayerStats:
    """Figures of one module, its children included."""

    type: str
    params: int = 0
    bytes: int = 0
    macs: int = 0
    flops: int = 0
    peak_memory: int | None = None
    calls: int = 0
    #: Its forward's roofline time on the GPU asked for, in nanoseconds (None: no GPU named).
    roofline_time: int | None = None
    #: A serving step: bytes of the cache its ops made or last wrote, its children's included.
    kv_cache: int | None = None
    #: Bytes its forward's ops read and wrote, its children's included.
    memory_read: int = 0
    memory_written: int = 0
    #: The shape of each tensor its forward returned, call after call (at most MAX_SHAPES).
    output_shapes: list[list[int]] = field(default_factory=list)

    @property
    def memory_traffic(self) -> int:
        return self.memory_read + self.memory_written


@dataclass
class ModelStats:
    """Everything :func:`pytest_modelbudget.measure` found out about one step of a model.

    Counts are exact integers. ``layers`` is keyed by qualified module name (root ``""``); a
    shared module or tensor is attributed to the first name it is reachable under.
    """

    params: int
    trainable_params: int
    frozen_params: int
    buffer_elements: int
    bytes: int
    macs: int
    flops: int
    #: Bytes the forward's ops read plus wrote, op by op as the step runs.
    memory_traffic: int = 0
    #: With ``gpu=``: the forward's time on that GPU by the roofline model, in nanoseconds.
    roofline_time: int | None = None
    #: The GPU ``roofline_time`` is for.
    gpu: str | None = None
    #: Peak bytes of device memory during the step (``docs/MEMORY.md``), measured or estimated.
    peak_memory: int | None = None
    #: ``"cuda"`` (measured with the CUDA caching allocator) or ``"estimate"``.
    peak_memory_source: str | None = None
    #: The estimate, also kept when the figure was measured on CUDA, to compare the two.
    peak_memory_estimate: int | None = None
    #: What the estimate assumed or simulated (device, rounding, kernel choices).
    peak_memory_approximations: list[str] = field(default_factory=list)
    #: Training with an optimizer: the estimated peak of the first step and of a steady one (the
    #: optimizer's state alive), and which of them ``peak_memory`` is.
    peak_memory_steps: dict[str, int] = field(default_factory=dict)
    peak_memory_step: str | None = None
    #: A serving step (``mode="prefill"`` or ``"decode"``): bytes the model's cache holds for
    #: ``batch`` sequences of ``context`` tokens, and the step's shape.
    kv_cache: int | None = None
    context: int | None = None
    batch: int | None = None
    #: A decode step with ``gpu=``: the most sequences (at ``context``) and the longest context
    #: (at ``batch``) whose step's ``peak_memory`` fits that GPU's memory, found by runs.
    max_batch: int | None = None
    max_context: int | None = None
    #: A sharded step (``measure(parallel=...)``): what one rank held at its peak, by kind
    #: (sharded_params, gathered_params, gradients, optimizer_state, communication_buffers,
    #: activations: the rest, temporaries included; workspaces: cuBLAS's), in bytes.
    peak_memory_split: dict[str, int] = field(default_factory=dict)
    #: A sharded step: how it was sharded (strategy, world_size and the FSDP settings).
    parallel: dict[str, Any] | None = None
    unused_params: list[str] = field(default_factory=list)
    shared_params: list[list[str]] = field(default_factory=list)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    layers: dict[str, LayerStats] = field(default_factory=dict)
    mode: str = "inference"
    #: ``"fake"`` (no arithmetic, no memory) or ``"real"`` (fallback run on the CPU).
    execution: str = "fake"
    #: What a reader of the figures should know: fallbacks, approximations applied.
    notes: list[str] = field(default_factory=list)
    model_type: str = ""

    def figures(self) -> dict[str, int]:
        """The figures a budget can limit, those that were measured."""
        values = {name: getattr(self, name) for name in FIGURES}
        # A figure kept as a list of names (unused_params) is limited by how many there are.
        values = {name: len(value) if isinstance(value, list) else value for name, value in values.items()}
        return {name: value for name, value in values.items() if value is not None}

    def layer_figures(self) -> dict[str, dict[str, Any]]:
        """Each layer's type and the per-layer figures it has: what a budget's record keeps."""
        return {
            name: {"type": layer.type, **{f: getattr(layer, f) for f in LAYER_FIGURES if getattr(layer, f) is not None}}
            for name, layer in self.layers.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain ints, strings, lists and dicts."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelStats:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["layers"] = {name: LayerStats(**layer) for name, layer in data.get("layers", {}).items()}
        return cls(**values)

    def summary(self) -> str:
        from .quantities import format_bytes, format_count

        parts = [
            f"params={format_count(self.params)}",
            f"bytes={format_bytes(self.bytes)}",
            f"macs={format_count(self.macs)}",
            f"flops={format_count(self.flops)}",
        ]
        if self.peak_memory is not None:
            parts.append(f"peak_memory={format_bytes(self.peak_memory)} ({self.peak_memory_source})")
        return " ".join(parts)
