"""Measuring never changes the model (SPEC §2, §7): shared modules, tensors forward writes, the
real-run fallback, inputs that take no memory."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from pytest_modelbudget import MeasureError

from ..helpers import measure_checked

MODES = {
    "inference": {"mode": "inference"},
    "training": {"mode": "training"},
    "adam": {"mode": "training", "optimizer": lambda params: torch.optim.Adam(params, lr=1.0)},
}


@pytest.mark.parametrize("mode", MODES)
def test_a_module_under_two_names_is_counted_per_call_and_left_real(mode):
    shared = nn.Linear(10, 10)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    x = torch.randn(2, 10)
    expected = model(x).detach()
    stats = measure_checked(model, input_size=(2, 10), **MODES[mode])
    assert stats.params == 110
    assert stats.macs == 2 * (2 * 10 * 10)  # both calls
    assert stats.layers["0"].calls == 2
    output = model(x)
    assert type(output) is torch.Tensor and torch.equal(output, expected)
    assert type(shared.weight) is nn.Parameter
    model.to(torch.float64)  # raised "cannot copy out of meta/fake tensor" before


class TwoContainers(nn.Module):
    """A block kept in a ModuleList and under a name of its own, as many models keep their stem."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for _ in range(3)])
        self.first = self.blocks[0]
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        for block in self.blocks[1:]:
            x = block(x)
        return self.head(x)


@pytest.mark.parametrize("mode", MODES)
def test_a_block_in_two_containers(mode):
    model = TwoContainers()
    stats = measure_checked(model, input_size=(4, 8), **MODES[mode])
    assert stats.params == 3 * (72 + 16) + 18
    assert stats.macs == 4 * (3 * 64 + 16)
    assert type(model(torch.randn(1, 8))) is torch.Tensor


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_albert_shares_one_layer_across_depth(mode):
    transformers = pytest.importorskip("transformers")
    config = transformers.AlbertConfig(
        vocab_size=1000,
        embedding_size=64,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
    )
    model = transformers.AlbertModel(config)
    stats = measure_checked(model, input_size=(1, 32), dtype=torch.long, **MODES[mode])
    assert stats.params == model.num_parameters()  # the library's own count
    assert stats.execution == "fake"
    shared_layer = "encoder.albert_layer_groups.0.albert_layers.0"
    assert stats.layers[shared_layer].calls == 4
    # Four calls of one layer: its FFN is 4 x tokens x (128x256 + 256x128) MACs.
    assert (
        stats.layers[shared_layer + ".ffn"].macs + stats.layers[shared_layer + ".ffn_output"].macs
        == 4 * 32 * 2 * 128 * 256
    )


class Critic(nn.Module):
    """A WGAN critic: clamps its weights in forward; the data-dependent branch forces a real run."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        nn.init.constant_(self.lin.weight, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.lin.weight.clamp_(-0.01, 0.01)
        return self.lin(x) if x.sum() > 0 else x


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_the_real_run_fallback_writes_only_copies(mode):
    model = Critic()
    stats = measure_checked(model, inputs=torch.ones(1, 4), mode=mode)
    assert stats.execution == "real"
    assert torch.all(model.lin.weight == 0.5)


class Sneaky(nn.Module):
    """Needs values (a data-dependent branch) and writes its tensors the less obvious ways: through
    a view of ``.data``, into a buffer as an ``out=`` argument, and into a plain tensor attribute."""

    def __init__(self, write: str) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        nn.init.constant_(self.lin.weight, 0.5)
        self.register_buffer("total", torch.zeros(4))
        self.cache = torch.zeros(4)
        self.write = write
        self.pointers: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.lin.weight, FakeTensor):
            self.pointers.append(self.lin.weight.data_ptr())
        if self.write == "view":
            self.lin.weight.data[0].zero_()
        elif self.write == "out":
            torch.add(x[0], 1, out=self.total)
        elif self.write == "attribute":
            self.cache.copy_(x[0])
        return self.lin(x) if x.sum() > 0 else x


@pytest.mark.parametrize("write", ["view", "out", "attribute"])
def test_a_real_run_never_writes_the_model_however_forward_writes(write):
    model = Sneaky(write)
    stats = measure_checked(model, inputs=torch.ones(1, 4))
    assert stats.execution == "real" and stats.macs == 16
    assert torch.all(model.lin.weight == 0.5) and not model.total.any() and not model.cache.any()
    # The first real run read the model's own weights, stopped before the write, and the step
    # ran again on copies.
    assert model.pointers[-2] == model.lin.weight.data_ptr() != model.pointers[-1]


def test_a_real_run_that_only_reads_copies_nothing():
    # Detectors and large encoders that need values are run for real: their weights are read in
    # place (under a guard that stops any write), not copied whole first.
    model = Sneaky("nothing")
    stats = measure_checked(model, inputs=torch.ones(1, 4))
    assert stats.execution == "real" and stats.macs == 16
    assert model.pointers[-1] == model.lin.weight.data_ptr()


@functools.lru_cache(maxsize=8)
def _positions(length: int) -> torch.Tensor:
    return torch.arange(length, dtype=torch.float32)


class CachedTables(nn.Module):
    """Caches tensors made from shapes across calls, in an lru_cache'd method and in a
    module-level lru_cache'd function, as RT-DETR's anchors and DINOv3's rotary tables are."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    @functools.lru_cache(maxsize=8)  # noqa: B019 - the pattern under test
    def table(self, length: int) -> torch.Tensor:
        return torch.ones(length, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x + self.table(x.shape[0])) + _positions(x.shape[0])[:, None]


