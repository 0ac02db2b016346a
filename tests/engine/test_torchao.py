"""torchao's tensor-subclass quantization: an int8 weight is one byte per element plus its scales and
zero points (what ``__tensor_flatten__`` says it holds), never its logical fp32 size, and the int8
matmul it dispatches (``aten._int_mm``) does the float layer's MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ..helpers import measure_checked

torchao_quantization = pytest.importorskip("torchao.quantization", reason="torchao is not installed")

pytestmark = pytest.mark.filterwarnings("ignore")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128))


# Per layer (out, in): int8 weights (out*in bytes), one fp32 scale and one int8 zero point per
# output row (torchao's per-row granularity), the fp32 bias untouched.
def _int8_layer_bytes(out: int, inp: int) -> int:
    return out * inp + out * 4 + out * 1 + out * 4


@pytest.mark.parametrize("config", ["Int8WeightOnlyConfig", "Int8DynamicActivationInt8WeightConfig"])
def test_torchao_int8_weights_are_counted_at_their_real_size(config):
    float_stats = measure_checked(_mlp(), input_size=(4, 256))
    model = _mlp()
    torchao_quantization.quantize_(model, getattr(torchao_quantization, config)())
    assert type(model[0].weight).__module__.startswith("torchao")
    stats = measure_checked(model, input_size=(4, 256))
    assert stats.params == float_stats.params == 256 * 512 + 512 + 512 * 128 + 128
    assert stats.bytes == _int8_layer_bytes(512, 256) + _int8_layer_bytes(128, 512)
    assert float_stats.bytes == 4 * float_stats.params
    assert stats.macs == float_stats.macs == 4 * (256 * 512 + 512 * 128)
    assert stats.uncounted_ops == {}
    assert stats.layers["0"].bytes == _int8_layer_bytes(512, 256)
