"""``execution=``: "auto" (fake tensors, a real CPU run where the model needs values), "fake"
(never a real run) and "real" (straight to the real run, no fake attempt first)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_modelbudget import MeasureError

from ..helpers import measure_checked

CALLS = []


class Branchy(nn.Module):
    """Data-dependent: its branch reads a value fake tensors do not have."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        CALLS.append(type(x).__name__)
        return self.lin(x) if x.sum() > 0 else x


def test_real_goes_straight_to_the_real_run_with_the_same_figures():
    x = torch.ones(2, 8)
    CALLS.clear()
    auto = measure_checked(Branchy(), x)
    auto_calls = list(CALLS)
    CALLS.clear()
    real = measure_checked(Branchy(), x, execution="real")
    assert auto.execution == real.execution == "real"
    assert (real.params, real.macs, real.flops, real.peak_memory) == (
        auto.params,
        auto.macs,
        auto.flops,
        auto.peak_memory,
    )
    assert real.macs == 2 * 8 * 8
    # auto tried fake tensors first, then ran for real; real ran once, for real.
    assert auto_calls == ["FakeTensor", "Tensor"] and CALLS == ["Tensor"]
    assert "execution='real': measured with a real run that never writes the model's own tensors" in real.notes
    assert not any(note.startswith("fake execution failed") for note in real.notes)


def test_fake_never_falls_back_to_a_real_run():
    with pytest.raises(
        MeasureError, match=r"Branchy.forward raised .* on fake tensors .*execution='fake' never falls back"
    ):
        measure_checked(Branchy(), torch.ones(2, 8), execution="fake")
    plain = measure_checked(nn.Linear(8, 8), torch.ones(2, 8), execution="fake")
    assert plain.execution == "fake"


def test_real_needs_real_weights_and_execution_takes_three_values():
    with torch.device("meta"):
        on_meta = nn.Linear(8, 8)
    with pytest.raises(
        MeasureError, match=r"execution='real' runs Linear for real, and its weights are on the meta device"
    ):
        measure_checked(on_meta, torch.ones(2, 8, device="meta"), execution="real")
    with pytest.raises(MeasureError, match=r"execution must be one of 'auto', 'fake', 'real', found 'eager'"):
        measure_checked(nn.Linear(8, 8), torch.ones(2, 8), execution="eager")
