"""A team's own kernels (``torch.library.custom_op`` with a fake kernel): arithmetic no formula
prices is named, never a silent zero, and a formula the team registers prices it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_modelbudget import MeasureError, register_formula

from ..helpers import measure_checked


def _kernel(name: str, body):
    """A team's own op ``mbtest::NAME`` with a fake kernel (its output's shape), as teams write them."""

    @torch.library.custom_op(f"mbtest::{name}", mutates_args=())
    def op(x: torch.Tensor) -> torch.Tensor:
        return body(x)

    @op.register_fake
    def _(x):
        return torch.empty_like(x)

    return op


fused_act = _kernel("fused_act", lambda x: x * torch.sigmoid(x))
priced_act = _kernel("priced_act", lambda x: x * torch.sigmoid(x))


class Net(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.first, self.second, self.act = nn.Linear(16, 32), nn.Linear(32, 8), act

    def forward(self, x):
        return self.second(self.act(self.first(x)))


def test_a_custom_op_with_no_formula_is_named_with_its_count():
    stats = measure_checked(Net(fused_act), torch.randn(4, 16))
    assert stats.uncounted_ops == {"mbtest.fused_act": 1}
    assert stats.macs == 4 * 16 * 32 + 4 * 32 * 8  # the linears alone: the op is not guessed


def test_a_registered_formula_prices_a_custom_op():
    @register_formula("mbtest::priced_act")
    def cost(args, kwargs, out):
        # x * sigmoid(x): the sigmoid (exp, add, divide) and the product, 4 FLOPs an element.
        return 0, 4 * out.numel()

    stats = measure_checked(Net(priced_act), torch.randn(4, 16))
    assert stats.uncounted_ops == {}
    assert stats.macs == 4 * 16 * 32 + 4 * 32 * 8
    assert stats.flops == 2 * stats.macs + 4 * 4 * 32


def test_a_formula_must_return_macs_and_flops():
    @register_formula("mbtest.badly_priced")
    def cost(args, kwargs, out):
        return out.numel()

    badly_priced = _kernel("badly_priced", lambda x: x.clone())

    with pytest.raises(MeasureError, match=r"mbtest::badly_priced returned 128; expected \(macs, flops\)"):
        measure_checked(Net(badly_priced), torch.randn(4, 16))
    with pytest.raises(ValueError, match="expected an op's qualified name"):
        register_formula("fused_act")
