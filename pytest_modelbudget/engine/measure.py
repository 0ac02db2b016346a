"""``measure()``: one step of a model run on fake tensors, priced op by op, per module.

The model's tensors (parameters, buffers, plain tensor attributes) are swapped, for the duration
of one call, for fake stand-ins (``standins.py``): no arithmetic is done, no memory is taken, and
the model's own tensors, ``.grad``, running statistics and attributes are never written. Where fake
execution cannot run a model (data-dependent control flow, an op with no fake kernel), the step is
run for real, never writing the model's own tensors (``runners/real.py``), and
``ModelStats.execution`` says so.

The same run estimates peak memory (``memory.py``), making the choices a CUDA device would make
(``simulation.py``); with CUDA available and the model or ``device`` on it, the step is also run
once on the device for the exact figure. How each run is set up lives in ``runners/``; this module
only checks the arguments, picks the runs and puts the result together.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch.nn.parameter import is_lazy

from ..errors import MeasureError
from ..gpus import GPUS, Gpu
from ..options import AUTOCAST, EXECUTION, MODE, OUTPUTS, STEP
from ..stats import ModelStats
from .assembly import EXPORTED_TYPES, assemble_stats
from .inputs import call_arguments, size_tables_unknown
from .inventory import TensorInventory
from .parallel import Parallel
from .runners import run_cuda, run_fake, run_meta, run_real, run_sharded
from .serving import (
    MOST_SEQUENCES,
    MOST_TOKENS,
    Serving,
    check_serving,
    context_limit,
    context_notes,
    largest_fitting,
    serving_arguments,
)
from .step import ForwardError, Step, Watched, first_line, raised_at
from .target import MemoryTarget
from .tracking import ValuesUnknown
from .wrappers import is_compiled, unwrap

#: A compiled model's peak memory is not estimated as inductor runs it: said, never implied.
COMPILED = (
    "the model is torch.compile'd: this is the eager step's peak memory; inductor fuses ops and keeps other "
    "activations for backward, so the compiled step's differs (usually less)"
)
AUTOCAST_DTYPES = tuple(getattr(torch, name) for name in AUTOCAST.choices)


def _exported(program: Any, inputs: Any, input_size: Any, forward_kwargs: Any) -> tuple[torch.nn.Module, Any, Any]:
    """An ExportedProgram as a module to measure: its graph unflattened into the module tree it
    was exported from (per-module figures as the eager model's), its example inputs the default."""
    try:
        module = torch.export.unflatten(program)
    except Exception as exc:
        raise MeasureError(
            f"this ExportedProgram cannot be unflattened into its modules ({type(exc).__name__}: {first_line(exc)}): "
            "measure program.module() instead (figures for the whole graph, not per module)"
        ) from None
    # The unflattened modules are InterpreterModules: each layer's type is the one it was exported
    # from, as the graph's nn_module_stack records it ("torch.nn.modules.conv.Conv2d").
    types: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            types.setdefault(path, kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1])
    module.__dict__[EXPORTED_TYPES] = types
    if inputs is None and input_size is None and program.example_inputs is not None:
        args, keywords = program.example_inputs
        inputs = tuple(args)
        forward_kwargs = {**keywords, **(forward_kwargs or {})} or None
    return module, inputs, forward_kwargs


