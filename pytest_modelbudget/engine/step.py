"""One step of the model: ``forward`` (and for training, backward and the optimizer step) on the
stand-ins a runner put in place of the model's own tensors, watched op by op.

The runners (``runners/``) decide what those tensors are (fake, meta, private real copies, CUDA
copies); the step is the same for all of them.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from ..errors import MeasureError
from ..gpus import Gpu
from . import adapters
from .autocast import autocast_for
from .caches import cleared_after, method_caches
from .loss import default_loss, describe_output
from .loss_scaling import LossScaler
from .memory import MemoryLedger, StepMemory, deterministic_frees, following_resizes, following_rng_states
from .serving import Serving, cache_bytes, cache_of, cache_tensors, encoder_outputs_of, pop_prefill
from .simulation import CudaAttention, use_foreach
from .standins import Slots
from .target import MemoryTarget
from .tracking import OpCounter
from .workspaces import cublas_workspace, unmodelled_notes


class ForwardError(Exception):
    """Wraps an exception raised by the model's forward so it can be told from ours."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""


#: Code that is not the model's: PyTorch, this package, the standard library.
_NOT_THE_MODELS = tuple(
    str(folder) + os.sep
    for folder in (
        Path(str(torch.__file__)).resolve().parent,
        Path(contextlib.__file__).resolve().parent,  # the standard library's folder
        Path(__file__).resolve().parents[1],
    )
)


def raised_at(error: BaseException) -> str:
    """Where the model's own code raised ``error``: the innermost frame of its traceback outside
    PyTorch, this package and the standard library, as ``file:line, in function`` (relative to the
    working directory when under it); "" when every frame is someone else's."""
    found = ""
    traceback = error.__traceback__
    while traceback is not None:
        code = traceback.tb_frame.f_code
        path = str(Path(code.co_filename).resolve())
        if not path.startswith(_NOT_THE_MODELS):
            try:
                shown = str(Path(path).relative_to(Path.cwd()))
            except ValueError:
                shown = path
            found = f"{shown}:{traceback.tb_lineno}, in {code.co_name}"
        traceback = traceback.tb_next
    return found


@dataclass
class Watched:
    """What a watched run of the step left: the op counter (with its memory ledger) and the CUDA
    choices the simulation made."""

    counter: OpCounter
    approximations: list[str]
    #: Training with an optimizer: the estimated peak of each step run ("first", "steady").
    step_peaks: dict[str, int] = field(default_factory=dict)


