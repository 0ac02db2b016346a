"""The model zoo: architectures nobody here wrote, each checked against a figure our code did not
compute (transformers' own ``num_parameters()``, FlopCounterMode on a real run with the math
attention path, torchvision's published ``num_params`` and ``_ops``), measured without a real run
unless the model is data-dependent (and then it says why), and left unchanged.

Mixture-of-experts families are in test_mixture_of_experts.py, quantized models also in
test_quantized.py, every torchvision classification weight in test_torchvision_reference.py.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..helpers import measure_checked

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def flop_counter_macs(model: torch.nn.Module, call) -> int:
    """PyTorch's FlopCounterMode on a real run, math attention; FLOPs / 2 is our MAC convention."""
    model.requires_grad_(False)  # its module tracker trips on some models otherwise
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
            call(model)
    finally:
        model.requires_grad_(True)
    return counter.get_total_flops() // 2


# --- transformers: every family, built from a small config ------------------------------------

TEXT = dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
SEQ2SEQ = dict(
    vocab_size=500,
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
)
IMAGE = dict(TEXT, image_size=32, patch_size=8)


def _ids(length: int = 16) -> torch.Tensor:
    return torch.randint(5, 400, (2, length), generator=torch.Generator().manual_seed(0))


def _text() -> dict:
    return {"input_ids": _ids()}


def _seq2seq() -> dict:
    return {"input_ids": _ids(), "decoder_input_ids": _ids(8)}


def _image() -> dict:
    return {"pixel_values": torch.randn(2, 3, 32, 32)}


TRANSFORMERS = {
    # encoders
    "bert": ("BertConfig", TEXT, _text),
    "roberta": ("RobertaConfig", TEXT, _text),
    "deberta_v2": ("DebertaV2Config", TEXT, _text),
    "distilbert": ("DistilBertConfig", dict(vocab_size=500, dim=64, n_layers=2, n_heads=4, hidden_dim=128), _text),
    "electra": ("ElectraConfig", dict(TEXT, embedding_size=32), _text),
    # decoders
    "gpt2": ("GPT2Config", dict(vocab_size=500, n_embd=64, n_layer=2, n_head=4), _text),
    "llama": ("LlamaConfig", dict(TEXT, num_key_value_heads=2), _text),
    "mistral": ("MistralConfig", dict(TEXT, num_key_value_heads=2), _text),
    "qwen2": ("Qwen2Config", dict(TEXT, num_key_value_heads=2), _text),
    "gemma": ("GemmaConfig", dict(TEXT, num_key_value_heads=2, head_dim=16), _text),
    "phi3": ("Phi3Config", dict(TEXT, num_key_value_heads=2, pad_token_id=0), _text),
    "opt": (
        "OPTConfig",
        dict(
            vocab_size=500,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=128,
            word_embed_proj_dim=64,
        ),
        _text,
    ),
    "gpt_neox": ("GPTNeoXConfig", TEXT, _text),
    "falcon": ("FalconConfig", dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4), _text),
    # encoder-decoders
    "t5": ("T5Config", dict(vocab_size=500, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4), _seq2seq),
    "bart": ("BartConfig", SEQ2SEQ, _seq2seq),
    # state-space and recurrent
    "mamba": ("MambaConfig", dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, state_size=8), _text),
    "mamba2": (
        "Mamba2Config",
        dict(
            vocab_size=500,
            hidden_size=64,
            num_hidden_layers=2,
            state_size=8,
            num_heads=8,
            head_dim=16,
            n_groups=1,
            chunk_size=8,
        ),
        _text,
    ),
    "rwkv": (
        "RwkvConfig",
        dict(
            vocab_size=500,
            hidden_size=64,
            num_hidden_layers=2,
            attention_hidden_size=64,
            intermediate_size=128,
            context_length=32,
        ),
        _text,
    ),
    # vision
    "vit": ("ViTConfig", IMAGE, _image),
    "deit": ("DeiTConfig", IMAGE, _image),
    "clip_vision": ("CLIPVisionConfig", IMAGE, _image),
    "swin": (
        "SwinConfig",
        dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4),
        _image,
    ),
    "convnext": ("ConvNextConfig", dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2), _image),
    "resnet": ("ResNetConfig", dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]), _image),
    # speech
    "wav2vec2": (
        "Wav2Vec2Config",
        dict(
            TEXT,
            conv_dim=(16, 16),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ),
        lambda: {"input_values": torch.randn(2, 800)},
    ),
    "whisper": (
        "WhisperConfig",
        dict(
            SEQ2SEQ,
            num_mel_bins=16,
            max_source_positions=16,
            max_target_positions=32,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        ),
        lambda: {"input_features": torch.randn(2, 16, 32), "decoder_input_ids": _ids(8)},
    ),
}


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_transformers_family(family):
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    config_name, options, make_inputs = TRANSFORMERS[family]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModel.from_config(getattr(transformers, config_name)(**options)).eval()
    inputs = make_inputs()
    reference = flop_counter_macs(model, lambda m: m(**inputs))
    stats = measure_checked(model, inputs=inputs)
    assert stats.params == model.num_parameters()
    assert stats.macs == reference
    assert stats.execution == "fake", stats.notes
    assert stats.uncounted_ops == {}


