"""``budgets.toml``'s schema (pydantic v2, ``extra="forbid"``): settings, and per budget entry its
limits, its baseline and, for a declared model, how to build and run it. The figures' fields
follow the table of figures (``figures.py``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from ..factories import is_exported_path, is_model_spec
from ..figures import FIGURES, LAYER_FIGURES, PEAK_MEMORY
from ..gpus import DTYPES as GPU_DTYPES
from ..gpus import GPUS, Gpu
from ..options import OPTIONS, AutocastName, ExecutionName, ModeName, OutputsName, StepName
from ..quantities import Kind, QuantityError, parse_bandwidth, parse_percent, parse_quantity


def _quantity(kind: Kind) -> Any:
    def parse(value: Any) -> int:
        try:
            return parse_quantity(value, kind)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None

    return Annotated[int, BeforeValidator(parse)]


def _device(value: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise ValueError(f"expected 'cuda', 'cuda:N' or 'cpu', found {value!r}")
    return value


#: Whose peak memory: "cuda" (measured where available, else estimated), "cuda:N" or "cpu".
Device = Annotated[str, AfterValidator(_device)]


def _percent(value: Any) -> float:
    try:
        return parse_percent(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def parse_tolerance(value: Any) -> float | dict[str, float]:
    """One tolerance for every figure ("1%"), or a table of them per figure
    ({ params = "0%", peak_memory = "5%" }: the figures it leaves out take the next level's)."""
    if isinstance(value, dict):
        unknown = [key for key in value if key not in FIGURES]
        if unknown:
            raise ValueError(f"unknown figure {unknown[0]!r} in tolerance; expected some of {', '.join(FIGURES)}")
        return {key: _percent(percent) for key, percent in value.items()}
    return _percent(value)


Tolerance = Annotated[float | dict[str, float], BeforeValidator(parse_tolerance)]
if TYPE_CHECKING:
    FigureName = str
else:  # a Literal built from the table: pydantic lists the figures when one is misspelt
    FigureName = Literal[tuple(FIGURES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _figure_fields(names: Any, annotation: Any) -> dict[str, Any]:
    """One optional field per figure, so that the schema follows the table of figures."""
    return {name: (annotation(name) | None, None) for name in names}


class _Limits(_Strict):
    """Ceilings written by people; ``--update-budgets`` never rewrites them."""

    def as_dict(self) -> dict[str, int]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


#: A limit is an integer or a human quantity of the figure's kind ("12M", "300MB").
# Models built from the table of figures; to a type checker, their bases.
if TYPE_CHECKING:
    Limits = _Limits
    LayerBaseline = _Strict
else:
    Limits = create_model("Limits", __base__=_Limits, **_figure_fields(FIGURES, lambda name: _quantity(FIGURES[name])))
    LayerBaseline = create_model("LayerBaseline", __base__=_Strict, **_figure_fields(LAYER_FIGURES, lambda _: int))


class _Baseline(_Strict):
    """Figures recorded by ``--update-budgets``: totals, then one inline table per layer."""

    layers: dict[str, LayerBaseline] = Field(default_factory=dict)
    #: How the recorded peak_memory was obtained: "cuda" (measured) or "estimate".
    peak_memory_source: Literal["cuda", "estimate"] | None = None
    #: The torch version the baseline was recorded with: figures may move between versions.
    torch: str | None = None
    #: Parameters that were one tensor under several names (tied weights), so that a failure can
    #: say "no longer shared" rather than "grew".
    shared_params: list[list[str]] | None = None

    def totals(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIGURES if getattr(self, name) is not None}


if TYPE_CHECKING:
    Baseline = _Baseline
else:
    Baseline = create_model("Baseline", __base__=_Baseline, **_figure_fields(FIGURES, lambda _: int))


class ParallelSpec(_Strict):
    """A sharded step, as ``measure(parallel=...)`` takes it (``engine/parallel.py``)."""

    strategy: Literal["fsdp", "tp", "fsdp+tp"] = "fsdp"
    world_size: int = Field(ge=1)
    #: fsdp+tp: the tensor-parallel ranks inside each FSDP rank.
    tp_size: int | None = Field(default=None, ge=1)
    #: Module name pattern -> style ("colwise", "rowwise", ...); default: the model's own plan.
    tp_plan: dict[str, str] | None = None
    reshard_after_forward: bool = True
    param_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    reduce_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    #: Module class names or qualified names sharded as units (default: each ModuleList block).
    wrap: list[str] | None = None
    activation_checkpointing: bool = False


class Entry(_Strict):
    """One budget: an in-code test (keyed by node id or ``name=``) or a declared model."""

    factory: str | None = None
    #: The factory's keyword arguments (a model spec's builder or config fields).
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    #: Deprecated name of ``model_kwargs``, still read.
    kwargs: dict[str, Any] | None = None
    input_size: list[int] | list[list[int]] | None = None
    inputs: str | None = None
    #: Keyword arguments to forward, besides the inputs.
    forward_kwargs: dict[str, Any] = Field(default_factory=dict)
    #: Training: ``"module:function"`` taking forward's output, returning the loss (default: the
    #: sum of every output tensor).
    loss: str | None = None
    #: Training: the optimizer class that takes its step, ``"torch.optim:AdamW"``, and its arguments.
    optimizer: str | None = None
    optimizer_kwargs: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    #: Build the model on the meta device. Default: yes for a model spec, no for a factory.
    meta: bool | None = None
    mode: ModeName | None = None
    #: Training: the forward's outputs "kept" through backward (default) or "released" before it.
    outputs: OutputsName | None = None
    #: Training with an optimizer: the step whose peak memory is the figure (default: the larger).
    step: StepName | None = None
    #: Training: forward/backward micro-steps before each optimizer step.
    accumulation_steps: int | None = Field(default=None, ge=1)
    #: Training with an optimizer: zero_grad frees the gradients (default) or zeroes them.
    set_to_none: bool | None = None
    execution: ExecutionName | None = None
    #: Prefill and decode: the tokens each sequence holds, and the sequences (default 1).
    context: int | None = Field(default=None, ge=1)
    batch: int | None = Field(default=None, ge=1)
    autocast: AutocastName | None = None
    #: One rank of a sharded step: peak_memory is that rank's.
    parallel: ParallelSpec | None = None
    #: The GPU of this budget's ``roofline_time`` (default: ``[settings] gpu``).
    gpu: str | None = None
    #: Whose peak memory this budget holds, "cuda" or "cpu" (default: ``[settings] device``).
    device: Device | None = None
    tolerance: Tolerance | None = None
    limits: Limits = Field(default_factory=Limits)
    #: Ops that may do arithmetic no formula prices without failing a strict run ("teamlib.fused_act").
    allow_uncounted: list[Annotated[str, StringConstraints(min_length=1)]] | None = None
    baseline: Baseline | None = None

    @model_validator(mode="after")
    def _one_name_for_model_kwargs(self) -> Entry:
        if self.kwargs is not None and self.model_kwargs:
            raise ValueError("both kwargs and model_kwargs: write model_kwargs only (kwargs is its old name)")
        if (self.loss or self.optimizer) and self.mode != "training":
            raise ValueError('loss and optimizer apply to training: add mode = "training"')
        if self.step and not self.optimizer and self.factory:
            raise ValueError(
                'step chooses between an optimizer\'s first and steady steps: add optimizer = "torch.optim:AdamW" (or another)'
            )
        serving = self.mode in ("prefill", "decode")
        if self.factory and (self.context is not None or self.batch is not None) and not serving:
            raise ValueError('context and batch apply to mode = "prefill" or "decode"')
        if self.factory and serving and self.context is None:
            raise ValueError(f'mode = "{self.mode}" needs context: the tokens each sequence holds (context = 8192)')
        if self.optimizer_kwargs and not self.optimizer:
            raise ValueError('optimizer_kwargs without an optimizer: add optimizer = "torch.optim:AdamW" (or another)')
        return self

    def options(self) -> dict[str, Any]:
        """The measurement options this entry writes, for ``options.resolve``."""
        values = {name: getattr(self, name) for name, option in OPTIONS.items() if "entry" in option.levels}
        values["parallel"] = self.parallel.model_dump(exclude_none=True) if self.parallel else None
        return values

    @property
    def factory_kwargs(self) -> dict[str, Any]:
        return self.model_kwargs or self.kwargs or {}

    @field_validator("factory", "inputs", "loss", "optimizer")
    @classmethod
    def _import_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or re.fullmatch(r"[\w.]+:[\w.]+", value):
            return value
        if info.field_name == "factory" and (is_model_spec(value) or is_exported_path(value)):
            return value
        expected = '"package.module:function"'
        if info.field_name == "factory":
            expected += ' or a model spec "torchvision:NAME", "timm:NAME", "hf:PATH_OR_TYPE", or a .pt2 file'
        raise ValueError(f"expected an import path {expected}, found {value!r}")


class GpuSpec(_Strict):
    """A GPU of the user's own for ``roofline_time``: bandwidth ("2TB/s") and dense peaks per
    compute dtype ("312T" FLOP/s); without ``fp32``, the lowest peak given stands for it."""

    bandwidth: str
    #: Device memory ("24GB"), for a decode budget's max_batch and max_context.
    memory: str | None = None
    fp32: str | None = None
    tf32: str | None = None
    bf16: str | None = None
    fp16: str | None = None
    fp8: str | None = None
    int8: str | None = None

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, value: str) -> str:
        _per_second(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_quantity(value, PEAK_MEMORY.kind)
            except QuantityError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
    @classmethod
    def _peak(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_quantity(value, "count")
            except QuantityError as exc:
                raise ValueError(f"{exc} FLOP/s") from None
        return value

    @model_validator(mode="after")
    def _some_peak(self) -> GpuSpec:
        if not any(getattr(self, dtype) for dtype in GPU_DTYPES):
            raise ValueError(f'a GPU needs a peak for at least one of {", ".join(GPU_DTYPES)}, e.g. bf16 = "312T"')
        return self

    def gpu(self, name: str) -> Gpu:
        peaks = {
            dtype: float(parse_quantity(getattr(self, dtype), "count")) for dtype in GPU_DTYPES if getattr(self, dtype)
        }
        peaks.setdefault("fp32", min(peaks.values()))
        memory = parse_quantity(self.memory, PEAK_MEMORY.kind) if self.memory else None
        return Gpu(name, float(_per_second(self.bandwidth)), peaks, "budgets.toml [settings.gpus]", memory=memory)


def _per_second(value: str) -> int:
    try:
        return parse_bandwidth(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


class Settings(_Strict):
    tolerance: Tolerance | None = None
    figures: list[FigureName] | None = None
    #: Whose peak memory budgets hold: "cuda" (default: measured where available, else estimated)
    #: or "cpu".
    device: Device | None = None
    execution: ExecutionName | None = None
    #: How sizes are shown in failures and reports: "si" (KB, MB: the default) or "binary" (KiB,
    #: MiB). Limits are read as written either way ("46MiB" and "48MB" both mean what they say).
    units: Literal["si", "binary"] = "si"
    #: GPUs of the user's own, by name (before ``gpu``, which may name one of them).
    gpus: dict[str, GpuSpec] = Field(default_factory=dict)
    #: The GPU ``roofline_time`` is for (a built-in name or one of ``gpus``); none: no such figure.
    gpu: str | None = None

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str | None, info: ValidationInfo) -> str | None:
        own = info.data.get("gpus") or {}
        if value is not None and value not in GPUS and value not in own:
            raise ValueError(f"unknown GPU {value!r}; expected one of {', '.join([*GPUS, *own])}")
        return value

    def options(self) -> dict[str, Any]:
        """The measurement options ``[settings]`` writes, for ``options.resolve``."""
        return {name: getattr(self, name) for name, option in OPTIONS.items() if "settings" in option.levels}

    def gpu_named(self, name: str | None) -> Gpu | None:
        if name is None:
            return None
        if name in self.gpus:
            return self.gpus[name].gpu(name)
        return GPUS.get(name)


class BudgetFile(_Strict):
    settings: Settings = Field(default_factory=Settings)
    budgets: dict[str, Entry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _entries_name_known_gpus(self) -> BudgetFile:
        for name, entry in self.budgets.items():
            if entry.gpu is not None and entry.gpu not in GPUS and entry.gpu not in self.settings.gpus:
                raise ValueError(
                    f"budgets.{name}.gpu: unknown GPU {entry.gpu!r}; expected one of {', '.join([*GPUS, *self.settings.gpus])}"
                )
        return self
