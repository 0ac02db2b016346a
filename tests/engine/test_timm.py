"""timm's trickiest models, against timm's own published table (``param_count``, millions to two
decimals; ``infer_gmacs``, fvcore's count after ``reparameterize_model``, see
../shared/reference/README.md) and PyTorch's FlopCounterMode on the same model; each left unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..helpers import measure_checked

timm = pytest.importorskip("timm")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

# From timm's results/benchmark-infer-amp-nchw-pt291-cu130-pro6000maxq.csv at 224 x 224:
# model: (param_count in millions, infer_gmacs)
PUBLISHED = {
    "repvgg_a0": (8.31, 1.36),
    "mobileone_s0": (2.08, 0.28),
    "sequencer2d_s": (27.65, 4.96),
    "convmixer_768_32": (21.11, 19.55),
}


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def _build(name: str, meta: bool = True) -> nn.Module:
    with torch.device("meta") if meta else torch.device("cpu"):
        return timm.create_model(name, pretrained=False).eval()


@pytest.mark.parametrize("name", ["repvgg_a0", "mobileone_s0"])
def test_reparameterisable_models_before_and_after_fusing(name):
    model = _build(name, meta=False)  # fusing branches computes new weights: real values
    x = torch.randn(1, 3, 224, 224)
    before = measure_checked(model, x)
    assert before.params == sum(p.numel() for p in model.parameters())
    fused = timm.utils.reparameterize_model(model)
    after = measure_checked(fused, x)
    params_m, gmacs = PUBLISHED[name]
    assert round(after.params / 1e6, 2) == params_m  # the published count is of the fused model
    assert round(after.macs / 1e9, 2) == gmacs  # fused: no norms left for fvcore to add
    assert after.macs == flop_counter_macs(fused, x)
    assert before.params > after.params and before.macs > after.macs  # the branches were real work


def test_convmixer_same_padding_is_counted():
    # fvcore has no handler for padding="same" convolutions, so the published GMACs are below the
    # real count; FlopCounterMode counts them.
    model = _build("convmixer_768_32")
    x = torch.empty(1, 3, 224, 224, device="meta")
    stats = measure_checked(model, x)
    params_m, gmacs = PUBLISHED["convmixer_768_32"]
    assert round(stats.params / 1e6, 2) == params_m
    assert stats.macs == flop_counter_macs(model, x)
    assert stats.macs / 1e9 > gmacs
    assert stats.uncounted_ops == {}


class LstmMacsByHand:
    """Every LSTM step multiplies its input by W_ih and its state by W_hh: for an input of T
    steps and B sequences, T * B * (4H * I + 4H * H) per layer and direction. Counted from the
    shapes each nn.LSTM is called with (forward pre-hooks, removed afterwards)."""

    def __init__(self, model: nn.Module) -> None:
        self.total = 0
        self.hooks = [m.register_forward_pre_hook(self.count) for m in model.modules() if isinstance(m, nn.LSTM)]

    def count(self, module: nn.LSTM, args: tuple) -> None:
        batch, steps = args[0].shape[:2] if module.batch_first else args[0].shape[1::-1]
        for layer in range(module.num_layers):
            for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
                w_ih = getattr(module, f"weight_ih_l{layer}{suffix}")
                w_hh = getattr(module, f"weight_hh_l{layer}{suffix}")
                self.total += steps * batch * (w_ih.numel() + w_hh.numel())

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def test_sequencer_lstms_are_counted():
    # Sequencer2D mixes rows and columns with bidirectional LSTMs. fvcore has no LSTM handler, so
    # the published GMACs leave them out; on meta, LSTM runs as its matmuls, which FlopCounterMode
    # counts. Ours equals FlopCounterMode, and less the LSTMs by hand it is the published figure
    # (within fvcore's extra 5 FLOPs an element for the layer norms).
    model = _build("sequencer2d_s")
    x = torch.empty(1, 3, 224, 224, device="meta")
    by_hand = LstmMacsByHand(model)
    stats = measure_checked(model, x)  # the hooks see the shapes of this run
    by_hand.remove()
    lstm = by_hand.total
    params_m, gmacs = PUBLISHED["sequencer2d_s"]
    assert round(stats.params / 1e6, 2) == params_m
    assert stats.macs == flop_counter_macs(model, x)
    assert 0.3 * stats.macs < lstm < stats.macs
    assert abs((stats.macs - lstm) / 1e9 - gmacs) < 0.05
    assert stats.uncounted_ops == {}