class Step:
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
        target: MemoryTarget,
        outputs: str = "kept",
    ) -> None:
        self.model = model
        self.args = args
        self.keywords = keywords
        self.mode = mode
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.autocast = autocast
        self.target = target
        #: Training: "kept", the forward's outputs referenced through backward (a loop that keeps
        #: ``logits, loss = model(x, y)``), or "released" before it (``model(x, y)[1].backward()``).
        self.outputs = outputs
        self.module_names = {id(module): name for name, module in model.named_modules()}
        #: The lru caches of the model's code, cleared of whatever a run put there (``caches.py``).
        self.caches = method_caches(model)
        #: The optimizer of the last run, for what its state holds.
        self.last_optimizer: torch.optim.Optimizer | None = None
        #: Follow DTensor ops into the local ops each rank runs (tensor parallelism).
        self.into_dtensors = False
        #: The GPU whose roofline time the forward's ops are priced at, if any.
        self.gpu: Gpu | None = None
        #: Training with an optimizer: the step whose peak is the figure, "first" or "steady"
        #: (every later one: the optimizer's state alive); None, the larger of the two.
        self.step_kind: str | None = None
        #: Training: forward/backward micro-steps before each optimizer step, and whether the
        #: optimizer's ``zero_grad`` frees the gradients (else it zeroes them, kept allocated).
        self.accumulation_steps = 1
        self.set_to_none = True
        #: The estimated peak of each training step run ("first", "steady"), from the last run.
        self.step_peaks: dict[str, int] = {}
        #: Called as a run on a device (no ledger) starts its steady step: the CUDA runner resets
        #: the allocator's peak there when the steady step alone is asked for.
        self.steady_started: Callable[[], None] | None = None
        #: A serving step (prefill or decode, ``serving.py``), and what is called once a decode
        #: step's cache is built, before the step (the CUDA runner resets the allocator's peak).
        self.serving: Serving | None = None
        self.decode_started: Callable[[], None] | None = None

    def cublas_workspace(self) -> tuple[int, str]:
        """The cuBLAS workspace of the GPU simulated: the named one's, else the device measured on."""
        capability = self.gpu.capability if self.gpu is not None else None
        if capability is None and self.target.exact is not None:
            capability = torch.cuda.get_device_capability(self.target.exact)[0]
        return cublas_workspace(capability)

    def on(self, model: torch.nn.Module) -> Step:
        """The same step on another model (a sharded copy of this one)."""
        other = copy.copy(self)
        other.model = model
        other.module_names = {id(module): name for name, module in model.named_modules()}
        other.last_optimizer = None
        return other

    def watched(self, stand_ins: Slots, args: Any, keywords: Any, shapes_only: bool, split: bool = False) -> Watched:
        """The step with its ops priced and its memory followed by a ledger. The fused attention
        kernels have shape functions everywhere but real kernels only on CUDA: CUDA's choices are
        made only when no real arithmetic is done."""
        on_cuda = self.target.simulated == "cuda"
        # A named GPU older than Ampere has no flash attention kernel (the memory estimate is
        # then that of the memory-efficient or math path).
        flash = self.gpu is None or self.gpu.flash_attention
        attention = CudaAttention(flash) if shapes_only and on_cuda else None
        with contextlib.ExitStack() as stack:
            approximations = stack.enter_context(adapters.shape_only(self.model)) if shapes_only else []
            if attention is not None:
                stack.enter_context(attention)
            counter, foreach = self.run(
                stand_ins,
                args,
                keywords,
                MemoryLedger(self.target.block, keep_peak=split),
                on_cuda,
                shapes_only=shapes_only,
            )
        if attention is not None:
            approximations.extend(attention.approximations())
        if foreach:
            approximations.append("optimizer run with foreach=True, its default on CUDA")
        approximations.extend(unmodelled_notes(counter.unmodelled, self.target.simulated, self.autocast))
        if counter.cublas_taken:
            size, source = self.cublas_workspace()
            approximations.append(
                f"cuBLAS's workspace, {size:,} B ({source}): taken by the step's first matmul and kept, as the CUDA "
                "allocator counts it"
            )
        if counter.recomputed:
            outermost = sorted(
                n for n in counter.recomputed if not any(n.startswith(o + ".") for o in counter.recomputed if o)
            )
            shown = ", ".join(outermost[:4]) + (f" and {len(outermost) - 4} more" if len(outermost) > 4 else "")
            approximations.append(
                f"activation checkpointing: the forward of {shown} run again in backward, as the real step does"
            )
        return Watched(counter, approximations, dict(self.step_peaks))

    def memory(self, watched: Watched, execution: str) -> StepMemory:
        ledger = watched.counter.ledger
        assert ledger is not None
        notes = [
            f"estimated for {self.target.simulated} from "
            + ("fake execution" if execution == "fake" else "a real CPU run")
        ]
        if self.target.unavailable:
            notes.append("CUDA was asked for but is not available (or the model is on meta): estimated")
        if self.target.block > 1:
            notes.append(f"allocations rounded up to {self.target.block} bytes, as the CUDA caching allocator does")
        if self.mode == "training":
            notes.append(
                "the forward's outputs held through backward (outputs='kept')"
                if self.outputs == "kept"
                else "the forward's outputs released before backward, only the loss kept (outputs='released')"
            )
        notes.extend(watched.approximations)
        if self.autocast is not None:
            dtype = str(self.autocast).removeprefix("torch.")
            lists = "CUDA's autocast op lists" if self.target.simulated == "cuda" else "the CPU's autocast op lists"
            notes.append(f"autocast to {dtype} with {lists}")
            if self.mode == "training" and self.autocast == torch.float16:
                notes.append("the loss scaled as GradScaler does (its scale, growth tracker and found-inf flag)")
        if self.mode == "training" and self.accumulation_steps > 1:
            notes.append(
                f"gradient accumulation: {self.accumulation_steps} forward/backward micro-steps before each optimizer "
                "step, the gradients alive across them"
            )
        if self.mode == "training" and self.optimizer is not None and not self.set_to_none:
            notes.append("zero_grad(set_to_none=False): the gradients stay allocated, zeroed, through the next step")
        peaks = watched.step_peaks
        if not peaks:
            return StepMemory(ledger.peak, dict(ledger.module_peaks), notes)
        kind = self.step_kind or max(peaks, key=lambda k: peaks[k])
        if len(peaks) == 1:
            notes.append("the first training step (the optimizer's state does not exist yet during its backward)")
        else:
            chosen = "the step asked for" if self.step_kind else "the larger"
            notes.append(
                f"the {kind} training step, {chosen}: first step {peaks['first']:,} B, steady step "
                f"{peaks['steady']:,} B (every later step: the optimizer's state alive throughout, the last step's "
                "outputs until the forward returns)"
            )
        return StepMemory(peaks[kind], dict(ledger.module_peaks), notes, steps=dict(peaks), step=kind)

    def run(
        self,
        stand_ins: Slots,
        args: Any,
        keywords: Any,
        ledger: MemoryLedger | None,
        foreach_as_cuda: bool = False,
        shapes_only: bool = False,
    ) -> tuple[OpCounter, bool]:
        """Run the step; returns its counter and whether the optimizer was switched to foreach."""
        cublas = self.cublas_workspace()[0] if ledger is not None and self.target.simulated == "cuda" else 0
        counter = OpCounter(
            self.module_names, stand_ins.read_names, ledger, shapes_only, self.into_dtensors, self.gpu, cublas
        )
        estimating = ledger is not None
        # An estimate's tensors are CPU ones (fake or real): for CUDA, CUDA's op lists are emulated.
        autocast = autocast_for(self.target.simulated, self.autocast) if estimating else self._autocast("cuda")
        serving = self.serving is not None
        if serving and estimating:
            counter.origins = {}
        with contextlib.ExitStack() as stack:
            stack.enter_context(_train_flags(self.model, self.mode == "training"))
            stack.enter_context(cleared_after(self.caches))
            # Installed for the whole step, not the forward alone: activation checkpointing runs
            # the forward again in backward, and must find the stand-ins there too.
            stack.enter_context(stand_ins.installed())
            if serving:
                keywords = self._prefilled(keywords, counter, autocast)
            if ledger is not None:
                stack.enter_context(deterministic_frees())
                stack.enter_context(following_resizes(ledger))
                if self.target.simulated == "cpu":
                    stack.enter_context(following_rng_states(ledger))
                ledger.hold(stand_ins.held)
                ledger.hold(t for t in tree_flatten((args, keywords))[0] if isinstance(t, torch.Tensor))
                if serving:
                    # The cache is held before the step, as the weights are.
                    ledger.hold(cache_tensors(cache_of(None, keywords)))
                stack.enter_context(counter.watching())
            if self.mode != "training":
                with torch.no_grad(), autocast:
                    output = self._forward(args, keywords)
                if serving and counter.kv_cache is None:
                    # A prefill's cache, or one the inputs passed (a static cache allocates its
                    # tensors on first use): as the step leaves it.
                    counter.kv_cache = cache_bytes(self._cache(output, keywords), counter.origins)
                return counter, False
            with torch.enable_grad():
                foreach = self._train(stand_ins, args, keywords, counter, ledger, autocast, foreach_as_cuda)
        return counter, foreach

    def _prefilled(self, keywords: Any, counter: OpCounter, autocast: contextlib.AbstractContextManager[Any]) -> Any:
        """A decode step's keywords with its cache in place: built by the model's own prefill, run
        here unpriced and outside the ledger (its activations are gone before the step starts);
        the cache it leaves is measured now, holding the context's tokens."""
        assert self.serving is not None
        found = pop_prefill(keywords) if isinstance(keywords, dict) else None
        if found is not None:
            key, prefill = found
            with counter.unpriced(), torch.no_grad(), autocast:
                output = self._forward(prefill.args, prefill.keywords)
            keywords = {**keywords, key: self._cache(output, prefill.keywords)}
            keywords.update(encoder_outputs_of(output, keywords, self.model))
            del output
        if self.decode_started is not None:
            self.decode_started()
        if self.serving.mode == "decode" and found is not None:
            counter.kv_cache = cache_bytes(self._cache(None, keywords), counter.origins)
        return keywords

    def _cache(self, output: Any, keywords: Any) -> Any:
        cache = cache_of(output, keywords if isinstance(keywords, dict) else {})
        if cache is None:
            assert self.serving is not None
            raise MeasureError(
                f"mode={self.serving.mode!r}: {type(self.model).__name__} returned no cache (no past_key_values or "
                "cache in its output or inputs): is use_cache off in its config?"
            )
        return cache

    def _train(
        self,
        stand_ins: Slots,
        args: Any,
        keywords: Any,
        counter: OpCounter,
        ledger: MemoryLedger | None,
        autocast: contextlib.AbstractContextManager[Any],
        foreach_as_cuda: bool,
    ) -> bool:
        """The first training step and, with an optimizer, a steady one: the loop's next
        iteration, where the optimizer's state is alive from the start and the last iteration's
        outputs until the new forward returns (``logits, loss = model(x, y)``). Figures other than
        memory are counted on the first alone."""
        trained = stand_ins.trainable()
        opt = self.last_optimizer = self.optimizer(trained) if self.optimizer else None
        steps = ("first",) if opt is None or self.step_kind == "first" else ("first", "steady")
        foreach = bool(opt is not None and foreach_as_cuda and use_foreach(opt))
        # float16 trains with loss scaling (PyTorch's AMP recipe); bfloat16 needs none.
        scaler = LossScaler() if self.autocast == torch.float16 else None
        held: tuple[Any, ...] = ()
        self.step_peaks = {}
        for kind in steps:
            if kind == "steady":
                assert opt is not None
                # set_to_none=True (PyTorch's default): gradients do not outlive the step; False
                # zeroes them in place, and they stay allocated through the next one.
                opt.zero_grad(set_to_none=self.set_to_none)
                if ledger is not None:
                    self.step_peaks["first"] = ledger.start_window()
                elif self.steady_started is not None:
                    self.steady_started()
            # Gradient accumulation: micro-steps whose gradients add up before the optimizer's step.
            for _ in range(self.accumulation_steps):
                # The loss under autocast too, backward outside it: PyTorch's AMP recipe.
                with autocast:
                    output = self._forward(args, keywords)
                    held = ()  # the last micro-step's outputs, dropped once the new ones are assigned
                    counter.counting = False
                    loss = self._loss(output)
                    if self.accumulation_steps > 1:
                        loss = loss / self.accumulation_steps
                if self.outputs == "released":
                    del output  # only the loss, and the graph behind it, stay for backward
                counter.in_backward = True
                try:
                    if scaler is not None:
                        scaler.scale(loss).backward()
                    else:
                        loss.backward()
                finally:
                    counter.in_backward = False
                held = (output, loss) if self.outputs == "kept" else (loss,)
                del loss
            if opt is not None and scaler is not None:
                scaler.step(opt, trained)
                scaler.update()
            elif opt is not None:
                opt.step()
        if ledger is not None and opt is not None:
            self.step_peaks[steps[-1]] = ledger.peak if len(steps) == 1 else ledger.window_peak
        del held
        return foreach

    def _autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.autocast)

    def _forward(self, args: Any, keywords: Any) -> Any:
        try:
            return self.model(*args, **keywords)
        except MeasureError:
            raise
        except Exception as error:
            raise ForwardError(error) from error

    def _loss(self, output: Any) -> torch.Tensor:
        loss = self.loss_fn(output) if self.loss_fn is not None else default_loss(output)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise MeasureError(f"loss_fn must return a scalar tensor, found {describe_output(loss)}")
        if not loss.requires_grad:
            raise MeasureError("the loss does not depend on any trainable parameter: nothing to back-propagate")
        return loss


@contextlib.contextmanager
def _train_flags(model: torch.nn.Module, training: bool) -> Iterator[None]:
    saved = [(module, module.training) for module in model.modules()]
    try:
        # torch.export's GraphModules refuse train()/eval(): their graph fixed the behaviour
        # (dropout, batch norm) when it was exported, so there is nothing to switch.
        with contextlib.suppress(NotImplementedError):
            model.train(training)
        yield
    finally:
        for module, flag in saved:
            module.training = flag
