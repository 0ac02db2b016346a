"""The step of one rank of a sharded run: a fake copy of the model, sharded by FSDP2 under a fake
process group, its memory followed by the same ledger as a single-device step.

The user's model is never sharded: ``fully_shard`` changes a module's class and replaces its
parameters, so the step runs on a deep copy whose tensors are fake from the start (no memory,
whatever the model's size).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ...errors import MeasureError
from ..inputs import RandomInput, map_inputs
from ..inventory import TensorInventory
from ..memory import plain_tensors, storage_of
from ..parallel import Parallel, fake_world, shard
from ..standins import own_tensors
from ..step import Step, Watched, first_line


class CopyTensors:
    """The sharded copy's own tensors (a ``Slots``): fake already, nothing to swap in or put back."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        unique = {id(t): t for t in (*model.parameters(), *model.buffers())}
        self.held: list[torch.Tensor] = list(unique.values())
        self.read_names: dict[int, str] = {}

    def trainable(self) -> list[torch.Tensor]:
        return [tensor for tensor in self.model.parameters() if tensor.requires_grad]

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        yield


def fake_copy(model: torch.nn.Module, fake_mode: FakeTensorMode) -> torch.nn.Module:
    """A deep copy of ``model`` whose tensors are fake CPU tensors of the same shapes, dtypes and
    sharing: the originals are never copied (a 70B model on the CPU or on meta costs nothing)."""

    def to_fake(tensor: torch.Tensor) -> torch.Tensor:
        fake: torch.Tensor
        if tensor.is_meta:
            fake = fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, tensor, torch.device("cpu"))
        else:
            fake = fake_mode.from_tensor(tensor.detach(), static_shapes=True)
            if fake.device.type != "cpu":
                with fake_mode:
                    fake = fake.to("cpu")
        if isinstance(tensor, torch.nn.Parameter):
            return torch.nn.Parameter(fake, requires_grad=tensor.requires_grad)
        return fake

    memo: dict[int, Any] = {}
    for module in model.modules():
        for tensor in own_tensors(module):
            if id(tensor) not in memo:
                memo[id(tensor)] = to_fake(tensor)
    try:
        return copy.deepcopy(model, memo)
    except Exception as error:
        raise MeasureError(
            f"measure(parallel=...) shards a copy of the model, and copying {type(model).__name__} failed: "
            f"{type(error).__name__}: {first_line(error)}"
        ) from error


def run_sharded(step: Step, tensors: TensorInventory, parallel: Parallel) -> tuple[Watched, dict[str, int]]:
    """The step as rank 0 of ``parallel`` runs it; with the split of its peak memory."""
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)

    def input_to_fake(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_meta:
            return fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, tensor, torch.device("cpu"))
        fake: torch.Tensor = fake_mode.from_tensor(tensor, static_shapes=True)
        if fake.device.type != "cpu":
            with fake_mode:
                fake = fake.to("cpu")
        return fake

    def make_fake(spec: RandomInput) -> torch.Tensor:
        with fake_mode:
            return spec.make("cpu")

    sharded = fake_copy(step.model, fake_mode)
    args, keywords = map_inputs((step.args, step.keywords), input_to_fake, make_fake)
    with fake_world(parallel.world_size, parallel.tp_degree) as mesh:
        # Outside the fake mode: the device mesh computes with real (tiny) tensors of ranks, and
        # every tensor sharding makes from the model's is fake already.
        shard(sharded, parallel, mesh)
        with fake_mode:
            rank_step = step.on(sharded)
            stand_ins = CopyTensors(sharded)
            rank_step.into_dtensors = parallel.tp_degree > 1
            if parallel.tp_degree > 1:
                # Once unwatched first: the first time DTensor meets an op it runs it on tensors
                # of the global shape to learn the output's, and caches that; watched, those
                # would count as the whole layer's temporaries.
                rank_step.run(stand_ins, args, keywords, ledger=None)
                for param in sharded.parameters():
                    param.grad = None
            watched = rank_step.watched(stand_ins, args, keywords, shapes_only=True, split=True)
            split = _split(watched, sharded, rank_step)
    return watched, split


def _split(watched: Watched, model: torch.nn.Module, step: Step) -> dict[str, int]:
    """What the ledger held at the peak, by kind: each storage named by what owns it after the
    step (the optimizer's state, a gradient, a parameter's shard, a parameter gathered in full,
    found through FSDP2's own state as its FSDPMemTracker does; a buffer a collective or FSDP's
    copy for one returned); everything else is activations and temporaries."""
    ledger = watched.counter.ledger
    assert ledger is not None

    def keys(values: Any) -> set[int]:
        found = set()
        for tensor in plain_tensors(values):
            storage = storage_of(tensor)
            if storage is not None:
                found.add(id(storage))
        return found

    shards, gathered = _fsdp_tensors(model)
    params = [*(shard for shard in shards if isinstance(shard, torch.nn.Parameter)), *model.parameters()]
    # Owners after the step: what is still alive and theirs.
    owners = {
        "optimizer_state": keys(
            t for state in (step.last_optimizer.state.values() if step.last_optimizer else ()) for t in state.values()
        ),
        "gradients": keys(p.grad for p in params if p.grad is not None),
        "gathered_params": keys(gathered),
        "sharded_params": keys([*shards, *model.parameters(), *model.buffers()]),
    }
    split = dict.fromkeys([*owners, "communication_buffers", "activations", "workspaces"], 0)
    split["workspaces"] = ledger.peak_kept
    for key, (size, ref) in ledger.peak_held.items():
        # A storage freed since the peak is no one's now (and its id may be another's).
        alive = ref() is not None
        kind = next((name for name, owned in owners.items() if alive and key in owned), None)
        if kind is None:
            kind = "communication_buffers" if id(ref) in ledger.communication_refs else "activations"
        split[kind] += size
    return split


def _fsdp_tensors(model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every FSDP parameter's shard (its padded storage, and the sharded parameter) and its
    gathered tensors (all-gather outputs, the unsharded parameter), kept by FSDP2 between steps."""
    from torch.distributed.fsdp import FSDPModule

    shards: list[torch.Tensor] = []
    gathered: list[torch.Tensor] = []
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        state = module._get_fsdp_state()
        for group in getattr(state, "_fsdp_param_groups", []):
            for param in group.fsdp_params:
                shards += [
                    t for t in (getattr(param, "_sharded_param_data", None), param.sharded_param) if t is not None
                ]
                gathered += list(getattr(param, "all_gather_outputs", []))
                unsharded = getattr(param, "_unsharded_param", None)
                if unsharded is not None:
                    gathered.append(unsharded)
    return shards, gathered
