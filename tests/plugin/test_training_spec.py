"""A declared model's training step written in budgets.toml: its loss, its optimizer with its
arguments, forward's keyword arguments; the factory's arguments under their own name."""

from __future__ import annotations

import json

import pytest

from .projects import scratch_project

MODELS = '''
import torch
from torch import nn
from torch.nn import functional as F


class TinyGPT(nn.Module):
    """nanoGPT's shape in miniature: tied lm_head, a targets keyword, (logits, loss) out."""

    def __init__(self, vocab=64, width=32):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets=None, repeat=1):
        x = self.wte(idx)
        for _ in range(repeat):
            x = x + self.mlp(x)
        logits = self.lm_head(x)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def gpt(width=32):
    return TinyGPT(width=width)


def batch():
    idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    return {"idx": idx, "targets": idx}


def the_loss(output):
    return output[1]
'''

BUDGETS = """
[budgets.plain]
factory = "gptmodels:gpt"
model_kwargs = { width = 32 }
inputs = "gptmodels:batch"
mode = "training"
loss = "gptmodels:the_loss"

[budgets.adamw]
factory = "gptmodels:gpt"
model_kwargs = { width = 32 }
inputs = "gptmodels:batch"
mode = "training"
loss = "gptmodels:the_loss"
optimizer = "torch.optim:AdamW"
optimizer_kwargs = { lr = 1e-4, weight_decay = 0.1 }

[budgets.twice]
factory = "gptmodels:gpt"
model_kwargs = { width = 32 }
inputs = "gptmodels:batch"
forward_kwargs = { repeat = 2 }
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS, BUDGETS, module="gptmodels")
    return pytester


def test_loss_optimizer_and_forward_kwargs_reach_the_step(project):
    result = project.runpytest("-p", "no:cacheprovider", "--budget-json", "report.json")
    result.assert_outcomes(passed=3)
    report = json.loads((project.path / "report.json").read_text())
    figures = {name: report["budgets"][name]["figures"] for name in ("plain", "adamw", "twice")}
    params = 64 * 32 + (32 * 128 + 128) + (128 * 32 + 32)  # the lm_head is the embedding
    assert figures["adamw"]["params"] == params
    # AdamW's step holds the weights, their gradients and two fp32 moments each: 4 x 4 bytes a
    # parameter at least, and more than the step without it.
    assert figures["adamw"]["peak_memory"] >= 4 * 4 * params
    assert figures["adamw"]["peak_memory"] > figures["plain"]["peak_memory"]
    # The same step measured in code, with the same loss and optimizer, gives the same figures.
    project.makepyfile(
        test_in_code="""
import json, torch, gptmodels
from pytest_modelbudget import measure

def test_same():
    stats = measure(gptmodels.gpt(32), gptmodels.batch(), mode="training", loss_fn=gptmodels.the_loss,
                    optimizer=lambda p: torch.optim.AdamW(p, lr=1e-4, weight_decay=0.1))
    once = measure(gptmodels.gpt(32), gptmodels.batch())
    twice = measure(gptmodels.gpt(32), gptmodels.batch(), forward_kwargs={"repeat": 2})
    with open("in_code.json", "w") as handle:
        json.dump([stats.peak_memory, once.macs, twice.macs], handle)
"""
    )
    project.runpytest("-p", "no:cacheprovider", "test_in_code.py").assert_outcomes(passed=1)
    peak, once_macs, twice_macs = json.loads((project.path / "in_code.json").read_text())
    assert figures["adamw"]["peak_memory"] == peak
    mlp = 4 * 16 * (32 * 128 + 128 * 32)
    assert twice_macs - once_macs == mlp == figures["twice"]["macs"] - once_macs


def test_the_old_name_of_model_kwargs_still_works_and_says_so(project):
    (project.path / "budgets.toml").write_text(
        BUDGETS.replace(
            '[budgets.plain]\nfactory = "gptmodels:gpt"\nmodel_kwargs',
            '[budgets.plain]\nfactory = "gptmodels:gpt"\nkwargs',
        )
    )
    result = project.runpytest("-p", "no:cacheprovider", "-k", "plain")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*budgets.toml:4: budgets.plain.kwargs is now model_kwargs (the factory's arguments; forward's are forward_kwargs): rename it*"
        ]
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "kwargs = { width = 8 }\nmodel_kwargs = { width = 8 }",
            "both kwargs and model_kwargs: write model_kwargs only",
        ),
        ('optimizer = "torch.optim:AdamW"', 'loss and optimizer apply to training: add mode = "training"'),
        ('mode = "training"\noptimizer_kwargs = { lr = 1 }', "optimizer_kwargs without an optimizer"),
        ('mode = "training"\noptimizer = "AdamW"', 'expected an import path "package.module:function"'),
    ],
)
def test_training_spec_mistakes_are_named(pytester, entry, message):
    pytester.makefile(".toml", budgets=f'[budgets.net]\nfactory = "gptmodels:gpt"\n{entry}\n')
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*budgets.toml:*budgets.net*{message}*"])


def test_an_optimizer_that_does_not_import_names_the_entry(project):
    (project.path / "budgets.toml").write_text(
        BUDGETS.replace('optimizer = "torch.optim:AdamW"', 'optimizer = "torch.optim:AdamWW"')
    )
    result = project.runpytest("-p", "no:cacheprovider", "-k", "adamw")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*budgets.toml:*: budgets.adamw.optimizer: module 'torch.optim' has no attribute 'AdamWW'*"]
    )


def test_untying_the_lm_head_is_said_as_such(project):
    project.runpytest("-p", "no:cacheprovider", "--update-budgets", "-k", "twice").assert_outcomes(passed=1)
    text = (project.path / "budgets.toml").read_text()
    assert 'shared_params = [["wte.weight", "lm_head.weight"]]' in text
    project.makepyfile(gptmodels=MODELS.replace("        self.lm_head.weight = self.wte.weight\n", ""))
    result = project.runpytest(
        "-p", "no:cacheprovider", "-k", "twice", "--budget-json", "r.json", "--budget-markdown", "r.md"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*note: wte.weight no longer shared with lm_head.weight*"])
    record = json.loads((project.path / "r.json").read_text())["budgets"]["twice"]
    assert record["sharing_changes"] == ["wte.weight no longer shared with lm_head.weight"]
    assert record["shared_params"] == []
    assert "twice: wte.weight no longer shared with lm_head.weight" in (project.path / "r.md").read_text()
    # Recorded again: the file forgets the tie.
    project.runpytest("-p", "no:cacheprovider", "--update-budgets", "-k", "twice").assert_outcomes(passed=1)
    assert "shared_params" not in (project.path / "budgets.toml").read_text()


def test_an_unused_head_is_named_in_the_failure_and_the_markdown(project):
    project.runpytest("-p", "no:cacheprovider", "--update-budgets", "-k", "twice").assert_outcomes(passed=1)
    grown = MODELS.replace(
        "        self.lm_head.weight = self.wte.weight\n",
        "        self.lm_head.weight = self.wte.weight\n        self.aux_head = nn.Linear(width, 8)\n",
    )
    project.makepyfile(gptmodels=grown)
    result = project.runpytest("-p", "no:cacheprovider", "-k", "twice", "--budget-markdown", "r.md")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*note: unused: forward never reads aux_head.weight, aux_head.bias*"])
    assert "twice: unused: forward never reads aux_head.weight, aux_head.bias" in (project.path / "r.md").read_text()
