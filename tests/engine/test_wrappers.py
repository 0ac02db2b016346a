"""Models behind wrappers: TorchScript, DataParallel, DistributedDataParallel, torch.compile; and
lazy modules not yet materialised."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from pytest_modelbudget import MeasureError

from ..helpers import measure_checked

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")


def _plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


WRAPPERS = {
    "script": torch.jit.script,
    "trace": lambda model: torch.jit.trace(model, torch.randn(2, 3, 8, 8)),
    "data_parallel": nn.DataParallel,
    "compile": torch.compile,
}


@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_a_wrapped_model_measures_as_the_model_it_wraps(wrapper, mode):
    expected = measure_checked(_plain(), input_size=(2, 3, 8, 8), mode=mode)
    wrapped = WRAPPERS[wrapper](_plain())
    stats = measure_checked(wrapped, input_size=(2, 3, 8, 8), mode=mode)
    assert (stats.params, stats.bytes, stats.macs) == (expected.params, expected.bytes, expected.macs)
    assert stats.macs == 2 * 8 * 6 * 6 * 27 + 2 * 288 * 10
    assert stats.execution == "fake"
    # The wrapped model still runs, on real tensors, afterwards.
    assert type(wrapped(torch.randn(2, 3, 8, 8))) is torch.Tensor


def test_distributed_data_parallel_is_measured_by_what_it_wraps(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("no gloo backend")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(_plain())
        stats = measure_checked(model, input_size=(2, 3, 8, 8), mode="training")
    finally:
        dist.destroy_process_group()
    assert stats.layers["0"].type == "Conv2d"  # the inner model's names, no "module." prefix
    assert any("DistributedDataParallel wraps" in note for note in stats.notes)


def test_a_lazy_module_not_yet_run_gets_a_clear_error():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU())
    with pytest.raises(MeasureError, match=r"not materialised yet \(0.weight, 0.bias.*run one forward"):
        measure_checked(model, input_size=(2, 8))
    model(torch.randn(2, 8))
    assert measure_checked(model, input_size=(2, 8)).params == 36
