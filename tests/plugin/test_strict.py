"""A gate that never passes by accident (SPEC §7): strict mode in CI, a typo'd budget file, a marker
never checked, stale entries, unused parameters, and baselines that say how they were obtained."""

from __future__ import annotations

import json
import re

import pytest

from .test_plugin import BUDGETS, MODELS, budgets

IN_CODE = """
import pytest
from mymodels import Net


@pytest.mark.budget(params="2K")
def test_net(model_budget):
    model_budget.check(Net(), input_size=(1, 3, 16, 16))
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(mymodels=MODELS)
    pytester.syspathinsert()
    pytester.makefile(".toml", budgets=BUDGETS)
    pytester.makepyfile(test_net=IN_CODE)
    return pytester


def test_without_a_baseline_a_ci_run_fails_and_a_local_run_notes_it(project, monkeypatch):
    local = project.runpytest("-p", "no:cacheprovider")
    local.assert_outcomes(passed=2)
    local.stdout.fnmatch_lines(["*test_net.py::test_net*new*passed*"])

    monkeypatch.setenv("CI", "true")
    ci = project.runpytest("-p", "no:cacheprovider")
    ci.assert_outcomes(failed=2)
    ci.stdout.fnmatch_lines(
        [
            "*no baseline recorded for 'net': run pytest --update-budgets and commit budgets.toml*",
            "*no baseline recorded for 'test_net.py::test_net': run pytest --update-budgets*",
        ]
    )
    # Recording is what the message asks for: it passes, and the next CI run does too.
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_strict_mode_by_flag_and_off_by_ini(project, monkeypatch):
    project.runpytest("-p", "no:cacheprovider", "--budget-strict").assert_outcomes(failed=2)
    monkeypatch.setenv("CI", "1")
    project.runpytest("-p", "no:cacheprovider", "-o", "modelbudget_strict=false").assert_outcomes(passed=2)
    monkeypatch.setenv("CI", "false")
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_named_budget_file_that_does_not_exist_is_a_usage_error(project):
    before = budgets(project)
    result = project.runpytest("-p", "no:cacheprovider", "--budgets-file", "budgest.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--budgets-file budgest.toml: no such budget file*create it with pytest --update-budgets*"]
    )
    project.makeini("[pytest]\nmodelbudget_file = budget.toml\n")
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*modelbudget_file = budget.toml: no such budget file*"])
    # --update-budgets creates a named file; nothing else is touched.
    created = project.runpytest(
        "-p", "no:cacheprovider", "--budgets-file", "other.toml", "--update-budgets", "test_net.py"
    )
    created.assert_outcomes(passed=1)
    assert '[budgets."test_net.py::test_net".baseline]' in (project.path / "other.toml").read_text()
    assert budgets(project) == before


def test_a_marker_whose_limits_were_never_checked_fails(project):
    project.makepyfile(
        test_forgot="""
        import pytest

        @pytest.mark.budget(params="1")
        def test_forgot(model_budget):
            pass

        @pytest.mark.budget(params="1")
        def test_measured_only(model_budget):
            from mymodels import Net
            model_budget.measure(Net(), input_size=(1, 3, 8, 8))
        """
    )
    result = project.runpytest("-p", "no:cacheprovider", "test_forgot.py")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*test_forgot.py::test_forgot: @pytest.mark.budget(params=1) but model_budget.check() was never called*"]
    )


def test_stale_entries_fail_a_strict_run_only(project):
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    project.makepyfile(test_net=IN_CODE.replace("def test_net(", "def test_renamed("))
    local = project.runpytest("-p", "no:cacheprovider", "--budget-json", "r.json", "--budget-markdown", "r.md")
    assert local.ret == pytest.ExitCode.OK
    local.stdout.fnmatch_lines(["*1 stale budget entry*", "*test_net.py::test_net*"])
    # The reports say so too: a reviewer reading the pull request's summary sees it.
    assert json.loads((project.path / "r.json").read_text())["stale"] == ["test_net.py::test_net"]
    assert "entries no test stands for (stale): test_net.py::test_net" in (project.path / "r.md").read_text()
    strict = project.runpytest("-p", "no:cacheprovider", "--budget-strict", "--update-budgets", "-k", "renamed or net")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(
        ["*remove them with pytest --update-budgets --prune-budgets (strict mode: they fail the run)*"]
    )
    # pytest's last line says why the job is red, not "2 passed" alone.
    assert "2 passed, 1 stale budget entry failing the run" in strict.stdout.lines[-1]
    assert "stale" not in local.stdout.lines[-1]


def test_declared_models_carry_the_budget_marker(project):
    deselected = project.runpytest("-p", "no:cacheprovider", "-m", "not budget")
    deselected.assert_outcomes()
    assert "2 deselected" in deselected.stdout.str()
    selected = project.runpytest("-p", "no:cacheprovider", "-m", "budget", "--strict-markers")
    selected.assert_outcomes(passed=2)


def test_an_unused_params_limit_names_the_dead_layer(project):
    project.makepyfile(
        test_dead="""
        import pytest
        from torch import nn
        from mymodels import Net

        class WithAuxHead(Net):
            def __init__(self):
                super().__init__()
                self.aux_head = nn.Linear(8, 1000)  # built, never called

        @pytest.mark.budget(unused_params=0)
        def test_dead(model_budget):
            model_budget.check(WithAuxHead(), input_size=(1, 3, 16, 16))
        """
    )
    project.makefile(
        ".toml", budgets=BUDGETS.replace('limits = { params = "1K" }', 'limits = { params = "1K", unused_params = 0 }')
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*unused_params 2 > limit 0 (+2): aux_head.weight, aux_head.bias*"])


def test_a_baseline_records_its_provenance_and_a_failure_says_when_it_differs(project):
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    text = budgets(project)
    assert 'peak_memory_source = "estimate"' in text
    assert re.search(r'torch = "\d+\.\d+', text)
    # A baseline recorded on a GPU with another torch, checked by a CPU-only CI run.
    text = re.sub(r'torch = "[^"]+"', 'torch = "2.1.0"', text).replace(
        'peak_memory_source = "estimate"', 'peak_memory_source = "cuda"'
    )
    text = re.sub(r"(\[budgets\.net\.baseline\][^\[]*?)params = 314", r"\1params = 300", text)
    (project.path / "budgets.toml").write_text(text)
    result = project.runpytest("-p", "no:cacheprovider", "budgets.toml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*params 314 > baseline 300*",
            "*note: the baseline's peak_memory was measured on CUDA, this run's is estimated*",
            "*note: the baseline was recorded with torch 2.1.0, this run uses torch*",
        ]
    )


def test_outputs_released_in_the_marker_and_in_an_entry(project):
    project.makepyfile(
        test_outputs="""
        import pytest
        from mymodels import Net

        @pytest.mark.budget(outputs="released", mode="training")
        def test_released(model_budget):
            stats = model_budget.check(Net(), input_size=(4, 3, 16, 16), name="released")
            assert "outputs='released'" in " ".join(stats.peak_memory_approximations)

        @pytest.mark.budget(mode="training")
        def test_kept(model_budget):
            stats = model_budget.check(Net(), input_size=(4, 3, 16, 16), name="kept")
            assert "outputs='kept'" in " ".join(stats.peak_memory_approximations)

        @pytest.mark.budget(outputs="dropped")
        def test_bad(model_budget):
            pass
        """
    )
    result = project.runpytest("-p", "no:cacheprovider", "test_outputs.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_bad: budget marker: outputs='dropped'; expected one of kept, released*"])
    project.makepyfile(
        test_outputs=project.path.joinpath("test_outputs.py")
        .read_text()
        .split('@pytest.mark.budget(outputs="dropped")')[0]
    )
    project.runpytest("-p", "no:cacheprovider", "test_outputs.py").assert_outcomes(passed=2)
    project.makefile(
        ".toml",
        budgets=BUDGETS.replace(
            "input_size = [1, 3, 16, 16]", 'input_size = [1, 3, 16, 16]\nmode = "training"\noutputs = "released"'
        ),
    )
    project.runpytest("-p", "no:cacheprovider", "budgets.toml").assert_outcomes(passed=1)


TWO_TESTS = """
import pytest
from mymodels import Net


