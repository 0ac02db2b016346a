"""Serving budgets as users write them: a marker and a budgets.toml entry in decode mode, the
kv_cache limit, a baseline, and the pull request that doubles the KV heads."""

from __future__ import annotations

import json

import pytest
import tomllib

from .projects import scratch_project

transformers = pytest.importorskip("transformers")
# Loaded here, before pytester's runs: each run restores sys.modules afterwards, and transformers'
# lazy modules (with torchao's operators they register) must not be imported twice.
transformers.LlamaForCausalLM  # noqa: B018

MODELS = """
import transformers


def llama(kv_heads=2):
    config = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=kv_heads, vocab_size=1000)
    return transformers.LlamaForCausalLM(config)
"""

BUDGETS = """
[budgets.chat]
factory = "servingmodels:llama"
mode = "decode"
context = 1024
batch = 8
limits = { kv_cache = "20MB" }
"""

TEST = """
import pytest
import servingmodels


@pytest.mark.budget(mode="decode", context=512, batch=4, kv_cache="5MB", name="in_code")
def test_decode(model_budget):
    stats = model_budget.check(servingmodels.llama())
    assert (stats.mode, stats.context, stats.batch) == ("decode", 512, 4)
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch_project(pytester, MODELS, BUDGETS, module="servingmodels")
    pytester.makepyfile(test_serving=TEST)
    return pytester


def test_a_decode_budget_records_its_cache_and_fails_when_the_kv_heads_double(project):
    project.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=2)
    text = (project.path / "budgets.toml").read_text()
    # 2 layers x 2 (keys, values) x 2 KV heads x 32 dims x 4 bytes = 1,024 bytes a token.
    assert "kv_cache = 8_388_608" in text  # 8 x 1,024 tokens
    project.runpytest("-p", "no:cacheprovider", "--budget-json", "report.json").assert_outcomes(passed=2)
    report = json.loads((project.path / "report.json").read_text())
    assert report["budgets"]["in_code"]["figures"]["kv_cache"] == 4 * 512 * 1024
    # The pull request: 4 KV heads instead of 2. The limit still holds; the baseline does not.
    (project.path / "servingmodels.py").write_text(MODELS.replace("kv_heads=2", "kv_heads=4"))
    result = project.runpytest("-p", "no:cacheprovider", "-k", "chat", "-vv")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*kv_cache 16.78MB > baseline 8.39MB (+100.0%, tolerance 1%)*",
            "*layers whose own*kv_cache*changed*",
        ]
    )
    rows = [line.split() for line in result.stdout.lines if line.strip().startswith("model.layers.")]
    # The attention layers' caches doubled (each 4,194,304 bytes before): the diff names them.
    grown = {row[0] for row in rows if "4.19MB" in row and "8.39MB" in row}
    assert grown == {"model.layers.0.self_attn", "model.layers.1.self_attn"}
    assert not any(row[0].endswith(".mlp") for row in rows)  # the MLPs did not change


def test_a_kv_cache_limit_on_a_model_with_no_cache_names_the_budget(pytester):
    scratch_project(
        pytester,
        "from torch import nn\n\ndef net():\n    return nn.Linear(4, 4)\n",
        '[budgets.plain]\nfactory = "mymodels:net"\ninput_size = [1, 4]\nlimits = { kv_cache = "1MB" }\n',
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*plain: kv_cache has a limit of 1MB but was not measured: it needs a serving step: "
            'mode = "prefill" or "decode", with context (and batch)*'
        ]
    )
    assert "largest layers by kv_cache" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_decode_needs_a_context(pytester):
    scratch_project(pytester, MODELS, '[budgets.chat]\nfactory = "mymodels:llama"\nmode = "decode"\n')
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(['*budgets.toml:1: budgets.chat: mode = "decode" needs context*'])


def test_a_max_batch_floor_on_a_gpu_of_our_own(pytester):
    budgets = """
[settings.gpus.edge]
bandwidth = "100GB/s"
bf16 = "10T"
memory = "16MB"

[budgets.edge_chat]
factory = "mymodels:llama"
mode = "decode"
context = 256
gpu = "edge"
limits = { max_batch = "4" }
"""
    scratch_project(pytester, MODELS, budgets)
    pytester.runpytest("-p", "no:cacheprovider", "--update-budgets").assert_outcomes(passed=1)
    baseline = tomllib.loads((pytester.path / "budgets.toml").read_text())["budgets"]["edge_chat"]["baseline"]
    recorded = baseline["max_batch"]
    assert recorded > 4 and baseline["max_context"] >= 256
    # The pull request that doubles the KV heads: fewer sequences fit, the floor's baseline fails.
    (pytester.path / "mymodels.py").write_text(MODELS.replace("kv_heads=2", "kv_heads=4"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*max_batch * < baseline {recorded} (*, tolerance 1%)*"])