def measure(
    model: torch.nn.Module | torch.export.ExportedProgram,
    inputs: Any = None,
    *,
    input_size: Any = None,
    dtype: torch.dtype | None = None,
    kwargs: dict[str, Any] | None = None,
    forward_kwargs: dict[str, Any] | None = None,
    mode: str = "inference",
    device: str | torch.device | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    autocast: torch.dtype | None = None,
    outputs: str = "kept",
    parallel: Parallel | dict[str, Any] | None = None,
    gpu: str | Gpu | None = None,
    step: str | None = None,
    accumulation_steps: int = 1,
    set_to_none: bool = True,
    context: int | None = None,
    batch: int | None = None,
    execution: str = "auto",
) -> ModelStats:
    """Measure one ``forward`` call of ``model`` (and, with ``mode="training"``, its backward and
    optimizer step) without changing the model. ``model`` may be a ``torch.export`` program: its
    graph is measured, unflattened into the modules it was exported from, its example inputs the
    default.

    ``inputs`` is a tensor, a tuple of positional arguments, a dict of keyword arguments or any
    other value (a list of images included) as the one argument; ``forward_kwargs`` adds keyword
    arguments (``kwargs`` is its old name, still read with a DeprecationWarning); ``input_size`` stands for random tensors of those shapes on the model's device
    (zeros for an integer ``dtype``), made only if a real run needs them. ``inference`` runs the model in eval mode
    under ``torch.no_grad()``; ``training`` runs it in train mode and back-propagates
    ``loss_fn(output)`` (default: the sum of every output tensor), then, given ``optimizer`` (a
    callable taking the list of trainable tensors), takes one optimizer step. The model's
    train/eval flags are put back afterwards.

    ``peak_memory`` is measured on CUDA when it is available and the model or ``device`` is on
    it; otherwise it is estimated for ``device`` (default ``"cuda"``; ``"cpu"`` estimates without
    the CUDA allocator's rounding and kernel choices). ``autocast`` runs the step under
    ``torch.autocast`` to that dtype. In training, ``outputs="kept"`` (default) holds the
    forward's outputs through backward, as a loop writing ``logits, loss = model(x, y)`` does;
    ``"released"`` keeps only the loss, as ``model(x, y)[1].backward()`` does.

    ``execution="auto"`` runs the step on fake tensors and, where the model needs values they do
    not have (data-dependent control flow), runs it for real on the CPU instead; ``"fake"`` never
    runs it for real (a model that needs values is an error); ``"real"`` goes straight to the real
    run, for a data-dependent model whose fake attempt only costs time. ``stats.execution`` says
    which ran.

    ``parallel`` (a :class:`Parallel` or a dict such as ``{"strategy": "fsdp", "world_size":
    8}``) estimates ``peak_memory`` for one rank of a sharded step: FSDP2 shards a fake copy of
    the model under a fake process group, and the inputs are the rank's own. The other figures
    stay the model's (params) and the rank's step (macs, flops); ``peak_memory_split`` says what
    the rank held at its peak.

    ``step`` (training with an optimizer): the step whose peak memory is the figure, ``"first"``
    (the optimizer's state is made during it) or ``"steady"`` (every later step: the state alive
    throughout, the last step's outputs until the forward returns); by default the larger of the
    two, since a budget must hold on every step. ``peak_memory_steps`` gives both.

    ``accumulation_steps`` (training): forward/backward micro-steps on ``inputs`` before each
    optimizer step, their gradients adding up; ``set_to_none=False``: the optimizer's ``zero_grad``
    zeroes the gradients rather than freeing them, so they stay allocated through the next step.

    ``gpu`` (a name in ``pytest_modelbudget.gpus.GPUS`` such as ``"h100-sxm"``, or a ``Gpu``)
    adds ``roofline_time``: the forward's ops at that GPU's peak and bandwidth, a lower bound.

    Serving: ``mode="prefill"`` runs the forward over ``batch`` sequences of ``context`` tokens,
    filling the model's cache; ``mode="decode"`` runs one new token per sequence on a cache that
    already holds ``context`` tokens, built by the model's own prefill on fake tensors. ``kv_cache``
    is the bytes that cache holds (per layer too: the module whose ops made it); ``peak_memory``
    holds the weights, the cache and the step. A transformers generative model needs no inputs;
    any other model takes ``inputs`` as a function of ``(batch, context)`` returning the step's
    inputs (for a decode step its cache included).
    """
    __tracebackhide__ = True  # in a pytest failure, the test's call and our message: not our frames
    exported_notes: list[str] = []
    if isinstance(model, torch.export.ExportedProgram):
        model, inputs, forward_kwargs = _exported(model, inputs, input_size, forward_kwargs)
        exported_notes.append(
            "an ExportedProgram: its graph, unflattened into the modules it was exported from (torch.export.unflatten)"
        )
    if not isinstance(model, torch.nn.Module):
        raise MeasureError(
            f"measure() takes a torch.nn.Module, found {type(model).__module__}.{type(model).__qualname__}"
        )
    if mode not in MODE.choices:
        raise MeasureError(f"mode must be one of {', '.join(map(repr, MODE.choices))}, found {mode!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise MeasureError(f"dtype must be a torch.dtype such as torch.float16, found {dtype!r}")
    if outputs not in OUTPUTS.choices:
        raise MeasureError(f"outputs must be one of {', '.join(map(repr, OUTPUTS.choices))}, found {outputs!r}")
    if execution not in EXECUTION.choices:
        raise MeasureError(f"execution must be one of {', '.join(map(repr, EXECUTION.choices))}, found {execution!r}")
    if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise MeasureError(
            f"accumulation_steps must be a whole number of micro-steps, 1 or more, found {accumulation_steps!r}"
        )
    if not isinstance(set_to_none, bool):
        raise MeasureError(f"set_to_none must be True or False, found {set_to_none!r}")
    serving = check_serving(mode, context, batch)
    if serving is not None and (optimizer is not None or loss_fn is not None):
        raise MeasureError(f"loss_fn and optimizer apply to mode='training', not mode={mode!r}")
    if step is not None and step not in STEP.choices:
        raise MeasureError(f"step must be one of {', '.join(map(repr, STEP.choices))}, found {step!r}")
    if step is not None and (mode != "training" or optimizer is None):
        raise MeasureError(
            f"step={step!r} chooses between an optimizer's first and steady training steps: pass mode='training' "
            "and an optimizer"
        )
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise MeasureError(f"autocast must be torch.float16 or torch.bfloat16, found {autocast!r}")
    if kwargs is not None:
        if forward_kwargs is not None:
            raise MeasureError("both kwargs= and forward_kwargs=: pass forward_kwargs= only (kwargs is its old name)")
        warnings.warn(
            "measure(kwargs=...) is now forward_kwargs=...: forward's keyword arguments, not the model factory's",
            DeprecationWarning,
            stacklevel=2,
        )
        forward_kwargs = kwargs
    sharding = Parallel.from_value(parallel) if parallel is not None else None
    named_gpu = _gpu(gpu)
    compiled = is_compiled(model)
    model, notes = unwrap(model)
    notes = [*exported_notes, *notes]
    lazy = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if is_lazy(tensor)]
    if lazy:
        raise MeasureError(
            f"{type(model).__name__} has parameters that are not materialised yet ({', '.join(lazy[:3])}"
            f"{', ...' if len(lazy) > 3 else ''}: a lazy module such as nn.LazyLinear): run one forward with "
            "real inputs first, then measure it"
        )
    user_inputs = inputs
    if serving is not None:
        if input_size is not None:
            raise MeasureError(f"mode={mode!r} makes its inputs from batch= and context=: drop input_size")
        inputs = serving_arguments(model, serving, inputs)
        notes.extend(context_notes(model, serving))
    args, keywords = call_arguments(model, inputs, input_size, dtype, forward_kwargs)
    tensors = TensorInventory(model)
    target = MemoryTarget.choose(device, tensors)
    run = Step(model, args, keywords, mode, loss_fn, optimizer, autocast, target, outputs)
    run.gpu = named_gpu
    run.step_kind = step
    run.accumulation_steps = accumulation_steps
    run.set_to_none = set_to_none
    run.serving = serving

    name = type(model).__name__
    asked = execution
    if asked == "real" and tensors.on_meta:
        raise MeasureError(
            f"execution='real' runs {name} for real, and its weights are on the meta device (no values): build it on "
            "the CPU, or let it run on fake tensors (execution='auto')"
        )
    cause: BaseException | None = None  # why the fake run could not measure it
    if asked != "real":
        try:
            with _quiet_fake_tensor_logs():
                watched = _run_shapes_only(run, tensors)
            execution = "fake"
        except MeasureError:
            raise
        except Exception as fake_error:
            cause = fake_error.error if isinstance(fake_error, ForwardError) else fake_error
        if cause is not None and asked == "fake":
            raise MeasureError(
                f"{name}.forward raised {type(cause).__name__} on fake tensors (shapes, no values): "
                f"{first_line(cause)}{_at(cause)}; execution='fake' never falls back to a real run (execution='auto' "
                "does, execution='real' goes straight to it)",
                cause,
            ) from None
        if cause is not None and tensors.on_meta:
            raise MeasureError(
                f"{name}.forward raised {type(cause).__name__} on meta tensors (shapes, no values): "
                f"{first_line(cause)}{_at(cause)} (its weights are on the meta device, so it cannot be run for real "
                "instead; build it on the CPU to measure it with a real run)",
                cause,
            ) from None
    if asked == "real" or cause is not None:
        try:
            watched = run_real(run, tensors)
        except MeasureError:
            raise
        except ForwardError as real_error:
            # Once, at the model's own line: the fake run's failure was the same error.
            error = real_error.error
            raise MeasureError(
                f"{name}.forward raised {type(error).__name__}: {first_line(error)}{_at(error)}", error
            ) from None
        except Exception as real_error:
            raise MeasureError(
                f"measuring {name} failed: {type(real_error).__name__}: {first_line(real_error)}"
            ) from real_error
        execution = "real"
        notes.append(
            f"fake execution failed ({type(cause).__name__}: {first_line(cause)}); "
            "measured with a real run that never writes the model's own tensors"
            if cause is not None
            else "execution='real': measured with a real run that never writes the model's own tensors"
        )
    if sharding is not None:
        if execution != "fake":
            raise MeasureError(
                f"measure(parallel=...) needs a fake run of {name}, and its fake run failed: {notes[-1]}"
            )
        return _sharded_stats(model, run, tensors, watched, sharding, notes)
    memory = run.memory(watched, execution)
    if compiled:
        memory.approximations.append(COMPILED)
    if target.exact is not None:
        memory.exact = run_cuda(run, tensors, target.exact)
    stats = assemble_stats(tensors, model, watched.counter, memory, mode=mode, execution=execution, notes=notes)
    if serving is not None:
        stats.context, stats.batch = serving.context, serving.batch
        if serving.mode == "decode" and named_gpu is not None and named_gpu.memory:
            if target.exact is None:
                _search_capacity(stats, model, user_inputs, serving, named_gpu, device, dtype, forward_kwargs, autocast)
            else:
                stats.notes.append(
                    "max_batch and max_context are searched on estimates only (runs that might not fit): measure "
                    "a model on the CPU or the meta device for them"
                )
    return stats


