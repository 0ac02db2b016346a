"""What kernels allocate beyond their outputs: memory an op's dispatch never shows, but the
allocator counts (a peak can sit on it).

One table, op overload -> bytes the kernel takes while it runs, from the op's arguments:

- ``mm`` and ``addmm``: BLAS takes a matrix whose rows or columns are contiguous; an operand that
  is neither (a broadcast gradient, stride 0: the default loss's ``sum`` gives one to the last
  layer's backward) is copied contiguous for the call. The CPU kernel (``addmm_impl_cpu_``) and
  the CUDA one (``prepare_matrix_for_cublas``) apply the same rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import torch

Workspace = Callable[[tuple, dict], int]

aten = torch.ops.aten


def _blas_ready(matrix: Any) -> bool:
    """A matrix BLAS takes as it is: unit stride along one dimension, and the other stride at
    least that dimension's length (a dimension of length one has any stride)."""
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        return True
    rows, columns = matrix.shape
    row_stride, column_stride = matrix.stride()
    if rows <= 1 or columns <= 1:
        return True
    return (column_stride == 1 and row_stride >= columns) or (row_stride == 1 and column_stride >= rows)


def _copies(*matrices: Any) -> int:
    return sum(m.numel() * m.element_size() for m in matrices if not _blas_ready(m))


WORKSPACES: dict[Any, Workspace] = {
    aten.mm.default: lambda args, kwargs: _copies(args[0], args[1]),
    aten.addmm.default: lambda args, kwargs: _copies(args[1], args[2]),
}


#: Ops that run on cuBLAS (or cuBLASLt, which shares its workspace) on CUDA. PyTorch gives each
#: stream one workspace from the caching allocator, the first time such an op runs on it, and keeps
#: it (``setCublasWorkspace`` in ``aten/src/ATen/cuda/CublasHandlePool.cpp``): the CUDA
#: allocator's figure holds it from the step's first matmul on.
CUBLAS = frozenset(
    {
        aten.mm,
        aten.addmm,
        aten.bmm,
        aten.baddbmm,
        aten.addbmm,
        aten.mv,
        aten.addmv,
        aten.dot,
        aten.vdot,
        aten._addmm_activation,
        aten._scaled_mm,
        aten._int_mm,
    }
)

#: PyTorch's default sizes (``parseChosenWorkspaceSize``): ``:4096:2:16:8`` (4096 KiB twice and 16
#: KiB eight times), and 32 MiB on Hopper and Blackwell (compute capability 9, 10, 12).
CUBLAS_DEFAULT = 4096 * 1024 * 2 + 16 * 1024 * 8
CUBLAS_LARGE = 32 * 1024 * 1024
CUBLAS_LARGE_CAPABILITIES = frozenset({9, 10, 12})


def cublas_workspace(capability: int | None) -> tuple[int, str]:
    """Bytes of one stream's cuBLAS workspace on a GPU of this major compute capability (None:
    not known), and where the size comes from. ``CUBLAS_WORKSPACE_CONFIG`` (``:SIZE:COUNT``
    pairs, sizes in KiB) overrides the default, as it does for PyTorch."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG", "")
    pairs = re.findall(r":([0-9]+):([0-9]+)", config)
    if pairs:
        return sum(int(size) * 1024 * int(count) for size, count in pairs), f"CUBLAS_WORKSPACE_CONFIG={config}"
    if capability in CUBLAS_LARGE_CAPABILITIES:
        return CUBLAS_LARGE, f"PyTorch's default on compute capability {capability}"
    if capability is None:
        return CUBLAS_DEFAULT, "PyTorch's default; 32 MiB on Hopper and Blackwell: name the GPU with gpu="
    return CUBLAS_DEFAULT, f"PyTorch's default on compute capability {capability}"


#: Kernels whose extra memory depends on the machine, not modelled: named in the approximations of
#: an estimate that ran them (``unmodelled_notes``), with the gap measured here.
UNMODELLED = frozenset({aten.convolution, aten.convolution_backward, aten.mm, aten.addmm, aten.bmm})


def unmodelled_notes(ops: set[Any], target: str, autocast: torch.dtype | None) -> list[str]:
    """What the estimate leaves out for the kernels that ran, on this target."""
    notes = []
    if ops & {aten.convolution, aten.convolution_backward}:
        notes.append(
            "convolutions' kernel workspaces are not in the estimate: on the CPU oneDNN's layout reorders (which "
            "depend on the processor; resnet50 measured -3.3% in inference, -0.3% to -1.1% in training), on CUDA cuDNN's "
            "workspace"
        )
    if target == "cpu" and autocast is not None and ops & {aten.mm, aten.addmm, aten.bmm}:
        notes.append(
            "oneDNN's scratchpads for reduced-precision matmuls on the CPU are not in the estimate: one per thread, alive "
            "inside the matmul (0.1-3.4 MB on 2 threads; -0.15% to -0.67% measured at the peak)"
        )
    return notes


def workspace_of(func: Any) -> Workspace | None:
    return WORKSPACES.get(func)
