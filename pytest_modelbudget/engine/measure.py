"""``measure()``: one step of a model run on fake tensors, priced op by op, per module.

The model's parameters and buffers are swapped, for the duration of one call, for fake copies
(``torch.func.functional_call``): no arithmetic is done, no memory is taken, and the model's own
tensors, ``.grad`` and running statistics are never written. Where fake execution cannot run a
model (data-dependent control flow, an op with no fake kernel), the step is run for real on copies
of the buffers, and ``ModelStats.execution`` says so.

The same run estimates peak memory (``memory.py``), making the choices a CUDA device would make
(``simulation.py``); with CUDA available and the model or ``device`` on it, the step is also run
once on the device for the exact figure.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._pytree import tree_flatten, tree_map_only

from ..errors import MeasureError
from .inputs import call_arguments
from .memory import CUDA_BLOCK, MemoryLedger, allocator_size, deterministic_frees
from .simulation import CudaAttention, use_foreach
from ..stats import LayerStats, ModelStats
from .tracking import OpCounter

MODES = ("inference", "training")
AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


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
    autocast: torch.dtype | None = None,
) -> ModelStats:
    """Measure one ``forward`` call of ``model`` (and, with ``mode="training"``, its backward and
    optimizer step) without changing the model.

    ``inputs`` is a tensor, a tuple of positional arguments or a dict of keyword arguments;
    ``kwargs`` adds keyword arguments; ``input_size`` builds random tensors of those shapes on the
    model's device (zeros for an integer ``dtype``). ``inference`` runs the model in eval mode
    under ``torch.no_grad()``; ``training`` runs it in train mode and back-propagates
    ``loss_fn(output)`` (default: the sum of every output tensor), then, given ``optimizer`` (a
    callable taking the list of trainable tensors), takes one optimizer step. The model's
    train/eval flags are put back afterwards.

    ``peak_memory`` is measured on CUDA when it is available and the model or ``device`` is on
    it; otherwise it is estimated for ``device`` (default ``"cuda"``; ``"cpu"`` estimates without
    the CUDA allocator's rounding and kernel choices). ``autocast`` runs the step under
    ``torch.autocast`` to that dtype.
    """
    if not isinstance(model, torch.nn.Module):
        raise MeasureError(
            f"measure() takes a torch.nn.Module, found {type(model).__module__}.{type(model).__qualname__}"
        )
    if mode not in MODES:
        raise MeasureError(f"mode must be one of {', '.join(map(repr, MODES))}, found {mode!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise MeasureError(f"dtype must be a torch.dtype such as torch.float16, found {dtype!r}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise MeasureError(f"autocast must be torch.float16 or torch.bfloat16, found {autocast!r}")
    args, keywords = call_arguments(model, inputs, input_size, dtype, kwargs)
    tensors = _TensorInventory(model)
    target = _MemoryTarget.choose(device, tensors)
    step = _Step(model, args, keywords, mode, loss_fn, optimizer, autocast, target)

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
    memory = step.estimate(counter, execution)
    if target.exact is not None:
        memory.exact = step.run_cuda(tensors, target.exact)
    return tensors.stats(model, counter, memory, mode=mode, execution=execution, notes=notes)


@dataclass(frozen=True)
class _MemoryTarget:
    """The device whose memory is estimated, and the CUDA device to measure on, if any."""

    simulated: str
    exact: torch.device | None = None
    unavailable: bool = False

    @property
    def block(self) -> int:
        return CUDA_BLOCK if self.simulated == "cuda" else 1

    @classmethod
    def choose(cls, device: Any, tensors: _TensorInventory) -> _MemoryTarget:
        if device is None:
            where = tensors.device
            if where.type == "cuda" and torch.cuda.is_available():
                return cls("cuda", where)
            return cls("cuda")
        try:
            where = torch.device(device)
        except (RuntimeError, TypeError):
            where = None
        if where is None or where.type not in ("cpu", "cuda"):
            raise MeasureError(f"device must be 'cuda', 'cuda:N' or 'cpu', found {device!r}")
        if where.type == "cpu":
            return cls("cpu")
        if torch.cuda.is_available() and not tensors.on_meta:
            return cls("cuda", where if where.index is not None else torch.device("cuda", torch.cuda.current_device()))
        return cls("cuda", unavailable=True)


@dataclass
class _Memory:
    """Peak memory of the step: the estimate, per module too, and the CUDA figure if measured."""

    estimate: int
    layers: dict[str, int]
    approximations: list[str] = field(default_factory=list)
    exact: int | None = None


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
        first = next(iter((*self.params.values(), *self.buffers.values())), None)
        self.device = first.device if first is not None else torch.device("cpu")

    def allocated_bytes(self, block: int) -> int:
        """What the model's own tensors take from an allocator rounding to ``block``: one
        allocation per unique storage."""
        storages = {}
        for tensor in (*self.params.values(), *self.buffers.values()):
            storage = tensor.untyped_storage()
            storages[id(storage)] = storage.nbytes()
        return sum(allocator_size(nbytes, block) for nbytes in storages.values())

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
        self,
        model: torch.nn.Module,
        counter: OpCounter,
        memory: _Memory,
        *,
        mode: str,
        execution: str,
        notes: list[str],
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
        for name, peak in memory.layers.items():
            # A container that never ran itself (ModuleList) peaks where its busiest child did.
            for layer in _ancestors(layers, name + ".") if name else [layers[""]]:
                layer.peak_memory = max(layer.peak_memory or 0, peak)
        layers[""].peak_memory = memory.exact if memory.exact is not None else memory.estimate
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
            peak_memory=layers[""].peak_memory,
            peak_memory_source="estimate" if memory.exact is None else "cuda",
            peak_memory_estimate=memory.estimate,
            peak_memory_approximations=memory.approximations if memory.exact is None else [],
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
        autocast: torch.dtype | None,
        target: _MemoryTarget,
    ) -> None:
        self.model = model
        self.args = args
        self.keywords = keywords
        self.mode = mode
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.autocast = autocast
        self.target = target
        self.module_names = {id(module): name for name, module in model.named_modules()}
        self._attention: CudaAttention | None = None
        self._foreach = False
        self._estimating = False

    def run_fake(self, tensors: _TensorInventory) -> OpCounter:
        # Autocast has no meta dispatch key: under autocast, meta tensors become fake CPU ones.
        meta_as_cpu = tensors.on_meta and self.autocast is not None
        if tensors.on_meta and not meta_as_cpu:
            try:
                return self._run_meta(tensors)
            except MeasureError:
                raise
            except Exception:  # noqa: BLE001 - e.g. CPU tensors made in forward: fake tensors cope
                pass
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)

        def to_fake(tensor: torch.Tensor) -> torch.Tensor:
            if meta_as_cpu and tensor.is_meta:
                fake = fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, tensor, torch.device("cpu"))
                return fake.requires_grad_(tensor.requires_grad) if tensor.requires_grad else fake
            return fake_mode.from_tensor(tensor, static_shapes=True)

        state, read_names = tensors.substitute(to_fake)
        args, keywords = tree_map_only(torch.Tensor, to_fake, (self.args, self.keywords))
        with fake_mode:
            return self._estimate_run(state, read_names, args, keywords, shapes_only=True)

    def _run_meta(self, tensors: _TensorInventory) -> OpCounter:
        """A model on the meta device is already shape-only: run it as it is, on aliases of its
        tensors (so that gradients do not land on it), without the cost of fake tensors."""

        def alias(tensor: torch.Tensor) -> torch.Tensor:
            if isinstance(tensor, torch.nn.Parameter):
                return tensor.detach().requires_grad_(tensor.requires_grad)
            return tensor.detach()

        state, read_names = tensors.substitute(alias)
        args, keywords = tree_map_only(
            torch.Tensor, lambda t: t if t.is_meta else t.to("meta"), (self.args, self.keywords)
        )
        return self._estimate_run(state, read_names, args, keywords, shapes_only=True)

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
        return self._estimate_run(state, read_names, self.args, self.keywords, shapes_only=False)

    def run_cuda(self, tensors: _TensorInventory, device: torch.device) -> int:
        """The step on ``device`` for real: the allocator's peak above what was allocated before
        it, plus the model's own tensors (``docs/MEMORY.md``)."""
        cuda = torch.cuda
        copy_params = self.mode == "training" and self.optimizer is not None

        def to_device(tensor: torch.Tensor) -> torch.Tensor:
            if isinstance(tensor, torch.nn.Parameter):
                if tensor.device == device and not copy_params:
                    # A new leaf on the same storage: no memory, and gradients land on it, not
                    # on the model's parameter.
                    return tensor.detach().requires_grad_(tensor.requires_grad)
                return tensor.detach().to(device, copy=True).requires_grad_(tensor.requires_grad)
            return tensor.detach().to(device, copy=True)

        state, read_names = tensors.substitute(to_device)
        cuda.synchronize(device)
        before = cuda.memory_allocated(device)
        cuda.reset_peak_memory_stats(device)
        args, keywords = tree_map_only(
            torch.Tensor, lambda t: t.to(device, copy=True), (self.args, self.keywords)
        )
        try:
            self._run(state, read_names, args, keywords, None)
        except _ForwardError as error:
            raise MeasureError(
                f"{type(self.model).__name__}.forward raised {type(error.error).__name__} on {device}: "
                f"{_first_line(error.error)}"
            ) from error.error
        cuda.synchronize(device)
        peak = cuda.max_memory_allocated(device) - before
        del state, args, keywords
        return peak + tensors.allocated_bytes(CUDA_BLOCK)

    def estimate(self, counter: OpCounter, execution: str) -> _Memory:
        ledger = counter.ledger
        assert ledger is not None
        notes = [
            f"estimated for {self.target.simulated} from "
            + ("fake execution" if execution == "fake" else "a real CPU run")
        ]
        if self.target.unavailable:
            notes.append("CUDA was asked for but is not available (or the model is on meta): estimated")
        if self.target.block > 1:
            notes.append(f"allocations rounded up to {self.target.block} bytes, as the CUDA caching allocator does")
        if self._attention is not None:
            notes.extend(self._attention.approximations())
        if self._foreach:
            notes.append("optimizer run with foreach=True, its default on CUDA")
        if self.autocast is not None:
            notes.append(f"autocast to {str(self.autocast).removeprefix('torch.')} with the CPU autocast op lists")
        return _Memory(ledger.peak, dict(ledger.module_peaks), notes)

    def _estimate_run(
        self, state: dict[str, torch.Tensor], read_names: dict[int, str], args: Any, keywords: Any, shapes_only: bool
    ) -> OpCounter:
        """The step with its memory followed by a ledger. The fused attention kernels have shape
        functions everywhere but real kernels only on CUDA: CUDA's choice is made only when no
        real arithmetic is done."""
        self._attention = CudaAttention() if shapes_only and self.target.simulated == "cuda" else None
        with self._attention or contextlib.nullcontext():
            return self._run(state, read_names, args, keywords, MemoryLedger(self.target.block))

    def _autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.autocast)

    def _run(
        self,
        state: dict[str, torch.Tensor],
        read_names: dict[int, str],
        args: Any,
        keywords: Any,
        ledger: MemoryLedger | None,
    ) -> OpCounter:
        counter = OpCounter(self.module_names, read_names, ledger)
        self._estimating = ledger is not None
        autocast = self._autocast("cpu" if self._estimating else "cuda")
        with contextlib.ExitStack() as stack:
            stack.enter_context(_train_flags(self.model, self.mode == "training"))
            if ledger is not None:
                stack.enter_context(deterministic_frees())
                ledger.hold(state.values())
                ledger.hold(t for t in tree_flatten((args, keywords))[0] if isinstance(t, torch.Tensor))
                stack.enter_context(counter.watching())
            if self.mode == "inference":
                with torch.no_grad(), autocast:
                    self._forward(state, args, keywords)
                return counter
            with torch.enable_grad():
                with autocast:
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
            if self._estimating and self.target.simulated == "cuda":
                self._foreach = use_foreach(opt) or self._foreach
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
