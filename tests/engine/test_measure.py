"""measure_checked() against numbers computed outside this code: published figures and hand arithmetic."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pytest_modelbudget import MeasureError, measure

from ..helpers import measure_checked
from .reference_models import mnist_mlp, vgg16

# --- published figures ------------------------------------------------------------------------


def test_vgg16_matches_the_published_params_and_gmacs():
    with torch.device("meta"):
        model = vgg16()
    stats = measure_checked(model, input_size=(1, 3, 224, 224))
    assert stats.params == 138_357_544
    assert round(stats.macs / 1e9, 2) == 15.47
    assert stats.uncounted_ops == {}


def test_mlp_params_and_frozen_first_layer():
    model = mnist_mlp()
    assert measure_checked(model, input_size=(1, 784)).params == 669_706
    model[1].weight.requires_grad_(False)  # the SPEC's example freezes the first layer's weights
    stats = measure_checked(model, input_size=(1, 784))
    assert stats.trainable_params == 268_298
    assert stats.frozen_params == 784 * 512
    model[1].bias.requires_grad_(False)
    assert measure_checked(model, input_size=(1, 784)).trainable_params == 268_298 - 512


def test_gpt2_counts_the_tied_lm_head_once():
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    stats = measure_checked(model, torch.zeros(1, 128, dtype=torch.long))
    assert stats.params == 124_439_808
    assert stats.macs == 16_114_089_984
    assert ["transformer.wte.weight", "lm_head.weight"] in stats.shared_params
    assert stats.unused_params == []
    assert stats.layers["lm_head"].params == 0  # attributed to its first name, the embedding
    assert stats.layers["lm_head"].macs == 128 * 768 * 50257


def test_llama_7b_shape_on_meta():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    stats = measure_checked(model, torch.zeros(1, 128, dtype=torch.long, device="meta"))
    assert stats.params == 6_738_415_616
    assert round(stats.macs / 1e9, 1) == 850.0
    assert stats.bytes == 4 * 6_738_415_616 + 4 * stats.buffer_elements


# --- hand-computed MACs -------------------------------------------------------------------------


def test_linear_macs_exclude_the_bias():
    stats = measure_checked(nn.Linear(64, 32), input_size=(4, 10, 64))
    assert stats.macs == 4 * 10 * 64 * 32
    assert stats.flops == 2 * stats.macs


class Functional(nn.Module):
    """Arithmetic in forward with no submodule: matmul, einsum, conv through F."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 8))
        self.kernel = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x @ self.w  # (2, 5, 16) @ (16, 8)
        z = torch.einsum("bij,bkj->bik", y, y)  # (2, 5, 8) x (2, 5, 8) -> (2, 5, 5)
        return z, F.conv2d(image, self.kernel)


def test_functional_matmul_einsum_and_conv_are_counted():
    stats = measure_checked(Functional(), (torch.randn(2, 5, 16), torch.randn(1, 3, 10, 10)))
    matmul = 2 * 5 * 16 * 8
    einsum = 2 * 5 * 5 * 8
    conv = 4 * 3 * 3 * 3 * 8 * 8
    assert stats.macs == matmul + einsum + conv
    assert stats.unused_params == []


def test_grouped_and_transposed_convolutions():
    grouped = nn.Conv2d(32, 64, 3, padding=1, groups=4, bias=False)
    assert measure_checked(grouped, input_size=(2, 32, 8, 8)).macs == 2 * 8 * 8 * 64 * (32 // 4) * 9
    transposed = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
    # Each input pixel is multiplied into a k x k x C_out patch.
    assert measure_checked(transposed, input_size=(1, 16, 5, 5)).macs == 5 * 5 * 16 * 8 * 16
    conv3d = nn.Conv3d(2, 4, 3)
    assert measure_checked(conv3d, input_size=(1, 2, 5, 5, 5)).macs == 3 * 3 * 3 * 4 * 2 * 27
    conv1d = nn.Conv1d(3, 6, 5, groups=3)
    assert measure_checked(conv1d, input_size=(1, 3, 20)).macs == 16 * 6 * 1 * 5


class Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_scaled_dot_product_attention_on_cpu_and_meta():
    q, k, v = torch.randn(2, 4, 7, 8), torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 6)
    expected = 2 * 4 * 7 * 9 * (8 + 6)
    assert measure_checked(Attention(), (q, k, v)).macs == expected
    assert measure_checked(Attention(), tuple(t.to("meta") for t in (q, k, v))).macs == expected


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_multihead_attention_fast_and_slow_paths_agree(mode):
    # In eval + no_grad nn.MultiheadAttention takes the fused native kernel.
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    q = torch.randn(2, 7, 16)
    projections = 2 * 7 * 16 * 16 * 4  # q, k, v and out projections
    attention = 2 * 7 * 7 * 16 * 2  # QK^T and PV over all heads
    assert measure_checked(mha, (q, q, q), mode=mode).macs == projections + attention


