"""Serving steps against the real thing: the cache transformers itself returns after a real CPU
prefill (its tensors' storages), and FlopCounterMode on the real decode step (math attention:
it prices no CPU flash kernel; eager experts: it has no formula for grouped_mm)."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pytest_modelbudget import MeasureError

from ..helpers import measure_checked

transformers = pytest.importorskip("transformers")

SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000)
FAMILIES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(intermediate_size=256, num_key_value_heads=2)),
    "mistral": (
        "MistralForCausalLM",
        "MistralConfig",
        dict(intermediate_size=256, num_key_value_heads=2, sliding_window=16),
    ),
    "gemma2": (
        "Gemma2ForCausalLM",
        "Gemma2Config",
        dict(intermediate_size=256, num_key_value_heads=2, head_dim=32, sliding_window=16),
    ),
    "deepseek_v3": (
        "DeepseekV3ForCausalLM",
        "DeepseekV3Config",
        dict(
            intermediate_size=256,
            moe_intermediate_size=64,
            n_routed_experts=4,
            num_experts_per_tok=2,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
            kv_lora_rank=32,
            q_lora_rank=48,
            qk_rope_head_dim=16,
            qk_nope_head_dim=32,
            v_head_dim=32,
            num_key_value_heads=4,
        ),
    ),
    "mamba": ("MambaForCausalLM", "MambaConfig", dict()),
}


def build(family: str, **options: str) -> torch.nn.Module:
    model_class, config_class, sizes = FAMILIES[family]
    config = getattr(transformers, config_class)(**SMALL, **sizes)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, model_class)._from_config(config, **options).eval().requires_grad_(False)


def returned_cache(output) -> object:
    for name in ("cache", "past_key_values", "cache_params"):
        if getattr(output, name, None) is not None:
            return getattr(output, name)
    raise AssertionError("no cache in the output")


def storage_bytes_of(cache) -> int:
    """Bytes of the distinct storages of every tensor the cache's layers hold (attention layers
    keep keys and values; state-space layers dicts of convolution and recurrent states)."""
    storages = {}
    for holder in (cache, *cache.layers):
        for value in vars(holder).values():
            for tensor in value.values() if isinstance(value, dict) else [value]:
                if isinstance(tensor, torch.Tensor):
                    storages[tensor.untyped_storage()._cdata] = tensor.untyped_storage().nbytes()
    return sum(storages.values())


def real_prefill_and_decode(model, batch: int, context: int) -> tuple[int, int]:
    """The cache's bytes after a real prefill of ``context`` tokens, and the MACs of the next
    token's decode step (FlopCounterMode counts two FLOPs a multiply-accumulate)."""
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = returned_cache(model(input_ids=torch.zeros(batch, context, dtype=torch.long), use_cache=True))
        cache_bytes = storage_bytes_of(cache)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(input_ids=torch.zeros(batch, 1, dtype=torch.long), use_cache=True, **{keyword: cache})
    return cache_bytes, counter.get_total_flops() // 2


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_bytes_and_decode_macs_are_the_real_runs(family):
    model = build(family)
    batch, context = 2, 48
    # The experts' reference is their eager loop (every routed row through its expert's matmuls).
    reference = build(family, experts_implementation="eager") if family == "deepseek_v3" else model
    cache_bytes, decode_macs = real_prefill_and_decode(reference, batch, context)
    prefill = measure_checked(model, mode="prefill", context=context, batch=batch, device="cpu")
    decode = measure_checked(model, mode="decode", context=context, batch=batch, device="cpu")
    assert prefill.kv_cache == decode.kv_cache == cache_bytes
    assert decode.macs == decode_macs
    assert (decode.context, decode.batch, decode.mode) == (context, batch, "decode")
    # The decode step holds the weights and the whole cache.
    assert decode.peak_memory > decode.bytes + decode.kv_cache


def test_grouped_query_attention_by_hand_and_per_layer():
    # Two layers, 2 KV heads of 32 dims (of 4 query heads), fp32: 2 (keys and values) x 2 x 32 x
    # 4 bytes = 512 bytes a token a layer, for 3 sequences of 100 tokens.
    stats = measure_checked(build("llama"), mode="decode", context=100, batch=3, device="cpu")
    assert stats.kv_cache == 2 * 512 * 3 * 100
    for index in (0, 1):
        assert stats.layers[f"model.layers.{index}.self_attn"].kv_cache == 512 * 3 * 100
        assert stats.layers[f"model.layers.{index}.mlp"].kv_cache is None
    assert stats.layers["model"].kv_cache == stats.kv_cache


