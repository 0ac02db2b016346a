"""The ways of running a step, one module each: what stands in for the model's tensors and where
the step runs. ``measure()`` picks one and falls back to another.

- ``meta``: a model already on the meta device runs as it is, on aliases of its tensors.
- ``fake``: fake copies of the tensors under ``FakeTensorMode``: shapes only, no arithmetic.
- ``real``: a real CPU run for models fake execution cannot run, on write-guarded aliases of the
  tensors in inference and on private copies where a step writes them.
- ``cuda``: the step on a CUDA device for real, for the exact peak memory.
- ``sharded``: one rank of a sharded step (FSDP2) on a fake copy under a fake process group.
"""

from .cuda import run_cuda
from .fake import run_fake
from .meta import run_meta
from .real import run_real
from .sharded import run_sharded

__all__ = ["run_cuda", "run_fake", "run_meta", "run_real", "run_sharded"]