def test_transformer_encoder_layer_fast_path():
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    x = torch.randn(2, 7, 16)
    fused = measure_checked(layer, x).macs
    assert fused == measure_checked(layer, x, mode="training").macs
    assert fused == 2 * 7 * 16 * 16 * 4 + 2 * 7 * 7 * 16 * 2 + 2 * 7 * 16 * 32 * 2


@pytest.mark.parametrize("cell, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)], ids=["lstm", "gru", "rnn"])
def test_recurrent_layers(cell, gates):
    rnn = cell(10, 20, num_layers=2, batch_first=True)
    steps = 3 * 5  # batch x sequence
    per_step = gates * 20 * (10 + 20) + gates * 20 * (20 + 20)
    assert measure_checked(rnn, input_size=(3, 5, 10)).macs == steps * per_step


# --- sharing, unused layers, inputs, outputs ------------------------------------------------------


class ConvTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.unused = nn.Conv2d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv(x))


def test_a_conv_applied_twice_is_nine_params_and_an_unused_conv_is_reported():
    stats = measure_checked(ConvTwice(), input_size=(1, 1, 8, 8))
    assert stats.params == 9 + 10
    assert stats.unused_params == ["unused.weight", "unused.bias"]
    assert stats.macs == 2 * 8 * 8 * 9
    assert stats.layers["conv"].calls == 2


def test_a_module_registered_under_two_names():
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    stats = measure_checked(model, input_size=(1, 8))
    assert stats.params == 72
    assert ["0.weight", "2.weight"] in stats.shared_params
    assert "2" not in stats.layers  # attributed to its first name
    assert stats.layers["0"].macs == 2 * 64


class KeywordModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, input_ids: torch.Tensor, scale: float = 1.0, mask: torch.Tensor | None = None):
        h = self.embed(input_ids) * scale
        if mask is not None:
            h = h * mask[..., None]
        return {"logits": self.out(h), "hidden": h}


def test_keyword_and_dict_inputs_and_dict_outputs():
    ids = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.ones(2, 6)
    by_dict = measure_checked(KeywordModel(), {"input_ids": ids, "mask": mask})
    by_kwargs = measure_checked(KeywordModel(), ids, forward_kwargs={"mask": mask, "scale": 2.0})
    assert by_dict.macs == by_kwargs.macs == 2 * 6 * 16 * 4
    assert measure_checked(KeywordModel(), {"input_ids": ids}, mode="training").macs == by_dict.macs
    # kwargs= is forward_kwargs' old name: still read, with a warning that says the new one.
    with pytest.warns(DeprecationWarning, match=r"measure\(kwargs=...\) is now forward_kwargs="):
        assert measure_checked(KeywordModel(), ids, kwargs={"mask": mask}).macs == by_dict.macs
    with pytest.raises(MeasureError, match="both kwargs= and forward_kwargs="):
        measure(KeywordModel(), ids, kwargs={"mask": mask}, forward_kwargs={"mask": mask})


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    aux: tuple[torch.Tensor, ...]


class DataclassModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> Output:
        y = self.a(x)
        return Output(y, (y.relu(),))


def test_training_mode_with_a_dataclass_output_and_a_custom_loss():
    model = DataclassModel()
    assert measure_checked(model, input_size=(2, 4), mode="training").macs == 32
    stats = measure_checked(model, input_size=(2, 4), mode="training", loss_fn=lambda out: out.logits.mean())
    assert stats.mode == "training" and stats.macs == 32


def test_input_size_list_builds_several_tensors_and_integer_dtype_builds_ids():
    assert measure_checked(Attention(), input_size=[(1, 2, 3, 4)] * 3).macs == 2 * 3 * 3 * 8
    stats = measure_checked(KeywordModel(), input_size=(2, 6), dtype=torch.long)
    assert stats.macs == 2 * 6 * 16 * 4


def test_bytes_follow_the_real_dtypes():
    model = nn.Linear(10, 10).to(torch.float16)
    model.register_buffer("codes", torch.zeros(7, dtype=torch.uint8))
    stats = measure_checked(model, input_size=(1, 10))
    assert stats.bytes == 110 * 2 + 7
    assert stats.buffer_elements == 7


