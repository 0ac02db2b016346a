"""Bad budget files and values get a file:line error, never an INTERNALERROR, and the file is never
written over (SPEC §3, §7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .projects import scratch_project
from .test_plugin import BUDGETS, MODELS

#: One in-code budget test, well within its limit.
ONE_BUDGET_TEST = """
import pytest, torch

@pytest.mark.budget(params="1K")
def test_a(model_budget):
    model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS)
    return pytester


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "[budgets.a]\nlimits = { params = inf }\n",
            "*budgets.toml:2: budgets.a.limits.params: expected a finite, non-negative count, found inf*",
        ),
        (
            '[settings]\ntolerance = "inf%"\n',
            "*budgets.toml:2: settings.tolerance: expected a percentage such as \"1%\"*found 'inf%'*",
        ),
        ('[settings]\ntolerance = "nan%"\n', "*settings.tolerance: expected a percentage*"),
    ],
)
def test_infinite_and_nan_values_are_file_line_errors(project, content, expected):
    before = project.makefile(".toml", budgets=content).read_text()
    result = project.runpytest("-p", "no:cacheprovider", "--update-budgets")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert (project.path / "budgets.toml").read_text() == before


def test_a_marker_with_an_infinite_limit_is_a_usage_error(project):
    project.makepyfile(
        test_inf="""
        import pytest

        @pytest.mark.budget(params=float("inf"))
        def test_inf(model_budget):
            pass
        """
    )
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_inf.py::test_inf: budget marker: params=inf: expected a finite, non-negative count*"]
    )


def test_encodings_and_a_directory(project):
    path = project.path / "budgets.toml"
    path.write_bytes("\ufeff".encode() + BUDGETS.encode())  # a BOM, as some Windows editors save
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)

    latin = BUDGETS.replace("# the team's budgets", "# l'\u00e9quipe").encode("latin-1")
    path.write_bytes(latin)
    result = project.runpytest("-p", "no:cacheprovider", "--update-budgets")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*budgets.toml:2: not UTF-8 (byte 0xe9); TOML files are UTF-8: save it as UTF-8*"])
    assert path.read_bytes() == latin

    path.write_bytes(BUDGETS.encode("utf-16"))
    result = project.runpytest("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*budgets.toml: is UTF-16; TOML files are UTF-8*"])

    path.unlink()
    path.mkdir()
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*budgets.toml: is a directory; expected a TOML file*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_a_bad_marker_under_xdist_names_the_key_instead_of_crashing(project):
    project.makepyfile(
        test_parms="""
        import pytest

        @pytest.mark.budget(parms="20K")
        def test_typo(model_budget):
            pass
        """
    )
    result = project.runpytest("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*invalid budget marker: test_parms.py::test_typo: budget marker: unknown key 'parms'*"]
    )
    assert "INTERNALERROR" not in result.stdout.str()


@pytest.mark.parametrize(
    "layout",
    [
        '# keep me\n[budgets.net]\nfactory = "mymodels:net"\ninput_size = [1, 3, 16, 16]\nlimits.params = "20K"   # dotted\nbaseline.params = 1\n',
        '# keep me\nbudgets.net = { factory = "mymodels:net", input_size = [1, 3, 16, 16], limits = { params = "20K" } }\n',
        '# keep me\n[budgets.net]\nfactory = "mymodels:net"\ninput_size = [1, 3, 16, 16]\nbaseline = { params = 1 }\n',
    ],
    ids=["dotted-keys", "inline-entry", "inline-baseline"],
)
def test_update_budgets_writes_any_layout_toml_allows_into_a_file_that_loads(project, layout):
    (project.path / "budgets.toml").write_text(layout)
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=1)
    text = (project.path / "budgets.toml").read_text()
    assert text.startswith("# keep me") and "[budgets.net.baseline]" in text and "params = 314" in text
    assert "[baseline" not in text  # no top-level table that the loader rejects
    assert '"20K"' in text or "limits" not in layout
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_two_update_runs_at_once_keep_both_runs_baselines(project):
    import subprocess
    import sys

    (project.path / "budgets.toml").write_text("# shared by two CI jobs\n")
    for index in range(6):
        project.makepyfile(
            **{
                f"test_job{index}": f"""
                from mymodels import Net

                def test_net(model_budget):
                    model_budget.check(Net(width={index + 2}), input_size=(1, 3, 8, 8))
                """
            }
        )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--update-budgets"]
    jobs = [
        subprocess.Popen(
            [*command, f"test_job{index}.py"], cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for index in range(6)
    ]
    for job in jobs:
        output = job.communicate(timeout=300)[0].decode()
        assert job.returncode == 0, output
    text = (project.path / "budgets.toml").read_text()
    assert text.startswith("# shared by two CI jobs")
    assert all(f'[budgets."test_job{index}.py::test_net".baseline]' in text for index in range(6)), text


def test_an_empty_figures_list_compares_no_figure_with_the_baseline(project):
    (project.path / "budgets.toml").write_text(BUDGETS)
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=1)
    text = (project.path / "budgets.toml").read_text()
    grown = text.replace("params = 314", "params = 300", 1)
    (project.path / "budgets.toml").write_text(grown)
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=1)  # default: params compared
    (project.path / "budgets.toml").write_text(grown.replace('tolerance = "1%"', 'tolerance = "1%"\nfigures = []'))
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)  # limits only


