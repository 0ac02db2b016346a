"""Peak memory of one rank of a sharded (FSDP2) step, against PyTorch's own FSDPMemTracker on the
same model and world size (a real CPU run under the fake process group) and against hand counts
of shards, padding, gradients, optimizer state and gathered parameters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from pytest_modelbudget import MeasureError, Parallel

from ..helpers import measure_checked

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover - every build we install has it
    pytest.skip("torch.distributed is not available", allow_module_level=True)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Stack(nn.Module):
    """Blocks in a ModuleList: each an FSDP unit by default, as torchtitan wraps its blocks."""

    def __init__(self, dim: int = 256, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(16, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@contextlib.contextmanager
def fake_world(world_size: int) -> Iterator[object]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield init_device_mesh("cpu", (world_size,))
    finally:
        dist.destroy_process_group()


def fsdp_mem_tracker_peak(
    make_model, inputs, world_size: int, mode: str, adamw: bool, loss=lambda out: out.sum()
) -> int:
    """PyTorch's own figure: FSDP2 on a real CPU model, each ModuleList block a unit, then the
    root, one step under FSDPMemTracker."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.fsdp import fully_shard

    with fake_world(world_size) as mesh:
        torch.manual_seed(0)
        model = make_model()
        for module in model.modules():
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), foreach=False) if adamw else None
        tracker = FSDPMemTracker(model, optimizer)
        tracker.track_inputs(inputs if isinstance(inputs, tuple) else (inputs,))
        with tracker:
            if mode == "inference":
                model.eval()
                with torch.no_grad():
                    model(*inputs) if isinstance(inputs, tuple) else model(inputs)
            else:
                output = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
                loss(output).backward()
                del output
                if optimizer is not None:
                    optimizer.step()
        return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def sharded(model, inputs, world_size, mode, adamw, **settings):
    return measure_checked(
        model,
        inputs,
        mode=mode,
        device="cpu",
        optimizer=(lambda params: torch.optim.AdamW(params, foreach=False)) if adamw else None,
        # FSDPMemTracker follows one step: the first, where AdamW makes its state.
        step="first" if adamw else None,
        parallel={"strategy": "fsdp", "world_size": world_size, **settings},
    )


@pytest.mark.parametrize(
    ("mode", "adamw"),
    [("inference", False), ("training", False), ("training", True)],
    ids=["inference", "training", "training-adamw"],
)
@pytest.mark.parametrize("world_size", [2, 4])
def test_a_block_stack_agrees_with_fsdp_mem_tracker(mode, adamw, world_size):
    inputs = torch.randn(32, 16)
    expected = fsdp_mem_tracker_peak(Stack, inputs, world_size, mode, adamw)
    stats = sharded(Stack(), inputs, world_size, mode, adamw)
    # Byte for byte in most cases; within 0.1% where the optimizer's step is the peak.
    assert abs(stats.peak_memory - expected) <= 0.001 * expected, (stats.peak_memory, expected)
    assert sum(stats.peak_memory_split.values()) == stats.peak_memory
    assert not dist.is_initialized()  # the simulated process group is gone


def test_llama_training_agrees_with_fsdp_mem_tracker():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=2000,
        attn_implementation="sdpa",
    )

    def make_model():
        return transformers.LlamaForCausalLM(config)

    ids = torch.randint(0, 2000, (2, 128))

    def loss(output):
        return output.logits.sum()

    expected = fsdp_mem_tracker_peak(make_model, ids, 4, "training", True, loss=loss)
    stats = measure_checked(
        make_model(),
        {"input_ids": ids},
        mode="training",
        device="cpu",
        loss_fn=loss,
        optimizer=lambda params: torch.optim.AdamW(params, foreach=False),
        step="first",  # FSDPMemTracker's one step
        parallel=Parallel(world_size=4),
    )
    assert abs(stats.peak_memory - expected) <= 0.001 * expected, (stats.peak_memory, expected)
    # Params and MACs are the model's and the rank's step, as without sharding.
    single = measure_checked(make_model(), {"input_ids": ids}, mode="training", device="cpu", loss_fn=loss)
    assert (stats.params, stats.macs) == (single.params, single.macs)
    assert stats.parallel == {
        "strategy": "fsdp",
        "world_size": 4,
        "reshard_after_forward": True,
        "param_dtype": None,
        "reduce_dtype": None,
        "wrap": None,
        "activation_checkpointing": False,
        "tp_size": None,
        "tp_plan": None,
    }


