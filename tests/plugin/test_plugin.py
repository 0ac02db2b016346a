"""The plugin as users run it: whole pytest sessions in a scratch project (pytester)."""

from __future__ import annotations

import json

import pytest

from .projects import scratch_project

MODELS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def net(width=8):
    return Net(width)
"""

BUDGETS = """
# the team's budgets: this comment must survive
[settings]
tolerance = "1%"

[budgets.net]   # a declared model
factory = "mymodels:net"
model_kwargs = { width = 8 }
input_size = [1, 3, 16, 16]
limits = { params = "1K" }  # reviewed in PR 12
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS, BUDGETS)
    return pytester


def budgets(pytester: pytest.Pytester) -> str:
    return (pytester.path / "budgets.toml").read_text()


def grow_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        mymodels=MODELS.replace(
            "self.head = nn.Linear(width, 10)",
            "self.head = nn.Linear(width, 10)\n        self.extra = nn.Linear(10, 10)",
        )
        .replace("return self.head(", "return self.extra(self.head(")
        .replace("(2, 3)))", "(2, 3))))")
    )


def test_declared_model_passes_and_the_table_is_shown(project):
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*modelbudget: budgets.toml (1 budgets, 1 declared models)*", "*model budgets*", "net *passed*"]
    )


def test_update_then_grow_fails_with_a_per_layer_diff(project):
    project.runpytest("--update-budgets").assert_outcomes(passed=1)
    text = budgets(project)
    assert "# the team's budgets: this comment must survive" in text
    assert 'limits = { params = "1K" }  # reviewed in PR 12' in text
    assert "[budgets.net.baseline]" in text and "params = 314" in text  # 3*8*9+8 + 8*10+10
    grow_model(project)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            # peak_memory stays within 1%: cuBLAS's 8.5 MB workspace is most of this small net's.
            "*net: params 424 > baseline 314 (+35.0%, tolerance 1%) (and 2 more)*",
            "*params 424 > baseline 314 (+35.0%, tolerance 1%)*",
            "*layers whose own params, memory_traffic, bytes changed (largest params change first):*",
            "*layer*type*params before*after*change*",
            "*extra*Linear*added*-*110*+110*",
        ]
    )
    # Layers whose code did not change show no change, memory included.
    assert not any(line.strip().startswith(("conv ", "head ")) for line in result.stdout.lines)
    assert "Traceback" not in result.stdout.str()


def test_update_then_pass_then_a_limit_still_fails(project):
    grow_model(project)
    project.makefile(".toml", budgets=BUDGETS.replace('"1K"', '"400"'))
    result = project.runpytest("--update-budgets")
    result.assert_outcomes(failed=1)  # limits are enforced even while recording
    result.stdout.fnmatch_lines(
        [
            "*params 424 > limit 400 (+6.0%)*",
            "net: baseline written although params 424 is over its limit 400 (the test fails until the model or the limit changes)",
        ]
    )
    assert 'limits = { params = "400" }' in budgets(project)
    assert "params = 424" in budgets(project)


def test_in_code_tests_with_the_marker_and_fixture(project):
    project.makepyfile(
        test_models="""
        import pytest
        from mymodels import Net

        @pytest.mark.budget(params="2K", macs="60K")
        def test_small(model_budget):
            stats = model_budget.check(Net(), input_size=(1, 3, 16, 16))
            assert stats.params == 314

        @pytest.mark.budget(macs="1K")
        def test_too_many_macs(model_budget):
            model_budget.check(Net(), input_size=(1, 3, 16, 16))

        def test_measure_only(model_budget):
            assert model_budget.measure(Net(), input_size=(1, 3, 8, 8)).macs == 8 * 8 * 8 * 27 + 80
        """
    )
    result = project.runpytest("--strict-markers", "test_models.py")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*macs 55.38K > limit 1K*", "*largest layers by macs*", "*conv*Conv2d*"])


def test_k_selects_one_declared_model_and_partial_update_loses_nothing(project):
    project.makefile(
        ".toml",
        budgets=BUDGETS
        + '\n[budgets.wide]\nfactory = "mymodels:net"\nmodel_kwargs = { width = 32 }\ninput_size = [1, 3, 16, 16]\n',
    )
    project.runpytest("--update-budgets").assert_outcomes(passed=2)
    before = budgets(project)
    result = project.runpytest("--update-budgets", "-k", "wide")
    result.assert_outcomes(passed=1, deselected=1)
    assert budgets(project) == before  # nothing changed: the other entry is kept as it was
    assert "[budgets.net.baseline]" in before and "[budgets.wide.baseline]" in before


