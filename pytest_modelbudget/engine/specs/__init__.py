"""Models named by a spec instead of a factory: ``torchvision:NAME``, ``timm:NAME`` and
``hf:PATH_OR_TYPE``, each built with random weights (on the meta device where asked) and with
default inputs, so that ``python -m pytest_modelbudget torchvision:resnet50`` needs no code.

- ``hf.py``: transformers configs, and default inputs read from them.
- ``vision.py``: torchvision's and timm's builders, at their input size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...factories import FactoryError, is_exported_path, is_model_spec, load_callable

__all__ = ["BuiltModel", "build", "build_model_spec", "is_model_spec"]


@dataclass(frozen=True)
class BuiltModel:
    #: An nn.Module, or the ExportedProgram a .pt2 file holds (measure() takes either).
    model: Any
    #: What the spec's model is called with unless the caller gives inputs: a tensor (one
    #: positional argument) or a dict of keyword arguments.
    inputs: Any


def built_on(meta: bool) -> Any:
    """Where a builder's tensors go: the meta device, or wherever they would anyway."""
    return torch.device("meta") if meta else contextlib.nullcontext()


def build_model_spec(spec: str, kwargs: dict[str, Any] | None = None, *, meta: bool | None = None) -> BuiltModel:
    """Build the model a spec names. ``kwargs`` go to the builder (torchvision, timm) or override
    the config's fields (hf). ``meta`` defaults to the meta device, except for models whose
    forward depends on values (torchvision's detectors), which are built on the CPU."""
    kind, _, name = spec.partition(":")
    if not is_model_spec(spec):
        raise FactoryError(f"{spec!r}: expected torchvision:NAME, timm:NAME or hf:PATH_OR_TYPE")
    if kind == "hf":
        from .hf import build_hf

        return build_hf(name, kwargs or {}, meta=meta is not False)
    from .vision import build_timm, build_torchvision

    return (build_torchvision if kind == "torchvision" else build_timm)(name, kwargs or {}, meta=meta)


def build(
    factory: str, kwargs: dict[str, Any] | None = None, *, meta: bool | None = None, base: Path | None = None
) -> BuiltModel:
    """The model a factory (``"package.module:function"``, called with ``kwargs``) or a model spec
    names. ``meta`` defaults to the meta device for specs (their weights are random anyway) and to
    the factory's own device for factories. Raises ``FactoryError`` for a name that resolves to
    nothing; whatever the factory itself raises goes through. A ``.pt2`` file (``torch.export.save``;
    relative to ``base``, else the working directory) is its ExportedProgram, with its example inputs."""
    if is_exported_path(factory):
        return _exported_program(Path(factory) if base is None else base / factory, kwargs)
    if is_model_spec(factory):
        return build_model_spec(factory, kwargs, meta=meta)
    function = load_callable(factory)
    with built_on(bool(meta)):
        model = function(**(kwargs or {}))
    return BuiltModel(model, None)


def _exported_program(path: Path, kwargs: dict[str, Any] | None) -> BuiltModel:
    if kwargs:
        raise FactoryError(f"{path}: an exported program takes no factory arguments, found {sorted(kwargs)}")
    if not path.is_file():
        raise FactoryError(f"{path}: no such file; expected a program saved by torch.export.save")
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise FactoryError(
            f"{path}: not a program torch.export.load reads ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return BuiltModel(program, None)
