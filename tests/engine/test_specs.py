"""Models named by a spec (``hf:``, ``torchvision:``, ``timm:``): built from a config or a builder
with random weights on the meta device, never downloaded, called with default inputs read from
the config; checked against transformers' own ``num_parameters()`` and FlopCounterMode on the same
meta model, and against torchvision's published ``num_params``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pytest_modelbudget.engine import build
from pytest_modelbudget.factories import FactoryError

from ..helpers import measure_checked

pytestmark = pytest.mark.filterwarnings("ignore")
transformers = pytest.importorskip("transformers")

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
SMALL_TEXT = dict(SMALL, vocab_size=500)


def flop_counter_macs(model: torch.nn.Module, inputs: dict) -> int:
    """PyTorch's own counter on the same meta model, math attention: FLOPs / 2."""
    model.requires_grad_(False)
    meta_inputs = {key: value.to("meta") for key, value in inputs.items()}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**meta_inputs)
    model.requires_grad_(True)
    return counter.get_total_flops() // 2


def shapes(inputs: dict) -> dict:
    return {key: tuple(value.shape) for key, value in inputs.items()}


FAMILIES = {
    # spec, config overrides, the default inputs' shapes (read from the config)
    "decoder": ("hf:llama", dict(SMALL_TEXT, num_key_value_heads=2), {"input_ids": (1, 128)}),
    "encoder": ("hf:bert", SMALL_TEXT, {"input_ids": (1, 128)}),
    "short positions": ("hf:gpt2", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64), {"input_ids": (1, 64)}),
    "encoder-decoder": (
        "hf:t5",
        dict(vocab_size=500, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
        {"input_ids": (1, 128), "decoder_input_ids": (1, 32)},
    ),
    "vision": ("hf:vit", dict(SMALL, image_size=64, patch_size=16), {"pixel_values": (1, 3, 64, 64)}),
    "video": (
        "hf:videomae",
        dict(SMALL, image_size=32, patch_size=16, num_frames=4, tubelet_size=2),
        {"pixel_values": (1, 4, 3, 32, 32)},
    ),
    "raw audio": (
        "hf:wav2vec2",
        dict(
            SMALL_TEXT,
            conv_dim=(16, 16),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ),
        {"input_values": (1, 16000)},
    ),
    "audio features": (
        "hf:whisper",
        dict(
            vocab_size=500,
            d_model=64,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            num_mel_bins=16,
            max_source_positions=24,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        ),
        {"input_features": (1, 16, 48), "decoder_input_ids": (1, 32)},
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_specs_build_on_meta_with_inputs_from_the_config(family):
    spec, overrides, expected = FAMILIES[family]
    built = build(spec, overrides)
    model = built.model
    # On meta, all but what legacy constructors make (wav2vec2's torch.Tensor(n) mask embedding).
    on_meta = sum(p.numel() for p in model.parameters() if p.is_meta)
    assert on_meta > 0.99 * model.num_parameters()
    assert shapes(built.inputs) == expected
    stats = measure_checked(model, inputs=built.inputs)
    assert stats.execution == "fake" and stats.uncounted_ops == {}
    assert stats.params == model.num_parameters()
    assert stats.macs == flop_counter_macs(model, built.inputs)


def test_two_towers_get_text_and_images():
    built = build("hf:clip")  # CLIP's own default config: text 77 positions, images 224 x 224
    assert shapes(built.inputs) == {"input_ids": (1, 77), "pixel_values": (1, 3, 224, 224)}
    stats = measure_checked(built.model, inputs=built.inputs)
    assert stats.params == built.model.num_parameters() == 151_277_313


def test_a_config_folder_builds_the_architecture_it_names(tmp_path):
    config = transformers.LlamaConfig(**SMALL_TEXT, architectures=["LlamaForCausalLM"])
    config.save_pretrained(tmp_path)
    for spec in (f"hf:{tmp_path}", f"hf:{tmp_path / 'config.json'}"):
        built = build(spec)
        assert type(built.model).__name__ == "LlamaForCausalLM"
        assert built.model.config.hidden_size == 64
    assert json.loads((tmp_path / "config.json").read_text())["hidden_size"] == 64


def test_a_detection_config_gets_images_and_grid_sampling_is_priced():
    built = build("hf:rt_detr", dict(encoder_layers=1, decoder_layers=1))
    assert shapes(built.inputs) == {"pixel_values": (1, 3, 224, 224)}
    stats = measure_checked(built.model, inputs=built.inputs)
    assert stats.params == built.model.num_parameters()
    assert stats.uncounted_ops == {}  # grid_sampler_2d in its deformable attention has a price


def test_spec_errors_say_what_to_do():
    with pytest.raises(
        FactoryError,
        match=r"not a model type of transformers .*, a config file or folder, or a hub id in the local cache",
    ):
        build("hf:no_such_model_type")
    with pytest.raises(FactoryError, match="LlamaConfig has no field 'hiden_size'"):
        build("hf:llama", {"hiden_size": 64})
    with pytest.raises(FactoryError, match=r"no default inputs for this family: pass them yourself .*states, actions"):
        build("hf:decision_transformer")
    with pytest.raises(FactoryError, match="expected torchvision:NAME, timm:NAME or hf:PATH_OR_TYPE"):
        from pytest_modelbudget.engine.specs import build_model_spec

        build_model_spec("hf:")


def test_a_factory_is_built_as_before_and_has_no_default_inputs():
    built = build("examples.models:tiny_cnn", {"width": 8}, meta=True)
    assert built.inputs is None
    assert all(p.is_meta for p in built.model.parameters())


# --- torchvision ---------------------------------------------------------------------------------


def test_torchvision_specs_never_download_and_match_published_counts():
    torchvision = pytest.importorskip("torchvision")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = {
            "resnet50": (1, 3, 224, 224),
            "inception_v3": (1, 3, 299, 299),
            "r3d_18": (1, 3, 16, 112, 112),
            "regnet_y_400mf": (1, 3, 224, 224),  # its builder computes widths with tensors
        }
        for name, shape in cases.items():
            built = build(f"torchvision:{name}")
            assert tuple(built.inputs.shape) == shape, name
            stats = measure_checked(built.model, built.inputs)
            meta = torchvision.models.get_model_weights(name).DEFAULT.meta
            assert stats.params == meta["num_params"], name
            assert round(stats.macs / 1e9, 3) == meta["_ops"], name
        # A detector builds a pretrained backbone by default (a download) and keeps the boxes that
        # score highest (values): built on the CPU with random weights, run for real, and says so.
        detector = build("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn")
        assert not any(p.is_meta for p in detector.model.parameters())
        stats = measure_checked(detector.model, detector.inputs)
        assert stats.execution == "real" and "nonzero" in stats.notes[0]
        flow = build("torchvision:raft_small")
        assert isinstance(flow.inputs, tuple) and len(flow.inputs) == 2  # two frames
    with pytest.raises(FactoryError, match="torchvision:resnet5000: no such model builder"):
        build("torchvision:resnet5000")


def test_a_meta_model_that_builds_cpu_tables_in_forward_stays_on_meta():
    # torchvision's MViT makes its relative-position indices with torch.arange on the CPU in
    # forward and indexes meta weights with them: the op runs with the CPU tensor moved to meta,
    # not the whole model again on fake tensors; the count is FlopCounterMode's on the same model.
    pytest.importorskip("torchvision")
    built = build("torchvision:mvit_v2_s")
    stats = measure_checked(built.model, built.inputs)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        built.model(built.inputs.to("meta"))
    assert stats.macs == counter.get_total_flops() // 2
    assert stats.notes == []


@pytest.mark.parametrize("family", ["parakeet_ctc", "wav2vec2-bert"])
def test_speech_heads_get_mel_features_from_their_encoder_config(family):
    # A CTC head over a speech encoder states its mel bins in encoder_config (Parakeet: 80);
    # Wav2Vec2-BERT the width of its stacked frames (feature_projection_input_dim, 160).
    from pytest_modelbudget.engine.specs.hf import build_hf, load_config

    config = load_config(family, {})
    built = build_hf(family, {"num_hidden_layers": 1} if family == "wav2vec2-bert" else {}, meta=True)
    width = config.encoder_config.num_mel_bins if family == "parakeet_ctc" else config.feature_projection_input_dim
    assert built.inputs["input_features"].shape[-1] == width
    stats = measure_checked(built.model, built.inputs)
    assert stats.params == built.model.num_parameters() and stats.macs > 0 and stats.execution == "fake"


@pytest.mark.parametrize(
    ("family", "key", "shape"),
    [
        ("patchtst", "past_values", (1, 32, 1)),  # context_length x num_input_channels
        ("videoprism_vision_model", "pixel_values_videos", (1, 16, 3, 288, 288)),  # num_frames at image_size
    ],
)
def test_time_series_and_video_towers_get_inputs_from_their_config(family, key, shape):
    from pytest_modelbudget.engine.specs.hf import build_hf

    built = build_hf(family, {}, meta=True)
    assert tuple(built.inputs[key].shape) == shape
    stats = measure_checked(built.model, built.inputs)
    assert stats.params == built.model.num_parameters() and stats.execution == "fake"


@pytest.mark.parametrize(
    ("family", "overrides", "expected"),
    [
        (
            "qwen3_vl_vision",
            dict(
                depth=2,
                hidden_size=64,
                num_heads=4,
                intermediate_size=128,
                out_hidden_size=64,
                deepstack_visual_indexes=[],
            ),
            {"hidden_states": (256, 3 * 2 * 16 * 16), "grid_thw": (1, 3)},
        ),
        (
            "siglip2_vision_model",
            SMALL,
            {"pixel_values": (1, 256, 3 * 16 * 16), "pixel_attention_mask": (1, 256), "spatial_shapes": (1, 2)},
        ),
    ],
    ids=["qwen3-vl grid_thw", "siglip2 naflex"],
)
def test_vision_towers_get_patches_and_the_size_table_they_read(family, overrides, expected):
    # Qwen3-VL's tower takes flattened patches and grid_thw (frames, height, width in patches per
    # image), SigLIP2's NaFlex tower patches and spatial_shapes; both read the table's values to
    # lay out positions, so it stays a real CPU tensor in meta and fake runs alike.
    from pytest_modelbudget.engine.specs.hf import build_hf

    built = build_hf(family, overrides, meta=True)
    assert shapes(built.inputs) == expected
    table = built.inputs.get("grid_thw", built.inputs.get("spatial_shapes"))
    assert table.tolist()[0][-2:] == [16, 16]
    on_meta = measure_checked(built.model, inputs=built.inputs)
    cpu_model = build_hf(family, overrides, meta=False).model
    on_cpu = measure_checked(cpu_model, inputs=built.inputs)
    assert on_meta.execution == on_cpu.execution == "fake"
    assert on_meta.params == on_cpu.params == cpu_model.num_parameters()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        cpu_model(**built.inputs)
    assert on_meta.macs == on_cpu.macs == counter.get_total_flops() // 2