def _search_capacity(
    stats: ModelStats,
    model: torch.nn.Module,
    inputs: Any,
    serving: Serving,
    gpu: Gpu,
    device: Any,
    dtype: Any,
    forward_kwargs: Any,
    autocast: Any,
) -> None:
    """The most sequences at this context, and the longest context at this batch, whose decode
    step's peak memory fits the GPU: each candidate a run of the model's own step."""
    assert gpu.memory is not None
    probe_gpu = replace(gpu, memory=None)  # the same GPU's choices, without a search of its own

    def peak(context: int, batch: int) -> int:
        probed = measure(
            model,
            inputs,
            mode="decode",
            context=context,
            batch=batch,
            device=device,
            dtype=dtype,
            forward_kwargs=forward_kwargs,
            autocast=autocast,
            gpu=probe_gpu,
        )
        assert probed.peak_memory is not None
        return probed.peak_memory

    stats.max_batch = largest_fitting(lambda batch: peak(serving.context, batch), gpu.memory, MOST_SEQUENCES)
    upper = context_limit(model)
    stats.max_context = largest_fitting(lambda context: peak(context, serving.batch), gpu.memory, upper)
    if stats.max_context == upper:
        stats.notes.append(
            f"max_context: the decode step fits {gpu.name} at every context searched, up to {upper:,} tokens"
            + (" (the model's max_position_embeddings)" if upper != MOST_TOKENS else "")
        )


