"""How a sharded step is laid out: ``measure(parallel=...)``'s settings, checked once, and the
sharding itself, done by PyTorch's own FSDP2 (``fully_shard``) on a copy of the model under a
fake process group (one rank simulated, collectives that move nothing)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..errors import MeasureError

STRATEGIES = ("fsdp", "tp", "fsdp+tp")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Parallel:
    """A sharded training (or inference) step, seen from one rank.

    ``world_size`` ranks each run the inputs given (the per-rank batch). ``fsdp``: every unit's
    parameters sharded across the ranks and all-gathered around its forward and backward
    (FSDP2's ``fully_shard``), gradients reduce-scattered, optimizer state sharded. Units are
    ``wrap`` (module class names or qualified names; by default each module held in an
    ``nn.ModuleList``, as torchtitan wraps each transformer block), then the root.
    ``reshard_after_forward``, ``param_dtype`` and ``reduce_dtype`` are FSDP2's (the last two its
    ``MixedPrecisionPolicy``); ``activation_checkpointing`` recomputes each unit's forward in
    backward (``torch.utils.checkpoint``, non-reentrant), as torchtitan's full AC does.

    ``tp``: tensor parallelism over all ``world_size`` ranks (``parallelize_module``) with
    ``tp_plan``, module name patterns to styles (``colwise``, ``rowwise``, ``colwise_gather_output``,
    ``embedding_rowwise``, ``sequence_parallel``), by default the model's own (transformers'
    ``_tp_plan``). ``fsdp+tp``: a 2-D mesh, ``tp_size`` ranks of tensor parallelism inside each of
    ``world_size // tp_size`` FSDP ranks, as torchtitan lays out 2-D parallelism.
    """

    strategy: str = "fsdp"
    world_size: int = 8
    reshard_after_forward: bool = True
    param_dtype: torch.dtype | None = None
    reduce_dtype: torch.dtype | None = None
    wrap: tuple[str, ...] | None = None
    activation_checkpointing: bool = False
    tp_size: int | None = None
    tp_plan: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise MeasureError(
                f"parallel strategy must be one of {', '.join(map(repr, STRATEGIES))}, found {self.strategy!r}"
            )
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
            raise MeasureError(f"parallel world_size must be a positive integer, found {self.world_size!r}")
        for key in ("param_dtype", "reduce_dtype"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, torch.dtype):
                raise MeasureError(f"parallel {key} must be a torch.dtype such as torch.bfloat16, found {value!r}")
        for key in ("reshard_after_forward", "activation_checkpointing"):
            if not isinstance(getattr(self, key), bool):
                raise MeasureError(f"parallel {key} must be true or false, found {getattr(self, key)!r}")
        if self.tp_size is not None and (
            isinstance(self.tp_size, bool) or not isinstance(self.tp_size, int) or self.tp_size < 1
        ):
            raise MeasureError(f"parallel tp_size must be a positive integer, found {self.tp_size!r}")
        if self.strategy == "fsdp" and (self.tp_size is not None or self.tp_plan is not None):
            raise MeasureError('parallel tp_size and tp_plan apply to strategy "tp" or "fsdp+tp", not "fsdp"')
        if self.strategy == "tp" and self.tp_size not in (None, self.world_size):
            raise MeasureError(f'parallel strategy "tp" shards over all {self.world_size} ranks: leave tp_size out')
        if self.strategy == "fsdp+tp" and (self.tp_size is None or self.world_size % self.tp_size):
            raise MeasureError(
                f'parallel strategy "fsdp+tp" needs a tp_size that divides world_size {self.world_size}, found {self.tp_size!r}'
            )
        if self.tp_plan is not None:
            bad = next(
                ((k, v) for k, v in dict(self.tp_plan).items() if not isinstance(k, str) or v not in STYLES), None
            )
            if bad is not None:
                raise MeasureError(
                    f"parallel tp_plan: {bad[0]!r}: {bad[1]!r} is not a style; expected one of {', '.join(STYLES)}"
                )
        if self.wrap is not None and (
            isinstance(self.wrap, str) or not all(isinstance(name, str) for name in self.wrap)
        ):
            raise MeasureError(f"parallel wrap must be a list of module class or qualified names, found {self.wrap!r}")

    @classmethod
    def from_value(cls, value: Parallel | Mapping[str, Any]) -> Parallel:
        """A ``Parallel`` as given, or one read from a dict (as ``budgets.toml`` writes it: dtypes
        by name, ``wrap`` a list); an unknown key is an error naming the known ones."""
        if isinstance(value, Parallel):
            return value
        if not isinstance(value, Mapping):
            raise MeasureError(
                f"parallel must be a Parallel or a dict such as {{'strategy': 'fsdp', 'world_size': 8}}, found {value!r}"
            )
        known = [f.name for f in fields(cls)]
        unknown = [key for key in value if key not in known]
        if unknown:
            raise MeasureError(f"parallel: unknown key {unknown[0]!r}; expected some of {', '.join(known)}")
        settings = dict(value)
        for key in ("param_dtype", "reduce_dtype"):
            if isinstance(settings.get(key), str):
                name = settings[key].removeprefix("torch.")
                if name not in DTYPES:
                    raise MeasureError(f"parallel {key}: expected one of {', '.join(DTYPES)}, found {settings[key]!r}")
                settings[key] = DTYPES[name]
        if isinstance(settings.get("wrap"), list):
            settings["wrap"] = tuple(settings["wrap"])
        if isinstance(settings.get("tp_plan"), Mapping):
            settings["tp_plan"] = dict(settings["tp_plan"])
        return cls(**settings)

    @property
    def tp_degree(self) -> int:
        return self.world_size if self.strategy == "tp" else (self.tp_size or 1) if self.strategy == "fsdp+tp" else 1

    def describe(self) -> str:
        how = {
            "fsdp": "FSDP2 fully_shard",
            "tp": "tensor parallel",
            "fsdp+tp": f"FSDP2 over {self.world_size // self.tp_degree} x tensor parallel over {self.tp_degree}",
        }[self.strategy]
        parts = [f"{self.strategy} over {self.world_size} ranks ({how}, rank 0 simulated)"]
        if not self.reshard_after_forward:
            parts.append("parameters kept gathered between forward and backward")
        if self.param_dtype is not None:
            parts.append(f"parameters gathered in {str(self.param_dtype).removeprefix('torch.')}")
        if self.reduce_dtype is not None:
            parts.append(f"gradients reduced in {str(self.reduce_dtype).removeprefix('torch.')}")
        if self.activation_checkpointing:
            parts.append("each unit's activations recomputed in backward")
        return "; ".join(parts)


@contextlib.contextmanager
def fake_world(world_size: int, tp_degree: int = 1) -> Iterator[Any]:
    """A process group of ``world_size`` ranks, this process rank 0, whose collectives return at
    once and move nothing (PyTorch's ``fake`` backend); its ("dp", "tp") device mesh."""
    import torch.distributed as dist

    if not dist.is_available():
        raise MeasureError("measure(parallel=...) needs torch.distributed, which this torch build lacks")
    if dist.is_initialized():
        raise MeasureError(
            "measure(parallel=...) simulates its own process group, but one is already initialized in this "
            "process; measure in a process without one"
        )
    # Importing it registers the "fake" backend.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield init_device_mesh("cpu", (world_size // tp_degree, tp_degree), mesh_dim_names=("dp", "tp"))
    finally:
        dist.destroy_process_group()


def units(model: torch.nn.Module, wrap: tuple[str, ...] | None) -> list[tuple[str, torch.nn.Module]]:
    """The modules sharded as units of their own, innermost first (FSDP2 wants children before
    their parents): by default each module held in an ``nn.ModuleList`` that has parameters."""
    chosen = []
    for name, module in model.named_modules():
        if not name:
            continue
        if wrap is None:
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            picked = isinstance(parent, torch.nn.ModuleList) and any(True for _ in module.parameters())
        else:
            picked = type(module).__name__ in wrap or name in wrap
        if picked:
            chosen.append((name, module))
    if wrap is not None:
        found = {type(m).__name__ for _, m in chosen} | {n for n, _ in chosen}
        missing = [name for name in wrap if name not in found]
        if missing:
            raise MeasureError(f"parallel wrap: no module is named or of class {missing[0]!r}")
    return sorted(chosen, key=lambda item: -item[0].count("."))


#: Tensor-parallel styles by the names transformers' plans use.
STYLES = (
    "colwise",
    "rowwise",
    "colwise_gather_output",
    "colwise_rep",
    "embedding_rowwise",
    "rowwise_rep",
    "sequence_parallel",
)


def _style(name: str) -> Any:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

    if name == "colwise":
        return ColwiseParallel()
    if name == "rowwise":
        return RowwiseParallel()
    if name in ("colwise_gather_output", "colwise_rep"):
        return ColwiseParallel(output_layouts=Replicate())
    if name in ("embedding_rowwise", "rowwise_rep"):
        return RowwiseParallel(input_layouts=Replicate())
    return SequenceParallel()


def tp_plan(model: torch.nn.Module, parallel: Parallel) -> dict[str, str]:
    """The tensor-parallel plan: the one given, else the model's own (transformers' ``_tp_plan``)."""
    plan = parallel.tp_plan if parallel.tp_plan is not None else getattr(model, "_tp_plan", None)
    if not plan:
        raise MeasureError(
            f"parallel strategy {parallel.strategy!r} needs a tensor-parallel plan and {type(model).__name__} has "
            'none: pass tp_plan={"layers.*.mlp.up": "colwise", "layers.*.mlp.down": "rowwise", ...}'
        )
    unknown = next(((k, v) for k, v in dict(plan).items() if v not in STYLES), None)
    if unknown is not None:
        raise MeasureError(
            f"the model's tensor-parallel plan has {unknown[0]!r}: {unknown[1]!r}, a style not simulated; "
            f"pass tp_plan with one of {', '.join(STYLES)}"
        )
    return dict(plan)


def shard(model: torch.nn.Module, parallel: Parallel, mesh: Any) -> list[str]:
    """Shard ``model`` in place (a private copy) as ``parallel`` says: tensor parallelism first,
    then FSDP over the other mesh dimension; the FSDP units' names."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if parallel.strategy in ("tp", "fsdp+tp"):
        from torch.distributed.tensor.parallel import parallelize_module

        plan = tp_plan(model, parallel)
        parallelize_module(model, mesh["tp"], {pattern: _style(style) for pattern, style in plan.items()})
    chosen = units(model, parallel.wrap)
    if parallel.activation_checkpointing:
        for _, module in chosen:
            _checkpointed(module)
    if parallel.strategy == "tp":
        return []
    policy = MixedPrecisionPolicy(param_dtype=parallel.param_dtype, reduce_dtype=parallel.reduce_dtype)
    for _, module in chosen:
        fully_shard(module, mesh=mesh["dp"], reshard_after_forward=parallel.reshard_after_forward, mp_policy=policy)
    fully_shard(model, mesh=mesh["dp"], reshard_after_forward=parallel.reshard_after_forward, mp_policy=policy)
    return [name for name, _ in chosen]


def _checkpointed(module: torch.nn.Module) -> None:
    """Recompute ``module``'s forward in backward. The instance's ``forward`` is replaced (the
    module keeps its name and its hooks, FSDP's among them, still run around the whole call)."""
    from torch.utils.checkpoint import checkpoint

    forward = module.forward
    module.forward = functools.partial(checkpoint, forward, use_reentrant=False, context_fn=_same_function_modes)


def _same_function_modes() -> tuple[Any, Any]:
    """Recompute under the torch-function modes the forward ran under (the simulation of CUDA's
    attention kernels among them): backward runs without them, and a recomputation that chose
    another kernel would save other tensors, which checkpoint rejects."""
    from torch.overrides import _get_current_function_mode_stack

    modes = _get_current_function_mode_stack()

    @contextlib.contextmanager
    def recompute() -> Iterator[None]:
        active = _get_current_function_mode_stack()
        with contextlib.ExitStack() as stack:
            for mode in modes:
                if not any(mode is other for other in active):
                    stack.enter_context(mode)
            yield

    return contextlib.nullcontext(), recompute()
