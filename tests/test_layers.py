"""The package's layers (``[tool.importlinter]`` in pyproject.toml) hold, and the contracts bite:
a forbidden import added to a copy of the package breaks the contract that forbids it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e .[dev])")


def _lint(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(project / "pyproject.toml")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("gate/verdict.py", "import torch", "The budget file and the gate import no torch"),
        ("budgets/schema.py", "from ..engine import measure", "Layers"),
        ("engine/step.py", "import pytest", "The engine runs models and knows nothing of pytest"),
        ("engine/inventory.py", "from ..plugin import session", "Layers"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(
        ROOT / "pytest_modelbudget", tmp_path / "pytest_modelbudget", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "pytest_modelbudget" / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    broken_contracts = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(broken) for row in broken_contracts), result.stdout
    assert module.replace("/", ".").removesuffix(".py") in result.stdout


def test_the_layers_contract_names_every_top_level_module():
    import pkgutil

    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {info.name for info in pkgutil.iter_modules([str(ROOT / "pytest_modelbudget")])}
    assert modules - named == set(), "modules in no layer"
    assert named - modules == set(), "layers naming no module"
