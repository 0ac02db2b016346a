"""Recurrent layers: oneDNN's fused LSTM layer (``nn.LSTM`` on CPU); the unfused RNN/GRU cells
decompose into matmuls and pointwise ops that the other families price."""

from __future__ import annotations

from typing import Any

from .table import Cost, register_cost


@register_cost("mkldnn_rnn_layer")
def _mkldnn_rnn_layer(args: tuple, kwargs: dict, out: Any) -> Cost:
    # oneDNN runs one direction of one LSTM layer: input (T, B, I), w_ih (4H, I), w_hh (4H, H).
    inputs, w_ih, w_hh = args[0], args[1], args[2]
    steps_times_batch = inputs.numel() // inputs.shape[-1]
    macs = steps_times_batch * (w_ih.numel() + w_hh.numel())
    hidden = w_hh.shape[1]
    gates = steps_times_batch * hidden * 9  # 4 activations, 3 products, 1 sum, 1 tanh
    return Cost(macs, 2 * macs + gates)
