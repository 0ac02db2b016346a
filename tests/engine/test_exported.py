"""Deployed programs: ``torch.export``'s ExportedProgram, its ``.module()``, and a ``.pt2`` file
through the CLI and the budget file, give the eager model's figures."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from torch import nn

from pytest_modelbudget import measure
from pytest_modelbudget.cli import main

from ..helpers import measure_checked


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


FIGURES = ("params", "bytes", "macs", "flops", "memory_traffic", "peak_memory")


def _figures(stats):
    return {name: getattr(stats, name) for name in FIGURES}


def test_an_exported_conv_net_and_its_module_give_the_eager_figures():
    torch.manual_seed(0)
    net, x = ConvNet().eval(), torch.randn(2, 3, 32, 32)
    eager = measure_checked(net, x)
    program = torch.export.export(net, (x,))
    exported = measure(program)  # its example inputs
    assert _figures(exported) == _figures(eager)
    # Per module, as the eager model: the graph unflattened into the modules it came from.
    assert {name: layer.macs for name, layer in exported.layers.items()} == {
        name: layer.macs for name, layer in eager.layers.items()
    }
    assert exported.notes[0].startswith("an ExportedProgram: its graph, unflattened")
    # Each layer's type is the one it was exported from (the unflattened modules are all
    # InterpreterModules): a per-layer diff of a deployed model reads as the eager one's.
    assert {name: layer.type for name, layer in exported.layers.items()} == {
        name: layer.type for name, layer in eager.layers.items()
    }
    assert exported.model_type == "ConvNet"
    # .module() refuses train()/eval(): measured as it is, one graph.
    flat = measure(program.module(), x)
    assert (flat.params, flat.macs, flat.flops) == (eager.params, eager.macs, eager.flops)


def test_an_exported_transformers_model_gives_the_eager_figures():
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64)
    torch.manual_seed(0)
    model, ids = transformers.GPT2LMHeadModel(config).eval(), torch.randint(0, 100, (1, 16))
    eager = measure_checked(model, ids, forward_kwargs={"use_cache": False})
    program = torch.export.export(model, (ids,), kwargs={"use_cache": False}, strict=False)
    exported = measure(program)
    assert (exported.params, exported.macs, exported.flops) == (eager.params, eager.macs, eager.flops)
    assert exported.params == model.num_parameters()
    # The exported graph frees some intermediates earlier than eager code: within 1%.
    assert exported.peak_memory == pytest.approx(eager.peak_memory, rel=0.01)


def test_a_pt2_file_through_the_cli_and_the_budget_file(tmp_path, capsys, pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # a developer's run: CI would switch strict mode on
    torch.manual_seed(0)
    net, x = ConvNet().eval(), torch.randn(2, 3, 32, 32)
    eager = measure_checked(net, x)
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "convnet.pt2")
    assert main([str(tmp_path / "convnet.pt2"), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["params"], printed["macs"]) == (eager.params, eager.macs)
    # In budgets.toml, relative to the file.
    (pytester.path / "models").mkdir()
    torch.export.save(torch.export.export(net, (x,)), pytester.path / "models" / "convnet.pt2")
    pytester.makefile(
        ".toml", budgets=f'[budgets.deployed]\nfactory = "models/convnet.pt2"\nlimits = {{ macs = {eager.macs} }}\n'
    )
    pytester.runpytest("-p", "no:cacheprovider", "--budget-json", "r.json").assert_outcomes(passed=1)
    assert json.loads((pytester.path / "r.json").read_text())["budgets"]["deployed"]["figures"]["macs"] == eager.macs


def test_a_missing_pt2_file_is_named(tmp_path, capsys):
    assert main([str(tmp_path / "gone.pt2")]) == 2
    assert (
        f"{tmp_path / 'gone.pt2'}: no such file; expected a program saved by torch.export.save"
        in capsys.readouterr().err
    )


def test_a_program_exported_with_a_dynamic_batch_is_measured_at_the_inputs_given():
    torch.manual_seed(0)
    net = ConvNet().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (torch.randn(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}})
    x = torch.randn(8, 3, 32, 32)
    assert _figures(measure(program, x)) == _figures(measure_checked(net, x))
    assert measure(program.module(), x).macs == measure_checked(net, x).macs


def test_a_torchvision_detector_does_not_export_so_it_is_measured_eager():
    # Faster R-CNN's NMS branches on how many boxes survive: torch.export (2.14) stops there
    # (GuardOnDataDependentSymNode); the eager model is what a budget measures, with a real run.
    detection = pytest.importorskip("torchvision.models.detection")
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None).eval()
    images = [torch.rand(3, 320, 320)]
    with pytest.raises(Exception, match="data-dependent"):
        torch.export.export(model, (images,), strict=False)
    assert measure_checked(model, (images,)).execution == "real"