@pytest.mark.parametrize("cached_before", [False, True], ids=["fresh", "cached-by-the-user"])
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_caches_in_the_models_code_keep_no_fake_tensors(mode, cached_before):
    model, x = CachedTables(), torch.randn(3, 4)
    with torch.no_grad():
        expected = model(x)
    if not cached_before:
        CachedTables.table.cache_clear()
        _positions.cache_clear()
    stats = measure_checked(model, inputs=x, mode=mode)
    assert stats.execution == "fake"
    with torch.no_grad():
        after = model(x)
    assert type(after) is torch.Tensor and torch.equal(after, expected)
    assert not isinstance(model.table(3), FakeTensor) and not isinstance(_positions(3), FakeTensor)


def test_dinov3_answers_for_real_after_it_was_measured():
    # DINOv3's rotary table comes from transformers' compile_compatible_method_lru_cache: the
    # model returned fake tensors from its next real forward once a fake run had filled it.
    transformers = pytest.importorskip("transformers")
    config = transformers.DINOv3ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=64, patch_size=16
    )
    torch.manual_seed(0)
    model = transformers.DINOv3ViTModel(config).eval()
    x = torch.randn(1, 3, 64, 64)
    stats = measure_checked(model, inputs=x)
    assert stats.execution == "fake"
    with torch.no_grad():
        out = model(x).last_hidden_state
    assert type(out) is torch.Tensor and out.isfinite().all()


class Counter(nn.Module):
    """Keeps a plain tensor attribute (not a buffer) and writes it in place; caches its output."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.seen = torch.zeros(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add_(1)
        self.last = self.lin(x)
        return self.last


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_plain_tensor_attributes_and_attributes_set_in_forward_are_untouched(device):
    with torch.device(device):
        model = Counter()
    seen = model.seen
    measure_checked(model, input_size=(2, 4))
    assert model.seen is seen and not hasattr(model, "last")
    if device == "cpu":
        assert torch.equal(model.seen, torch.zeros(4))


def test_weight_norm_recomputes_weight_in_forward_and_is_put_back():
    model = nn.Sequential(nn.utils.weight_norm(nn.Linear(6, 6)), nn.Tanh())
    weight = model[0].weight
    stats = measure_checked(model, input_size=(3, 6), mode="training")
    assert stats.params == 6 * 6 + 6 + 6
    assert model[0].weight is weight and type(weight) is torch.Tensor


def test_input_size_tensors_are_fake_in_a_fake_run():
    seen: list[type] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(type(x))
            return x * 2

    measure_checked(Spy(), input_size=(16, 3, 1024, 1024))
    assert seen == [FakeTensor]


def _peak_rss_of(shape: str) -> int:
    code = (
        "import resource, torch\n"
        "from pytest_modelbudget import measure\n"
        "model = torch.nn.Conv2d(3, 4, 3)\n"
        "measure(model, input_size=(1, 3, 8, 8))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"measure(model, input_size={shape})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) * 1024


def test_a_huge_input_size_takes_no_memory():
    # (64, 3, 1024, 1024) fp32 is 805 MB, and the conv's output 1.07 GB: neither may be allocated.
    assert _peak_rss_of("(64, 3, 1024, 1024)") < 50 * 2**20


def test_a_list_is_one_argument_and_a_tuple_the_positional_ones():
    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, images: list[torch.Tensor], scale: float = 1.0) -> list[torch.Tensor]:
            return [self.conv(image[None]) * scale for image in images]

    images = [torch.randn(3, 8, 8), torch.randn(3, 4, 4)]
    stats = measure_checked(Detector(), inputs=images)
    assert stats.macs == (64 + 16) * 4 * 3
    stats = measure_checked(Detector(), inputs=(images, 2.0))
    assert stats.macs == (64 + 16) * 4 * 3


def test_a_zero_dimensional_input_size_is_a_scalar():
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            assert s.dim() == 0
            return x * s

    stats = measure_checked(Scale(), input_size=[(1, 10), ()])
    assert stats.flops == 10


@pytest.mark.slow
def test_a_meta_llama_with_a_cpu_mask_trains_with_adamw():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    inputs = {"input_ids": torch.zeros(1, 64, dtype=torch.long), "attention_mask": torch.ones(1, 64, dtype=torch.long)}
    stats = measure_checked(model, inputs=inputs, mode="training", optimizer=lambda p: torch.optim.AdamW(p))
    assert stats.params == model.num_parameters()
    assert stats.execution == "fake"


def test_when_meta_and_fake_runs_both_fail_the_first_error_is_reported():
    class NeedsValues(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            steps = int(x.sum())  # needs a value: neither meta nor fake tensors have one
            return self.lin(x) * steps

    with torch.device("meta"):
        model = NeedsValues()
    # The retry on fake tensors fails too (DataDependentOutputException), saying less.
    with pytest.raises(MeasureError, match=r"RuntimeError on meta tensors .*Tensor.item\(\) cannot be called on meta"):
        measure_checked(model, input_size=(1, 4))
