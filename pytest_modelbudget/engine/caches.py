"""The ``functools.lru_cache`` caches a model's code keeps across calls, emptied of what a
measured step put there.

Models cache tensors computed from shapes in ``lru_cache``-wrapped methods and functions (the
anchors of RT-DETR and D-FINE, DINOv3's and SAM2's rotary tables, DETR's position embeddings:
transformers' ``compile_compatible_method_lru_cache``). The cache outlives the call, so a fake run
left fake tensors there: the user's next real forward got them back, and returned fake tensors
itself. After each step, every cache the step added entries to is cleared; entries the user's own
calls had put there are recomputed on their next call (a cache only ever saves time).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch


def _is_cache(value: Any) -> bool:
    return callable(getattr(value, "cache_info", None)) and callable(getattr(value, "cache_clear", None))


def _caches_in(value: Any) -> Iterator[Any]:
    """The lru caches behind one class or module attribute: the wrapper itself, or one held in a
    decorator's closure (transformers' wrapper skips its cache under ``torch.compile``)."""
    function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
    for _ in range(4):  # a few decorators deep
        if not callable(function):
            return
        if _is_cache(function):
            yield function
        for cell in getattr(function, "__closure__", None) or ():
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if _is_cache(content):
                yield content
        function = getattr(function, "__wrapped__", None)


def method_caches(model: torch.nn.Module) -> list[Any]:
    """The lru caches of the model's classes (their methods, up to ``nn.Module``) and of the
    modules that define them (module-level functions their ``forward`` may call)."""
    classes = frozenset(type(module) for module in model.modules())
    known = _FOUND.get(classes)
    if known is None:
        known = _FOUND[classes] = _find(classes)
    return known


# The classes of a model -> their caches: a class's methods are set when it is defined, so they
# are looked for once per set of classes (a few ms for a large transformers module's globals).
_FOUND: dict[frozenset[type], list[Any]] = {}


def _find(classes: frozenset[type]) -> list[Any]:
    found: dict[int, Any] = {}
    namespaces: dict[int, dict[str, Any]] = {}
    for cls in classes:
        for klass in cls.__mro__:
            if klass is torch.nn.Module or klass is object:
                break
            namespaces[id(klass)] = dict(vars(klass))
            module = sys.modules.get(klass.__module__)
            if module is not None and not klass.__module__.startswith("torch."):
                namespaces[id(module)] = vars(module)
    for namespace in namespaces.values():
        for value in list(namespace.values()):
            if isinstance(value, type):
                continue
            for cache in _caches_in(value):
                found[id(cache)] = cache
    return list(found.values())


@contextlib.contextmanager
def cleared_after(caches: list[Any]) -> Iterator[None]:
    """Clear, when the block ends (also when it raises), each cache that it added entries to."""
    misses = [_misses(cache) for cache in caches]
    try:
        yield
    finally:
        for cache, before in zip(caches, misses):
            if _misses(cache) != before:
                cache.cache_clear()


def _misses(cache: Any) -> int | None:
    try:
        return cache.cache_info().misses
    except Exception:
        return None
