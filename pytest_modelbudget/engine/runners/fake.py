"""The step on fake copies of the model's tensors (``FakeTensorMode``): shapes, dtypes and devices
only, no arithmetic and no memory."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_map_only

from ..inventory import TensorInventory
from ..step import Step, Watched


def run_fake(step: Step, tensors: TensorInventory) -> Watched:
    # Autocast has no meta dispatch key: under autocast, meta tensors become fake CPU ones.
    meta_as_cpu = tensors.on_meta and step.autocast is not None
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)

    def to_fake(tensor: torch.Tensor) -> torch.Tensor:
        if meta_as_cpu and tensor.is_meta:
            fake = fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, tensor, torch.device("cpu"))
            return fake.requires_grad_(tensor.requires_grad) if tensor.requires_grad else fake
        return fake_mode.from_tensor(tensor, static_shapes=True)

    state, read_names = tensors.substitute(to_fake)
    args, keywords = tree_map_only(torch.Tensor, to_fake, (step.args, step.keywords))
    with fake_mode:
        return step.watched(state, read_names, args, keywords, shapes_only=True)