def test_the_cache_grows_with_context_and_batch_and_the_heads():
    small = measure_checked(build("llama"), mode="decode", context=64, batch=1, device="cpu")
    assert (
        measure_checked(build("llama"), mode="decode", context=128, batch=2, device="cpu").kv_cache
        == 4 * small.kv_cache
    )
    model_class, config_class, sizes = FAMILIES["llama"]
    config = getattr(transformers, config_class)(**SMALL, **{**sizes, "num_key_value_heads": 4})
    wider = getattr(transformers, model_class)(config).eval()
    assert measure_checked(wider, mode="decode", context=64, batch=1, device="cpu").kv_cache == 2 * small.kv_cache


def llama_3_8b(positions: int = 8192) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=positions,
    )
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(config).to(torch.bfloat16)


def test_llama_3_8b_on_an_h100_the_largest_batch_and_context_that_fit():
    model = llama_3_8b(positions=131072)
    stats = measure_checked(model, mode="decode", context=8192, batch=1, gpu="h100-sxm")
    memory = 80 * 2**30  # the datasheet's 80 GB of HBM3

    def fits(context: int, batch: int) -> bool:
        return measure_checked(model, mode="decode", context=context, batch=batch).peak_memory <= memory

    # Weights 16.06 GB and 1.07 GB of cache a sequence: about 64 sequences, checked by runs.
    assert stats.max_batch is not None and 60 <= stats.max_batch <= 70
    assert fits(8192, stats.max_batch) and not fits(8192, stats.max_batch + 1)
    # One sequence fits at every context the model has positions for: said in the notes.
    assert stats.max_context == 131072
    assert any("fits h100-sxm at every context searched, up to 131,072 tokens" in note for note in stats.notes)
    # Decode reads every weight and the cache: memory-bound, near (16.06 + 1.07 GB) / 3.35 TB/s =
    # 5.1 ms; DynamicCache's concatenation reads and writes the cache once more (5.8 ms).
    assert stats.roofline_time is not None and 5.1e6 < stats.roofline_time < 6.0e6


def test_the_search_follows_the_runs_on_a_small_gpu():
    from pytest_modelbudget.gpus import Gpu

    model = build("llama")
    small = Gpu("small", 1e11, {"fp32": 1e12}, memory=5 * 2**20)
    stats = measure_checked(model, mode="decode", context=256, batch=2, device="cpu", gpu=small)

    def peak(context: int, batch: int) -> int:
        return measure_checked(model, mode="decode", context=context, batch=batch, device="cpu").peak_memory

    assert peak(256, stats.max_batch) <= small.memory < peak(256, stats.max_batch + 1)
    assert peak(stats.max_context, 2) <= small.memory < peak(stats.max_context + 1, 2)
    tiny = Gpu("tiny", 1e11, {"fp32": 1e12}, memory=1024)  # not even the weights fit
    none = measure_checked(model, mode="decode", context=256, device="cpu", gpu=tiny)
    assert (none.max_batch, none.max_context) == (0, 0)


def test_llama_3_8b_on_meta_by_hand():
    # 32 layers x 8 KV heads x 128 dims x 2 (keys and values) x 2 bytes (bf16) = 131,072 bytes a
    # token: 1 GiB at 8,192 tokens.
    model = llama_3_8b()
    stats = measure_checked(model, mode="decode", context=8192, batch=1)
    assert stats.kv_cache == 131_072 * 8192 == 1_073_741_824
    assert stats.params == 8_030_261_248  # Meta's published count for Llama-3-8B
    assert stats.peak_memory > stats.bytes + stats.kv_cache
    assert stats.notes == []
    beyond = measure_checked(model, mode="prefill", context=16384, batch=1)
    assert beyond.notes == [
        "context 16,384 is beyond the model's max_position_embeddings 8,192: measured as its code runs it, which "
        "may not be how it would be served"
    ]