def test_xdist_update_with_many_tests_loses_nothing(project):
    pytest.importorskip("xdist")
    tests = "\n".join(
        f"""
def test_width_{w}(model_budget):
    model_budget.check(Net({w}), input_size=(1, 3, 8, 8))
"""
        for w in range(1, 25)
    )
    project.makepyfile(test_many="from mymodels import Net\n" + tests)
    result = project.runpytest("-n", "2", "--update-budgets")
    result.assert_outcomes(passed=25)
    text = budgets(project)
    for w in range(1, 25):
        assert f'[budgets."test_many.py::test_width_{w}".baseline]' in text
    assert text.count(".baseline]") == 25
    project.runpytest("-n", "2").assert_outcomes(passed=25)


@pytest.mark.parametrize(
    "bad, expected",
    [
        (
            'limits = { params = "3 apples" }',
            "*budgets.toml:9: budgets.net.limits.params: expected an integer or a count*found '3 apples'*",
        ),
        (
            "limits = { parms = 3 }",
            "*budgets.toml:9: budgets.net.limits.parms: unknown key 'parms'; expected one of: params*",
        ),
        (
            'limits = { peak_memory = "300M" }',
            "*budgets.net.limits.peak_memory: expected an integer number of bytes*found '300M'*",
        ),
        (
            'mode = "eval"',
            "*budgets.toml:9: budgets.net.mode: Input should be 'inference', 'training', 'prefill' or 'decode'*",
        ),
        ("limits = { params = 1K }", "*budgets.toml: not valid TOML: *(at line 9, column *)*"),
        ('autocast = "fp8"', "*budgets.toml:9: budgets.net.autocast: Input should be 'float16' or 'bfloat16'*"),
    ],
)
def test_a_malformed_file_stops_the_run_and_is_left_byte_identical(project, bad, expected):
    text = BUDGETS.replace('limits = { params = "1K" }  # reviewed in PR 12', bad)
    project.makefile(".toml", budgets=text)
    before = (project.path / "budgets.toml").read_bytes()
    result = project.runpytest("--update-budgets")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert (project.path / "budgets.toml").read_bytes() == before


@pytest.mark.parametrize(
    "marker, expected",
    [
        (
            'params="12 lots"',
            "*test_bad.py::test_bad: budget marker: params='12 lots': expected an integer or a count*",
        ),
        ('parms="12M"', "*test_bad.py::test_bad: budget marker: unknown key 'parms'; expected a figure (params,*"),
        ("tolerance=0.5", "*budget marker: tolerance=0.5: expected a percentage*"),
    ],
)
def test_bad_marker_arguments_fail_at_collection_naming_the_test(project, marker, expected):
    project.makepyfile(
        test_bad=f"import pytest\n@pytest.mark.budget({marker})\ndef test_bad(model_budget):\n    pass\n"
    )
    before = (project.path / "budgets.toml").read_bytes()
    result = project.runpytest("test_bad.py", "--update-budgets")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert (project.path / "budgets.toml").read_bytes() == before


def test_json_and_markdown_reports_and_github_step_summary(project, monkeypatch):
    summary = project.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.runpytest("--budget-json", "out/report.json", "--budget-markdown", "report.md").assert_outcomes(passed=1)
    report = json.loads((project.path / "out" / "report.json").read_text())
    record = report["budgets"]["net"]
    assert record["figures"]["params"] == 314
    assert record["limits"] == {"params": 1000}
    assert record["verdict"]["status"] == "passed"
    assert report["torch"]
    markdown = (project.path / "report.md").read_text()
    assert "| budget | params |" in markdown and "| ✅ net | 314 |" in markdown
    assert summary.read_text().startswith("### Model budgets")


