"""Serving steps: a prefill of B sequences of L tokens, or one decode step (one new token per
sequence) on a cache that already holds L tokens. The cache is the model's own: built by the
model's code on the run's tensors (a prefill on fake tensors costs no memory and no arithmetic),
never by a formula, so grouped-query and latent attention, sliding windows, static and quantized
caches and state-space states come out as the code allocates them.

A transformers generative model needs no inputs: token ids from its vocabulary (zeros, a valid id
of any vocabulary). Any other model takes ``inputs=`` as a function of ``(batch, context)``
returning the step's inputs; for a decode step they hold the cache, which the function builds.
"""

from __future__ import annotations

import inspect
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..errors import MeasureError
from .inputs import RandomInput
from .memory import plain_tensors, storage_of

#: storage id -> (a weak reference to the storage, the module whose op last made or wrote it).
Origins = dict[int, tuple[weakref.ref, str]]

SERVING_MODES = ("prefill", "decode")


@dataclass
class Prefill:
    """Where a decode step's cache goes: the inputs of the prefill that builds it. A pytree node,
    so that the runners make its tensors as they make the step's own."""

    args: tuple[Any, ...] = ()
    keywords: dict[str, Any] = field(default_factory=dict)


pytree.register_dataclass(Prefill)


@dataclass(frozen=True)
class Serving:
    mode: str
    context: int
    batch: int


