"""``budgets.toml``: its schema (pydantic v2, ``extra="forbid"``) and loading it with errors that
name the file, the line, the key, what was found and what is expected."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model, field_validator

from ..errors import BudgetFileError
from ..quantities import QuantityError, parse_percent, parse_quantity
from ..stats import FIGURES, LAYER_FIGURES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _quantity(kind: Literal["count", "bytes"]) -> Any:
    def parse(value: Any) -> int:
        try:
            return parse_quantity(value, kind)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None

    return Annotated[int, BeforeValidator(parse)]


def _percent(value: Any) -> float:
    try:
        return parse_percent(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


Tolerance = Annotated[float, BeforeValidator(_percent)]
FigureName = Literal[tuple(FIGURES)]  # type: ignore[valid-type]
Mode = Literal["inference", "training"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _figure_fields(names: Any, annotation: Any) -> dict[str, Any]:
    """One optional field per figure, so that the schema follows ``stats.FIGURES``."""
    return {name: (Optional[annotation(name)], None) for name in names}


class _Limits(_Strict):
    """Ceilings written by people; ``--update-budgets`` never rewrites them."""

    def as_dict(self) -> dict[str, int]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


#: A limit is an integer or a human quantity of the figure's kind ("12M", "300MB").
Limits = create_model(
    "Limits", __base__=_Limits, **_figure_fields(FIGURES, lambda name: _quantity(FIGURES[name]))
)

LayerBaseline = create_model("LayerBaseline", __base__=_Strict, **_figure_fields(LAYER_FIGURES, lambda _: int))


class _Baseline(_Strict):
    """Figures recorded by ``--update-budgets``: totals, then one inline table per layer."""

    layers: dict[str, LayerBaseline] = Field(default_factory=dict)  # type: ignore[valid-type]

    def totals(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIGURES if getattr(self, name) is not None}


Baseline = create_model("Baseline", __base__=_Baseline, **_figure_fields(FIGURES, lambda _: int))


class Entry(_Strict):
    """One budget: an in-code test (keyed by node id or ``name=``) or a declared model."""

    factory: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    input_size: list[int] | list[list[int]] | None = None
    inputs: str | None = None
    dtype: str | None = None
    meta: bool = False
    mode: Mode | None = None
    autocast: Literal["float16", "bfloat16"] | None = None
    tolerance: Tolerance | None = None
    limits: Limits = Field(default_factory=Limits)
    baseline: Baseline | None = None

    @field_validator("factory", "inputs")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w.]+", value):
            raise ValueError(f'expected an import path "package.module:function", found {value!r}')
        return value


class Settings(_Strict):
    tolerance: Tolerance | None = None
    figures: list[FigureName] | None = None
    #: Whose peak memory budgets hold: "cuda" (default: measured where available, else estimated)
    #: or "cpu".
    device: str | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f"expected 'cuda', 'cuda:N' or 'cpu', found {value!r}")
        return value


class BudgetFile(_Strict):
    settings: Settings = Field(default_factory=Settings)
    budgets: dict[str, Entry] = Field(default_factory=dict)


#: Figures compared with the baseline unless ``[settings] figures`` says otherwise.
DEFAULT_FIGURES = ("params", "bytes", "macs", "flops", "peak_memory")


def load_budget_file(path: Path) -> BudgetFile:
    """Read and validate ``path``; a missing file is an empty one."""
    if not path.exists():
        return BudgetFile()
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BudgetFileError(f"{path}: not valid TOML: {exc}") from None
    try:
        return BudgetFile.model_validate(data)
    except ValidationError as exc:
        raise BudgetFileError(_describe_errors(path, text, exc)) from None


def _describe_errors(path: Path, text: str, error: ValidationError) -> str:
    lines = [f"{path}: {error.error_count()} problem(s) in the budget file"]
    for item in error.errors():
        loc = [str(part) for part in item["loc"] if not str(part).startswith(("function-", "list[", "int", "str"))]
        key = ".".join(_toml_key(part) for part in loc)
        line = locate(text, loc)
        where = f"{path}:{line}" if line else str(path)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}; expected one of: {_allowed(loc)}"
        found = "" if item["type"] in ("extra_forbidden", "missing") or "found" in message else f" (found {item['input']!r})"
        lines.append(f"  {where}: {key}: {message}{found}")
    return "\n".join(lines)


def _allowed(loc: list[str]) -> str:
    model: type[BaseModel] = BudgetFile
    if loc[0] == "settings":
        model = Settings
    elif loc[0] == "budgets" and len(loc) == 3:
        model = Entry
    elif len(loc) >= 4 and loc[2] == "limits":
        model = Limits
    elif len(loc) >= 4 and loc[2] == "baseline":
        model = LayerBaseline if "layers" in loc else Baseline
    return ", ".join(model.model_fields)


def _toml_key(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*=')


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', dotted)
    return [a or b or c for a, b, c in parts]


def locate(text: str, loc: list[str]) -> int | None:
    """The 1-based line that holds ``loc`` (a pydantic error path), or the nearest table above."""
    best: tuple[int, int] | None = None  # (matched depth, line)
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            if loc[: len(table)] == table and (best is None or len(table) >= best[0]):
                best = (len(table), number)
            continue
        key = _KEY.match(line)
        if key and loc[: len(table)] == table and len(loc) > len(table):
            name = _split_key(key.group(1))
            if name and name[0] == loc[len(table)] and (best is None or len(table) + 1 > best[0]):
                best = (len(table) + 1, number)
    return best[1] if best else None
