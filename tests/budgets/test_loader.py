"""Loading budgets.toml: errors name the file, the line, the key, what was found and what is
expected."""

from __future__ import annotations

import pytest

from pytest_modelbudget.budgets.loader import load_budget_file, load_text
from pytest_modelbudget.errors import BudgetFileError

GOOD = """\
[settings]
tolerance = "1%"

[budgets.cnn]
factory = "models:cnn"
input_size = [1, 3, 32, 32]
limits = { params = "12M", peak_memory = "46MiB", roofline_time = "2.5ms" }
"""


def test_quantities_are_read_in_their_figures_units(tmp_path):
    file = load_text(tmp_path / "budgets.toml", GOOD)
    assert file.settings.tolerance == 0.01
    assert file.budgets["cnn"].limits.as_dict() == {
        "params": 12_000_000,
        "peak_memory": 46 * 2**20,
        "roofline_time": 2_500_000,
    }


def test_a_missing_file_is_an_empty_one(tmp_path):
    assert load_budget_file(tmp_path / "nope.toml").budgets == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace('"12M"', '"12 apples"'),
            "budgets.toml:7: budgets.cnn.limits.params: expected an integer or a count",
        ),
        (
            GOOD.replace("params =", "parameters ="),
            "budgets.toml:7: budgets.cnn.limits.parameters: unknown key 'parameters'; expected one of: params, trainable_params",
        ),
        (
            GOOD.replace('tolerance = "1%"', 'tolerance = "1"'),
            'budgets.toml:2: settings.tolerance: expected a percentage such as "1%"',
        ),
        (
            GOOD.replace('factory = "models:cnn"', 'factory = "models.cnn"'),
            "budgets.toml:5: budgets.cnn.factory: expected an import path",
        ),
        (GOOD + "[budgets.x\n", "budgets.toml: not valid TOML"),
    ],
)
def test_a_mistake_is_named_with_its_line(tmp_path, text, expected):
    with pytest.raises(BudgetFileError) as error:
        load_text(tmp_path / "budgets.toml", text)
    assert expected in str(error.value)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_bytes(GOOD.encode("utf-16"))
    with pytest.raises(BudgetFileError, match="is UTF-16; TOML files are UTF-8"):
        load_budget_file(path)
