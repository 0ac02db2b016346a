"""``measure()``: one step of a model run on fake tensors, priced op by op, per module.

The model's parameters and buffers are swapped, for the duration of one call, for fake copies
(``torch.func.functional_call``): no arithmetic is done, no memory is taken, and the model's own
tensors, ``.grad`` and running statistics are never written. Where fake execution cannot run a
model (data-dependent control flow, an op with no fake kernel), the step is run for real on copies
of the buffers, and ``ModelStats.execution`` says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import fields, is_dataclass
from typing import Any, Callable, Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._pytree import tree_flatten, tree_map_only

from .errors import MeasureError
from .inputs import call_arguments
from .stats import LayerStats, ModelStats
from .tracking import OpCounter

MODES = ("inference", "training")


def measure(
    model: torch.nn.Module,
    inputs: Any = None,
    *,
    input_size: Any = None,
    dtype: torch.dtype | None = None,
    kwargs: dict[str, Any] | None = None,
    mode: str = "inference",
    device: str | torch.device | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
) -> ModelStats:
    """Measure one ``forward`` call of ``model`` (and, with ``mode="training"``, its backward and
    optimizer step) without changing the model.

    ``inputs`` is a tensor, a tuple of positional arguments or a dict of keyword arguments;
    ``kwargs`` adds keyword arguments; ``input_size`` builds random tensors of those shapes on the
    model's device (zeros for an integer ``dtype``). ``inference`` runs the model in eval mode
    under ``torch.no_grad()``; ``training`` runs it in train mode and back-propagates
    ``loss_fn(output)`` (default: the sum of every output tensor). The model's train/eval flags
    are put back afterwards.
    """
    if not isinstance(model, torch.nn.Module):
        raise MeasureError(
            f"measure() takes a torch.nn.Module, found {type(model).__module__}.{type(model).__qualname__}"
        )
    if mode not in MODES:
        raise MeasureError(f"mode must be one of {', '.join(map(repr, MODES))}, found {mode!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise MeasureError(f"dtype must be a torch.dtype such as torch.float16, found {dtype!r}")
    args, keywords = call_arguments(model, inputs, input_size, dtype, kwargs)
    tensors = _TensorInventory(model)
    step = _Step(model, args, keywords, mode, loss_fn, optimizer)

    notes: list[str] = []
    name = type(model).__name__
    try:
        counter = step.run_fake(tensors)
        execution = "fake"
    except MeasureError:
        raise
    except Exception as fake_error:  # noqa: BLE001 - fake execution failing is retried for real
        cause = fake_error.error if isinstance(fake_error, _ForwardError) else fake_error
        if tensors.on_meta:
            raise MeasureError(
                f"{name}.forward raised {type(cause).__name__} on fake tensors: {_first_line(cause)} "
                "(its weights are on the meta device, so it cannot be run for real instead)"
            ) from cause
        try:
            counter = step.run_real(tensors)
        except MeasureError:
            raise
        except _ForwardError as real_error:
            raise MeasureError(
                f"{name}.forward raised {type(real_error.error).__name__}: {_first_line(real_error.error)}"
            ) from real_error.error
        except Exception as real_error:
            raise MeasureError(
                f"measuring {name} failed: {type(real_error).__name__}: {_first_line(real_error)}"
            ) from real_error
        execution = "real"
        notes.append(
            f"fake execution failed ({type(cause).__name__}: {_first_line(cause)}); "
            "measured with a real run on copies of the buffers"
        )
    return tensors.stats(model, counter, mode=mode, execution=execution, notes=notes)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""


class _TensorInventory:
    """The model's unique parameters and buffers, each under its first (canonical) name."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = dict(model.named_parameters(remove_duplicate=True))
        self.buffers = dict(model.named_buffers(remove_duplicate=True))
        self.all_params = list(model.named_parameters(remove_duplicate=False))
        self.all_buffers = list(model.named_buffers(remove_duplicate=False))
        self.on_meta = any(t.is_meta for t in (*self.params.values(), *self.buffers.values()))

    def shared_groups(self) -> list[list[str]]:
        names_by_tensor: dict[int, list[str]] = {}
        for name, tensor in self.all_params:
            names_by_tensor.setdefault(id(tensor), []).append(name)
        return [names for names in names_by_tensor.values() if len(names) > 1]

    def substitute(self, convert: Callable[[torch.Tensor], torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[int, str]]:
        """Every name (tied ones included) mapped to a converted tensor, converted once per
        unique tensor; and the converted parameters' ids mapped to their canonical names."""
        converted: dict[int, torch.Tensor] = {}
        canonical = {id(t): name for name, t in self.params.items()}
        state: dict[str, torch.Tensor] = {}
        read_names: dict[int, str] = {}
        for name, tensor in [*self.all_params, *self.all_buffers]:
            if id(tensor) not in converted:
                converted[id(tensor)] = convert(tensor)
                if id(tensor) in canonical:
                    read_names[id(converted[id(tensor)])] = canonical[id(tensor)]
            state[name] = converted[id(tensor)]
        return state, read_names

    def stats(
        self, model: torch.nn.Module, counter: OpCounter, *, mode: str, execution: str, notes: list[str]
    ) -> ModelStats:
        layers = {
            name: LayerStats(type=type(module).__name__, calls=counter.calls.get(name, 0))
            for name, module in model.named_modules(remove_duplicate=True)
        }
        layers[""].calls = max(layers[""].calls, 1)
        for name, tensor in [*self.params.items(), *self.buffers.items()]:
            is_param = name in self.params
            for layer in _ancestors(layers, name):
                layer.bytes += tensor_bytes(tensor)
                if is_param:
                    layer.params += tensor.numel()
        for name in counter.macs.keys() | counter.flops.keys():
            for layer in _ancestors(layers, name + ".") if name else [layers[""]]:
                layer.macs += counter.macs.get(name, 0)
                layer.flops += counter.flops.get(name, 0)
        params = sum(t.numel() for t in self.params.values())
        trainable = sum(t.numel() for t in self.params.values() if t.requires_grad)
        return ModelStats(
            params=params,
            trainable_params=trainable,
            frozen_params=params - trainable,
            buffer_elements=sum(t.numel() for t in self.buffers.values()),
            bytes=layers[""].bytes,
            macs=layers[""].macs,
            flops=layers[""].flops,
            unused_params=[name for name in self.params if name not in counter.params_read],
            shared_params=self.shared_groups(),
            uncounted_ops=dict(sorted(counter.uncounted.items())),
            layers=layers,
            mode=mode,
            execution=execution,
            notes=notes,
            model_type=type(model).__name__,
        )


def _ancestors(layers: dict[str, LayerStats], name: str) -> Iterator[LayerStats]:
    """The layers that contain ``name`` (a tensor's or, with a trailing dot, a module's)."""
    parts = name.split(".")
    for end in range(len(parts)):
        layer = layers.get(".".join(parts[:end]))
        if layer is not None:
            yield layer


_SUB_BYTE_BITS = {getattr(torch, f"{kind}{bits}"): bits for kind in ("uint", "int") for bits in range(1, 8) if hasattr(torch, f"{kind}{bits}")}


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Storage a tensor needs at its dtype: packed and sub-byte dtypes by their real width."""
    bits = _SUB_BYTE_BITS.get(tensor.dtype)
    if bits is not None:
        return (tensor.numel() * bits + 7) // 8
    return tensor.numel() * tensor.element_size()


class _Step:
    """One forward (and for training, backward and optimizer step) of the model."""

    def __init__(
        self,
        model: torch.nn.Module,
        args: tuple[Any, ...],
        keywords: dict[str, Any],
        mode: str,
        loss_fn: Callable[[Any], torch.Tensor] | None,
        optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None,
    ) -> None:
        self.model = model
        self.args = args
        self.keywords = keywords
        self.mode = mode
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.module_names = {id(module): name for name, module in model.named_modules()}

    def run_fake(self, tensors: _TensorInventory) -> OpCounter:
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)

        def to_fake(tensor: torch.Tensor) -> torch.Tensor:
            return fake_mode.from_tensor(tensor, static_shapes=True)

        state, read_names = tensors.substitute(to_fake)
        args, keywords = tree_map_only(torch.Tensor, to_fake, (self.args, self.keywords))
        with fake_mode:
            return self._run(state, read_names, args, keywords)

    def run_real(self, tensors: _TensorInventory) -> OpCounter:
        training = self.mode == "training"

        def to_private(tensor: torch.Tensor) -> torch.Tensor:
            # Buffers (running statistics, caches) are written by forward: give it copies.
            if isinstance(tensor, torch.nn.Parameter):
                if training:
                    return tensor.detach().clone().requires_grad_(tensor.requires_grad)
                return tensor
            return tensor.detach().clone()

        state, read_names = tensors.substitute(to_private)
        return self._run(state, read_names, self.args, self.keywords)

    def _run(
        self, state: dict[str, torch.Tensor], read_names: dict[int, str], args: Any, keywords: Any
    ) -> OpCounter:
        counter = OpCounter(self.module_names, read_names)
        with _train_flags(self.model, self.mode == "training"), counter.watching():
            if self.mode == "inference":
                with torch.no_grad():
                    self._forward(state, args, keywords)
                return counter
            with torch.enable_grad():
                output = self._forward(state, args, keywords)
                counter.counting = False
                self._backward(output, state)
        return counter

    def _forward(self, state: dict[str, torch.Tensor], args: Any, keywords: Any) -> Any:
        try:
            return functional_call(self.model, state, tuple(args), dict(keywords), tie_weights=True, strict=False)
        except MeasureError:
            raise
        except Exception as error:
            raise _ForwardError(error) from error

    def _backward(self, output: Any, state: dict[str, torch.Tensor]) -> None:
        loss = self.loss_fn(output) if self.loss_fn is not None else default_loss(output)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise MeasureError(f"loss_fn must return a scalar tensor, found {_describe_output(loss)}")
        if not loss.requires_grad:
            raise MeasureError("the loss does not depend on any trainable parameter: nothing to back-propagate")
        loss.backward()
        if self.optimizer is not None:
            trainable = list({id(t): t for t in state.values() if t.requires_grad}.values())
            opt = self.optimizer(trainable)
            opt.step()


class _ForwardError(Exception):
    """Wraps an exception raised by the model's forward so it can be told from ours."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def default_loss(output: Any) -> torch.Tensor:
    """The sum of every floating-point tensor in the output (dicts, tuples, dataclasses,
    Hugging Face ``ModelOutput`` included)."""
    tensors = [t for t in _output_tensors(output) if t.is_floating_point() and t.requires_grad]
    if not tensors:
        raise MeasureError(
            f"mode='training' needs a loss: forward returned {_describe_output(output)}, with no "
            "floating-point tensor that requires grad; pass loss_fn=..."
        )
    return sum(t.sum() for t in tensors)  # type: ignore[return-value]


def _output_tensors(output: Any) -> list[torch.Tensor]:
    if is_dataclass(output) and not isinstance(output, type):
        return [t for f in fields(output) for t in _output_tensors(getattr(output, f.name))]
    leaves, _ = tree_flatten(output)
    found: list[torch.Tensor] = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            found.append(leaf)
        elif is_dataclass(leaf) and not isinstance(leaf, type):
            found.extend(_output_tensors(leaf))
    return found


def _describe_output(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


@contextlib.contextmanager
def _train_flags(model: torch.nn.Module, training: bool) -> Iterator[None]:
    saved = [(module, module.training) for module in model.modules()]
    try:
        model.train(training)
        yield
    finally:
        for module, flag in saved:
            module.training = flag