def _at(error: BaseException) -> str:
    where = raised_at(error)
    return f" ({where})" if where else ""


def _gpu(gpu: str | Gpu | None) -> Gpu | None:
    if gpu is None or isinstance(gpu, Gpu):
        return gpu
    if isinstance(gpu, str) and gpu.lower() in GPUS:
        return GPUS[gpu.lower()]
    raise MeasureError(f"gpu must be one of {', '.join(GPUS)} (or a pytest_modelbudget.gpus.Gpu), found {gpu!r}")


def _sharded_stats(
    model: torch.nn.Module, step: Step, tensors: TensorInventory, watched: Watched, sharding: Parallel, notes: list[str]
) -> ModelStats:
    """Params and per-rank MACs from the single-device run (FSDP changes neither: each rank runs
    the whole model on its own batch); peak memory, per layer too, from the sharded rank."""
    with _quiet_fake_tensor_logs():
        try:
            rank, split = run_sharded(step, tensors, sharding)
        except MeasureError:
            raise
        except ForwardError as error:
            raise MeasureError(
                f"{type(model).__name__}.forward raised {type(error.error).__name__} in the sharded step: "
                f"{first_line(error.error)}"
            ) from error.error
        except Exception as error:
            raise MeasureError(
                f"sharding {type(model).__name__} ({sharding.describe()}) failed: {type(error).__name__}: {first_line(error)}"
            ) from error
    memory = step.memory(rank, "fake")
    memory.approximations.insert(0, f"one rank of {sharding.describe()}")
    if step.target.exact is not None:
        notes.append("peak_memory of a sharded step is estimated (one rank simulated), not measured on CUDA")
    stats = assemble_stats(tensors, model, watched.counter, memory, mode=step.mode, execution="fake", notes=notes)
    stats.peak_memory_split = split
    stats.parallel = {
        field: (
            str(value).removeprefix("torch.")
            if isinstance(value, torch.dtype)
            else list(value)
            if isinstance(value, tuple)
            else value
        )
        for field, value in vars(sharding).items()
    }
    return stats


