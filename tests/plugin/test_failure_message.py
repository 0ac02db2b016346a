"""A failure names the change (SPEC §7): leaf layers first, ranked by the figure that failed, each
layer's own figures, and the numbers in the first line."""

from __future__ import annotations

import pytest

from .projects import scratch_project

BLOCK = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim=32, hidden=64):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(0.1)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.linear2(self.dropout(torch.relu(self.linear1(self.norm2(x)))))


class CNN(nn.Module):
    def __init__(self, extra=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), *([nn.Conv2d(16, 16, 3, padding=1)] if extra else []))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class Stack(nn.Module):
    """Blocks in a ModuleList, each with an MLP inside: parents three deep above the leaves."""

    def __init__(self, hidden=64):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"norm": nn.LayerNorm(32), "mlp": MLP(32, hidden)}) for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = x + block["mlp"](block["norm"](x))
        return x
'''

BUDGETS = """
[budgets.block]
factory = "mymodels:Block"
input_size = [2, 16, 32]

[budgets.cnn]
factory = "mymodels:CNN"
input_size = [1, 3, 16, 16]

[budgets.stack]
factory = "mymodels:Stack"
input_size = [4, 64, 32]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, BLOCK, BUDGETS)
    pytester.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=3)
    return pytester


def _diff_rows(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layers whose own"))
    rows = []
    for line in lines[start + 3 :]:
        # The table ends at the next section, the "... more layers" line or what a narrow
        # terminal left out ("(-vv shows macs too)").
        if not line.startswith("  ") or line.startswith("  ...") or (line.startswith("  (") and "(root)" not in line):
            break
        rows.append(line.split()[0])
    return rows


def test_a_widened_ffn_shows_its_two_linears_first_and_nothing_else_but_the_root(project):
    project.makefile(
        ".toml",
        budgets=project.path.joinpath("budgets.toml")
        .read_text()
        .replace('factory = "mymodels:Block"', 'factory = "mymodels:Block"\nmodel_kwargs = { hidden = 80 }'),
    )
    result = project.runpytest("-p", "no:cacheprovider", "-rf", "-k", "block")
    result.assert_outcomes(failed=1)
    # By hand: norms 2 x 64, attention 3 x 32 x 32 + 96 + 32 x 32 + 32, linear1 32 x hidden + hidden,
    # linear2 hidden x 32 + 32: 8,544 at hidden 64, 9,584 at 80.
    result.stdout.fnmatch_lines(["FAILED budgets.toml::block - block: params 9.58K > baseline 8.54K (+12.2%*"])
    rows = _diff_rows(result.stdout.str())
    # linear1 grew by 16 x 32 + 16 parameters, linear2 by 32 x 16: in that order, params first.
    assert rows[:2] == ["linear1", "linear2"]
    assert set(rows) <= {"linear1", "linear2", "dropout", "(root)"}
    assert not {"norm1", "norm2", "attn"} & set(rows)
    # pytester's terminal is 80 columns: the diff fits it, saying what it left out.
    failure = result.stdout.str().split("= FAILURES =")[1].split("= model budgets =")[0]
    diff = failure[failure.index("layers whose own") :].splitlines()
    assert [line for line in diff[1:] if len(line) > 80] == []
    assert "  (-vv shows macs, memory_traffic too, and 1 more layer)" in diff


def test_a_parent_whose_memory_grew_only_with_its_children_is_not_a_row(project):
    # A wider MLP in each of two nested blocks: the linears (params, macs, memory) and the ReLUs
    # (a larger output kept) changed; the MLPs, blocks and the ModuleList above them only
    # because their children did, and no row of theirs says anything.
    project.makefile(
        ".toml",
        budgets=project.path.joinpath("budgets.toml")
        .read_text()
        .replace('factory = "mymodels:Stack"', 'factory = "mymodels:Stack"\nmodel_kwargs = { hidden = 80 }'),
    )
    result = project.runpytest("-p", "no:cacheprovider", "-k", "stack", "-vv")
    result.assert_outcomes(failed=1)
    rows = _diff_rows(result.stdout.str())
    assert set(rows[:4]) == {"blocks.0.mlp.fc", "blocks.0.mlp.proj", "blocks.1.mlp.fc", "blocks.1.mlp.proj"}
    assert set(rows) <= {*rows[:4], "blocks.0.mlp.act", "blocks.1.mlp.act", "(root)"}
    assert "blocks.0.mlp.act" in rows


def test_an_added_conv_is_the_first_row_and_unchanged_layers_do_not_appear(project):
    project.makepyfile(mymodels=BLOCK.replace("def __init__(self, extra=False)", "def __init__(self, extra=True)"))
    result = project.runpytest("-p", "no:cacheprovider", "-k", "cnn")
    result.assert_outcomes(failed=1)
    rows = _diff_rows(result.stdout.str())
    assert rows[0] == "body.2"
    assert "added" in next(line for line in result.stdout.lines if line.strip().startswith("body.2"))
    assert not {"stem.0", "body.0", "head"} & set(rows)


def test_update_budgets_says_what_moved_and_writes_readable_integers_in_module_order(project):
    before = project.path.joinpath("budgets.toml").read_text()
    assert "macs = 294_912" in before  # digit separators: valid TOML a reviewer can read
    project.makepyfile(mymodels=BLOCK.replace("def __init__(self, extra=False)", "def __init__(self, extra=True)"))
    result = project.runpytest("-p", "no:cacheprovider", "--update-budgets")
    result.assert_outcomes(passed=3)
    # By hand: 224 + 1,168 + 170 = 1,562 parameters, and the added 16 x 16 x 9 + 16 = 2,320.
    result.stdout.fnmatch_lines(
        ["cnn: params 1.56K -> 3.88K (+148.5%), *macs 350.37K -> 940.19K (+168.3%)*", "1 changed, 2 unchanged, 0 new"]
    )
    after = project.path.joinpath("budgets.toml").read_text()
    layers = [
        line.split(" = ")[0].strip('"')
        for line in after.split("[budgets.cnn.baseline.layers]")[1].split("[budgets.stack]")[0].splitlines()
        if " = {" in line
    ]
    assert layers == ["stem", "stem.0", "stem.1", "body", "body.0", "body.1", "body.2", "head"]
    # The block's lines and the unchanged CNN layers' lines are byte for byte as they were.
    unchanged = [line for line in before.splitlines() if line.startswith(("stem", '"stem', "head", '"body.0'))]
    assert unchanged and all(line in after.splitlines() for line in unchanged)
    assert before.split("[budgets.cnn]")[0] == after.split("[budgets.cnn]")[0]


def test_the_short_summary_is_one_line_even_on_ci(project, monkeypatch):
    project.makepyfile(
        test_grown="""
        import pytest
        from mymodels import CNN

        @pytest.mark.budget(macs="100K")
        def test_grown(model_budget):
            model_budget.check(CNN(extra=True), input_size=(1, 3, 16, 16))
        """
    )
    monkeypatch.setenv("CI", "true")  # pytest prints whole messages in the short summary on CI
    result = project.runpytest("-p", "no:cacheprovider", "-rf", "-o", "modelbudget_strict=false", "test_grown.py")
    result.assert_outcomes(failed=1)
    lines = result.stdout.lines
    summary = lines[next(i for i, line in enumerate(lines) if "short test summary info" in line) + 1 :]
    assert summary[0].startswith(
        "FAILED test_grown.py::test_grown - BudgetExceeded: test_grown.py::test_grown: macs 940.19K > limit 100K"
    )
    assert summary[1].startswith("=")  # nothing of the long message follows
    result.stdout.fnmatch_lines(["*largest layers by macs*"])  # the table is in the long report


def test_a_declared_models_short_summary_is_one_line_on_ci_too(project, monkeypatch):
    project.makepyfile(mymodels=BLOCK.replace("def __init__(self, extra=False)", "def __init__(self, extra=True)"))
    monkeypatch.setenv("CI", "true")
    result = project.runpytest("-p", "no:cacheprovider", "-rf", "budgets.toml", "-k", "cnn")
    result.assert_outcomes(failed=1)
    lines = result.stdout.lines
    summary = lines[next(i for i, line in enumerate(lines) if "short test summary info" in line) + 1 :]
    # The item is a budget: its line is the budget's first line, with no exception name before it.
    assert summary[0].startswith("FAILED budgets.toml::cnn - cnn: params 3.88K > baseline 1.56K (+148.5%")
    assert summary[1].startswith("=")
    # The long report is the message alone: no traceback into the plugin.
    assert "layers whose own params" in result.stdout.str() and "Traceback" not in result.stdout.str()
    assert "declared.py" not in result.stdout.str()
