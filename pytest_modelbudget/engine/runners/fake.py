"""The step on fake copies of the model's tensors (``FakeTensorMode``): shapes, dtypes and devices
only, no arithmetic and no memory."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from ..inputs import RandomInput, is_size_table, map_inputs
from ..inventory import TensorInventory
from ..memory import storage_key
from ..standins import own_tensors
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
        plain: torch.Tensor | None = _plain_fake(tensor, fake_mode) if not _in(tensor, shared) else None
        return plain if plain is not None else fake_mode.from_tensor(tensor, static_shapes=True)

    shared = _shared_storages(step.model)

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


def _plain_fake(tensor: torch.Tensor, fake_mode: FakeTensorMode) -> torch.Tensor | None:
    """A fake copy of a plain dense tensor that owns its whole storage, made directly: PyTorch's
    converter describes every tensor in full first (about 0.35 ms each, 0.4 s of a detector's 1,100
    weights). None for anything else (views, shared or offset storages, subclasses, quantized or
    sparse tensors), which the converter makes with its aliasing kept."""
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.layout != torch.strided:
        return None
    if tensor.is_quantized or tensor.is_conj() or tensor.is_neg() or tensor._base is not None:
        return None
    storage = tensor.untyped_storage()
    if (
        tensor.storage_offset() != 0
        or storage.nbytes() != tensor.numel() * tensor.element_size()
        or not tensor.is_contiguous()
    ):
        return None
    with torch._C._DisableTorchDispatch():
        meta = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")
    constant = None
    if tensor.numel() == 1 and tensor.device.type == "cpu":
        # A one-element weight keeps its value, as FakeTensorMode keeps a one-element tensor
        # made in forward: models read such scalars (D-FINE's ``up``, Mimi's ``.item()``) and
        # would otherwise need a whole real run. A copy: a write to it must not reach the model.
        with torch._C._DisableTorchDispatch():
            constant = tensor.detach().clone()
    fake = FakeTensor(fake_mode, meta, tensor.device, constant=constant, _is_param=type(tensor) is torch.nn.Parameter)
    return fake.requires_grad_(True) if tensor.requires_grad else fake


def _in(tensor: torch.Tensor, storages: set[int]) -> bool:
    key = storage_key(tensor)
    return key is None or key in storages  # no storage of its own: the converter's to make


def _shared_storages(model: torch.nn.Module) -> set[int]:
    """Storages that more than one of the model's tensors (parameters, buffers, plain tensor
    attributes) use: views into a flat buffer. Their tensors go through PyTorch's converter,
    which keeps them one storage."""
    seen: dict[int, int] = {}
    users: dict[int, int] = {}
    for module in model.modules():
        for tensor in own_tensors(module):
            if id(tensor) in seen or type(tensor) not in (torch.Tensor, torch.nn.Parameter):
                continue
            storage = storage_key(tensor)
            if storage is None:
                continue
            seen[id(tensor)] = storage
            users[storage] = users.get(storage, 0) + 1
    return {storage for storage, count in users.items() if count > 1}