def _run_shapes_only(step: Step, tensors: TensorInventory) -> Watched:
    try:
        return _shapes_only_attempts(step, tensors)
    except Exception as error:
        if not isinstance(error.error if isinstance(error, ForwardError) else error, ValuesUnknown):
            raise
    # The forward wrote values only a real run knows into a table of sizes it made: once more
    # with no real table, as if none were kept (a meta run does not need their values).
    with size_tables_unknown():
        return _shapes_only_attempts(step, tensors)


def _shapes_only_attempts(step: Step, tensors: TensorInventory) -> Watched:
    """A meta model runs directly on meta, the cheapest; what meta cannot run (CPU tensors made
    in forward, autocast, which has no meta dispatch key) runs on fake tensors. When both fail,
    the meta run's error is the one that says what the model did."""
    if not tensors.on_meta or step.autocast is not None:
        return run_fake(step, tensors)
    try:
        return run_meta(step, tensors)
    except MeasureError:
        raise
    except Exception as meta_error:
        # Fake tensors on meta first (what the weights are), then as CPU tensors: a forward that
        # builds CPU tensors and mixes them with its weights runs only where both agree.
        for meta_as_cpu in (False, True):
            try:
                return run_fake(step, tensors, meta_as_cpu=meta_as_cpu)
            except MeasureError:
                raise
            except Exception:
                continue
        raise meta_error from None


@contextlib.contextmanager
def _quiet_fake_tensor_logs() -> Iterator[None]:
    """FakeTensorMode logs a full traceback when a meta kernel fails (``_grouped_mm`` in fp32,
    an op without one); the failure is ours to handle and report in one line."""
    # ``disabled``, not ``setLevel``: a level change clears every logger's cache, a cost paid on
    # each measure() (0.7 ms of a small model's 4).
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = disabled