def test_a_report_that_cannot_be_written_is_one_line_and_the_rest_still_are(pytester):
    pytester.makepyfile(test_a=ONE_BUDGET_TEST)
    (pytester.path / "adir").mkdir()
    result = pytester.runpytest("-p", "no:cacheprovider", "--budget-json", "adir", "--budget-markdown", "out.md")
    assert result.ret == pytest.ExitCode.OK  # the tests' verdict stands
    result.stdout.fnmatch_lines(["--budget-json adir: not written: Is a directory"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "test_a.py::test_a" in (pytester.path / "out.md").read_text()
    if Path("/dev/full").exists():  # a full disk
        result = pytester.runpytest("-p", "no:cacheprovider", "--budget-json=/dev/full")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(["--budget-json /dev/full: not written: No space left on device"])


def test_budgets_that_errored_are_in_the_reports_and_never_recorded(pytester):
    pytester.makepyfile(
        mymodels="def broken():\n    raise RuntimeError('the factory broke')\n",
        test_a="""
import pytest, torch

@pytest.mark.budget(params="1K")
def test_errors_before_its_check(model_budget):
    raise ValueError("no data here")

@pytest.mark.budget(params="1K")
def test_fine(model_budget):
    model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))
""",
    )
    pytester.syspathinsert()
    pytester.makefile(".toml", budgets='[budgets.broken]\nfactory = "mymodels:broken"\ninput_size = [1, 4]\n')
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--budget-json", "r.json", "--budget-markdown", "r.md", "--update-budgets"
    )
    result.assert_outcomes(passed=1, failed=2)
    report = json.loads((pytester.path / "r.json").read_text())["budgets"]
    assert report["broken"]["verdict"]["status"] == "error"
    assert "the factory broke" in report["broken"]["error"]
    assert report["test_a.py::test_errors_before_its_check"]["error"] == "ValueError: no data here"
    assert report["test_a.py::test_fine"]["verdict"]["status"] == "passed"
    markdown = (pytester.path / "r.md").read_text()
    assert "| ⚠️ broken | - | - | - | - | - | - | new | error |" in markdown
    # --update-budgets recorded the budget that ran, and nothing for the two that errored.
    text = (pytester.path / "budgets.toml").read_text()
    assert "test_fine" in text and "test_errors_before_its_check" not in text
    assert "[budgets.broken.baseline]" not in text


def test_reports_of_an_earlier_run_do_not_survive_a_run_without_budgets(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    (pytester.path / "r.md").write_text("| old | 1 | failed |\n")
    (pytester.path / "r.json").write_text('{"budgets": {"old": {}}}')
    pytester.runpytest(
        "-p", "no:cacheprovider", "--budget-json", "r.json", "--budget-markdown", "r.md"
    ).assert_outcomes(passed=1)
    assert json.loads((pytester.path / "r.json").read_text())["budgets"] == {}
    assert (pytester.path / "r.md").read_text() == "### Model budgets\n\nNo budget was measured in this run.\n"


def test_ten_thousand_bad_entries_are_reported_quickly_and_briefly(pytester):
    # Each error used to rescan the file: 10,000 bad entries took minutes. Now one pass, and
    # the message lists the first problems and counts the rest.
    entries = "\n".join(f'[budgets.m{i}]\nlimits = {{ params = "3 apples" }}\n' for i in range(10_000))
    pytester.makefile(".toml", budgets=entries)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*budgets.toml: 10000 problem(s) in the budget file*",
            "*budgets.toml:2: budgets.m0.limits.params: expected an integer*",
            "*... and 9970 more*",
        ]
    )
    assert len(result.stderr.lines) < 50


def test_a_header_line_of_spaces_is_read_in_linear_time():
    from pytest_modelbudget.budgets.loader import key_lines

    # "[" and 100,000 spaces (no closing bracket): the old header pattern backtracked on it.
    assert key_lines("[" + " " * 100_000 + "\n[budgets.a]\nx = 1\n") == {("budgets", "a"): 2, ("budgets", "a", "x"): 3}


