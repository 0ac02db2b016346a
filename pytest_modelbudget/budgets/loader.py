"""Loading ``budgets.toml``: TOML, then the schema, with errors that name the file, the line, the
key, what was found and what is expected."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..errors import BudgetFileError
from .schema import Baseline, BudgetFile, Entry, LayerBaseline, Limits, Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_budget_file(path: Path) -> BudgetFile:
    """Read and validate ``path``; a missing file is an empty one."""
    if not path.exists():
        return BudgetFile()
    return load_text(path, read_text(path))


def load_text(path: Path, text: str) -> BudgetFile:
    """Validate ``text`` as the contents of ``path`` (named in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BudgetFileError(f"{path}: not valid TOML: {exc}") from None
    try:
        return BudgetFile.model_validate(data)
    except ValidationError as exc:
        raise BudgetFileError(_describe_errors(path, text, exc)) from None


def read_text(path: Path) -> str:
    """The file as TOML text: UTF-8 (TOML's encoding), a BOM tolerated; anything else is an error
    that names the file and says what was found."""
    if path.is_dir():
        raise BudgetFileError(f"{path}: is a directory; expected a TOML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BudgetFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BudgetFileError(f"{path}: is UTF-16; TOML files are UTF-8: save it as UTF-8")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BudgetFileError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); TOML files are UTF-8: save it as UTF-8"
        ) from None


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
