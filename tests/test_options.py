"""The precedence of a measurement's options, in one table: the argument, then the marker, then
the budgets.toml entry, then [settings], then the default."""

from __future__ import annotations

import pytest

from pytest_modelbudget.options import MODE, OPTIONS, OUTPUTS, resolve

ARG, MARKER, ENTRY, SETTINGS = "argument", "marker", "entry", "settings"


@pytest.mark.parametrize(
    ("option", "written", "expected"),
    [
        # written at: value per level -> the value that holds
        ("mode", {}, "inference"),
        ("mode", {ENTRY: "training"}, "training"),
        ("mode", {MARKER: "training", ENTRY: "inference"}, "training"),
        ("mode", {ARG: "inference", MARKER: "training", ENTRY: "training"}, "inference"),
        ("outputs", {}, "kept"),
        ("outputs", {ENTRY: "released"}, "released"),
        ("outputs", {ARG: "kept", MARKER: "released"}, "kept"),
        ("device", {}, None),
        ("device", {SETTINGS: "cpu"}, "cpu"),
        ("device", {ENTRY: "cuda:1", SETTINGS: "cpu"}, "cuda:1"),
        ("device", {ARG: "cuda", ENTRY: "cpu", SETTINGS: "cpu"}, "cuda"),
        ("gpu", {SETTINGS: "h100-sxm"}, "h100-sxm"),
        ("gpu", {ENTRY: "a10g", SETTINGS: "h100-sxm"}, "a10g"),
        ("gpu", {MARKER: "l4", ENTRY: "a10g", SETTINGS: "h100-sxm"}, "l4"),
        ("gpu", {ARG: "t4", MARKER: "l4", ENTRY: "a10g", SETTINGS: "h100-sxm"}, "t4"),
        ("parallel", {ENTRY: {"world_size": 8}}, {"world_size": 8}),
        ("parallel", {MARKER: {"world_size": 2}, ENTRY: {"world_size": 8}}, {"world_size": 2}),
        ("autocast", {ENTRY: "bfloat16"}, "bfloat16"),
        ("autocast", {ARG: "float16", ENTRY: "bfloat16"}, "float16"),
    ],
)
def test_the_first_level_that_writes_an_option_holds(option, written, expected):
    levels: dict[str, dict[str, object]] = {}
    for level, value in written.items():
        levels.setdefault(level, {})[option] = value
    assert resolve(levels)[option] == expected


def test_none_is_not_written_and_a_missing_level_is_skipped():
    assert resolve({ARG: {"mode": None}, MARKER: None, ENTRY: {"mode": "training"}})["mode"] == "training"
    assert resolve({})["mode"] == MODE.default


def test_every_option_is_resolved():
    assert set(resolve({})) == set(OPTIONS)


def test_an_option_written_where_it_cannot_be_is_refused():
    with pytest.raises(ValueError, match="device cannot be set at the marker level"):
        resolve({MARKER: {"device": "cpu"}})
    with pytest.raises(ValueError, match="unknown option level"):
        resolve({"ini": {"mode": "training"}})


def test_allowed_values_are_written_once():
    # What the schema, the marker, the engine and the CLI accept.
    assert MODE.choices == ("inference", "training", "prefill", "decode")
    assert OUTPUTS.choices == ("kept", "released")