@pytest.mark.budget(params="2K")
def test_one(model_budget):
    model_budget.check(Net(), input_size=(1, 3, 16, 16))


@pytest.mark.budget(params="2K")
def test_two(model_budget):
    model_budget.check(Net(width=4), input_size=(1, 3, 16, 16))
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_prune_only_removes_what_this_run_proves_stale(project, workers):
    project.makepyfile(test_a=TWO_TESTS)
    project.runpytest("-p", "no:cacheprovider", "--update-budgets", *workers).assert_outcomes(passed=4)
    text = budgets(project)
    assert '"test_a.py::test_two"' in text
    # A node-id selection is not a deselection: test_two's entry (limits, comments) stays.
    project.runpytest("-p", "no:cacheprovider", "--prune-budgets", "test_a.py::test_one", *workers).assert_outcomes(
        passed=1
    )
    assert budgets(project) == text
    project.runpytest("-p", "no:cacheprovider", "--prune-budgets", "-k", "one", *workers)
    assert budgets(project) == text
    # A full run over the file proves test_two gone once it is: pruned, under xdist too.
    project.makepyfile(test_a=TWO_TESTS.split('@pytest.mark.budget(params="2K")\ndef test_two')[0])
    result = project.runpytest("-p", "no:cacheprovider", "--update-budgets", "--prune-budgets", *workers)
    result.stdout.fnmatch_lines(["*1 stale budget entry (removed)*"])
    assert '"test_a.py::test_two"' not in budgets(project) and '"test_a.py::test_one"' in budgets(project)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_one_name_for_two_models_is_an_error_naming_both(project, workers):
    project.makepyfile(
        test_a=TWO_TESTS.replace("input_size=(1, 3, 16, 16))", 'input_size=(1, 3, 16, 16), name="shared")')
    )
    before = budgets(project)
    result = project.runpytest("-p", "no:cacheprovider", "--update-budgets", "test_a.py", *workers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*'shared'*test_a.py::test_one*test_a.py::test_two*give each model its own name=...*"])
    assert "1 budget name checked by several tests" in result.stdout.lines[-1]
    assert "shared" not in budgets(project) and budgets(project).startswith(before.rstrip())