def test_a_class_marker_and_a_method_marker_merge_figure_by_figure(pytester):
    pytester.makepyfile(
        test_merge="""
import pytest, torch

@pytest.mark.budget(params="10")
class TestModels:
    @pytest.mark.budget(macs="1K")
    def test_inherits_the_params_limit(self, model_budget):
        model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))  # 20 params > 10

    @pytest.mark.budget(params="100")
    def test_overrides_it(self, model_budget):
        model_budget.check(torch.nn.Linear(4, 4), input_size=(1, 4))
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_inherits_the_params_limit: params 20 > limit 10*"])


def test_a_symlinked_budget_file_runs_its_models_once(project):
    project.makefile(".toml", budgets=BUDGETS)
    (project.path / "sub").mkdir()
    (project.path / "sub" / "budgets.toml").symlink_to(project.path / "budgets.toml")
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_leftover_temporary_files_of_a_killed_update_are_removed(project):
    project.makefile(".toml", budgets=BUDGETS)
    leftover = project.path / ".budgets.toml.abc123.tmp"
    leftover.write_text("half a file")
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=1)
    assert not leftover.exists()
    assert "[budgets.net.baseline]" in (project.path / "budgets.toml").read_text()


def test_an_update_that_cannot_be_written_is_one_line_and_the_verdict_stands(project):
    # A budget file whose directory cannot hold it (here a plain file stands where the directory
    # should be: root ignores read-only permissions, this fails for everyone).
    (project.path / "notadir").write_text("")
    project.makepyfile(test_a=ONE_BUDGET_TEST)
    result = project.runpytest(
        "-p",
        "no:cacheprovider",
        "--update-budgets",
        "--budgets-file",
        "notadir/budgets.toml",
        "--budget-markdown",
        "r.md",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*notadir/budgets.toml: not written: *Not a directory*"])
    assert "Traceback" not in result.stdout.str()
    assert (project.path / "r.md").exists()


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ('"12 M"', "*budgets.toml:2: budgets.a.limits.params:*found '12 M' (write \"12M\", with no space)*"),
        ('"12m"', "*budgets.toml:2: budgets.a.limits.params:*found '12m' (m is milli; millions are M)*"),
        ("12000000.5", "*budgets.toml:2: budgets.a.limits.params: expected a whole number, found 12000000.5*"),
        ('"1.2345678M"', "*budgets.toml:2: budgets.a.limits.params: '1.2345678M' is 1234567.8, not a whole count*"),
    ],
)
def test_quantities_that_were_read_silently_are_errors_with_the_accepted_forms(project, limit, expected):
    # Each was accepted before: "12 M" and "12m" as 12,000,000, 12000000.5 rounded.
    project.makefile(".toml", budgets=f"[budgets.a]\nlimits = {{ params = {limit} }}\n")
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("12k", "count", 12_000), ("350K", "count", 350_000), ("46MiB", "bytes", 46 * 2**20), ("1.5kB", "bytes", 1_500)],
)
def test_the_documented_forms_still_read(text, kind, value):
    from pytest_modelbudget.quantities import parse_quantity

    assert parse_quantity(text, kind) == value


def test_a_factory_of_the_project_not_on_the_path_says_how_to_put_it_there(pytester):
    # `pytest` (the script) does not put the working directory on sys.path, as `python -m pytest`
    # does: the project's own package is then not importable, and the entry must say what to do.
    pytester.mkpydir("ourmodels")
    pytester.path.joinpath("ourmodels", "nets.py").write_text(
        "import torch\n\ndef net():\n    return torch.nn.Linear(4, 4)\n"
    )
    pytester.makefile(".toml", budgets='[budgets.net]\nfactory = "ourmodels.nets:net"\ninput_size = [1, 4]\n')
    script = Path(sys.executable).parent / "pytest"
    if not script.exists():
        pytest.skip("no pytest script beside this interpreter")
    # Not pytester.run: it puts the working directory on PYTHONPATH, which is what is missing here.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), "-p", "no:cacheprovider"],
            cwd=pytester.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    failed = run()
    assert failed.returncode == pytest.ExitCode.TESTS_FAILED, failed.stdout
    assert "cannot import module 'ourmodels.nets'" in failed.stdout
    assert 'make it importable: pip install -e . , or pythonpath = ["."] in pytest\'s configuration' in failed.stdout
    pytester.makeini("[pytest]\npythonpath = .\n")
    passed = run()
    assert passed.returncode == pytest.ExitCode.OK, passed.stdout


BROKEN = """
import torch
from torch import nn


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        raise ValueError(f"shapes do not line up: {tuple(y.shape)}")


def broken():
    return Broken()
"""


def test_a_forward_that_raises_is_said_once_at_the_models_own_line(pytester):
    # Was 339-513 lines: the error twice (the fake run, then the real retry), through our frames,
    # and for a declared model never the model's own file and line.
    scratch_project(pytester, BROKEN, '[budgets.declared]\nfactory = "mymodels:broken"\ninput_size = [2, 8]\n')
    pytester.makepyfile(
        test_models="""
        import pytest
        from mymodels import broken

        @pytest.mark.budget(params="1K")
        def test_broken(model_budget):
            model_budget.check(broken(), input_size=(2, 8))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    failures = result.stdout.str().split("= FAILURES =")[1].split("= model budgets =")[0]
    message = "Broken.forward raised ValueError: shapes do not line up: (2, 8) (mymodels.py:12, in forward)"
    assert failures.count(message) == 2  # the declared model's and the test's, once each
    assert failures.count("shapes do not line up") == 2
    assert "pytest_modelbudget/" not in failures and "torch/nn/modules" not in failures
    assert len(failures.splitlines()) < 20
