"""Budgets checked in code: the marker holds the limits, the fixture measures."""

import pytest

from examples.models import TinyCNN, TransformerBlock


@pytest.mark.budget(params="20K", macs="2.5M")
def test_tiny_cnn(model_budget):
    model_budget.check(TinyCNN(width=16), input_size=(1, 3, 32, 32))


@pytest.mark.budget(name="cnn_training", mode="training")
def test_tiny_cnn_training(model_budget):
    stats = model_budget.check(TinyCNN(width=16), input_size=(8, 3, 32, 32))
    assert stats.unused_params == []


@pytest.mark.budget(params="800K", tolerance="0.5%")
def test_transformer_block_long_context(model_budget):
    model_budget.check(TransformerBlock(dim=256, heads=4), input_size=(1, 1024, 256))