def test_serving_arguments_are_checked():
    model = build("llama")
    with pytest.raises(MeasureError, match=r"mode='decode' needs context="):
        measure_checked(model, mode="decode")
    for bad in (0, -4, 2.5, True):
        with pytest.raises(MeasureError, match=rf"context must be a whole number, 1 or more, found {bad!r}"):
            measure_checked(model, mode="decode", context=bad)
    with pytest.raises(MeasureError, match=r"batch must be a whole number, 1 or more, found 0"):
        measure_checked(model, mode="prefill", context=8, batch=0)
    with pytest.raises(MeasureError, match=r"context= applies to mode='prefill' or 'decode', not mode='inference'"):
        measure_checked(model, input_size=(1, 8), context=8)
    with pytest.raises(MeasureError, match=r"is not a transformers generative model.*pass inputs= as a function"):
        measure_checked(torch.nn.Linear(4, 4), mode="decode", context=8)


def test_a_model_of_our_own_takes_a_function_of_batch_and_context():
    class Cached(torch.nn.Module):
        """Attention over a cache of keys it appends to, as a hand-written decoder does."""

        def __init__(self) -> None:
            super().__init__()
            self.project = torch.nn.Linear(16, 16)

        def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
            cache["keys"] = torch.cat([cache["keys"], self.project(x)], dim=1)
            return torch.softmax(x @ cache["keys"].transpose(1, 2), dim=-1) @ cache["keys"]

    def inputs(batch: int, context: int) -> dict:
        return {"x": torch.randn(batch, 1, 16), "cache": {"keys": torch.zeros(batch, context, 16)}}

    stats = measure_checked(Cached(), inputs, mode="decode", context=50, batch=4, device="cpu")
    # A cache the inputs pass is measured as the step leaves it: 50 tokens and the new one.
    assert stats.kv_cache == 4 * 51 * 16 * 4
    # project: 4 x 16 x 16; the scores 4 x 51 x 16; their product with the keys 4 x 51 x 16.
    assert stats.macs == 4 * 16 * 16 + 2 * 4 * 51 * 16


ENCODER_DECODERS = {
    "t5": lambda: transformers.T5ForConditionalGeneration(
        transformers.T5Config(d_model=128, d_ff=256, num_layers=2, num_heads=4, d_kv=32, vocab_size=1000)
    ),
    "whisper": lambda: transformers.WhisperForConditionalGeneration(
        transformers.WhisperConfig(
            d_model=128,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=256,
            decoder_ffn_dim=256,
            vocab_size=1000,
            max_source_positions=100,
            num_mel_bins=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
    ),
}


@pytest.mark.parametrize("family", ENCODER_DECODERS)
def test_an_encoder_decoders_cache_holds_its_cross_attention_too(family):
    torch.manual_seed(0)
    model = ENCODER_DECODERS[family]().eval().requires_grad_(False)
    batch, context = 2, 24
    # The source the decode step's encoder states come from: text of context tokens, or the
    # audio features Whisper's encoder takes (16 mel bins x 200 frames).
    source = (
        {"input_ids": torch.zeros(batch, context, dtype=torch.long)}
        if family == "t5"
        else {"input_features": torch.randn(batch, 16, 200)}
    )
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(**source, decoder_input_ids=torch.zeros(batch, context, dtype=torch.long), use_cache=True)
        cache = returned_cache(out)
        cache_bytes = storage_bytes_of(cache.self_attention_cache) + storage_bytes_of(cache.cross_attention_cache)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(
                decoder_input_ids=torch.zeros(batch, 1, dtype=torch.long),
                encoder_outputs=(out.encoder_last_hidden_state,),
                use_cache=True,
                **{keyword: cache},
            )
    stats = measure_checked(model, mode="decode", context=context, batch=batch, device="cpu")
    assert stats.kv_cache == cache_bytes
    assert stats.macs == counter.get_total_flops() // 2  # the decoder's step alone: no encoder again


def test_a_static_cache_passed_by_the_inputs_is_measured_as_it_allocates():
    # transformers' StaticCache allocates its whole length (here context + 16) on first use,
    # inside the step: measured as the real step leaves it.
    model = build("llama")
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def inputs(batch: int, context: int) -> dict:
        cache = transformers.StaticCache(config=model.config, max_cache_len=context + 16)
        position = torch.tensor([context])
        return {"input_ids": torch.zeros(batch, 1, dtype=torch.long), keyword: cache, "cache_position": position}

    real = inputs(2, 64)
    with torch.no_grad():
        model(**real, use_cache=True)
    stats = measure_checked(model, inputs, mode="decode", context=64, batch=2, device="cpu")
    assert stats.kv_cache == storage_bytes_of(real[keyword])
    assert stats.layers["model.layers.0.self_attn"].kv_cache == stats.layers["model.layers.1.self_attn"].kv_cache