def test_inference_by_hand_shards_with_padding_and_one_gathered_unit():
    # Three 10 x 10 weights over 4 ranks: FSDP2 pads dim 0 to 12 rows, 3 per rank, so rank 0
    # holds 3 x 10 x 4 B = 120 B of each; a unit gathers all four ranks' padded shards: 480 B.
    model = nn.Sequential(*(nn.Linear(10, 10, bias=False) for _ in range(3)))
    stats = sharded(model, torch.randn(1, 10), 4, "inference", False, wrap=["Linear"])
    split = stats.peak_memory_split
    assert split["sharded_params"] == 3 * 120
    assert split["gathered_params"] == 480  # one unit at a time (reshard_after_forward)
    assert split["gradients"] == split["optimizer_state"] == 0
    assert split["activations"] == 40 + 40  # the input and one layer's output, 10 floats each
    assert split["communication_buffers"] % 480 == 0 and split["communication_buffers"] > 0
    assert stats.peak_memory == sum(split.values())
    # Without resharding between units, every unit stays gathered: three of them.
    kept = sharded(model, torch.randn(1, 10), 4, "inference", False, wrap=["Linear"], reshard_after_forward=False)
    assert kept.peak_memory_split["gathered_params"] == 3 * 480


def test_training_with_adamw_by_hand_peaks_at_the_optimizer_step():
    # Eight 16 x 16 weights over 2 ranks: 8 rows each, 8 x 16 x 4 B = 512 B per weight and rank.
    # At the optimizer step rank 0 holds its shards, their gradients, AdamW's exp_avg and
    # exp_avg_sq of the same shapes and one 4-byte step count per weight; nothing gathered.
    model = nn.Sequential(*(nn.Linear(16, 16, bias=False) for _ in range(8)))
    stats = sharded(model, torch.randn(1, 16), 2, "training", True, wrap=["Linear"])
    split = stats.peak_memory_split
    shards = 8 * 512
    assert split["sharded_params"] == shards
    assert split["gradients"] == shards
    assert split["optimizer_state"] == 2 * shards + 8 * 4
    assert split["gathered_params"] == 0


def test_world_size_one_is_the_single_device_figure_plus_fsdps_own_buffers():
    # On one rank FSDP still gathers each unit into a buffer of its own and, in backward, holds a
    # unit's unsharded gradients before its reduce-scatter: at most one block and the root's own
    # parameters (embed, head) twice over the single-device figure.
    inputs = torch.randn(32, 16)
    model = Stack()
    unit = sum(p.numel() for p in model.blocks[0].parameters()) * 4
    root = sum(p.numel() for p in (*model.embed.parameters(), *model.head.parameters())) * 4
    for mode, adamw in (("inference", False), ("training", False), ("training", True)):
        one = sharded(Stack(), inputs, 1, mode, adamw)
        single = measure_checked(
            Stack(),
            inputs,
            mode=mode,
            device="cpu",
            optimizer=(lambda params: torch.optim.AdamW(params, foreach=False)) if adamw else None,
        )
        assert 0 <= one.peak_memory - single.peak_memory <= 2 * (unit + root), (mode, adamw)
        assert one.peak_memory_split["sharded_params"] == model_bytes(model)  # one rank has it all


def model_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_more_ranks_and_checkpointing_shrink_a_ranks_memory():
    inputs = torch.randn(256, 16)
    two = sharded(Stack(depth=6), inputs, 2, "training", True)
    eight = sharded(Stack(depth=6), inputs, 8, "training", True)
    recomputed = sharded(Stack(depth=6), inputs, 8, "training", True, activation_checkpointing=True)
    assert two.peak_memory > eight.peak_memory > recomputed.peak_memory
    assert two.peak_memory_split["sharded_params"] > eight.peak_memory_split["sharded_params"]
    assert any("recomputed in backward" in note for note in recomputed.peak_memory_approximations)


