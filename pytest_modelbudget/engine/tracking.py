"""Watches one run of a model at the aten level: which module is running, what each op costs,
which parameters were read, and (given a ledger) what each op allocates.

Modules are followed with PyTorch's global forward hooks (removed on exit, also when forward
raises), so nothing is attached to the user's model. Ops are seen by a ``TorchDispatchMode``:
that is below ``torch.matmul``, ``F.*``, ``einsum`` and ``x @ w``, so functional code in
``forward`` is counted like modules are.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from torch._C import DispatchKey
from torch._subclasses.fake_tensor import FakeTensor, _is_tensor_constructor, unset_fake_temporarily
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..gpus import Gpu
from ..stats import MAX_SHAPES
from . import shapes
from .formulas import has_formula
from .formulas.table import Pricer, pricer
from .inputs import is_size_table, keeps_size_tables
from .memory import MemoryLedger, storage_of
from .roofline import op_seconds
from .workspaces import CUBLAS, UNMODELLED, workspace_of

# Metadata queries: no work, and decomposing them would recurse (as FlopCounterMode skips them).
_QUERIES = frozenset(
    {
        torch.ops.aten.sym_is_contiguous.default,
        torch.ops.aten.is_contiguous.default,
        torch.ops.aten.is_contiguous.memory_format,
        torch.ops.aten.is_strides_like_format.default,
        torch.ops.aten.is_non_overlapping_and_dense.default,
        torch.ops.aten.size.default,
        torch.ops.aten.sym_size.default,
        torch.ops.aten.stride.default,
        torch.ops.aten.sym_stride.default,
        torch.ops.aten.storage_offset.default,
        torch.ops.aten.sym_storage_offset.default,
        torch.ops.aten.numel.default,
        torch.ops.aten.sym_numel.default,
        torch.ops.aten.dim.default,
        torch.ops.prim.layout.default,
        torch.ops.prim.device.default,
    }
)


def _tensors(values: Any) -> Iterator[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value)


#: Namespaces of collectives and of FSDP's buffers for them: their outputs are communication
#: buffers in a sharded step's split of its peak.
_COMMUNICATION = frozenset({"c10d", "_c10d_functional", "fsdp"})

_BACKENDS = {"cpu": DispatchKey.CPU, "meta": DispatchKey.CPU, "cuda": DispatchKey.CUDA}


def _accumulates(func: Any, args: tuple, kwargs: dict, out: Any) -> bool:
    """Whether an op in backward may be autograd's sum of two gradients for one input, which the
    engine would make in place into the first (``can_accumulate_inplace``): a plain ``add`` of two
    tensors shaped as its output, the first neither a view (its base shares the storage) nor
    strided with gaps or overlaps."""
    if func is not torch.ops.aten.add.Tensor or kwargs.get("alpha", 1) != 1 or len(args) != 2:
        return False
    first = args[0]
    if not all(isinstance(t, torch.Tensor) and t.shape == out.shape and t.dtype == out.dtype for t in args):
        return False
    return first._base is None and _dense(first)


def _dense(tensor: torch.Tensor) -> bool:
    """Non-overlapping and dense: some order of the dimensions makes it contiguous."""
    expected = 1
    for size, stride in sorted(zip(tensor.shape, tensor.stride()), key=lambda pair: pair[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _has_own_kernel(func: Any, args: tuple) -> bool:
    """Whether the device would run ``func`` as a kernel of its own rather than its composite
    decomposition (``silu_backward`` has both: decomposed, it held temporaries the CPU kernel
    never allocates). Fake and meta tensors stand for the CPU unless they say CUDA."""
    device = next((t.device.type for t in _tensors(args)), "cpu")
    key = _BACKENDS.get(device)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)


#: Ops that return what they were given or only describe it: no kernel reads or writes memory.
_MOVES_NOTHING = frozenset(
    {
        torch.ops.aten.detach,
        torch.ops.aten.lift_fresh,
        torch.ops.aten.alias,
        torch.ops.aten.empty,
        torch.ops.aten.empty_strided,
        torch.ops.aten.empty_like,
        torch.ops.aten.resize_,
        torch.ops.aten.set_,
        torch.ops.aten._local_scalar_dense,
    }
)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


#: In-place ops that overwrite their first argument without reading it.
_OVERWRITES = frozenset(
    {
        torch.ops.aten.copy_,
        torch.ops.aten.fill_,
        torch.ops.aten.zero_,
        torch.ops.aten.normal_,
        torch.ops.aten.uniform_,
        torch.ops.aten.bernoulli_,
        torch.ops.aten.random_,
        torch.ops.aten.exponential_,
    }
)


def _traffic(overwrites: bool, args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    """Bytes one op reads (each tensor argument once, its own elements: a view reads what it
    sees) and writes (each output once: an in-place op's output is its argument, read and
    written; an ``out=`` tensor or ``copy_``'s destination is written only)."""
    destinations = {id(kwargs["out"])} if isinstance(kwargs.get("out"), torch.Tensor) else set()
    if overwrites and args and isinstance(args[0], torch.Tensor):
        destinations.add(id(args[0]))
    inputs = {id(t): t for t in _tensors((*args, *kwargs.values())) if id(t) not in destinations}
    read = sum(_nbytes(t) for t in inputs.values())
    written = 0
    seen: set[int] = set()
    for tensor in _tensors(out if isinstance(out, (tuple, list)) else (out,)):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            written += _nbytes(tensor)
    return read, written


class _OpFacts:
    """What the counter needs to know of one op overload, worked out on its first call: a
    looping model runs the same few ops tens of thousands of times."""

    __slots__ = (
        "communication",
        "constructor",
        "cublas",
        "decomposable",
        "folds",
        "moves",
        "name",
        "overwrites",
        "price",
        "query",
        "unmodelled",
        "view",
        "workspace",
        "written",
    )

    def __init__(self, func: Any) -> None:
        packet = func._overloadpacket
        self.query = func in _QUERIES
        self.decomposable = func.namespace == "aten" and not has_formula(func)
        #: Whether a kernel reads or writes memory (``_traffic``).
        self.moves = not func.is_view and packet not in _MOVES_NOTHING
        self.overwrites = packet in _OVERWRITES
        self.communication = func.namespace in _COMMUNICATION
        self.price: Pricer = pricer(func)
        self.name = str(packet).removeprefix("aten.")
        #: Makes a tensor from no tensor (``torch.empty``, ``torch.zeros``).
        self.constructor = _is_tensor_constructor(func)
        self.written = written_arguments(func)
        #: A functional op computed on its arguments' values when they all keep one.
        self.folds = shapes.memo_kind(func) == "fresh" and torch.Tag.nondeterministic_seeded not in func.tags
        #: What its kernel takes beyond its outputs while it runs (``workspaces.py``), and
        #: whether it may take more than that on some backend (named in the approximations).
        self.workspace = workspace_of(func)
        self.unmodelled = packet in UNMODELLED
        self.cublas = packet in CUBLAS
        self.view = bool(func.is_view)


_FACTS: dict[int, _OpFacts] = {}


def _facts(func: Any) -> _OpFacts:
    # By id: op overloads live as long as the process, and their own hash is a Python method.
    facts = _FACTS.get(id(func))
    if facts is None:
        facts = _FACTS[id(func)] = _OpFacts(func)
    return facts


def written_arguments(func: Any) -> list[tuple[int, str]]:
    """Position and name of each argument the op writes (in-place, ``out=``)."""
    return [
        (index, argument.name)
        for index, argument in enumerate(func._schema.arguments)
        if argument.alias_info is not None and argument.alias_info.is_write
    ]


def written_tensors(written: list[tuple[int, str]], args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    """The tensors an op writes, from its ``written_arguments``."""
    for index, name in written:
        value = args[index] if index < len(args) else kwargs.get(name)
        for tensor in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(tensor, torch.Tensor):
                yield tensor


class ValuesUnknown(Exception):
    """A shape-only run would write values it does not know into a tensor whose values it keeps."""


def _made_table(out: Any) -> bool:
    if isinstance(out, FakeTensor):
        return out.device.type == "cpu" and is_size_table(out)
    return isinstance(out, torch.Tensor) and out.is_meta and is_size_table(out, made_on="meta")


def _writes_real(written: list[tuple[int, str]], args: tuple, kwargs: dict) -> bool:
    return any(not isinstance(t, FakeTensor) and not t.is_meta for t in written_tensors(written, args, kwargs))


def _only_real_tensors(args: tuple, kwargs: dict) -> bool:
    """Some tensor arguments, all of them with values (neither fake nor meta)."""
    found = False
    for tensor in _tensors((*args, *kwargs.values())):
        if isinstance(tensor, FakeTensor) or tensor.is_meta:
            return False
        found = True
    return found


def _dtensor_class() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - a build without torch.distributed
        return None
    return DTensor


class OpCounter(TorchDispatchMode):
    """Prices every aten op and charges it to the module running it."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # PyTorch wraps a mode's __torch_dispatch__ in torch._dynamo.disable unless told not to,
        # which swaps the frame-evaluation callback twice on every op (a tenth of a looping
        # model's measure()). Nothing is compiled under this mode anyway: dynamo skips frames
        # while a dispatch mode is on the stack (convert_frame.py).
        return False

    def __init__(
        self,
        module_names: dict[int, str],
        param_names: dict[int, str],
        ledger: MemoryLedger | None = None,
        shapes_only: bool = False,
        into_dtensors: bool = False,
        gpu: Gpu | None = None,
        cublas_workspace: int = 0,
    ) -> None:
        super().__init__()
        #: Bytes of the cuBLAS workspace the first matmul takes and keeps (0: not simulated, or
        #: taken already); ``cublas_taken`` says whether a matmul took it.
        self._cublas_workspace = cublas_workspace
        self.cublas_taken = False
        #: A serving step: which module made or last wrote each storage (``serving.py``), and
        #: the bytes its cache holds by that module (None: no serving step).
        self.origins: dict[int, tuple[weakref.ref, str]] | None = None
        self.kv_cache: dict[str, int] | None = None
        #: With a GPU: each op's roofline seconds, charged as MACs are (``roofline.py``).
        self.gpu = gpu
        self.seconds: dict[str, float] = defaultdict(float)
        #: Tensor parallelism: an op on DTensors is left to DTensor (``NotImplemented``), whose
        #: local ops, collectives included, then come back here one by one: what a rank runs.
        #: Otherwise a DTensor op (FSDP's optimizer step) runs whole and its outputs are held.
        self._dtensor = _dtensor_class() if into_dtensors else None
        #: Outputs of repeated ops made from their first call's metadata; shape-only runs only.
        self._memo = shapes.ShapeMemo() if shapes_only else None
        #: Whether a shape-only run computes for real what real tensors alone give (tables of
        #: sizes), or, once told no table is kept, fakes every tensor as PyTorch would.
        self._real_values = shapes_only and keeps_size_tables()
        #: Follows allocations and frees when the step's memory is estimated.
        self.ledger = ledger
        self._module_names = module_names
        self._param_names = param_names
        self._stack: list[str] = []
        self._not_decomposable: set[Any] = set()
        self.counting = True
        #: Set by the step while backward runs: a module's forward then is a recomputation
        #: (activation checkpointing), and is counted in ``recomputed``.
        self.in_backward = False
        self.recomputed: set[str] = set()
        #: Ops run whose kernels allocate what the estimate does not know on some backend.
        self.unmodelled: set[Any] = set()
        self.macs: dict[str, int] = defaultdict(int)
        self.flops: dict[str, int] = defaultdict(int)
        self.calls: Counter[str] = Counter()
        self.params_read: set[str] = set()
        self.uncounted: Counter[str] = Counter()
        #: module name -> bytes its own ops read / wrote (children's not included).
        self.read: dict[str, int] = defaultdict(int)
        self.written: dict[str, int] = defaultdict(int)
        #: module name -> the shapes its forward returned, call after call.
        self.output_shapes: dict[str, list[list[int]]] = defaultdict(list)

    # -- which module is running ---------------------------------------------------------------
    def _enter_module(self, module: torch.nn.Module, *args: Any) -> None:
        name = self._module_names.get(id(module))
        if name is not None:
            self._stack.append(name)
            if self.counting:
                self.calls[name] += 1
            elif self.in_backward:
                self.recomputed.add(name)
            if self.ledger is not None:
                self.ledger.enter(name)

    def _leave_module(self, module: torch.nn.Module, inputs: Any, output: Any = None) -> None:
        name = self._module_names.get(id(module))
        if name is not None and self.counting:
            shapes = self.output_shapes[name]
            for tensor in tree_leaves(output):
                if isinstance(tensor, torch.Tensor) and len(shapes) < MAX_SHAPES:
                    shapes.append(list(tensor.shape))
        if name is not None and self._stack and self._stack[-1] == name:
            self._stack.pop()
            if self.ledger is not None:
                self.ledger.leave(name)

    @contextlib.contextmanager
    def watching(self) -> Iterator[OpCounter]:
        """Follow modules and ops for the duration of the block; leaves no hook behind.

        Not ``__enter__``: the mode re-enters itself (``with self``) to decompose ops, and that
        must not touch the module hooks or the call stack.
        """
        handles = [
            register_module_forward_pre_hook(self._enter_module),
            register_module_forward_hook(self._leave_module, always_call=True),
        ]
        try:
            with self:
                yield self
        finally:
            for handle in handles:
                handle.remove()
            self._stack.clear()

    # -- what each op costs --------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        facts = _facts(func)
        if facts.query:
            return func(*args, **kwargs)
        if self._dtensor is not None and any(isinstance(t, self._dtensor) for t in _tensors((*args, *kwargs.values()))):
            return NotImplemented
        if self.counting:
            param_names = self._param_names
            for tensor in _tensors(args):
                name = param_names.get(id(tensor))
                if name is not None:
                    self.params_read.add(name)
        if facts.decomposable and func not in self._not_decomposable:
            # Composite ops (linear, einsum, matmul, LSTM cells) are priced by what they run;
            # ops that also have a kernel of their own run as that one kernel, as on the device.
            result = NotImplemented
            if not _has_own_kernel(func, args):
                with self:
                    result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
            self._not_decomposable.add(func)
        try:
            out = shapes.run(func, args, kwargs) if self._memo is None else self._shape_only(func, facts, args, kwargs)
        except RuntimeError:
            # A meta model's forward made a CPU tensor (a position table from torch.arange) and
            # mixes it with meta ones: on the device, both would be there. Values are not needed
            # for shapes; without this the whole run would start over on fake tensors.
            moved = shapes.cpu_to_meta((args, kwargs))
            if moved is None:
                raise
            args, kwargs = moved
            out = self._memo.run(func, args, kwargs) if self._memo is not None else shapes.run(func, args, kwargs)
        if self.origins is not None and not facts.view:
            self._note_origins(out)
        if self.ledger is not None:
            if self.in_backward and _accumulates(func, args, kwargs, out):
                self.ledger.hold_accumulation(out, args[0])
            else:
                self.ledger.hold_outputs(out)
            if facts.workspace is not None:
                self.ledger.transient(facts.workspace(args, kwargs))
            if facts.cublas and self._cublas_workspace and not self.cublas_taken:
                self.cublas_taken = True
                self.ledger.keep(self._cublas_workspace)
            if facts.unmodelled:
                self.unmodelled.add(func._overloadpacket)
            if facts.communication:
                self.ledger.mark_communication(out)
        if self.counting:
            self._charge(func, facts, args, kwargs, out)
        return out

    def _note_origins(self, out: Any) -> None:
        assert self.origins is not None
        name = self._stack[-1] if self._stack else ""
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = storage_of(tensor)
                if storage is not None:
                    self.origins[id(storage)] = (weakref.ref(storage), name)

    @contextlib.contextmanager
    def unpriced(self) -> Iterator[None]:
        """Ops that run but are not the step's (a decode step's prefill): neither priced nor in
        the ledger; where origins are followed, theirs are."""
        counting, ledger = self.counting, self.ledger
        self.counting, self.ledger = False, None
        try:
            if self.origins is not None:
                with self.watching():
                    yield
            else:
                yield
        finally:
            self.counting, self.ledger = counting, ledger

    def _shape_only(self, func: Any, facts: _OpFacts, args: tuple, kwargs: dict) -> Any:
        """An op's output in a shape-only run: from its first call's metadata where it repeats,
        and for real where its values are known without running the model."""
        assert self._memo is not None
        if self._real_values:
            if _only_real_tensors(args, kwargs):
                # A shape-only run keeps an input's size table real (``inputs.is_size_table``):
                # what is computed from it alone is computed for real, so its values stay known.
                with unset_fake_temporarily():
                    return shapes.run(func, args, kwargs)
            if facts.written and _writes_real(facts.written, args, kwargs):
                # Unknown values written into a real size table: what it holds would be wrong.
                raise ValuesUnknown(f"{func} writes values only a real run knows into a table of sizes")
        out = None
        if facts.folds and args and type(args[0]) is FakeTensor and args[0].constant is not None:
            out = shapes.folded(func, args, kwargs)
        if out is None:
            out = self._memo.run(func, args, kwargs)
        if self._real_values and facts.constructor and _made_table(out):
            # A table of sizes built in forward (D-FINE's ``spatial_shapes``, filled with Python
            # ints) is kept real as an input's is, so its values stay known; on the CPU, where a
            # meta model's CPU tensors go (``shapes.cpu_to_meta``).
            with unset_fake_temporarily():
                return shapes.run(func, args, {**kwargs, "device": torch.device("cpu")})
        return out

    def _charge(self, func: Any, facts: _OpFacts, args: tuple, kwargs: dict, out: Any) -> None:
        name = self._stack[-1] if self._stack else ""
        moved = 0
        if facts.moves:
            read, written = _traffic(facts.overwrites, args, kwargs, out)
            self.read[name] += read
            self.written[name] += written
            moved = read + written
        cost = facts.price(args, kwargs, out)
        if self.gpu is not None:
            self.seconds[name] += op_seconds(
                self.gpu, func, args, out, cost.flops if cost else 0, bool(cost and cost.macs), moved
            )
        if cost is None:
            self.uncounted[facts.name] += 1
            return
        if cost.macs or cost.flops:
            # Charged to the innermost module only; parents get it when layers are rolled up
            # by qualified name, so that a container that is never called (ModuleList) still
            # includes its children.
            self.macs[name] += cost.macs
            self.flops[name] += cost.flops
