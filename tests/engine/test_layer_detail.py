"""What torchinfo and torchstat show per layer: each module's output shapes, and the bytes its ops
read and write (``memory_traffic``), by hand and against those tools."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pytest_modelbudget.stats import MAX_SHAPES

from ..helpers import measure_checked


def test_the_issues_hand_counts():
    # Linear: x 8x1000, W 1000x1000 and b 1000 read, y 8x1000 written, in float32.
    linear = measure_checked(nn.Linear(1000, 1000), input_size=(8, 1000))
    assert linear.memory_traffic == 32_000 + 4_000_000 + 4_000 + 32_000 == 4_068_000
    assert (linear.layers[""].memory_read, linear.layers[""].memory_written) == (4_036_000, 32_000)
    # Conv2d 3->64, 3x3, no bias, on 1x3x32x32: x 12,288 B and W 6,912 B read, y 262,144 B written.
    conv = measure_checked(nn.Conv2d(3, 64, 3, padding=1, bias=False), input_size=(1, 3, 32, 32))
    assert conv.memory_traffic == 12_288 + 6_912 + 262_144 == 281_344
    relu = measure_checked(nn.ReLU(), input_size=(1, 64, 32, 32))
    assert relu.memory_traffic == 2 * 262_144 == 524_288


class Reshapes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(4, 16).t().unsqueeze(0)[:, :2]


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu_(self.linear(x)))


def test_views_move_nothing_in_place_ops_read_and_write_and_a_weight_read_twice_counts_twice():
    assert measure_checked(Reshapes(), input_size=(64,)).memory_traffic == 0
    stats = measure_checked(Shared(), input_size=(2, 16))
    matmul = 2 * 16 * 4 + 16 * 16 * 4 + 2 * 16 * 4  # x, W read; y written
    relu_ = 2 * 2 * 16 * 4  # read and written in place
    assert stats.memory_traffic == 2 * matmul + relu_
    assert stats.layers["linear"].output_shapes == [[2, 16], [2, 16]]  # one shape per call
    assert stats.layers["linear"].calls == 2


class Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_a_fused_attention_kernel_moves_no_score_matrix_and_the_math_path_does():
    q, k, v = (torch.randn(1, 8, 1024, 64) for _ in range(3))
    qkv_out = 4 * q.numel() * 4
    scores = 8 * 1024 * 1024 * 4
    fused = measure_checked(Attention(), (q, k, v), device="cuda")  # simulated: fp32 takes the efficient kernel
    assert any("efficient kernel" in note for note in fused.peak_memory_approximations)
    assert qkv_out <= fused.memory_traffic < qkv_out + 8 * 1024 * 4 * 4  # and its log-sum-exp
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        math = measure_checked(Attention(), (q, k, v), device="cpu")
    assert math.memory_traffic > qkv_out + 2 * scores  # the scores written, then read back


def test_a_module_in_a_loop_keeps_its_first_shapes_only():
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(4, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.zeros(1, 8)
            for step in x:
                h = self.cell(step, h)
            return h

    stats = measure_checked(Loop(), input_size=(200, 1, 4))
    assert stats.layers["cell"].calls == 200
    assert stats.layers["cell"].output_shapes == [[1, 8]] * MAX_SHAPES


def test_output_shapes_are_torchinfos():
    torchvision = pytest.importorskip("torchvision")
    torchinfo = pytest.importorskip("torchinfo")
    for builder in (torchvision.models.resnet18, torchvision.models.mobilenet_v3_small):
        model = builder()
        summary = torchinfo.summary(model, input_size=(1, 3, 224, 224), verbose=0)
        names = {id(module): name for name, module in model.named_modules()}
        expected: dict[str, list[list[int]]] = {}
        for layer in summary.summary_list:  # one entry per call, as ours
            expected.setdefault(names[id(layer.module)], []).append(list(layer.output_size))
        stats = measure_checked(model, input_size=(1, 3, 224, 224))
        ours = {name: layer.output_shapes for name, layer in stats.layers.items() if layer.output_shapes}
        assert ours == expected, builder.__name__


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2d(8, 16, 3, padding=1), (2, 8, 16, 16)),
        (nn.Linear(32, 64), (4, 32)),
        (nn.ReLU(), (2, 8, 16, 16)),
        (nn.AvgPool2d(2), (2, 8, 16, 16)),
    ],
    ids=["conv", "linear", "relu", "avgpool"],
)
def test_torchstats_mem_read_and_write_where_it_agrees(layer, shape):
    # torchstat: MemRead = (input elements + parameters) x 4 B, MemWrite = output elements x 4 B.
    stats = measure_checked(layer, input_size=shape)
    out = layer(torch.randn(shape))
    params = sum(p.numel() for p in layer.parameters())
    assert stats.layers[""].memory_read == (torch.Size(shape).numel() + params) * 4
    assert stats.layers[""].memory_written == out.numel() * 4


def test_max_pooling_writes_its_indices_where_torchstat_does_not():
    # The kernel CUDA runs for max pooling (max_pool2d_with_indices) writes the argmax of each
    # window as int64 beside the output: 8 B more per output element than torchstat's MemWrite.
    stats = measure_checked(nn.MaxPool2d(2), input_size=(2, 8, 16, 16))
    outputs = 2 * 8 * 8 * 8
    assert stats.layers[""].memory_written == outputs * 4 + outputs * 8


def test_batch_norm_reads_its_running_statistics_where_torchstat_does_not():
    # Eval BatchNorm's kernel reads the running mean and variance besides weight and bias:
    # 2 x C x 4 B more than torchstat's MemRead, which counts parameters only.
    stats = measure_checked(nn.BatchNorm2d(8), input_size=(2, 8, 16, 16))
    torchstat_read = (2 * 8 * 16 * 16 + 2 * 8) * 4
    assert stats.layers[""].memory_read == torchstat_read + 2 * 8 * 4
