"""Per-op rules (docs/FLOPS.md) on the ops real models run: BatchNorm in eval and training, ops that
only move data, pointwise and reduction ops that PyTorch does not tag."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.flop_counter import FlopCounterMode

from ..helpers import measure_checked


def test_eval_batch_norm_is_one_scale_and_one_shift_per_element():
    # Eval BatchNorm reaches aten as native_batch_norm(training=False): 2 FLOPs an element
    # (fvcore's convention), with or without affine; with batch statistics 4, plus 1 each for
    # weight and bias.
    elements = 8 * 4 * 4
    assert measure_checked(nn.BatchNorm2d(8), input_size=(1, 8, 4, 4)).flops == 2 * elements
    assert measure_checked(nn.BatchNorm2d(8, affine=False), input_size=(1, 8, 4, 4)).flops == 2 * elements
    assert measure_checked(nn.BatchNorm2d(8, track_running_stats=False), input_size=(1, 8, 4, 4)).flops == 6 * elements
    training = measure_checked(nn.BatchNorm2d(8), input_size=(1, 8, 4, 4), mode="training")
    assert training.layers[""].flops >= 6 * elements


def test_a_cnn_in_eval_counts_its_batch_norms_at_two_flops():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    stats = measure_checked(model, input_size=(2, 3, 8, 8))
    conv_macs = 2 * 16 * 8 * 8 * 3 * 9
    activations = 2 * 16 * 8 * 8
    assert stats.macs == conv_macs
    assert stats.flops == 2 * conv_macs + 2 * activations + activations  # conv, BN, ReLU


class CellLoop(nn.Module):
    """A Python loop of LSTMCell and GRUCell steps, as char-RNNs and decoders are written."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(8, 16)
        self.gru = nn.GRUCell(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = g = x.new_zeros(x.shape[1], 16)
        for step in x:
            h, c = self.lstm(step, (h, c))
            g = self.gru(h, g)
        return g


def test_recurrent_cell_loops_leave_nothing_uncounted():
    steps, batch = 5, 3
    stats = measure_checked(CellLoop(), input_size=(steps, batch, 8))
    assert stats.uncounted_ops == {}
    lstm = steps * batch * 4 * 16 * (8 + 16)
    gru = steps * batch * 3 * 16 * (16 + 16)
    assert stats.macs == lstm + gru


class Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True)[0]


def test_packed_sequences_and_unpooling_only_move_data():
    stats = measure_checked(Packed(), inputs=(torch.randn(2, 5, 4), torch.tensor([5, 3])))
    assert "_pack_padded_sequence" not in stats.uncounted_ops
    assert "_pad_packed_sequence" not in stats.uncounted_ops

    class Unpool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled, indices = nn.functional.max_pool2d(x, 2, return_indices=True)
            return nn.functional.max_unpool2d(pooled, indices, 2)

    stats = measure_checked(Unpool(), input_size=(1, 2, 4, 4))
    assert stats.uncounted_ops == {}


def test_an_encoder_with_a_padding_mask_in_eval_is_counted_in_full():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    stats = measure_checked(model, inputs=(torch.randn(2, 6, 16),), forward_kwargs={"src_key_padding_mask": mask})
    assert stats.uncounted_ops == {} and stats.execution == "fake"
    tokens = 2 * 6
    projections_and_ffn = tokens * (3 * 16 * 16 + 16 * 16 + 2 * 16 * 32)
    attention = 2 * 2 * 6 * 6 * 8 * 2  # batch x heads x L x S x head_dim, QK^T and PV
    assert stats.macs == 2 * (projections_and_ffn + attention)


@pytest.mark.parametrize(
    ("op", "flops"),
    [
        (lambda x: torch.floor_divide(x, 3), 24),
        (lambda x: torch.histc(x, bins=4), 24),
        (lambda x: nn.functional.mse_loss(x, torch.zeros_like(x)), 3 * 24),
    ],
)
def test_untagged_arithmetic_is_priced(op, flops):
    class Op(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return op(x)

    stats = measure_checked(Op(), input_size=(4, 6))
    assert stats.uncounted_ops == {}
    assert stats.flops == flops


class CrossEntropy(nn.Module):
    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target, weight=self.weight)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "class-weights"])
@pytest.mark.parametrize("shape", [(8, 10), (2, 10, 3, 4)], ids=["nll_loss", "nll_loss2d"])
def test_cross_entropy_is_its_log_softmax_and_one_sum_per_target(shape, weighted):
    # log_softmax: 5 per logit; the negative log-likelihood: one add per target to sum them, and
    # one multiply more with class weights. The mean's single division is not worth a rule.
    logits = torch.randn(shape)
    target = torch.randint(0, 10, (shape[0], *shape[2:]))
    weight = torch.rand(10) if weighted else None
    stats = measure_checked(CrossEntropy(weight), (logits, target))
    assert stats.uncounted_ops == {}
    assert stats.flops == 5 * logits.numel() + (2 if weighted else 1) * target.numel()


class TriangularSolve(nn.Module):
    def __init__(self, unitriangular: bool = False) -> None:
        super().__init__()
        self.unitriangular = unitriangular

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve_triangular(a, b, upper=False, unitriangular=self.unitriangular)


