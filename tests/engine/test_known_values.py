"""Values a shape-only run keeps because they are known without running the model: a table of
sizes a forward builds from shapes (D-FINE's ``spatial_shapes``) and a one-element weight (D-FINE's
``up``, a step count). A model that reads them needs no real run; one that writes values only a
real run knows into such a table still gets the right figures."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..helpers import measure_checked


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


class Pyramid(nn.Module):
    """Two feature levels flattened into one sequence and split again by a table of their sizes
    built in forward, which is checked by reading its values (as the deformable DETRs do)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [self.stem(x)]
        levels.append(self.down(levels[0]))
        sizes = torch.empty((len(levels), 2), dtype=torch.long, device=x.device)
        for index, level in enumerate(levels):
            sizes[index, 0] = level.shape[-2]
            sizes[index, 1] = level.shape[-1]
        flat = torch.cat([level.flatten(2).transpose(1, 2) for level in levels], 1)
        lengths = sizes[:, 0] * sizes[:, 1]
        if lengths.sum() != flat.shape[1]:
            raise ValueError("the levels' sizes do not add up to the sequence")
        return sum(self.proj(part).mean(1) for part in flat.split(lengths.tolist(), 1))


# By hand, for a 1x3x16x16 input: the stem's 16x16 outputs x 8 channels x (3 x 3x3), the strided
# conv's 8x8 x 8 x (8 x 3x3), the projection of 256 + 64 tokens, 8 x 8 each.
PYRAMID_MACS = 16 * 16 * 8 * 27 + 8 * 8 * 8 * 72 + (256 + 64) * 64


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_table_of_sizes_built_in_forward_keeps_its_values(device):
    with torch.device(device):
        model = Pyramid()
    stats = measure_checked(model, input_size=(1, 3, 16, 16))
    assert stats.execution == "fake" and stats.notes == []
    assert stats.macs == PYRAMID_MACS == flop_counter_macs(Pyramid(), torch.randn(1, 3, 16, 16))


class Flagged(nn.Module):
    """Writes a value computed from its input into a table it made, then branches on it."""

    def __init__(self) -> None:
        super().__init__()
        self.wide, self.narrow = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flags = torch.zeros((2, 2), dtype=torch.long, device=x.device)
        flags[0, 0] = (x.sum() > 0).long()
        return self.wide(x) if flags.sum() > 0 else self.narrow(x)


def test_a_table_written_with_values_only_a_real_run_knows_is_not_trusted():
    # The table's zeros would send a shape-only run down the narrow branch; the input's sum is
    # positive, so the model takes the wide one: a real run, which says why.
    stats = measure_checked(Flagged(), torch.ones(3, 4))
    assert stats.execution == "real" and "fake execution failed" in stats.notes[0]
    assert stats.macs == 3 * 4 * 4
    assert stats.unused_params == ["narrow.weight", "narrow.bias"]


class Tagged(nn.Module):
    """Writes an unknown value into a table it made, and only adds it: no value is needed."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tags = torch.zeros((2, 2), dtype=torch.long, device=x.device)
        tags[0] = x[0, :2].argmax()
        return self.linear(x) + tags.sum()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_table_written_with_unknown_values_that_are_never_read_stays_shape_only(device):
    # Measured again with no table kept real: on meta, as before tables were kept.
    with torch.device(device):
        model = Tagged()
    stats = measure_checked(model, input_size=(3, 4))
    assert stats.execution == "fake" and stats.macs == 3 * 4 * 4


class Repeated(nn.Module):
    """Reads a one-element weight as a Python number, and counts its calls in a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.times = nn.Parameter(torch.tensor(3.0))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        for _ in range(int(self.times)):
            x = self.linear(x)
        return x * self.times


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_a_one_element_weight_keeps_its_value_and_the_model_its_own(mode):
    # measure_checked also checks that ``calls`` is still 0: the run wrote a copy of it.
    stats = measure_checked(Repeated(), input_size=(2, 4), mode=mode)
    assert stats.execution == "fake" and stats.notes == []
    assert stats.layers["linear"].calls == 3
    assert stats.macs == 3 * 2 * 4 * 4  # one forward's, in training too (SPEC §2)