def test_stale_entries_are_listed_and_only_machine_written_ones_pruned(project):
    project.makefile(
        ".toml",
        budgets=BUDGETS
        + '\n[budgets."test_old.py::test_recorded".baseline]\nparams = 5\n'
        + '\n# gone\n[budgets."test_old.py::test_removed"]\nlimits = { params = "1M" }\n',
    )
    project.makepyfile(test_old="def test_other():\n    pass\n")
    result = project.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*1 stale budget entry (no test stands for them):*",
            "*test_old.py::test_recorded*",
            "*1 stale budget entry with what people wrote in them*",
            "*test_old.py::test_removed: limits*",
        ]
    )
    project.runpytest("--prune-budgets")
    text = budgets(project)
    assert "test_recorded" not in text
    # What people wrote is never pruned: the limits stay until someone moves them.
    assert '[budgets."test_old.py::test_removed"]\nlimits = { params = "1M" }' in text
    assert "# the team's budgets: this comment must survive" in text


def test_renaming_a_test_keeps_its_limits_and_names_the_new_test(project):
    test = """
from mymodels import Net


def test_{name}(model_budget):
    model_budget.check(Net(width=4), input_size=(1, 3, 16, 16))
"""
    project.makepyfile(test_models=test.format(name="small"))
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    with_limits = budgets(project).replace(
        '[budgets."test_models.py::test_small".baseline]',
        '[budgets."test_models.py::test_small"]\nlimits = { params = "200" }  # agreed with the mobile team\n\n'
        '[budgets."test_models.py::test_small".baseline]',
    )
    (project.path / "budgets.toml").write_text(with_limits)
    project.makepyfile(test_models=test.format(name="tiny"))
    result = project.runpytest("-p", "no:cacheprovider", "--update-budgets", "--prune-budgets")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*1 stale budget entry with what people wrote in them*--prune-budgets never removes these*",
            "*test_models.py::test_small: limits, a comment; test_models.py::test_tiny has the figures of its "
            "baseline: renamed? move them there*",
        ]
    )
    text = budgets(project)
    assert 'limits = { params = "200" }  # agreed with the mobile team' in text
    assert '[budgets."test_models.py::test_tiny".baseline]' in text
    # Strict (CI): the entry left over fails the run until the limits are moved.
    strict = project.runpytest("-p", "no:cacheprovider", "--budget-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED


def test_a_drop_below_the_baseline_passes_and_says_it_can_be_tightened(project):
    grow_model(project)
    project.makefile(".toml", budgets=BUDGETS.replace('"1K"', '"2K"'))
    project.runpytest("--update-budgets").assert_outcomes(passed=1)
    project.makepyfile(mymodels=MODELS)
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*net: params fell to 314 from a baseline of 424; run pytest --update-budgets to tighten it*"]
    )


def test_no_torch_import_in_a_session_without_budget_tests(pytester):
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_plain():
            assert "torch" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*modelbudget:*"])  # the plugin was loaded


def test_the_plugin_can_be_disabled(project):
    result = project.runpytest("-p", "no:modelbudget")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_ini_options_apply(project):
    project.makefile(".toml", custom=BUDGETS.replace('[settings]\ntolerance = "1%"\n', ""))
    (project.path / "budgets.toml").unlink()
    project.makeini("[pytest]\nmodelbudget_file = custom.toml\nmodelbudget_tolerance = 50%\n")
    project.runpytest("--update-budgets").assert_outcomes(passed=1)
    assert "[budgets.net.baseline]" in (project.path / "custom.toml").read_text()
    grow_model(project)
    project.runpytest().assert_outcomes(passed=1)  # +35% is inside the ini's 50% tolerance


def test_a_bad_settings_device_names_its_line(project):
    project.makefile(".toml", budgets=BUDGETS.replace('tolerance = "1%"', 'tolerance = "1%"\ndevice = "tpu"'))
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*budgets.toml:4: settings.device: expected 'cuda', 'cuda:N' or 'cpu', found 'tpu'*"])


def test_settings_device_cpu_reaches_the_fixture_and_an_unknown_option_is_named(project):
    project.makefile(".toml", budgets=BUDGETS.replace('tolerance = "1%"', 'tolerance = "1%"\ndevice = "cpu"'))
    project.makepyfile(
        test_dev="""
        from mymodels import Net

        def test_cpu(model_budget):
            stats = model_budget.check(Net(), input_size=(1, 3, 8, 8))
            # Then only what the estimate leaves out: a convolution's workspace.
            assert stats.peak_memory_approximations[0] == "estimated for cpu from fake execution"
            assert not any("rounded up" in note for note in stats.peak_memory_approximations)

        def test_typo(model_budget):
            model_budget.check(Net(), input_size=(1, 3, 8, 8), optimiser=None)
        """
    )
    result = project.runpytest("test_dev.py")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*BudgetUsageError: model_budget.check(): got an unexpected keyword argument 'optimiser'*"]
    )


