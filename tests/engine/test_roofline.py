"""``roofline_time``: each forward op at a named GPU's peak for its dtype or its bandwidth,
whichever takes longer, summed; the issue's figures worked by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_modelbudget import MeasureError
from pytest_modelbudget.gpus import GPUS, Gpu

from ..helpers import measure_checked


class Relu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class MatMul(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def test_a_memory_bound_op_takes_its_bytes_over_the_bandwidth():
    # 100,000,000 fp32 elements read and written: 800 MB over H100 SXM's 3.35 TB/s is 238.8 us.
    stats = measure_checked(Relu(), input_size=(100_000_000,), gpu="h100-sxm")
    assert stats.roofline_time == round(800e6 / 3.35e12 * 1e9) == 238_806
    # An A100 80GB moves it at 2.039 TB/s.
    assert measure_checked(Relu(), input_size=(100_000_000,), gpu="a100-sxm-80gb").roofline_time == round(
        800e6 / 2.039e12 * 1e9
    )


def test_a_compute_bound_matmul_takes_its_flops_over_the_dtypes_peak():
    # bf16 8192 x 8192 by 8192 x 8192: 2 x 8192^3 FLOPs at 989.5 TFLOPS (H100 SXM, dense) is
    # 1.11 ms; its 402 MB would take 0.12 ms, so compute bounds it. An A100 (312 TFLOPS): 3.2x.
    a = torch.empty(8192, 8192, dtype=torch.bfloat16, device="meta")
    flops = 2 * 8192**3
    h100 = measure_checked(MatMul(), (a, a), gpu="h100-sxm").roofline_time
    a100 = measure_checked(MatMul(), (a, a), gpu="a100-sxm-80gb").roofline_time
    assert h100 == round(flops / 989.5e12 * 1e9) == 1_111_179
    assert a100 == round(flops / 312e12 * 1e9)
    assert 3.1 < a100 / h100 < 3.2


def test_fp32_matmuls_run_at_the_fp32_rate_and_convolutions_at_tf32_as_pytorch_defaults():
    gpu = GPUS["a100-sxm-80gb"]
    a = torch.empty(4096, 4096, device="meta")
    matmul = measure_checked(MatMul(), (a, a), gpu=gpu).roofline_time
    assert matmul == round(2 * 4096**3 / 19.5e12 * 1e9)  # allow_tf32 is off for matmuls
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False, device="meta")
    stats = measure_checked(conv, input_size=(64, 256, 56, 56), gpu=gpu)
    assert stats.roofline_time == round(stats.flops / 156e12 * 1e9)  # cuDNN's TF32 default


def test_layers_add_up_and_a_gpu_of_ones_own_is_accepted():
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
    mine = Gpu("mine", 1e12, {"fp32": 1e12})
    stats = measure_checked(model, input_size=(32, 64), gpu=mine)
    assert stats.gpu == "mine"
    parts = sum(stats.layers[name].roofline_time for name in ("0", "1", "2"))
    assert abs(stats.roofline_time - parts) <= 3  # each rounded to the nanosecond
    assert "roofline_time" not in measure_checked(model, input_size=(32, 64)).figures()


def test_an_unknown_gpu_is_named():
    with pytest.raises(MeasureError, match="gpu must be one of h100-sxm, h100-pcie, h200"):
        measure_checked(Relu(), input_size=(4,), gpu="h1000")


def test_the_gpu_also_picks_the_attention_kernel_a_t4_has_no_flash():
    from torch.nn import functional as F

    class Attention(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    q = torch.empty(1, 8, 1024, 64, dtype=torch.float16, device="meta")
    h100 = measure_checked(Attention(), q, gpu="h100-sxm")
    t4 = measure_checked(Attention(), q, gpu="t4")
    assert any("flash kernel" in note for note in h100.peak_memory_approximations)
    assert any("efficient kernel" in note for note in t4.peak_memory_approximations)
