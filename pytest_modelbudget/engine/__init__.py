"""The engine: runs a model and prices what it did. Imports torch, and nothing of pytest, pydantic
or tomlkit.

- ``measure.py``: ``measure()``, the one entry point: checks the arguments, picks the runs.
- ``runners/``: the ways of running a step (meta, fake, real, CUDA, one rank of a sharded one).
- ``parallel.py``: ``Parallel``, how a sharded step is laid out, and the sharding (FSDP2).
- ``step.py``: one forward / backward / optimizer step; ``loss.py``: its default loss.
- ``inventory.py``: the model's unique tensors and the per-layer totals of ``ModelStats``.
- ``tracking.py``: the dispatch mode that watches ops and modules.
- ``formulas/``: what each op costs, one table filled by one module per op family.
- ``memory.py``: the storage ledger; ``simulation.py``: CUDA's choices made on a CPU;
  ``target.py``: which device's memory is reported.
- ``inputs.py``: turning ``inputs`` / ``input_size`` into call arguments.
- ``specs/``: models named by ``torchvision:``, ``timm:`` and ``hf:`` specs, with default inputs.
"""

from .inventory import tensor_bytes
from .measure import measure
from .parallel import Parallel
from .specs import BuiltModel, build

__all__ = ["BuiltModel", "Parallel", "build", "measure", "tensor_bytes"]