def test_arithmetic_without_a_formula_is_listed_not_dropped():
    class Determinant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.det(x)  # an LU factorisation: arithmetic with no formula here

    stats = measure_checked(Determinant(), input_size=(4, 8, 8))
    assert stats.uncounted_ops == {"_linalg_det": 1}


def test_layers_roll_up_children_even_for_containers_never_called():
    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return x

    stats = measure_checked(Stack(), input_size=(1, 8))
    assert stats.layers["blocks"].macs == 3 * 64 == stats.macs
    assert stats.layers["blocks"].params == 3 * 72
    assert stats.layers["blocks.1"].type == "Linear"


def test_data_dependent_control_flow_falls_back_to_a_real_run():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.sum() > 0 else self.b(x)

    stats = measure_checked(Branchy(), torch.ones(2, 4))
    assert stats.execution == "real"
    assert stats.macs == 2 * 16
    assert stats.unused_params == ["b.weight", "b.bias"]
    assert "fake execution failed" in stats.notes[0]


# --- the model is never changed ----------------------------------------------------------------------


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()],
        "devices": {p.device for p in model.parameters()},
    }


def _same(a: dict, b: dict) -> bool:
    return (
        a["state"].keys() == b["state"].keys()
        and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
        and all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a["grad"], b["grad"]))
        and all(a[key] == b[key] for key in ("requires_grad", "training", "hooks", "devices"))
    )


@pytest.mark.parametrize("mode", ["inference", "training", "adam"])
def test_measuring_leaves_the_model_exactly_as_it_was(mode):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(2, 3, 8, 8)).sum().backward()  # materialise, give grads
    model[1].eval()  # a mixed train/eval state must survive
    model[0].weight.requires_grad_(False)
    before = _snapshot(model)
    if mode == "adam":
        measure_checked(
            model, input_size=(2, 3, 8, 8), mode="training", optimizer=lambda p: torch.optim.Adam(p, lr=1.0)
        )
    else:
        measure_checked(model, input_size=(2, 3, 8, 8), mode=mode)
    assert _same(before, _snapshot(model))


def test_the_model_is_unchanged_when_forward_raises():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4)).train()
    before = _snapshot(model)
    with pytest.raises(MeasureError):
        measure_checked(model, input_size=(2, 5))
    assert _same(before, _snapshot(model))
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


# --- bad input ------------------------------------------------------------------------------------


def test_not_a_module():
    with pytest.raises(MeasureError, match=r"takes a torch.nn.Module, found builtins.str"):
        measure_checked("resnet50", input_size=(1, 3))


def test_inputs_that_do_not_match_forward():
    with pytest.raises(
        MeasureError,
        match=r"do not match KeywordModel.forward\(input_ids.*missing a required argument: 'input_ids'; given \(token_ids=Tensor\(1, 2\)\)",
    ):
        measure_checked(KeywordModel(), {"token_ids": torch.zeros(1, 2, dtype=torch.long)})


def test_missing_input_size_names_forward():
    with pytest.raises(
        MeasureError, match=r"Linear.forward\(input: torch.Tensor\).* needs inputs: pass inputs=... or input_size"
    ):
        measure_checked(nn.Linear(2, 2))


def test_a_forward_that_raises_keeps_its_exception():
    with pytest.raises(MeasureError, match=r"Linear.forward raised RuntimeError: mat1 and mat2 shapes") as info:
        measure_checked(nn.Linear(4, 4), input_size=(2, 5))
    assert isinstance(info.value.error, RuntimeError)
    assert info.value.error.__traceback__ is not None  # its whole traceback, for a debugger


def test_bad_arguments():
    with pytest.raises(
        MeasureError, match="mode must be one of 'inference', 'training', 'prefill', 'decode', found 'eval'"
    ):
        measure_checked(nn.Linear(2, 2), input_size=(1, 2), mode="eval")
    with pytest.raises(MeasureError, match="input_size must be a shape"):
        measure_checked(nn.Linear(2, 2), input_size="1x2")
    with pytest.raises(MeasureError, match="either inputs or input_size"):
        measure_checked(nn.Linear(2, 2), torch.ones(1, 2), input_size=(1, 2))


def test_a_forward_that_raises_on_meta_is_reported_without_a_real_run():
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    with pytest.raises(MeasureError, match="meta device"):
        measure_checked(model, input_size=(2, 5))