def test_a_triangular_solve_is_priced_by_substitution():
    # Qwen3-Next's gated delta rule solves a batch of lower-triangular systems. By hand, for a
    # 6 x 6 system and 3 right-hand sides: unknown i takes i multiply-adds with the solved ones,
    # 0+1+2+3+4+5 = 15 per column, 45 per system, 90 for a batch of 2; FLOPs twice that plus one
    # division per unknown (36), none when the diagonal is ones.
    a = torch.tril(torch.rand(2, 6, 6)) + torch.eye(6)
    b = torch.rand(2, 6, 3)
    stats = measure_checked(TriangularSolve(), (a, b))
    assert (stats.macs, stats.flops, stats.uncounted_ops) == (90, 2 * 90 + 36, {})
    unit = measure_checked(TriangularSolve(unitriangular=True), (a, b))
    assert (unit.macs, unit.flops) == (90, 180)


class GridSample(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return nn.functional.grid_sample(image, grid, mode=self.mode, align_corners=False)


@pytest.mark.parametrize(("mode", "per_output"), [("bilinear", 4), ("nearest", 0), ("bicubic", 16)])
def test_grid_sampling_is_priced_as_upsampling_plus_the_grid(mode, per_output):
    # RT-DETR's deformable attention samples with F.grid_sample. A (1, 4, 8, 8) image sampled at a
    # 5 x 6 grid: 4 * 30 = 120 output elements at the upsampling price of the mode, plus 2 FLOPs
    # per grid coordinate (60 of them) to map [-1, 1] to pixels. No multiply-accumulates.
    stats = measure_checked(GridSample(mode), (torch.rand(1, 4, 8, 8), torch.rand(1, 5, 6, 2) * 2 - 1))
    assert (stats.macs, stats.flops, stats.uncounted_ops) == (0, per_output * 120 + 2 * 60, {})


class ScatterAndPolar(nn.Module):
    def forward(self, x: torch.Tensor, index: torch.Tensor) -> tuple:
        summed = torch.zeros(3, 4).scatter_reduce(0, index, x, reduce="sum")  # TAPAS's segment sums
        added = torch.zeros(5, 4).index_add(0, torch.tensor([0, 1, 1]), torch.ones(3, 4))
        return summed, added, torch.polar(x, x)  # Llama 4's rotary frequencies


def test_scatter_reductions_and_polar_are_priced():
    # By hand: scatter_reduce folds 2 x 4 = 8 source elements (1 each), index_add 3 x 4 = 12,
    # polar makes 8 complex numbers at 4 FLOPs each (cos, sin, two multiplies): 52.
    stats = measure_checked(ScatterAndPolar(), (torch.rand(2, 4), torch.zeros(2, 4, dtype=torch.long)))
    assert (stats.macs, stats.flops, stats.uncounted_ops) == (0, 8 + 12 + 32, {})


class Distances(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, y, compute_mode="use_mm_for_euclid_dist")


def test_cdist_is_priced_as_its_products():
    # By hand: 2 batches of 5 points against 4 over 3 features: 2 * 5 * 4 * 3 = 120 products;
    # FLOPs 240, plus the squared norms (one per feature of every point: 30 + 24) and 3 per
    # distance (two adds and a root, 40 distances).
    stats = measure_checked(Distances(), (torch.rand(2, 5, 3), torch.rand(2, 4, 3)))
    assert (stats.macs, stats.flops, stats.uncounted_ops) == (120, 240 + 54 + 120, {})


class _Fourier(nn.Module):
    def __init__(self, transform):
        super().__init__()
        self.transform = transform

    def forward(self, x):
        return self.transform(x)


@pytest.mark.parametrize(
    ("transform", "macs", "scaling"),
    [
        # A complex transform of N points: 5 N log2 N FLOPs, half of them MACs. x is 2 x 8 x 16.
        (lambda x: torch.fft.fftn(x, dim=(1, 2)).real, 2 * 5 * 128 * 7 // 2, 0),  # 2 transforms of 128
        (lambda x: torch.fft.fft(x.to(torch.complex64)).real, 16 * 5 * 16 * 4 // 2, 0),  # 16 of 16
        # Real input or output: half the complex cost; the inverse's 1/N, one FLOP per real output.
        (lambda x: torch.fft.rfft(x).real, 16 * 5 * 16 * 4 // 4, 0),
        (lambda x: torch.fft.irfft(x.to(torch.complex64), n=16), 16 * 5 * 16 * 4 // 4, 2 * 8 * 16),
        # norm="ortho" scales every complex output: two FLOPs each.
        (lambda x: torch.fft.fft(x.to(torch.complex64), norm="ortho").real, 16 * 5 * 16 * 4 // 2, 2 * 2 * 8 * 16),
    ],
    ids=["fftn", "fft", "rfft", "irfft", "fft-ortho"],
)
def test_fourier_transforms_are_priced_at_5_n_log2_n(transform, macs, scaling):
    stats = measure_checked(_Fourier(transform), torch.randn(2, 8, 16), device="cpu")
    assert stats.uncounted_ops == {}
    assert stats.macs == macs
    assert stats.flops == 2 * macs + scaling


def test_fnet_from_transformers_counts_its_token_mixing():
    import transformers

    config = transformers.FNetConfig(
        hidden_size=64, num_hidden_layers=2, intermediate_size=128, vocab_size=100, max_position_embeddings=64
    )
    torch.manual_seed(0)
    model = transformers.FNetModel(config).eval()
    ids = torch.randint(0, 100, (2, 32))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    stats = measure_checked(model, ids)
    assert stats.uncounted_ops == {}
    # FlopCounterMode prices the matmuls and no FFT; each layer's fftn over (tokens, hidden) is
    # one complex transform of N = 32 x 64 points per sequence, 5 N log2 N FLOPs, half of them MACs.
    points = 32 * 64
    fourier = 2 * 2 * 5 * points * 11 // 2  # 2 layers x 2 sequences, log2(2048) = 11
    assert stats.macs == counter.get_total_flops() // 2 + fourier