def test_d_fine_runs_shape_only_on_meta_and_on_the_cpu():
    # D-FINE reads its one-element ``up`` and ``reg_scale`` weights and checks the table of its
    # feature levels' sizes: it used to need a real run on the CPU and could not be measured on
    # meta at all. The count is FlopCounterMode's on a real run of the same config.
    pytest.importorskip("transformers")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pytest_modelbudget.engine.specs.hf import build_hf

    overrides = {"decoder_layers": 1, "encoder_layers": 1, "num_queries": 30}
    built = build_hf("d_fine", overrides, meta=True)
    on_meta = measure_checked(built.model, inputs=built.inputs)
    cpu_model = build_hf("d_fine", overrides, meta=False).model
    on_cpu = measure_checked(cpu_model, inputs=built.inputs)
    assert on_meta.execution == on_cpu.execution == "fake"
    assert on_meta.notes == on_cpu.notes == []
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        cpu_model(**built.inputs)
    assert on_meta.macs == on_cpu.macs == counter.get_total_flops() // 2
    assert on_meta.params == on_cpu.params == cpu_model.num_parameters()


class FramePadded(nn.Module):
    """Pads its input to whole frames, the count computed from one-element buffers as EnCodec's
    and WavTokenizer's convolutions compute it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, kernel_size=7, stride=3)
        self.register_buffer("kernel", torch.tensor(7))
        self.register_buffer("stride", torch.tensor(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        frames = torch.ceil((length - self.kernel) / self.stride + 1).to(torch.int64) - 1
        extra = frames * self.stride + self.kernel - length
        return self.conv(nn.functional.pad(x, (0, int(extra))))


def test_arithmetic_on_one_element_buffers_gives_their_values():
    # 101 samples: 32 whole frames need 103, so 2 zeros are padded; 33 outputs x 4 channels x 7.
    stats = measure_checked(FramePadded(), input_size=(1, 1, 101))
    assert stats.execution == "fake" and stats.notes == []
    assert stats.layers["conv"].output_shapes == [[1, 4, 33]]
    assert stats.macs == 33 * 4 * 7 == flop_counter_macs(FramePadded(), torch.randn(1, 1, 101))


def test_wavtokenizer_pads_from_its_buffers_without_a_real_run():
    # It used to need a real run (``.item()`` on its convolutions' stride and kernel buffers).
    pytest.importorskip("transformers")
    from pytest_modelbudget.engine.specs.hf import build_hf

    built = build_hf("wavtokenizer_encoder", {}, meta=False)
    stats = measure_checked(built.model, inputs=built.inputs)
    assert stats.execution == "fake" and stats.notes == []
    # FlopCounterMode on a real run, plus what it has no formula for, by hand: its LSTM (oneDNN's
    # layer on the CPU), 4 gates x hidden x (input + hidden) per step and layer.
    lstm_macs = []

    def count_lstm(module: nn.LSTM, args: tuple, out: object) -> None:
        steps, batch = args[0].shape[:2]
        widths = [module.input_size] + [module.hidden_size] * (module.num_layers - 1)
        lstm_macs.append(sum(steps * batch * 4 * module.hidden_size * (width + module.hidden_size) for width in widths))

    lstms = [module for module in built.model.modules() if isinstance(module, nn.LSTM)]
    assert len(lstms) == 1 and not lstms[0].batch_first and not lstms[0].bidirectional
    handle = lstms[0].register_forward_hook(count_lstm)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        built.model(**built.inputs)
    handle.remove()
    assert stats.macs == counter.get_total_flops() // 2 + sum(lstm_macs)
    assert stats.params == built.model.num_parameters()
