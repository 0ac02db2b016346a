"""The options of a measurement that a budget can set in several places (``mode="training"`` in a
marker, ``mode = "training"`` in an entry...): each option's allowed values, written once, and the
one resolver of their precedence.

Precedence, first wins: the argument given to ``check()``/``measure()`` (or the CLI's flag), then
the ``budget`` marker, then the ``budgets.toml`` entry, then ``[settings]``, then the default. The
engine, the schema, the marker and the CLI read their allowed values here. Plain data, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

#: The closed sets of values, as types the schema and the engine's signatures use.
ModeName = Literal["inference", "training", "prefill", "decode"]
OutputsName = Literal["kept", "released"]
AutocastName = Literal["float16", "bfloat16"]
StepName = Literal["first", "steady"]
ExecutionName = Literal["auto", "fake", "real"]

#: Where an option can be written, first wins.
LEVELS = ("argument", "marker", "entry", "settings")


@dataclass(frozen=True)
class Option:
    name: str
    #: The levels it can be written at (a subset of LEVELS).
    levels: tuple[str, ...]
    default: Any = None
    #: The values it takes, where they are a closed set (empty: any the option's reader accepts).
    choices: tuple[str, ...] = ()
    help: str = ""


MODE = Option(
    "mode",
    LEVELS[:3],
    "inference",
    get_args(ModeName),
    "inference: forward under no_grad; training: forward, backward and, with an optimizer, its step; prefill: "
    "a generative model's forward over batch x context tokens, filling its cache; decode: one new token per "
    "sequence on a cache holding context tokens",
)
OUTPUTS = Option(
    "outputs",
    LEVELS[:3],
    "kept",
    get_args(OutputsName),
    "training: the forward's outputs held through backward (kept) or released before it",
)
STEP = Option(
    "step",
    LEVELS[:3],
    None,
    get_args(StepName),
    "training with an optimizer: the step whose peak memory is the figure, first or steady (every later "
    "one, the optimizer's state alive); default: the larger",
)
ACCUMULATION_STEPS = Option(
    "accumulation_steps",
    LEVELS[:3],
    1,
    help="training: forward/backward micro-steps before each optimizer step (gradient accumulation)",
)
SET_TO_NONE = Option(
    "set_to_none",
    LEVELS[:3],
    True,
    help="training with an optimizer: zero_grad frees the gradients (true, PyTorch's default) or zeroes them",
)
AUTOCAST = Option("autocast", ("argument", "entry"), None, get_args(AutocastName), "run the step under torch.autocast")
DEVICE = Option(
    "device",
    ("argument", "entry", "settings"),
    help="whose peak memory: cuda (measured where available, else estimated), cuda:N or cpu",
)
CONTEXT = Option("context", LEVELS[:3], help="prefill and decode: the tokens each sequence holds (the cache's length)")
BATCH = Option("batch", LEVELS[:3], help="prefill and decode: the sequences served together (default 1)")
GPU = Option("gpu", LEVELS, help="the GPU of roofline_time: a built-in name or one of [settings.gpus]")
PARALLEL = Option("parallel", LEVELS[:3], help="one rank of a sharded step: {strategy, world_size, ...}")
EXECUTION = Option(
    "execution",
    LEVELS,
    "auto",
    get_args(ExecutionName),
    "auto: fake tensors, a real CPU run where the model needs values; fake: never a real run (fails instead); "
    "real: straight to a real CPU run (data-dependent models, which would pay a fake attempt first)",
)

OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        MODE,
        OUTPUTS,
        PARALLEL,
        GPU,
        STEP,
        ACCUMULATION_STEPS,
        SET_TO_NONE,
        CONTEXT,
        BATCH,
        AUTOCAST,
        DEVICE,
        EXECUTION,
    )
}
#: Options the ``budget`` marker takes besides its limits.
MARKER_OPTIONS: tuple[str, ...] = tuple(name for name, option in OPTIONS.items() if "marker" in option.levels)
#: Every key of the ``budget`` marker but the limits: its own (the budget's tolerance and name) and the options.
MARKER_KEYS: tuple[str, ...] = ("tolerance", "name", "allow_uncounted", *MARKER_OPTIONS)


def resolve(levels: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """Every option's value: the first of ``LEVELS`` that sets it (``None`` is not set), else its
    default. ``levels`` maps a level's name to the options written there; a level may be missing
    or None (no marker, no entry)."""
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown option level(s) {sorted(unknown)}; expected some of {', '.join(LEVELS)}")
    resolved = {}
    for name, option in OPTIONS.items():
        value = option.default
        for level in LEVELS:
            given = (levels.get(level) or {}).get(name)
            if given is not None:
                if level not in option.levels:
                    raise ValueError(
                        f"{name} cannot be set at the {level} level; it can be at: {', '.join(option.levels)}"
                    )
                value = given
                break
        resolved[name] = value
    return resolved


def check_choice(option: Option, value: Any) -> str | None:
    """Why ``value`` is not one of ``option``'s values, or None when it is (or it has no set)."""
    if not option.choices or value is None or value in option.choices:
        return None
    return f"{option.name}={value!r}; expected one of {', '.join(option.choices)}"
