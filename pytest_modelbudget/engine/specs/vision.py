"""torchvision's and timm's model builders, by name, with an input at the model's own size."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any, cast

import torch

from ...factories import FactoryError
from . import BuiltModel, built_on


def build_torchvision(name: str, kwargs: dict[str, Any], *, meta: bool | None) -> BuiltModel:
    try:
        import torchvision
    except ImportError:
        raise FactoryError(f"torchvision:{name}: torchvision is not installed") from None
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        known = ", ".join(sorted(torchvision.models.list_models())[:8])
        raise FactoryError(f"torchvision:{name}: no such model builder (torchvision has {known}, ...)") from None
    weights = torchvision.models.get_model_weights(name)
    default = next(iter(weights), None) if weights is not None else None
    # Random weights only, never a download: detection and segmentation builders fetch a
    # pretrained backbone by default.
    accepted = inspect.signature(builder).parameters
    never_download = {key: None for key in ("weights", "weights_backbone") if key in accepted}
    if meta is None:
        # Detectors keep the boxes that score highest: their forward needs values, a real run.
        meta = name not in torchvision.models.list_models(module=torchvision.models.detection)
    try:
        with built_on(meta):
            model = builder(**{**never_download, **kwargs})
    except NotImplementedError:
        if not meta:
            raise
        # The builder computes its widths with tensors (RegNet): under the meta device those have
        # no values. Build on the CPU with each parameter and buffer moved to meta as it is
        # registered: no memory for the weights either way.
        with _registered_on_meta():
            model = builder(**{**never_download, **kwargs})
    shape = _input_shape(name, default)
    if isinstance(getattr(model, "image_size", None), int):  # a ViT built for another size than its weights'
        shape = (*shape[:-2], model.image_size, model.image_size)
    image = torch.randn(1, *shape)
    if name in torchvision.models.list_models(module=torchvision.models.optical_flow):
        return BuiltModel(model.eval(), (image, image.clone()))  # flow between two frames
    return BuiltModel(model.eval(), image)


@contextlib.contextmanager
def _registered_on_meta() -> Iterator[None]:
    register_parameter, register_buffer = torch.nn.Module.register_parameter, torch.nn.Module.register_buffer

    def parameter_on_meta(module: torch.nn.Module, name: str, param: Any) -> None:
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def buffer_on_meta(module: torch.nn.Module, name: str, tensor: Any, persistent: bool = True) -> None:
        register_buffer(module, name, tensor.to("meta") if tensor is not None else None, persistent)

    torch.nn.Module.register_parameter = parameter_on_meta  # type: ignore[method-assign, assignment]
    torch.nn.Module.register_buffer = buffer_on_meta  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        torch.nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def _input_shape(name: str, weights: Any) -> tuple[int, ...]:
    # The crop the published weights were evaluated at (224 for most, 299 for inception_v3, 112
    # for the video models, which take 16 frames); detection models resize inside themselves.
    crop = getattr(weights.transforms, "keywords", {}).get("crop_size", 224) if weights is not None else 224
    crop = crop[0] if isinstance(crop, (tuple, list)) else crop
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models.video):
        return (3, 16, crop, crop)
    return (3, crop, crop)


def build_timm(name: str, kwargs: dict[str, Any], *, meta: bool | None) -> BuiltModel:
    try:
        import timm

        known = timm.list_models()
    except (ImportError, AttributeError):  # AttributeError: a folder named timm on the path
        raise FactoryError(f"timm:{name}: timm is not installed (pip install timm)") from None
    if name not in known:
        raise FactoryError(f"timm:{name}: timm has no such model (see timm.list_models())")
    with built_on(meta is not False):
        model = timm.create_model(name, pretrained=False, **kwargs)
    size = cast(Any, model).pretrained_cfg.get("input_size", (3, 224, 224))
    return BuiltModel(model.eval(), torch.randn(1, *size))
