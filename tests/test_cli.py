"""python -m pytest_modelbudget, run as a user runs it."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_modelbudget", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_tree_and_totals():
    result = run_cli("examples.models:tiny_cnn", "--input-size", "1,3,32,32", "--depth", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # torchinfo's columns and ours: output shape, params, MACs, memory traffic, peak memory.
    assert lines[0].split() == ["module", "type", "output", "shape", "params", "MACs", "traffic", "peak", "memory"]
    assert any(line.split()[:7] == ["stage1", "Sequential", "[1,", "32,", "16,", "16]", "4.67K"] for line in lines)
    assert max(map(len, lines[:10])) <= 100
    assert not any(line.strip().startswith("0 ") for line in lines)  # depth 1 hides stage1.0
    assert "params:           15,130" in result.stdout


def test_binary_units():
    result = run_cli(
        "examples.models:tiny_cnn",
        "--input-size",
        "1,3,32,32",
        "--depth",
        "0",
        "--units",
        "binary",
        "--columns",
        "params,bytes",
    )
    assert result.returncode == 0, result.stderr
    # 15,130 float32 parameters and the BatchNorm buffers: 61,440 B, which is 60 KiB exactly.
    assert "bytes:            61,440 (60KiB)" in result.stdout
    assert any(line.split()[:4] == ["(root)", "TinyCNN", "15.13K", "60KiB"] for line in result.stdout.splitlines())
    bad = run_cli("examples.models:tiny_cnn", "--input-size", "1,3,32,32", "--columns", "params,speed")
    assert bad.returncode == 2 and "expected some of type, output_shape, params" in bad.stderr


def test_json_output_and_meta_and_kwargs():
    result = run_cli(
        "examples.models:tiny_cnn", "--kwarg", "width=8", "--meta", "--input-size", "2x3x32x32", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 3 * 8 * 9 + 16 + 8 * 16 * 9 + 32 + 16 * 16 * 9 + 64 + 32 * 10 + 10
    assert data["layers"]["stem.0"]["type"] == "Conv2d"


def test_markdown_output_with_an_inputs_factory():
    result = run_cli(
        "examples.models:transformer_block", "--inputs", "examples.models:block_inputs", "--format", "markdown"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| module | type | output shape | params | MACs | traffic |")


def test_errors_are_one_line_not_a_traceback():
    result = run_cli("examples.models:nothing_here", "--input-size", "1,3")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: module 'examples.models' has no attribute 'nothing_here' (from 'examples.models:nothing_here')"
    )
    result = run_cli("examples.models:tiny_cnn")
    assert result.returncode == 2
    assert "needs inputs: pass inputs=... or input_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_console_script_finds_the_project_modules():
    script = Path(sys.executable).parent / "pytest-modelbudget"
    done = subprocess.run(
        [str(script), "examples.models:tiny_cnn", "--input-size", "1,3,32,32", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"] == 15_130


def test_a_reader_that_goes_away_is_no_error():
    # `... | head -1`: the pipe closes before the table is written.
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_modelbudget", "examples.models:transformer_block", "--input-size", "1,16,256"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert b"BrokenPipeError" not in stderr and b"Traceback" not in stderr


def test_every_option_has_help():
    help_text = run_cli("--help").stdout
    for option in (
        "--input-size",
        "--inputs",
        "--dtype",
        "--kwarg",
        "--meta",
        "--depth",
        "--mode",
        "--device",
        "--autocast",
        "--format",
    ):
        block = help_text.split(option, 1)[1].split("\n  --", 1)[0]
        assert len(block.split()) > 3, option


def test_json_stays_valid_when_the_model_prints_while_it_is_built(tmp_path):
    (tmp_path / "chatty.py").write_text(
        "import torch\n\n"
        "def model():\n"
        "    net = torch.nn.Linear(4, 2)\n"
        "    print('number of parameters: %.2fM' % (10 / 1e6,))  # as nanoGPT's GPT() does\n"
        "    return net\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest_modelbudget", "chatty:model", "--input-size", "1,4", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"] == 10
    assert "number of parameters: 0.00M" in done.stderr


def test_a_model_spec_needs_no_code_and_no_inputs():
    args = (
        "hf:llama",
        "--kwarg",
        "num_hidden_layers=2",
        "--kwarg",
        "hidden_size=64",
        "--kwarg",
        "intermediate_size=128",
        "--kwarg",
        "num_attention_heads=4",
        "--kwarg",
        "vocab_size=500",
        "--format",
        "json",
    )
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # LlamaForCausalLM by hand (a decoder's spec builds the model people run): embeddings 500*64;
    # per layer q,k,v,o 4*64*64, MLP 3*64*128, two norms 2*64; the final norm 64; the untied head
    # 64*500.
    backbone = 500 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    assert data["params"] == backbone + 64 * 500
    assert data["model_type"] == "LlamaForCausalLM"
    # The bare backbone by its class's name.
    result = run_cli("hf:LlamaModel", *args[1:])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["model_type"], data["params"]) == ("LlamaModel", backbone)
    result = run_cli("hf:no_such_type")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: hf:no_such_type: not a model type of transformers")


def test_torchvision_and_timm_specs_through_the_cli():
    # resnet18's published num_params (torchvision's weights table) and timm's resnet18: 11,689,512.
    for spec, package in (("torchvision:resnet18", "torchvision"), ("timm:resnet18", "timm")):
        try:
            __import__(package)
        except ImportError:
            continue
        result = run_cli(spec, "--format", "json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["params"] == 11_689_512, spec


def test_a_decode_step_from_the_command_line():
    result = run_cli(
        "hf:llama",
        *("--kwarg", "num_hidden_layers=2", "--kwarg", "hidden_size=64", "--kwarg", "intermediate_size=128"),
        *("--kwarg", "num_attention_heads=4", "--kwarg", "num_key_value_heads=2", "--kwarg", "vocab_size=500"),
        *("--mode", "decode", "--context", "300", "--batch", "3", "--format", "json"),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # 2 layers x (keys, values) x 2 KV heads x 16 dims x 4 bytes = 512 bytes a token.
    assert data["kv_cache"] == 512 * 300 * 3
    assert (data["mode"], data["context"], data["batch"]) == ("decode", 300, 3)
    table = run_cli(
        "hf:llama",
        *("--kwarg", "num_hidden_layers=2", "--kwarg", "hidden_size=64", "--kwarg", "intermediate_size=128"),
        *("--kwarg", "num_attention_heads=4", "--kwarg", "num_key_value_heads=2", "--kwarg", "vocab_size=500"),
        *("--mode", "decode", "--context", "300", "--batch", "3", "--gpu", "t4", "--depth", "0"),
    )
    assert table.returncode == 0, table.stderr
    assert "KV cache:         460,800 (460.8KB for 3 x 300 tokens)" in table.stdout
    # A 16 GiB T4 holds this small model at every context it has positions for, and fewer
    # sequences than its memory over one sequence's cache alone (300 x 512 bytes).
    lines = table.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("fits t4:"))
    rest = itertools.takewhile(lambda ln: ln.startswith(" " * 18), lines[first + 1 :])
    wrapped = [lines[first], *(ln.strip() for ln in rest)]
    line = " ".join(wrapped)  # a long line wraps under its label at the terminal's width
    sequences = int(line.split("max_batch ")[1].split()[0].replace(",", ""))
    assert 1_000 < sequences < 16 * 2**30 // (300 * 512)
    assert line.endswith("max_context 2,048 (tokens at batch 3)")
    bad = run_cli("hf:llama", "--mode", "decode", "--context", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "context must be a whole number, 1 or more, found 0" in bad.stderr