def test_a_llama_7b_shape_on_meta_sharded_8_ways():
    # Two of Llama-7B's 32 layers (the full depth is in benchmarks/goals.py): bf16 weights, AdamW,
    # activation checkpointing, 1 x 4,096 tokens per rank. Each rank holds 1/8 of every weight.
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=2,
        num_attention_heads=32,
        max_position_embeddings=4096,
        attn_implementation="sdpa",
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    ids = torch.zeros(1, 4096, dtype=torch.long, device="meta")
    stats = measure_checked(
        model,
        {"input_ids": ids, "labels": ids, "use_cache": False},
        mode="training",
        loss_fn=lambda out: out.loss,
        optimizer=lambda params: torch.optim.AdamW(params),
        parallel={"world_size": 8, "activation_checkpointing": True, "param_dtype": "bfloat16"},
    )
    split = stats.peak_memory_split
    rank_shards = stats.params * 2 / 8  # bf16
    assert rank_shards <= split["sharded_params"] <= rank_shards * 1.01  # padding and 512-byte blocks
    # Two layers: the peak is the fp32 logits (4,096 x 32,000 x 4 B) and their gradient, not AdamW.
    assert split["activations"] >= 2 * 4096 * 32_000 * 4
    # cuBLAS's workspace, PyTorch's default on a GPU not named: 4096 KiB x 2 + 16 KiB x 8.
    assert split["workspaces"] == 4096 * 1024 * 2 + 16 * 1024 * 8
    assert stats.peak_memory == sum(split.values())


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(64, 256, bias=False)
        self.down = nn.Linear(256, 64, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


MLP_PLAN = {"up": "colwise", "down": "rowwise"}


def mem_tracker_tp_peak(inputs: torch.Tensor, world_size: int, mode: str) -> int:
    """MemTracker on a real CPU step of the MLP, tensor-parallel under the fake process group
    (after one step first, as ours, so that DTensor's shape propagation is cached)."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    with fake_world(world_size) as mesh:
        model = MLP()
        parallelize_module(model, mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})

        def step() -> None:
            if mode == "inference":
                with torch.no_grad():
                    model(inputs)
            else:
                output = model(inputs)
                output.sum().backward()
                del output

        step()
        model.zero_grad(set_to_none=True)
        tracker = MemTracker()
        tracker.track_external(model, inputs)
        with tracker:
            step()
        return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


@pytest.mark.parametrize("world_size", [2, 4])
def test_tensor_parallel_training_agrees_with_mem_tracker(world_size):
    inputs = torch.randn(8, 64)
    expected = mem_tracker_tp_peak(inputs, world_size, "training")
    stats = measure_checked(
        MLP(),
        inputs,
        mode="training",
        device="cpu",
        parallel={"strategy": "tp", "world_size": world_size, "tp_plan": MLP_PLAN},
    )
    assert stats.peak_memory == expected
    # Each rank holds its column (up) and row (down) slice: 1/world_size of the weights.
    assert stats.peak_memory_split["sharded_params"] == 2 * 64 * 256 * 4 // world_size


def test_tensor_parallel_inference_by_hand_sees_the_all_reduce_buffer():
    # MemTracker sees a DTensor op's outputs only; we follow its local ops too. The row-parallel
    # down projection's partial sums (8 x 64 floats) and the all-reduce's out-of-place result
    # coexist for a moment: 2,048 B that MemTracker does not see.
    inputs = torch.randn(8, 64)
    expected = mem_tracker_tp_peak(inputs, 2, "inference")
    stats = measure_checked(
        MLP(), inputs, device="cpu", parallel={"strategy": "tp", "world_size": 2, "tp_plan": MLP_PLAN}
    )
    assert stats.peak_memory == expected + 8 * 64 * 4
    assert stats.peak_memory_split["sharded_params"] == 2 * 64 * 256 * 4 // 2


def test_a_transformers_model_brings_its_own_plan_and_2d_sharding_divides_by_both():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=2000,
        attn_implementation="sdpa",
    )
    ids = torch.randint(0, 2000, (2, 128))
    figures = {}
    for parallel in ({"strategy": "tp", "world_size": 2}, {"strategy": "fsdp+tp", "world_size": 4, "tp_size": 2}):
        stats = measure_checked(
            transformers.LlamaForCausalLM(config),
            {"input_ids": ids},
            mode="training",
            device="cpu",
            loss_fn=lambda out: out.logits.sum(),
            parallel=parallel,
        )
        figures[parallel["strategy"]] = stats.peak_memory_split["sharded_params"]
        assert stats.peak_memory == sum(stats.peak_memory_split.values())
    weights = sum(p.numel() * 4 for p in transformers.LlamaForCausalLM(config).parameters())
    # The plan shards every projection, the embedding and the head; the norms (1,280 floats) stay whole.
    assert weights / 2 <= figures["tp"] <= weights / 2 + 1280 * 4
    assert weights / 4 <= figures["fsdp+tp"] <= weights / 4 + 1280 * 4 + 4096


@pytest.mark.parametrize(
    ("parallel", "message"),
    [
        ({"strategy": "tp", "world_size": 2}, "parallel strategy 'tp' needs a tensor-parallel plan and Stack has none"),
        ({"strategy": "fsdp+tp", "world_size": 4, "tp_size": 3}, "needs a tp_size that divides world_size 4, found 3"),
        ({"world_size": 4, "tp_size": 2}, r'parallel tp_size and tp_plan apply to strategy "tp" or "fsdp\+tp"'),
        (
            {"strategy": "tp", "world_size": 2, "tp_plan": {"embed": "diagonal"}},
            "parallel tp_plan: 'embed': 'diagonal' is not a style",
        ),
        ({"strategy": "ddp"}, r"parallel strategy must be one of 'fsdp', 'tp', 'fsdp\+tp', found 'ddp'"),
        ({"world_size": 0}, "parallel world_size must be a positive integer, found 0"),
        ({"worldsize": 8}, "parallel: unknown key 'worldsize'; expected some of strategy, world_size"),
        ({"param_dtype": "fp8"}, "parallel param_dtype: expected one of float32, bfloat16, float16, found 'fp8'"),
        ({"wrap": ["Nonexistent"]}, "parallel wrap: no module is named or of class 'Nonexistent'"),
        ("fsdp", "parallel must be a Parallel or a dict"),
    ],
)
def test_bad_settings_are_named(parallel, message):
    with pytest.raises(MeasureError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        measure_checked(Stack(), torch.randn(2, 16), parallel=parallel)
    assert not dist.is_initialized()


def test_a_process_group_already_initialized_is_a_clear_error():
    with fake_world(2), pytest.raises(MeasureError, match="one is already initialized in this process"):
        measure_checked(Stack(), torch.randn(2, 16), parallel={"world_size": 2})


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_a_tensor_parallel_llama_is_mem_tracker_plus_the_gathered_logits_it_cannot_see(mode):
    # transformers' own plan gathers the column-parallel lm_head's output ("colwise_gather_output"):
    # DTensor all-gathers the local logits into a buffer and lays them out as the full logits. Both
    # exist at once for a moment; MemTracker, which sees a DTensor op's outputs only, misses the
    # buffer: 2 x 128 tokens x 2,000 vocabulary x 4 B.
    transformers = pytest.importorskip("transformers")
    from torch.distributed._tools.mem_tracker import MemTracker

    from pytest_modelbudget.engine.parallel import shard

    config = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=2000,
        attn_implementation="sdpa",
    )
    ids = torch.randint(0, 2000, (2, 128))

    def step(model: nn.Module) -> None:
        if mode == "inference":
            model.eval()
            with torch.no_grad():
                model(input_ids=ids)
        else:
            model.train()
            output = model(input_ids=ids)
            output.logits.sum().backward()
            del output

    with fake_world(2):
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (1, 2), mesh_dim_names=("dp", "tp"))
        model = transformers.LlamaForCausalLM(config)
        shard(model, Parallel(strategy="tp", world_size=2), mesh)
        step(model)  # DTensor's shape propagation cached, as in our run
        model.zero_grad(set_to_none=True)
        tracker = MemTracker()
        tracker.track_external(model, ids)
        with tracker:
            step(model)
        expected = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    stats = measure_checked(
        transformers.LlamaForCausalLM(config),
        {"input_ids": ids},
        mode=mode,
        device="cpu",
        loss_fn=lambda out: out.logits.sum(),
        parallel={"strategy": "tp", "world_size": 2},
    )
    assert stats.peak_memory - expected == 2 * 128 * 2000 * 4
