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


#: Problems listed in full; the rest are counted (a file of 10,000 bad entries is one mistake).
MAX_PROBLEMS = 30


def _describe_errors(path: Path, text: str, error: ValidationError) -> str:
    lines = [f"{path}: {error.error_count()} problem(s) in the budget file"]
    index = key_lines(text)
    errors = error.errors()
    for item in errors[:MAX_PROBLEMS]:
        loc = [str(part) for part in item["loc"] if not str(part).startswith(("function-", "list[", "int", "str"))]
        key = ".".join(_toml_key(part) for part in loc)
        line = locate(index, loc)
        where = f"{path}:{line}" if line else str(path)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}; expected one of: {_allowed(loc)}"
        found = (
            ""
            if item["type"] in ("extra_forbidden", "missing") or "found" in message
            else f" (found {item['input']!r})"
        )
        lines.append(f"  {where}: {key}: {message}{found}")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - MAX_PROBLEMS} more")
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


# No ambiguous repetition around the name (the name is stripped afterwards): a line of "[" and
# thousands of spaces is matched in linear time.
_HEADER = re.compile(r"^\s*\[\[?([^\]]*)\]\]?\s*(#.*)?$")
_PART = r'(?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)'
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', dotted)
    return [a or b or c for a, b, c in parts]


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Each table's and each key's path -> its 1-based line, read in one pass: a file with
    thousands of errors is located in linear time, not once per error."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = tuple(_split_key(header.group(1).strip()))
            lines[table] = number  # a table header read again ([[arrays]]): the last one
            continue
        key = _KEY.match(line)
        if key:
            name = _split_key(key.group(1))
            for depth in range(1, len(name) + 1):  # limits.params = ...: limits is here too
                lines.setdefault((*table, *name[:depth]), number)
    return lines


def locate(text: str | dict[tuple[str, ...], int], loc: list[str]) -> int | None:
    """The 1-based line that holds ``loc`` (a pydantic error path), or the nearest table above.
    ``text`` is the file's text, or its :func:`key_lines` when many paths are located."""
    index = key_lines(text) if isinstance(text, str) else text
    for depth in range(len(loc), 0, -1):
        line = index.get(tuple(loc[:depth]))
        if line is not None:
            return line
    return None
