"""Autocast as CUDA runs it, emulated on CPU tensors for a CUDA estimate (``engine/autocast.py``),
checked against PyTorch's own lists of what CUDA's autocast does to each op
(``torch.testing._internal.autocast_test_lists``, the lists of PyTorch's CUDA autocast tests)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing._internal import autocast_test_lists

from pytest_modelbudget.engine.autocast import CudaAutocast

from ..helpers import measure_checked

#: No CPU kernel (the emulation casts, the op then cannot run here); einsum's arguments in the
#: list do not fit its equation outside PyTorch's own test harness.
NOT_RUNNABLE_ON_CPU = {"cudnn_convolution", "cudnn_convolution_transpose", "einsum"}


def _cases(dtype: torch.dtype) -> list[tuple[str, object, tuple, dict, torch.dtype]]:
    lists = autocast_test_lists.AutocastTestLists("cpu")
    cases = []
    for list_name, module, expected in [
        ("torch_fp16", torch, dtype),
        ("nn_fp16", torch._C._nn, dtype),
        ("linalg_fp16", torch._C._linalg, dtype),
        ("methods_fp16", None, dtype),
        ("torch_fp32", torch, torch.float32),
        ("nn_fp32", torch._C._nn, torch.float32),
        ("methods_fp32", None, torch.float32),
        ("torch_need_autocast_promote", torch, torch.float32),
    ]:
        for entry in getattr(lists, list_name):
            name, args = entry[0], entry[1]
            if name in NOT_RUNNABLE_ON_CPU:
                continue
            kwargs = entry[2] if len(entry) > 2 and isinstance(entry[2], dict) else {}
            cases.append((f"{list_name}.{name}", module, name, args, kwargs, expected))
    return cases


@pytest.mark.filterwarnings("ignore:.*(chain_matmul|torch.cross).*:UserWarning")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_every_op_of_pytorchs_cuda_autocast_lists_gets_cudas_dtype(dtype):
    wrong = []
    for label, module, name, args, kwargs, expected in _cases(dtype):
        with CudaAutocast(dtype):
            out = getattr(args[0], name)(*args[1:]) if module is None else getattr(module, name)(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        if out.dtype != expected:
            wrong.append(f"{label}: {out.dtype}, CUDA gives {expected}")
    assert not wrong
    assert len(_cases(dtype)) >= 90  # the lists were read: 96 cases in torch 2.14


def test_banned_ops_are_refused_as_cuda_refuses_them():
    x = torch.rand(4, 4)
    with pytest.raises(RuntimeError, match="unsafe to autocast"), CudaAutocast(torch.float16):
        nn.functional.binary_cross_entropy(x, x)
    # The CPU's autocast runs it in float32.
    with torch.autocast("cpu", torch.bfloat16):
        assert nn.functional.binary_cross_entropy(x, x).dtype == torch.float32


def test_the_cpus_own_lists_differ_and_are_back_after_the_emulation():
    x = torch.randn(8, 16)
    with torch.autocast("cpu", torch.bfloat16):
        before = nn.functional.layer_norm(x.bfloat16(), (16,)).dtype
    with CudaAutocast(torch.bfloat16):
        during = nn.functional.layer_norm(x.bfloat16(), (16,)).dtype
        softmax = torch.softmax(x.bfloat16(), -1).dtype
    with torch.autocast("cpu", torch.bfloat16):
        after = nn.functional.layer_norm(x.bfloat16(), (16,)).dtype
    assert (before, during, softmax, after) == (torch.bfloat16, torch.float32, torch.float32, torch.bfloat16)


def test_a_cuda_estimate_holds_what_cudas_autocast_makes():
    # Linear (no bias) then LayerNorm, x of 512x1024 in float32, float16 autocast, inference.
    # By hand, for CUDA (512-byte blocks): before the step the weight (4 MiB) and x (2 MiB); the
    # matmul casts x (1 MiB, freed after it) and the weight (2 MiB, cached for the region), makes
    # its float16 output (1 MiB) and takes cuBLAS's workspace (8,519,680 B); CUDA's LayerNorm runs
    # in float32: a float32 copy of its input (2 MiB), its output (2 MiB), mean and rstd (2,048 B
    # each). The peak is inside LayerNorm.
    model = nn.Sequential(nn.Linear(1024, 1024, bias=False), nn.LayerNorm(1024, elementwise_affine=False))
    x = torch.randn(512, 1024)
    mib = 1 << 20
    on_cuda = measure_checked(model, x, autocast=torch.float16)
    assert on_cuda.peak_memory == (4 + 2 + 2 + 1 + 2 + 2) * mib + 2 * 2048 + 8_519_680
    assert "autocast to float16 with CUDA's autocast op lists" in on_cuda.peak_memory_approximations
    # The CPU's autocast keeps LayerNorm in the reduced dtype: no float32 copy, a 1 MiB output.
    on_cpu = measure_checked(model, x, autocast=torch.bfloat16, device="cpu")
    assert on_cpu.peak_memory == (4 + 2 + 2 + 1 + 1) * mib + 2 * 1024
    assert "autocast to bfloat16 with the CPU's autocast op lists" in on_cpu.peak_memory_approximations
