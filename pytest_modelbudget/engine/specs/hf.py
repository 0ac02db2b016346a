"""transformers models from a config alone (a model type, a config file or folder, or a hub id
already in the local cache: never a download, never weights), and the inputs their ``forward``
needs, read from the config: token ids for text, pixel values at the config's image size, audio
at the feature extractor's shapes, decoder ids for encoder-decoders."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, cast

import torch

from ...factories import FactoryError
from . import BuiltModel, built_on

#: Tokens in the default text input; fewer where the config's positions allow fewer.
DEFAULT_LENGTH = 128


def load_config(name: str, overrides: dict[str, Any]) -> Any:
    import transformers

    path = Path(name)
    try:
        if path.is_file():
            config = transformers.AutoConfig.from_pretrained(str(path.parent), **_OFFLINE)
        elif path.is_dir():
            config = transformers.AutoConfig.from_pretrained(str(path), **_OFFLINE)
        elif name in transformers.CONFIG_MAPPING:
            config = transformers.AutoConfig.for_model(name)
        else:
            config = transformers.AutoConfig.from_pretrained(name, **_OFFLINE)
    except (OSError, ValueError) as exc:
        raise FactoryError(
            f"hf:{name}: not a model type of transformers {transformers.__version__}, a config file or folder, "
            f"or a hub id in the local cache ({str(exc).splitlines()[0]})"
        ) from None
    unknown = [key for key in overrides if not hasattr(config, key)]
    if unknown:
        raise FactoryError(f"hf:{name}: {type(config).__name__} has no field {unknown[0]!r}")
    if overrides:
        # Through the constructor, not setattr: fields derived from others (the number of conv
        # layers from conv_dim, a head size) follow the overrides.
        if name in transformers.CONFIG_MAPPING and not path.exists():
            config = transformers.AutoConfig.for_model(name, **overrides)
        else:
            config = type(config)(**{**config.to_dict(), **overrides})
    return config


#: A spec never downloads: only what the local cache already holds.
_OFFLINE = {"local_files_only": True}


def build_hf(name: str, overrides: dict[str, Any], *, meta: bool) -> BuiltModel:
    try:
        import transformers
    except ImportError:
        raise FactoryError(f"hf:{name}: transformers is not installed") from None
    named = _named_class(transformers, name)
    if named is not None:
        # A class of transformers' own (``hf:GPT2Model``: the bare backbone) from its default config.
        config = load_config(named.config_class.model_type, overrides)
        model_class = named
    else:
        config = load_config(name, overrides)
        model_class = _model_class(transformers, config)
    with built_on(meta):
        try:
            model = model_class._from_config(config)
        except Exception as exc:
            raise FactoryError(
                f"hf:{name}: {model_class.__name__} could not be built from its config: {type(exc).__name__}: {exc}"
            ) from exc
    return BuiltModel(model.eval(), default_inputs(model, config))


def _named_class(transformers: Any, name: str) -> Any:
    """The model class ``name`` names (``GPT2Model``, ``LlamaForSequenceClassification``), if any."""
    if not name[:1].isupper() or "/" in name:
        return None
    try:
        found = getattr(transformers, name, None)
    except Exception:  # a lazy module that fails to import (a missing optional dependency)
        return None
    if not (isinstance(found, type) and issubclass(found, transformers.PreTrainedModel)):
        return None
    return found if getattr(getattr(found, "config_class", None), "model_type", None) else None


def _model_class(transformers: Any, config: Any) -> Any:
    # The architecture the config was saved for; else, for a decoder-only type, its causal LM
    # (the model people run: GPT-2 with its head, not GPT2Model); else the bare model of its type.
    for architecture in getattr(config, "architectures", None) or ():
        found = getattr(transformers, architecture, None)
        if found is not None:
            return found
    causal = transformers.MODEL_FOR_CAUSAL_LM_MAPPING
    # Encoders register a causal LM too (BERT's BertLMHeadModel); theirs is the masked LM.
    encoder = type(config) in transformers.MODEL_FOR_MASKED_LM_MAPPING
    if type(config) in causal and not encoder and not getattr(config, "is_encoder_decoder", False):
        return causal[type(config)]
    try:
        return transformers.AutoModel._model_mapping[type(config)]
    except KeyError:
        raise FactoryError(f"{type(config).__name__}: transformers' AutoModel has no model for this config") from None


class NoDefaultInputs(FactoryError):
    """A model whose ``forward`` needs inputs the config does not describe."""


def default_inputs(model: torch.nn.Module, config: Any, batch: int = 1, length: int = DEFAULT_LENGTH) -> dict[str, Any]:
    """Keyword arguments for one forward of ``model``, shaped by ``config``."""
    accepted = inspect.signature(model.forward).parameters
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    length = _text_length(text, length)
    inputs: dict[str, Any] = {}
    vocab = getattr(text, "vocab_size", None)
    if "input_ids" in accepted and vocab:
        inputs["input_ids"] = _ids(batch, length, vocab)
    image_config = getattr(config, "vision_config", None) or config
    if "grid_thw" in accepted and not inputs:
        inputs.update(_patches_and_grid(accepted, image_config, batch))
    # Two towers side by side (CLIP, SigLIP) take text and images; a generative vision-language
    # model splices image features into its token ids at image tokens, a layout we do not guess:
    # it gets text alone.
    wants_images = "pixel_values" in accepted and (not inputs or not _has_image_tokens(config))
    if wants_images and "spatial_shapes" in accepted and getattr(image_config, "num_patches", None):
        inputs.update(_flexible_patches(image_config, batch))
    elif wants_images and getattr(image_config, "image_size", None) is not None:
        inputs["pixel_values"] = _pixels(batch, image_config)
    elif wants_images and not inputs:  # detection and backbone configs state no image size
        channels = getattr(image_config, "num_channels", None) or getattr(
            getattr(config, "backbone_config", None), "num_channels", 3
        )
        inputs["pixel_values"] = torch.randn(batch, cast(int, channels), 224, 224)
    if "pixel_values_videos" in accepted and not inputs:
        video = _video(batch, image_config)
        if video is not None:
            inputs["pixel_values_videos"] = video
    if (
        "past_values" in accepted
        and not inputs
        and getattr(config, "num_input_channels", None)
        and getattr(config, "context_length", None)
    ):
        # Time series (PatchTST, PatchTSMixer): the context window of every channel.
        inputs["past_values"] = torch.randn(batch, config.context_length, config.num_input_channels)
    if "input_values" in accepted and not inputs:
        inputs["input_values"] = _audio_values(config, batch)
    if "input_features" in accepted and not inputs:
        features = _audio_features(config, batch)
        if features is not None:
            inputs["input_features"] = features
    required = [
        name
        for name, p in accepted.items()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    missing = [name for name in required if name not in inputs]
    if not inputs or missing:
        wanted = missing or [name for name in accepted if name not in ("self", "kwargs")][:3]
        raise NoDefaultInputs(
            f"{type(model).__name__}: no default inputs for this family: pass them yourself "
            f"(inputs=... or --inputs), its forward takes {', '.join(wanted)}"
        )
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in accepted:
        decoder = getattr(config, "decoder", None) or text
        inputs["decoder_input_ids"] = _ids(batch, min(length, 32), getattr(decoder, "vocab_size", None) or vocab or 2)
    return inputs


def _has_image_tokens(config: Any) -> bool:
    return any(getattr(config, key, None) is not None for key in ("image_token_id", "image_token_index"))


def _text_length(text: Any, length: int) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "context_length"):
        limit = getattr(text, key, None)
        if isinstance(limit, int) and limit > 0:
            return min(length, limit)
    return length


def _ids(batch: int, length: int, vocab: int) -> torch.Tensor:
    # Ids above the special tokens, fixed: the same inputs on every run.
    generator = torch.Generator().manual_seed(0)
    low = min(5, vocab - 1)
    return torch.randint(low, max(vocab, low + 1), (batch, length), generator=generator)


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    if isinstance(value, dict):
        sides: dict[str, int] = value
        return int(sides.get("height", sides.get("shortest_edge", 224))), int(
            sides.get("width", sides.get("shortest_edge", 224))
        )
    return int(value), int(value)


def _pixels(batch: int, config: Any) -> torch.Tensor:
    height, width = _size(config.image_size)
    channels = getattr(config, "num_channels", 3)
    frames = getattr(config, "num_frames", None)
    if isinstance(frames, int) and frames > 0:  # video: (batch, frames, channels, height, width)
        return torch.randn(batch, frames, channels, height, width)
    return torch.randn(batch, channels, height, width)


#: Patches a side of the default image in a vision tower that takes flattened patches and their
#: grid (Qwen2-VL's family): 16 x 16 patches, a 224-pixel image at 14-pixel patches.
GRID_SIDE = 16


def _patches_and_grid(accepted: Any, config: Any, batch: int) -> dict[str, torch.Tensor]:
    """A vision tower's flattened patches and ``grid_thw`` (frames, height, width in patches, one
    row per image), as its image processor makes them: each patch holds ``temporal_patch_size``
    frames of ``patch_size`` x ``patch_size`` pixels in every channel."""
    patch = getattr(config, "patch_size", None)
    if not isinstance(patch, int):
        return {}
    first = next((name for name in ("hidden_states", "pixel_values") if name in accepted), None)
    if first is None:
        return {}
    merge = getattr(config, "spatial_merge_size", None) or 1
    side = max(merge, GRID_SIDE // merge * merge)
    frames = getattr(config, "temporal_patch_size", None) or 1
    channels = (
        getattr(config, "in_channels", None)
        or getattr(config, "num_channels", None)
        or getattr(config, "in_chans", None)
        or 3
    )
    return {
        first: torch.randn(batch * side * side, channels * frames * patch * patch),
        "grid_thw": torch.tensor([[1, side, side]] * batch),
    }


def _flexible_patches(config: Any, batch: int) -> dict[str, torch.Tensor]:
    """SigLIP2's NaFlex inputs at the config's ``num_patches``: flattened patches of a square
    image, the mask of real patches (all of them), and each image's grid of patches."""
    side = math.isqrt(config.num_patches)
    patch, channels = config.patch_size, getattr(config, "num_channels", None) or 3
    return {
        "pixel_values": torch.randn(batch, side * side, channels * patch * patch),
        "pixel_attention_mask": torch.ones(batch, side * side, dtype=torch.long),
        "spatial_shapes": torch.tensor([[side, side]] * batch),
    }