def test_a_peak_memory_limit_fails_with_the_estimate_and_how_it_was_made(project):
    # Net at 1x3x8x8, each allocation rounded up to 512 bytes: weights 1024+512+512+512 and the
    # input 1024 are held; the mean (512) and fc's output (512) are live together as fc's matmul
    # takes cuBLAS's workspace (PyTorch's default, 4096 KiB x 2 + 16 KiB x 8 = 8,519,680):
    # 8,524,288.
    project.makepyfile(
        test_mem="""
        import pytest
        from mymodels import Net

        @pytest.mark.budget(peak_memory="8.5MB")
        def test_tight(model_budget):
            model_budget.check(Net(), input_size=(1, 3, 8, 8))

        @pytest.mark.budget(peak_memory="8524288B")
        def test_exact(model_budget):
            assert model_budget.check(Net(), input_size=(1, 3, 8, 8)).peak_memory == 8524288
        """
    )
    result = project.runpytest("test_mem.py")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*peak_memory 8.52MB > limit 8.5MB (+0.3%)*",
            "*(peak_memory: estimate; estimated for cuda from fake execution; allocations rounded up to 512 bytes*",
            "*largest layers by peak_memory*",
        ]
    )


def test_a_declared_model_that_cannot_be_imported_names_the_entry_and_line(project):
    project.makefile(".toml", budgets=BUDGETS.replace('"mymodels:net"', '"mymodels:missing"'))
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*budgets.toml:6: budgets.net.factory: module 'mymodels' has no attribute 'missing'*"])
    assert "Traceback" not in result.stdout.str()


CAVEATS = '''
import pytest
import torch
from torch import nn


class Branchy(nn.Module):
    """Data-dependent control flow: fake tensors cannot run it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x) if x.sum() > 0 else x


class Spectrum(nn.Module):
    """A determinant (an LU factorisation): arithmetic with no FLOP rule."""

    def forward(self, x):
        return torch.linalg.det(x)


@pytest.mark.budget(params="100")
def test_real_run(model_budget):
    model_budget.check(Branchy(), torch.ones(1, 4))


@pytest.mark.budget(peak_memory="100B")
def test_uncounted(model_budget):
    model_budget.check(Spectrum(), input_size=(3, 3))
'''


def test_real_runs_and_uncounted_ops_are_shown_in_the_summary_the_failure_and_the_json(pytester):
    pytester.makepyfile(test_caveats=CAVEATS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--budget-json", "report.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_real_run: measured by a real CPU run, not a fake one: fake execution failed*",
            "*test_uncounted: 1 op(s) did arithmetic with no formula, left out of macs and flops: _linalg_det x1",
        ]
    )
    # The failure of the test whose flops cannot be trusted says so.
    result.stdout.fnmatch_lines(["*note: 1 op(s) did arithmetic with no formula*_linalg_det x1*"])
    report = json.loads((pytester.path / "report.json").read_text())["budgets"]
    assert report["test_caveats.py::test_real_run"]["execution"] == "real"
    assert report["test_caveats.py::test_uncounted"]["uncounted_ops"] == {"_linalg_det": 1}


