"""The step on fake copies of the model's tensors (``FakeTensorMode``): shapes, dtypes and devices
only, no arithmetic and no memory."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..inputs import RandomInput, is_size_table, map_inputs
from ..inventory import TensorInventory
from ..step import Step, Watched


def run_fake(step: Step, tensors: TensorInventory, *, meta_as_cpu: bool = False) -> Watched:
    """``meta_as_cpu``: a meta model's tensors become fake CPU tensors, for models that make CPU
    tensors in forward and mix them with their weights (DETR-style position tables), and for
    autocast, which has no meta dispatch key."""
    meta_as_cpu = tensors.on_meta and (meta_as_cpu or step.autocast is not None)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)

    def to_fake(tensor: torch.Tensor) -> torch.Tensor:
        if meta_as_cpu and tensor.is_meta:
            fake = fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, tensor, torch.device("cpu"))
            return fake.requires_grad_(tensor.requires_grad) if tensor.requires_grad else fake
        return fake_mode.from_tensor(tensor, static_shapes=True)

    def input_to_fake(tensor: torch.Tensor) -> torch.Tensor:
        if is_size_table(tensor):
            return tensor  # its values lay out the patches; the counter runs its ops for real
        # The inputs go where the weights are: CPU inputs of a meta model become meta.
        if tensors.on_meta and not meta_as_cpu and not tensor.is_meta:
            tensor = tensor.to("meta")
        return to_fake(tensor)

    def make_fake(spec: RandomInput) -> torch.Tensor:
        with fake_mode:
            return spec.make("cpu" if meta_as_cpu else None)

    stand_ins = tensors.stand_ins(step.model, to_fake)
    args, keywords = map_inputs((step.args, step.keywords), input_to_fake, make_fake)
    with fake_mode:
        return step.watched(stand_ins, args, keywords, shapes_only=True)
