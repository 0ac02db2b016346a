"""Rewriting baselines in ``budgets.toml`` with tomlkit: comments, order and formatting of
everything else stay as the user wrote them, only changed values are touched, ``limits`` never,
and the file is replaced atomically (temporary file + rename) or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, the atomic replace still holds
    fcntl = None  # type: ignore[assignment]

import tomlkit
from tomlkit.items import Comment, InlineTable, Table

from ..errors import BudgetFileError
from ..figures import FIGURES, LAYER_FIGURES
from ..record import BudgetRecord
from .loader import load_text, read_text


def update_baselines(path: Path, records: Mapping[str, BudgetRecord], remove: Iterable[str] = ()) -> bool:
    """Write each record's figures into ``[budgets.NAME.baseline]``; drop the entries in
    ``remove``. Returns whether the file changed.

    The file is read, merged and replaced under a lock: two runs updating it at once (two CI
    jobs, a developer and a watcher) each merge into the file as the other left it."""
    with _locked(path):
        _remove_leftovers(path)
        return _update(path, records, remove)


def hand_written(path: Path, names: Iterable[str]) -> dict[str, list[str]]:
    """Of the entries ``names``, those that hold something people wrote (limits, a tolerance, any
    key but the baseline, or a comment), with what it is. ``--prune-budgets`` never removes them:
    a renamed test's limits must be moved by hand, not lost."""
    names = list(names)
    # tomlkit keeps comments but reads a large file slowly (seconds for 40 models' per-layer
    # baselines): read it only when there is an entry to ask about.
    if not names or not path.exists():
        return {}
    budgets = tomlkit.parse(read_text(path)).get("budgets") or {}
    found = {}
    for name in names:
        entry = budgets.get(name)
        if entry is None:
            continue
        written = [key for key in entry if key != "baseline"]
        if _has_comment(entry):
            written.append("a comment")
        if written:
            found[name] = written
    return found


def _has_comment(entry: Any) -> bool:
    """A comment on the entry's own header or among its keys (the baseline's are ours)."""
    if isinstance(entry, InlineTable):
        return False
    # A table with no header of its own ([budgets.NAME.baseline] alone) shows its child's comment.
    if not entry.is_super_table() and entry.trivia.comment:
        return True
    return any(
        isinstance(item, Comment) or (key is not None and key.key != "baseline" and bool(item.trivia.comment))
        for key, item in entry.value.body
    )


def _remove_leftovers(path: Path) -> None:
    """Temporary files of a writer killed before its rename. Under the lock no other writer has
    one open, so every one found is a leftover."""
    directory = path.parent if str(path.parent) else Path(".")
    for leftover in directory.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Beside the system's temporary files, not the project's: nothing to commit or ignore. The
    # budget file itself cannot be the lock: each write replaces it with a new file.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir(), f"pytest-modelbudget-{digest}.lock")
    with open(lock_path, "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _update(path: Path, records: Mapping[str, BudgetRecord], remove: Iterable[str]) -> bool:
    old_text = read_text(path) if path.exists() else ""
    doc = tomlkit.parse(old_text)
    budgets = doc.get("budgets")
    if budgets is None:
        budgets = tomlkit.table(is_super_table=True)
        doc["budgets"] = budgets
    for name in remove:
        if name in budgets:
            del budgets[name]
    for name, record in records.items():
        entry = budgets.get(name)
        if entry is None:
            entry = tomlkit.table(is_super_table=True)
            budgets[name] = entry
        elif isinstance(entry, InlineTable):
            # budgets.NAME = { ... } cannot hold a [baseline] table: the same keys as a table.
            entry = _as_table(entry)
            budgets[name] = entry
        _write_baseline(entry, record)
    new_text = tomlkit.dumps(doc)
    if new_text == old_text:
        return False
    _refuse_what_the_loader_rejects(path, new_text)
    _atomic_write(path, new_text)
    return True


def _as_table(inline: InlineTable) -> Table:
    table = tomlkit.table()
    for key, value in inline.items():
        table[key] = value
    return table


def _refuse_what_the_loader_rejects(path: Path, text: str) -> None:
    """Never write a file that the next run would stop on."""
    try:
        load_text(path, text)
    except BudgetFileError as exc:
        raise BudgetFileError(
            f"{path}: not written: the baselines would make it invalid, please report this layout: {exc}"
        ) from None


def _write_baseline(entry: Table, record: BudgetRecord) -> None:
    baseline = entry.get("baseline")
    if baseline is not None and (isinstance(baseline, InlineTable) or _dotted(entry, "baseline")):
        # baseline = { ... } or baseline.params = ...: ours to write, rewritten as a table that
        # can hold its layers.
        del entry["baseline"]
        baseline = None
    if baseline is None:
        baseline = tomlkit.table()
        baseline.comment("written by pytest --update-budgets")
        entry["baseline"] = baseline
    for figure in FIGURES:
        value = record.figures.get(figure)
        if value is not None and baseline.get(figure) != value:
            baseline[figure] = _integer(value)
    # Beside the figures: how peak_memory was obtained, and with which torch.
    for key, written in (("peak_memory_source", record.peak_memory_source), ("torch", record.torch)):
        if written is not None and baseline.get(key) != written:
            baseline[key] = written
    shared = [list(group) for group in record.shared_params]
    if shared and baseline.get("shared_params") != shared:
        baseline["shared_params"] = shared
    elif not shared and "shared_params" in baseline:
        del baseline["shared_params"]
    layers = baseline.get("layers")
    created = layers is None
    if layers is None:
        layers = tomlkit.table()
        baseline["layers"] = layers
    measured = {name: figures for name, figures in record.layers.items() if name}
    wanted = {
        name: {f: figures[f] for f in LAYER_FIGURES if figures.get(f) is not None} for name, figures in measured.items()
    }
    if list(layers) != list(wanted):
        # Layers added, removed or moved: rewrite the table in module order, keeping each line
        # whose figures did not change as it was written.
        kept = {name: layers[name] for name in layers if name in wanted and _same(layers[name], wanted[name])}
        for name in list(layers):
            del layers[name]
        for name, values in wanted.items():
            layers[name] = kept.get(name) or _inline(values)
    else:
        for name, values in wanted.items():
            if not _same(layers[name], values):
                layers[name] = _inline(values)
    if created:
        layers.add(tomlkit.nl())  # a blank line before whatever table follows


def _dotted(table: Table, key: str) -> bool:
    return any(k is not None and k.key == key and k.is_dotted() for k, _ in table.value.body)


def _same(current: Any, values: Mapping[str, int]) -> bool:
    return dict(current) == dict(values)


def _inline(values: Mapping[str, int]) -> Any:
    inline = tomlkit.inline_table()
    for figure, value in values.items():
        inline[figure] = _integer(value)
    return inline


def _integer(value: int) -> Any:
    """``33_921_280``: digit separators, valid TOML, so that a reviewer reads the number."""
    return tomlkit.integer(f"{value:_}")


def _atomic_write(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
