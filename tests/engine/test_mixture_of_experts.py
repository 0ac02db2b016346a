"""Mixture-of-experts models (transformers' default ``grouped_mm`` experts kernel and the eager
loop): every routed token's expert matmuls are counted, on fake and meta tensors, fp32 and bf16,
in inference and training, with no real run."""

from __future__ import annotations

import logging
import re
import warnings

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..helpers import measure_checked

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

SMALL = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=500,
)
FAMILIES = {
    "mixtral": ("MixtralConfig", dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64),
    ),
    "olmoe": ("OlmoeConfig", dict(num_experts=4, num_experts_per_tok=2, eos_token_id=None)),
    "deepseek_v3": (
        "DeepseekV3Config",
        dict(
            n_routed_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
            kv_lora_rank=16,
            q_lora_rank=32,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=16,
        ),
    ),
    "gpt_oss": (
        "GptOssConfig",
        dict(
            num_local_experts=4, num_experts_per_tok=2, head_dim=16, layer_types=["sliding_attention", "full_attention"]
        ),
    ),
    "jamba": (
        "JambaConfig",
        dict(
            num_experts=4,
            num_experts_per_tok=2,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=1,
            mamba_d_state=8,
            mamba_expand=2,
        ),
    ),
}


def _build(family: str, experts_implementation: str | None = None, device: str = "cpu") -> torch.nn.Module:
    config_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**SMALL, **extra)
    model_class = transformers.AutoModelForCausalLM._model_mapping[type(config)]
    options = {"experts_implementation": experts_implementation} if experts_implementation else {}
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        return model_class._from_config(config, **options).eval()


def _flop_counter_macs(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """PyTorch's FlopCounterMode on a real run of the eager experts loop, math attention."""
    model.requires_grad_(False)  # FlopCounterMode's module tracker trips on Jamba's hub kernels otherwise
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    model.requires_grad_(True)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_macs_equal_flop_counter_on_a_real_eager_run(family):
    ids = torch.randint(0, SMALL["vocab_size"], (2, 16))
    reference = _flop_counter_macs(_build(family, "eager"), ids)
    default = _build(family)
    assert default.config._experts_implementation != "eager" or family == "jamba"
    for model in (default, _build(family, "eager"), _build(family, device="meta")):
        stats = measure_checked(model, inputs=ids)
        assert stats.macs == reference, (family, model.config._experts_implementation)
        assert stats.execution == "fake"
        assert stats.uncounted_ops == {}
        assert stats.params == model.num_parameters()


def test_mixtral_by_hand():
    config = dict(num_local_experts=8, num_experts_per_tok=2)
    model = transformers.MixtralForCausalLM(
        transformers.MixtralConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1000,
            **config,
        )
    )
    tokens, hidden, inner, kv, heads, head_dim, experts, top_k, vocab = 16, 128, 256, 64, 4, 32, 8, 2, 1000
    projections = tokens * hidden * (hidden + kv + kv + hidden)
    attention = 2 * heads * tokens * tokens * head_dim
    router = tokens * hidden * experts
    routed = tokens * top_k * (hidden * 2 * inner + inner * hidden)  # gate+up, then down, per routed token
    expected = 2 * (projections + attention + router + routed) + tokens * hidden * vocab
    assert expected == 10_076_160
    for dtype in (torch.float32, torch.bfloat16):
        stats = measure_checked(model.to(dtype), input_size=(1, tokens), dtype=torch.long)
        assert stats.macs == expected
        assert stats.execution == "fake"
        assert stats.layers["model.layers.0.mlp.experts"].macs == routed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_training_runs_the_grouped_matmul_backward_without_a_real_run(dtype, device):
    model = _build("mixtral", device=device).to(dtype)
    inference = measure_checked(model, input_size=(2, 16), dtype=torch.long)
    training = measure_checked(
        model, input_size=(2, 16), dtype=torch.long, mode="training", optimizer=lambda p: torch.optim.AdamW(p)
    )
    assert training.execution == "fake" and training.macs == inference.macs
    # Gradients and two AdamW moments of every parameter are held at the peak.
    assert training.peak_memory > inference.peak_memory + 3 * training.bytes * 0.9


def test_an_eager_model_says_how_it_was_run_and_keeps_its_config():
    model = _build("mixtral", "eager")
    stats = measure_checked(model, input_size=(1, 8), dtype=torch.long)
    assert model.config._experts_implementation == "eager"
    assert model.model.layers[0].mlp.experts.config._experts_implementation == "eager"
    assert any(
        "experts_implementation='eager' ran as 'grouped_mm'" in note for note in stats.peak_memory_approximations
    )


def test_a_meta_kernel_that_refuses_leaves_no_torch_traceback_behind(caplog, monkeypatch):
    from pytest_modelbudget.engine import shapes

    # Without our shape function, fp32 grouped matmuls fail in the meta kernel, and FakeTensorMode
    # logs a full traceback before the real-run fallback takes over.
    monkeypatch.delitem(shapes.SHAPE_FUNCTIONS, id(torch.ops.aten._grouped_mm.default))
    with caplog.at_level(logging.DEBUG):
        stats = measure_checked(_build("mixtral"), input_size=(1, 8), dtype=torch.long)
    assert stats.execution == "real" and re.search("BF16|BFloat16", stats.notes[0])
    assert not [record for record in caplog.records if record.name.startswith("torch._subclasses")]
