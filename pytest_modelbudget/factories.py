"""Resolving ``"package.module:function"`` strings (model factories, input factories), and telling
them from model specs (``torchvision:NAME``, ``timm:NAME``, ``hf:PATH_OR_TYPE``), which the engine
builds."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: A factory string starting with one of these names a model to build, not a callable to import.
MODEL_SPEC_PREFIXES = ("torchvision:", "timm:", "hf:")


def is_exported_path(text: str) -> bool:
    """A program saved by ``torch.export.save``: measured as its graph, with its example inputs."""
    return text.endswith(".pt2")


def is_model_spec(text: str) -> bool:
    return text.startswith(MODEL_SPEC_PREFIXES) and len(text) > text.index(":") + 1


class FactoryError(ValueError):
    """An import path that does not name a callable; the message says which part failed."""


def load_callable(path: str) -> Callable[..., Any]:
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise FactoryError(f'expected "package.module:function", found {path!r}')
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            # The project's own package, not on the path: pytest's `pytest` script (unlike
            # `python -m pytest`) does not put the working directory there.
            hint = (
                "; if it is this project's own, make it importable: pip install -e . , or "
                'pythonpath = ["."] in pytest\'s configuration'
            )
        raise FactoryError(f"cannot import module {module_name!r} of {path!r}: {exc}{hint}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise FactoryError(f"module {module_name!r} has no attribute {attribute!r} (from {path!r})") from None
    if not callable(target):
        raise FactoryError(f"{path!r} is a {type(target).__name__}, not a callable")
    return target