def test_a_declared_model_spec_runs_with_default_inputs(pytester):
    pytester.makefile(
        ".toml",
        budgets='[budgets.tiny_bert]\nfactory = "hf:bert"\n'
        "model_kwargs = { num_hidden_layers = 1, hidden_size = 32, num_attention_heads = 2, intermediate_size = 64, vocab_size = 100 }\n"
        'limits = { params = "100K" }\n',
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    # BertModel by hand: embeddings (100 + 512 positions + 2 types) * 32 + LayerNorm 64; one layer:
    # q,k,v,o 4*(32*32+32), LayerNorm 64, MLP 32*64+64 + 64*32+32, LayerNorm 64; pooler 32*32+32.
    params = 614 * 32 + 64 + 4 * (32 * 32 + 32) + 64 + (32 * 64 + 64) + (64 * 32 + 32) + 64 + 32 * 32 + 32
    result.stdout.fnmatch_lines([f"tiny_bert * {params / 1000:.2f}K*passed*"])


def test_tolerance_per_figure(project):
    # Baseline at width 8 (314 params), then width 9 (352): params +12.1%, MACs +12.5%.
    project.runpytest("--update-budgets").assert_outcomes(passed=1)
    text = budgets(project).replace(
        'limits = { params = "1K" }', 'limits = { params = "1K" }\ntolerance = { params = "0%", macs = "20%" }'
    )
    text = text.replace("model_kwargs = { width = 8 }", "model_kwargs = { width = 9 }").replace(
        'tolerance = "1%"', 'tolerance = "15%"'
    )
    (project.path / "budgets.toml").write_text(text)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    # params takes the entry's 0%; macs its 20% (passes); every other figure [settings]' 15%.
    result.stdout.fnmatch_lines(["*net: params 352 > baseline 314 (+12.1%, tolerance 0%)*"])
    assert "macs" not in "".join(line for line in result.stdout.lines if line.startswith("FAILED"))
    (project.path / "budgets.toml").write_text(
        text.replace('params = "0%", macs = "20%"', 'params = "13%", macs = "20%"')
    )
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    (project.path / "budgets.toml").write_text(text.replace('params = "0%"', 'parms = "0%"'))
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*budgets.toml:*unknown figure 'parms' in tolerance*"])


def test_marker_tolerance_per_figure(pytester):
    pytester.makepyfile(
        test_one="""
import pytest, torch

@pytest.mark.budget(params="1K", tolerance={"params": "0%"})
def test_net(model_budget):
    model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))

@pytest.mark.budget(tolerance={"parms": "0%"})
def test_bad(model_budget):
    model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tolerance={'parms': '0%'}: unknown figure 'parms' in tolerance*"])


def test_the_summary_shows_failures_first_and_a_test_that_failed_its_own_assert(pytester):
    pytester.makepyfile(
        test_models="""
import pytest, torch

@pytest.mark.budget(params="1K")
def test_a_within_budget_but_wrong(model_budget):
    model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))
    assert False, "the test's own assertion"

@pytest.mark.budget(params="10")
def test_b_over_budget(model_budget):
    model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))

@pytest.mark.budget(params="1K")
def test_c_fine(model_budget):
    model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    table = result.stdout.lines[next(i for i, line in enumerate(result.stdout.lines) if "model budgets" in line) :]
    rows = [line for line in table if line.startswith("test_models.py::")]
    # What failed first (over budget, or the test itself), then the rest; each by name.
    assert [row.split()[0] for row in rows] == [
        "test_models.py::test_a_within_budget_but_wrong",
        "test_models.py::test_b_over_budget",
        "test_models.py::test_c_fine",
    ]
    assert rows[0].endswith("  passed, test failed") and rows[1].endswith("  failed") and rows[2].endswith("  passed")


