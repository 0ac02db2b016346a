import torch

from pytest_modelbudget import measure

# pytester's in-process runs drop the modules a run imported when it ends; torch's lazily
# imported parts (fake tensors, dynamo) cannot be imported a second time in one process. Load
# them all once here, before any in-process run.
measure(torch.nn.Linear(2, 2), input_size=(1, 2))
measure(torch.nn.Linear(2, 2), input_size=(1, 2), mode="training")