def _video(batch: int, config: Any) -> torch.Tensor | None:
    """(batch, frames, channels, height, width) at the config's clip: ``num_frames`` at
    ``image_size`` (VideoPrism), or ``frames_per_clip`` at ``crop_size`` (V-JEPA 2)."""
    frames = getattr(config, "num_frames", None) or getattr(config, "frames_per_clip", None)
    size = getattr(config, "image_size", None) or getattr(config, "crop_size", None)
    if not isinstance(frames, int) or size is None:
        return None
    height, width = _size(size)
    return torch.randn(batch, frames, getattr(config, "num_channels", None) or 3, height, width)


def _audio_values(config: Any, batch: int) -> torch.Tensor:
    if getattr(config, "max_length", None) and getattr(config, "num_mel_bins", None):
        # Spectrogram patches (Audio Spectrogram Transformer): frames by mel bins.
        return torch.randn(batch, config.max_length, config.num_mel_bins)
    if getattr(config, "audio_channels", None):  # codecs (EnCodec, DAC, Mimi): (batch, channels, samples)
        return torch.randn(batch, config.audio_channels, 16000)
    return torch.randn(batch, 16000)  # one second of 16 kHz audio


def _audio_features(config: Any, batch: int) -> torch.Tensor | None:
    encoder = getattr(config, "encoder_config", None)
    if encoder is not None and not getattr(config, "num_mel_bins", None) and getattr(encoder, "num_mel_bins", None):
        # CTC / transducer heads over a speech encoder (Parakeet, LASR): the encoder's mel bins.
        return _audio_features(encoder, batch)
    if getattr(config, "feature_projection_input_dim", None):
        # Wav2Vec2-BERT: stacked mel frames, the projection's input width each.
        return torch.randn(batch, 128, config.feature_projection_input_dim)
    if getattr(config, "num_mel_bins", None) and getattr(config, "max_source_positions", None):
        # Whisper-style encoders: mel bins by twice the encoder's positions (a stride-2 conv).
        return torch.randn(batch, config.num_mel_bins, 2 * config.max_source_positions)
    if getattr(config, "input_feat_per_channel", None):
        channels = getattr(config, "input_channels", 1)
        return torch.randn(batch, 128, config.input_feat_per_channel * channels)
    if getattr(config, "feature_size", None):
        return torch.randn(batch, 128, config.feature_size)
    if getattr(config, "num_mel_bins", None):
        return torch.randn(batch, 128, config.num_mel_bins)
    return None