def test_a_limit_line_says_both_the_excess_and_the_change(project):
    project.runpytest("--update-budgets").assert_outcomes(passed=1)
    # width 8 -> 9: 314 -> 352 params against a limit of 350 (just over it) and the baseline.
    (project.path / "budgets.toml").write_text(
        budgets(project)
        .replace("model_kwargs = { width = 8 }", "model_kwargs = { width = 9 }")
        .replace('params = "1K"', "params = 350")
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*params 352 > limit 350 (+0.6%; +12.1% on baseline 314)*"])


def test_report_paths_from_the_ini_file(project):
    project.makeini("[pytest]\nmodelbudget_json = reports/budgets.json\nmodelbudget_markdown = reports/budgets.md\n")
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert "net" in json.loads((project.path / "reports" / "budgets.json").read_text())["budgets"]
    assert "| ✅ net |" in (project.path / "reports" / "budgets.md").read_text()
    # The command line wins.
    project.runpytest("-p", "no:cacheprovider", "--budget-json", "other.json").assert_outcomes(passed=1)
    assert (project.path / "other.json").exists()


def test_the_table_chooses_its_columns_and_hides_under_q(project):
    result = project.runpytest("-p", "no:cacheprovider", "--budget-columns", "params,macs")
    header = next(line for line in result.stdout.lines if line.startswith("budget "))
    assert header.split() == ["budget", "params", "macs", "%", "of", "limit", "vs", "baseline", "verdict"]
    # Not a terminal (pytester, a CI log): every column, however wide.
    result = project.runpytest("-p", "no:cacheprovider")
    header = next(line for line in result.stdout.lines if line.startswith("budget "))
    assert header.split()[1:6] == ["params", "bytes", "macs", "flops", "peak_memory"]
    result = project.runpytest("-p", "no:cacheprovider", "-q")
    result.stdout.fnmatch_lines(["1 budget(s), 0 failed (the table is shown without -q)"])
    assert not any(line.startswith("budget ") for line in result.stdout.lines)
    result = project.runpytest("-p", "no:cacheprovider", "--budget-columns", "params,macks")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--budget-columns: unknown figure 'macks'*"])


def test_a_memory_traffic_limit_fails_and_passes(pytester):
    # nn.Linear(1000, 1000) on 8 x 1000 moves 4,068,000 B: x, W and b read, y written (fp32).
    pytester.makepyfile(
        test_traffic="""
        import pytest
        import torch


        @pytest.mark.budget(memory_traffic="4MB")
        def test_over(model_budget):
            model_budget.check(torch.nn.Linear(1000, 1000), input_size=(8, 1000))


        @pytest.mark.budget(memory_traffic="4.1MB")
        def test_under(model_budget):
            model_budget.check(torch.nn.Linear(1000, 1000), input_size=(8, 1000))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf", "--budget-columns", "params,memory_traffic")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*BudgetExceeded: test_traffic.py::test_over: memory_traffic 4.07MB > limit 4MB (+1.7%)"]
    )
    header = next(line for line in result.stdout.lines if line.startswith("budget "))
    assert header.split()[1:3] == ["params", "memory_traffic"]


def test_a_roofline_time_limit_on_a_gpu_of_the_budget_files_own(pytester):
    # 100,000,000 fp32 elements through a ReLU: 800 MB at 2 TB/s is 400 us; at H100 SXM's 3.35 TB/s 238.8 us.
    pytester.makefile(
        ".toml",
        budgets="""
        [settings]
        gpu = "mygpu"

        [settings.gpus.mygpu]
        bandwidth = "2TB/s"
        bf16 = "312T"
        """,
    )
    pytester.makepyfile(
        test_time="""
        import pytest
        import torch


        class Relu(torch.nn.Module):
            def forward(self, x):
                return torch.relu(x)


        @pytest.mark.budget(roofline_time="300us")
        def test_mine(model_budget):
            stats = model_budget.check(Relu(), input_size=(100_000_000,), name="mine")
            assert stats.gpu == "mygpu"


        @pytest.mark.budget(roofline_time="300us", gpu="h100-sxm")
        def test_h100(model_budget):
            model_budget.check(Relu(), input_size=(100_000_000,), name="h100")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--budget-columns", "roofline_time")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*BudgetExceeded: mine: roofline_time 400us > limit 300us (+33.3%)"])
    rows = [line.split() for line in result.stdout.lines if line.startswith(("mine ", "h100 "))]
    assert rows[0][:2] == ["mine", "400us"] and rows[1][:2] == ["h100", "238.81us"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('gpu = "h1000"', "*budgets.toml:2: settings.gpu: unknown GPU 'h1000'; expected one of h100-sxm*"),
        (
            '[settings.gpus.mine]\nbandwidth = "2TB"\nbf16 = "1T"',
            '*settings.gpus.mine.bandwidth*expected a bandwidth such as "2TB/s"*',
        ),
    ],
    ids=["unknown", "bandwidth"],
)
def test_gpu_mistakes_are_named(pytester, settings, message):
    pytester.makefile(".toml", budgets=f"[settings]\n{settings}\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_torchvision_and_timm_specs_as_declared_models(pytester):
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")
    pytester.makefile(
        ".toml",
        budgets="""
        [budgets.tv]
        factory = "torchvision:resnet18"
        limits = { params = "11.7M" }

        [budgets.tm]
        factory = "timm:resnet18"
        limits = { params = "11.6M" }
        """,
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "budgets.toml")
    result.assert_outcomes(passed=1, failed=1)  # 11,689,512 parameters: under 11.7M, over 11.6M
    result.stdout.fnmatch_lines(["*tm: params 11.69M > limit 11.6M (+0.8%)*"])