def check_serving(mode: str, context: Any, batch: Any) -> Serving | None:
    """The serving step asked for, or None for inference and training (which take neither)."""
    if mode not in SERVING_MODES:
        for name, value in (("context", context), ("batch", batch)):
            if value is not None:
                raise MeasureError(f"{name}= applies to mode='prefill' or 'decode', not mode={mode!r}")
        return None
    if context is None:
        raise MeasureError(f"mode={mode!r} needs context=: the number of tokens each sequence holds (8192)")
    for name, value in (("context", context), ("batch", 1 if batch is None else batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MeasureError(f"{name} must be a whole number, 1 or more, found {value!r}")
    return Serving(mode, context, 1 if batch is None else batch)


def is_generative(model: torch.nn.Module) -> bool:
    """A transformers model whose forward takes token ids and a cache."""
    config = getattr(model, "config", None)
    if config is None or cache_keyword(model) is None:
        return False
    # A vision-language model keeps its vocabulary in its text config.
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not getattr(text, "vocab_size", None) and not getattr(config, "vocab_size", None):
        return False
    return "input_ids" in _parameters(model) or is_encoder_decoder(model)


def is_encoder_decoder(model: torch.nn.Module) -> bool:
    """An encoder-decoder (T5, BART, Whisper): its decoder generates, over the encoder's states."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False)) and "decoder_input_ids" in _parameters(model)


def cache_keyword(model: torch.nn.Module) -> str | None:
    """The keyword forward takes its cache by: ``cache`` (transformers 5.2x), ``past_key_values``."""
    parameters = _parameters(model)
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    return None


def serving_arguments(
    model: torch.nn.Module, serving: Serving, inputs: Any
) -> tuple[tuple[Any, ...], dict[str, Any]] | Any:
    """The step's inputs: the user's function's, else a transformers model's token ids (with a
    ``Prefill`` where the cache goes, for a decode step)."""
    if inputs is not None:
        if not callable(inputs):
            raise MeasureError(
                f"mode={serving.mode!r} takes inputs= as a function of (batch, context) returning the step's "
                f"inputs, found {type(inputs).__name__}"
            )
        try:
            return inputs(serving.batch, serving.context)
        except MeasureError:
            raise
        except Exception as error:
            raise MeasureError(
                f"inputs({serving.batch}, {serving.context}) raised {type(error).__name__}: {error}"
            ) from error
    if not is_generative(model):
        raise MeasureError(
            f"mode={serving.mode!r}: {type(model).__name__} is not a transformers generative model, so its inputs "
            "are not known: pass inputs= as a function of (batch, context) returning the step's inputs, its cache "
            "included for a decode step"
        )
    keyword = cache_keyword(model)
    assert keyword is not None
    device = _device(model)
    tokens = RandomInput((serving.batch, serving.context), torch.long, device)
    new_token = RandomInput((serving.batch, 1), torch.long, device)
    if is_encoder_decoder(model):
        # The encoder reads its source once (the config's default input: text of context tokens,
        # or its audio); the decoder's cache holds context tokens, and the encoder's states
        # (the cross-attention cache) beside them. A decode step reuses the encoder's output.
        prompt = {**_source(model, serving), "decoder_input_ids": tokens, "use_cache": True}
        if serving.mode == "prefill":
            return prompt
        return {"decoder_input_ids": new_token, keyword: Prefill((), prompt), "use_cache": True}
    prompt = {"input_ids": tokens, "use_cache": True}
    if serving.mode == "prefill":
        return prompt
    return {"input_ids": new_token, keyword: Prefill((), prompt), "use_cache": True}


def _source(model: torch.nn.Module, serving: Serving) -> dict[str, Any]:
    from .specs.hf import default_inputs

    inputs = default_inputs(model, model.config, batch=serving.batch, length=serving.context)
    return {name: value for name, value in inputs.items() if not name.startswith("decoder_")}


def encoder_outputs_of(output: Any, keywords: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """An encoder-decoder's decode step takes the prefill's encoder states, as ``generate`` does."""
    states = getattr(output, "encoder_last_hidden_state", None)
    if states is None or "encoder_outputs" not in _parameters(model) or "encoder_outputs" in keywords:
        return {}
    return {"encoder_outputs": (states,)}


def context_notes(model: torch.nn.Module, serving: Serving) -> list[str]:
    """What a reader should know of the context asked for: beyond what the model was trained for."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) if config is not None else None
    if isinstance(limit, int) and serving.context > limit:
        return [
            f"context {serving.context:,} is beyond the model's max_position_embeddings {limit:,}: measured as its "
            "code runs it, which may not be how it would be served"
        ]
    return []


#: Where the searches stop: sequences served together, and tokens when the model states no limit.
MOST_SEQUENCES = 1 << 16
MOST_TOKENS = 1 << 24


def largest_fitting(peak_at: Callable[[int], int], capacity: int, upper: int) -> int:
    """The largest n in [1, upper] whose step's peak fits ``capacity`` (0 when none does), the
    peak never falling as n grows. The first two runs' slope guesses it; runs either side of
    the guess find it, so growth that slows (a sliding window caps the cache) is followed, not
    extrapolated."""
    peaks: dict[int, int] = {}

    def fits(n: int) -> bool:
        if n > upper:
            return False
        if n not in peaks:
            peaks[n] = peak_at(n)
        return peaks[n] <= capacity

    if not fits(1):
        return 0
    if upper == 1 or not fits(2):
        return 1
    slope = peaks[2] - peaks[1]
    guess = upper if slope <= 0 else max(2, min(upper, 2 + (capacity - peaks[2]) // slope))
    if fits(guess):
        if fits(upper):  # growth capped (a sliding window): it fits all the way
            return upper
        low, step = guess, 1
        while fits(low + step):
            low, step = low + step, step * 2
        high = low + step
    else:
        high, step = guess, 1
        while not fits(max(2, high - step)):
            high, step = max(2, high - step), step * 2
        low = max(2, high - step)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def context_limit(model: torch.nn.Module) -> int:
    """The longest context a search tries: the model's positions, else ``MOST_TOKENS``."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) if config is not None else None
    return limit if isinstance(limit, int) and limit > 0 else MOST_TOKENS


def pop_prefill(keywords: dict[str, Any]) -> tuple[str, Prefill] | None:
    for key, value in keywords.items():
        if isinstance(value, Prefill):
            return key, value
    return None


def cache_of(output: Any, keywords: dict[str, Any]) -> Any:
    """The cache after a step: the one the output returns, else the one passed in (filled in place)."""
    for name in ("cache", "past_key_values", "cache_params"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    for name in ("cache", "past_key_values", "cache_params"):
        if keywords.get(name) is not None:
            return keywords[name]
    return None


def cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The tensors a cache object holds: transformers' cache classes (their layers' keys and
    values, a state-space model's convolution and SSM states), tuples of tensors, dicts."""
    found: dict[int, torch.Tensor] = {}
    for tensor in _walk(cache, set(), 0):
        found.setdefault(id(tensor), tensor)
    return list(found.values())


def cache_bytes(cache: Any, origins: Origins | None) -> dict[str, int]:
    """Bytes of the cache's distinct storages, by the module that last made or wrote each (the
    attention layer whose cache it is; "" where not followed)."""
    by_module: dict[str, int] = defaultdict(int)
    seen: set[int] = set()
    for tensor in plain_tensors(cache_tensors(cache)):
        storage = storage_of(tensor)
        if storage is None or id(storage) in seen:
            continue
        seen.add(id(storage))
        origin = (origins or {}).get(id(storage))
        name = origin[1] if origin is not None and origin[0]() is storage else ""
        by_module[name] += storage.nbytes()
    return dict(by_module)


def _walk(value: Any, seen: set[int], depth: int) -> Iterator[torch.Tensor]:
    if depth > 8 or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item, seen, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item, seen, depth + 1)
    elif not isinstance(value, (torch.nn.Module, str, bytes, int, float, bool, type)) and hasattr(value, "__dict__"):
        # Cache classes keep their tensors in attributes (and lists of layer objects); a
        # configuration object holds none, and a module is the model's, not the cache's.
        for item in vars(value).values():
            yield from _walk(item, seen, depth + 1)


def _parameters(model: torch.nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _device(model: torch.nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


#: ``inputs=`` of a serving step: (batch, context) -> the step's inputs.
MakeInputs = Callable[[int, int], Any]
