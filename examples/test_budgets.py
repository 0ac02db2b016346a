"""Budgets checked in code: the marker holds the limits, the fixture measures."""

import pytest
import torch

from examples.models import TinyCNN, TransformerBlock


@pytest.mark.budget(params="20K", macs="2.5M")
def test_tiny_cnn(model_budget):
    model_budget.check(TinyCNN(width=16), input_size=(1, 3, 32, 32))


@pytest.mark.budget(name="cnn_training", mode="training", peak_memory="12MB")
def test_tiny_cnn_training(model_budget):
    # A training step with AdamW: activations, gradients and the optimizer's state, and the 8.5 MB
    # cuBLAS workspace a CUDA process takes for its first matmul.
    stats = model_budget.check(
        TinyCNN(width=16), input_size=(8, 3, 32, 32), optimizer=lambda params: torch.optim.AdamW(params)
    )
    assert stats.unused_params == []


@pytest.mark.budget(params="800K", tolerance="0.5%")
def test_transformer_block_long_context(model_budget):
    model_budget.check(TransformerBlock(dim=256, heads=4), input_size=(1, 1024, 256))
