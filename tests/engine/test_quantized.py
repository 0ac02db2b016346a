"""Quantized models (torch.ao eager-mode quantization): packed int8 weights are the model's
parameters, their real bytes are its size, and the quantized kernels do the float layers' MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.ao import quantization as tq

from ..helpers import measure_checked

pytestmark = [
    pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines, reason="no fbgemm"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def test_a_dynamically_quantized_mlp():
    float_stats = measure_checked(_mlp(), input_size=(4, 64))
    model = tq.quantize_dynamic(_mlp(), {nn.Linear}, dtype=torch.qint8)
    stats = measure_checked(model, input_size=(4, 64))
    assert stats.params == float_stats.params == 64 * 128 + 128 + 128 * 10 + 10
    assert stats.frozen_params == stats.params
    # int8 weights (1 byte), fp32 biases, per-tensor scale: no per-channel tensors.
    assert stats.bytes == (64 * 128 + 128 * 10) * 1 + (128 + 10) * 4
    assert stats.macs == float_stats.macs == 4 * (64 * 128 + 128 * 10)
    assert stats.uncounted_ops == {}
    assert stats.layers["0"].params == 64 * 128 + 128


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(self.quant(x))))
        return self.dequant(self.fc(torch.flatten(self.pool(x), 1)))


def _static_quantized() -> nn.Module:
    model = SmallCNN().eval()
    model = tq.fuse_modules(model, [["conv", "bn", "relu"]])
    model.qconfig = tq.get_default_qconfig("fbgemm")  # per-channel int8 weights
    tq.prepare(model, inplace=True)
    model(torch.randn(8, 3, 16, 16))  # calibrate
    return tq.convert(model)


def test_a_statically_quantized_cnn_with_per_channel_weights():
    model = _static_quantized()
    stats = measure_checked(model, input_size=(2, 3, 16, 16))
    conv_weights, conv_bias, fc_weights, fc_bias = 16 * 3 * 9, 16, 10 * 16, 10
    assert stats.params == conv_weights + conv_bias + fc_weights + fc_bias
    # int8 weights; fbgemm's per-channel scales (float64) and zero points (int64) per output
    # channel of the conv; the linear layer is per-channel too; fp32 biases.
    per_channel = (16 + 10) * (8 + 8)
    input_quantizer = 4 + 8  # QuantStub's scale (fp32) and zero point (int64) buffers
    assert stats.bytes == conv_weights + fc_weights + per_channel + (conv_bias + fc_bias) * 4 + input_quantizer
    assert stats.macs == 2 * 16 * 16 * 16 * 27 + 2 * 16 * 10
    assert stats.uncounted_ops == {}
    # The quantized kernels have no shape-only (fake) version: a real run, and it says why.
    assert stats.execution == "real" and "quantized::conv2d" in stats.notes[0]
    assert stats.layers["conv"].macs == 2 * 16 * 16 * 16 * 27


def test_torchvision_quantized_resnet18_matches_its_published_figures():
    models = pytest.importorskip("torchvision.models.quantization")
    weights = models.ResNet18_QuantizedWeights.IMAGENET1K_FBGEMM_V1
    model = models.resnet18(weights=None, quantize=True)
    stats = measure_checked(model, input_size=(1, 3, 224, 224))
    # The published count is the float model's: quantizing folds each BatchNorm into the conv
    # before it, its scale into the weights (gone) and its shift into the conv's bias.
    float_model = models.resnet18(weights=None, quantize=False)
    folded = sum(m.num_features for m in float_model.modules() if isinstance(m, nn.BatchNorm2d))
    assert folded == 4800
    assert stats.params == weights.meta["num_params"] - folded
    assert round(stats.macs / 1e9, 3) == weights.meta["_ops"]
    assert stats.uncounted_ops == {}
