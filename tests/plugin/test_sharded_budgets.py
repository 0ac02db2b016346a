"""A sharded step's budget, as users write it: a ``parallel`` table in budgets.toml, the marker's
``parallel=``, and the CLI's ``--world-size``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .projects import scratch_project

MODELS = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim=64):
        super().__init__()
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Stack(nn.Module):
    def __init__(self, depth=4):
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(depth))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
"""

BUDGETS = """
[settings]
device = "cpu"

[budgets.single]
factory = "mymodels:Stack"
input_size = [8, 64]
mode = "training"

[budgets.sharded]
factory = "mymodels:Stack"
input_size = [8, 64]
mode = "training"
parallel = { world_size = 4, activation_checkpointing = true }
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS, BUDGETS)
    return pytester


def test_a_parallel_entry_budgets_one_ranks_memory(project):
    result = project.runpytest("-p", "no:cacheprovider", "--budget-json", "report.json")
    result.assert_outcomes(passed=2)
    budgets = json.loads((project.path / "report.json").read_text())["budgets"]
    single, sharded = budgets["single"], budgets["sharded"]
    assert sharded["figures"]["params"] == single["figures"]["params"]
    assert sharded["figures"]["peak_memory"] < single["figures"]["peak_memory"]
    assert sharded["parallel"]["world_size"] == 4 and sharded["parallel"]["activation_checkpointing"] is True
    assert sum(sharded["peak_memory_split"].values()) == sharded["figures"]["peak_memory"]
    assert single["parallel"] is None


def test_a_bad_parallel_table_is_named_with_its_line(project):
    project.makefile(".toml", budgets=BUDGETS.replace("world_size = 4", "world_size = 0"))
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*budgets.toml:13: budgets.sharded.parallel.world_size: Input should be greater than or equal to 1*"]
    )


def test_the_marker_shards_every_model_the_test_checks(project):
    project.makepyfile(
        test_models="""
        import pytest
        import torch
        from mymodels import Stack


        @pytest.mark.budget(mode="training", parallel={"world_size": 4})
        def test_sharded(model_budget):
            stats = model_budget.check(Stack(), input_size=(8, 64), device="cpu")
            assert stats.parallel["world_size"] == 4 and stats.peak_memory_split["sharded_params"] > 0


        @pytest.mark.budget(parallel={"world_size": 4, "stratgy": "fsdp"})
        def test_typo(model_budget):
            pass
        """
    )
    result = project.runpytest("-p", "no:cacheprovider", "test_models.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_typo: budget marker: parallel=*: stratgy: Extra inputs are not permitted*"])
    project.makepyfile(
        test_models=project.path.joinpath("test_models.py").read_text().split("@pytest.mark.budget(parallel=")[0]
    )
    project.runpytest("-p", "no:cacheprovider", "test_models.py").assert_outcomes(passed=1)


def test_the_cli_takes_a_world_size(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODELS)
    command = [
        sys.executable,
        "-m",
        "pytest_modelbudget",
        "mymodels:Stack",
        "--input-size",
        "8,64",
        "--mode",
        "training",
    ]
    single = subprocess.run([*command, "--format", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    sharded = subprocess.run(
        [*command, "--world-size", "4", "--format", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0 and sharded.returncode == 0, sharded.stderr
    assert json.loads(sharded.stdout)["peak_memory"] < json.loads(single.stdout)["peak_memory"]
    table = subprocess.run(
        [*command, "--world-size", "4", "--depth", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert "one rank of fsdp over 4 ranks" in table.stdout and "at the peak:    " in table.stdout
    lonely = subprocess.run(
        [*command, "--activation-checkpointing"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert lonely.returncode == 2 and "add --world-size N" in lonely.stderr


def test_an_entry_names_its_own_device(project):
    # [settings] device = "cpu" for all; one entry asks for the CUDA estimate (512-byte blocks).
    project.makefile(
        ".toml",
        budgets=BUDGETS.replace(
            'mode = "training"\n\n[budgets.sharded]', 'mode = "training"\ndevice = "cuda"\n\n[budgets.sharded]'
        ),
    )
    project.runpytest("-p", "no:cacheprovider", "--budget-json", "report.json").assert_outcomes(passed=2)
    budgets = json.loads((project.path / "report.json").read_text())["budgets"]
    assert budgets["single"]["figures"]["peak_memory"] % 512 == 0
    assert budgets["single"]["peak_memory_source"] == "estimate"
    project.makefile(".toml", budgets=BUDGETS.replace("[budgets.single]", '[budgets.single]\ndevice = "tpu"'))
    result = project.runpytest("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*budgets.single.device: expected 'cuda', 'cuda:N' or 'cpu', found 'tpu'*"])
