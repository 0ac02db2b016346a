import atexit
import os
import shutil
import tempfile

# Each xdist worker compiles into a cache of its own: two workers compiling the same small graphs
# at once (the torch.compile tests) otherwise race on inductor's shared cache directory.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix=f"inductor-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import torch

from pytest_modelbudget import measure

# pytester's in-process runs drop the modules a run imported when it ends; torch's lazily
# imported parts (fake tensors, dynamo) cannot be imported a second time in one process. Load
# them all once here, before any in-process run.
measure(torch.nn.Linear(2, 2), input_size=(1, 2))
measure(torch.nn.Linear(2, 2), input_size=(1, 2), mode="training")