# --- torchvision: segmentation and video at their published sizes, detection against ---------
# --- FlopCounterMode, quantized against the published _ops -------------------------------------


def _published(weights_enum: str, module: str):
    tv = pytest.importorskip(f"torchvision.models.{module}" if module else "torchvision.models")
    return tv, getattr(tv, weights_enum).DEFAULT


PUBLISHED = {
    "lraspp_mobilenet_v3_large": (
        "segmentation",
        "LRASPP_MobileNet_V3_Large_Weights",
        (1, 3, 520, 520),
        {"weights_backbone": None},
    ),
    "deeplabv3_mobilenet_v3_large": (
        "segmentation",
        "DeepLabV3_MobileNet_V3_Large_Weights",
        (1, 3, 520, 520),
        {"weights_backbone": None, "aux_loss": True},
    ),
    "fcn_resnet50": (
        "segmentation",
        "FCN_ResNet50_Weights",
        (1, 3, 520, 520),
        {"weights_backbone": None, "aux_loss": True},
    ),
    "r3d_18": ("video", "R3D_18_Weights", (1, 3, 16, 112, 112), {}),
    "mc3_18": ("video", "MC3_18_Weights", (1, 3, 16, 112, 112), {}),
    "r2plus1d_18": ("video", "R2Plus1D_18_Weights", (1, 3, 16, 112, 112), {}),
    "s3d": ("video", "S3D_Weights", (1, 3, 16, 224, 224), {}),
    "swin3d_t": ("video", "Swin3D_T_Weights", (1, 3, 16, 224, 224), {}),
    "mvit_v2_s": ("video", "MViT_V2_S_Weights", (1, 3, 16, 224, 224), {}),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_torchvision_published_figures(name):
    module, weights_enum, size, options = PUBLISHED[name]
    tv, weights = _published(weights_enum, module)
    model = getattr(tv, name)(weights=None, **options).eval()
    stats = measure_checked(model, input_size=size)
    assert stats.params == weights.meta["num_params"]
    assert round(stats.macs / 1e9, 3) == weights.meta["_ops"]
    assert stats.execution == "fake"
    assert stats.uncounted_ops == {}


QUANTIZED = {
    "resnet18": ("ResNet18_QuantizedWeights", {}),
    "mobilenet_v2": ("MobileNet_V2_QuantizedWeights", {}),
    "mobilenet_v3_large": ("MobileNet_V3_Large_QuantizedWeights", {}),
    "shufflenet_v2_x1_0": ("ShuffleNet_V2_X1_0_QuantizedWeights", {}),
    "googlenet": ("GoogLeNet_QuantizedWeights", {"aux_logits": False, "init_weights": False}),
}


@pytest.mark.parametrize("name", QUANTIZED)
def test_torchvision_quantized(name):
    weights_enum, options = QUANTIZED[name]
    tv, weights = _published(weights_enum, "quantization")
    float_model = getattr(tv, name)(weights=None, quantize=False, **options)
    model = getattr(tv, name)(weights=None, quantize=True, **options)
    stats = measure_checked(model, input_size=(1, 3, 224, 224))
    # The published count is the float model's; quantizing folds each BatchNorm into its conv
    # (its scale into the weights, its shift into the bias).
    folded = sum(m.num_features for m in float_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert stats.params == weights.meta["num_params"] - folded
    assert round(stats.macs / 1e9, 3) == weights.meta["_ops"]
    assert stats.uncounted_ops == {}


# name: (weights, options, whether loading weights freezes the backbone's BatchNorms)
DETECTION = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": ("FasterRCNN_MobileNet_V3_Large_320_FPN_Weights", {}, True),
    "ssdlite320_mobilenet_v3_large": ("SSDLite320_MobileNet_V3_Large_Weights", {}, False),
    "retinanet_resnet50_fpn": ("RetinaNet_ResNet50_FPN_Weights", {"min_size": 160, "max_size": 160}, True),
    "maskrcnn_resnet50_fpn": ("MaskRCNN_ResNet50_FPN_Weights", {"min_size": 160, "max_size": 160}, True),
}


def _frozen_batch_norms(model: torch.nn.Module) -> None:
    """What torchvision builds when it loads weights: the backbone's BatchNorms frozen (buffers)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is torch.nn.BatchNorm2d and "backbone" in _path_of(model, parent):
                setattr(parent, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))


def _path_of(root: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is module)


@pytest.mark.parametrize("name", DETECTION)
def test_torchvision_detection(name):
    weights_enum, options, frozen = DETECTION[name]
    tv, weights = _published(weights_enum, "detection")
    model = getattr(tv, name)(weights=None, weights_backbone=None, **options).eval()
    if frozen:
        _frozen_batch_norms(model)
    images = [torch.rand(3, 160, 160)]
    reference = flop_counter_macs(model, lambda m: m(images))
    stats = measure_checked(model, inputs=images)  # a list of images is one argument
    assert stats.params == weights.meta["num_params"]
    assert stats.macs == reference
    # Proposals and NMS keep as many boxes as the scores say: data-dependent, and it says so.
    assert stats.execution == "real"
    assert "fake execution failed (DynamicOutputShapeException" in stats.notes[0]
    assert stats.uncounted_ops == {}
