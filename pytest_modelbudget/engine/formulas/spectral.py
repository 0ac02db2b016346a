"""Fourier transforms (``torch.fft``): FNet's token mixing, spectral convolutions, STFTs.

The usual convention: a complex transform of N points costs 5·N·log2(N) real FLOPs (the radix-2
Cooley-Tukey count: N/2·log2(N) butterflies of one complex multiply, 6 FLOPs, and two complex
adds, 4), a real-input or real-output transform half that. A transform over several dimensions
is one of N = the product of their sizes (the sum of the 1-d transforms' costs along each comes
to the same). MACs are half the transform's FLOPs, as for the other ops priced in MACs;
normalization (``norm="ortho"``, the inverse's 1/N) adds one FLOP per real output element, two per
complex one. N that is not a power of two is priced by the same formula (the FFT libraries'
mixed-radix and Bluestein paths cost more, by a constant).
"""

from __future__ import annotations

import math
from typing import Any

from .table import Cost, numel, register_cost


def _transform(batch_numel: int, points: int, per_point: float) -> int:
    """FLOPs of the transforms of ``points`` points that ``batch_numel`` elements hold."""
    if points <= 1 or batch_numel == 0:
        return 0
    return round(batch_numel // points * per_point * points * math.log2(points))


def _cost(transform_flops: int, normalized: bool, out: Any) -> Cost:
    scaling = 0
    if normalized:
        scaling = numel(out) * (2 if out.is_complex() else 1)
    macs = transform_flops // 2
    return Cost(macs, 2 * macs + scaling)


def _points(shape: Any, dims: Any) -> int:
    return math.prod(shape[d] for d in dims)


@register_cost("_fft_c2c")
def _fft_c2c(args: tuple, kwargs: dict, out: Any) -> Cost:
    # (self, dim, normalization, forward)
    self, dims, normalization = args[0], args[1], args[2]
    return _cost(_transform(self.numel(), _points(self.shape, dims), 5.0), normalization != 0, out)


@register_cost("_fft_r2c")
def _fft_r2c(args: tuple, kwargs: dict, out: Any) -> Cost:
    # (self, dim, normalization, onesided): a real input of N points per transform.
    self, dims, normalization = args[0], args[1], args[2]
    return _cost(_transform(self.numel(), _points(self.shape, dims), 2.5), normalization != 0, out)


@register_cost("_fft_c2r")
def _fft_c2r(args: tuple, kwargs: dict, out: Any) -> Cost:
    # (self, dim, normalization, last_dim_size): a real output of N points per transform.
    dims, normalization = args[1], args[2]
    return _cost(_transform(out.numel(), _points(out.shape, dims), 2.5), normalization != 0, out)
