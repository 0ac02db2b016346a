"""pytest-xdist against a serial run, on the projects CI runs (measured, not asserted: these are
shared, noisy machines; the README reports what this prints).

    python benchmarks/xdist_speed.py [--only built,declared,four] [--repeat 3] [-n 2]

- built:    40 torchvision classification models (the first 40 of ``list_models``), each built in
            its test with random CPU weights and checked by the fixture: the trial's suite.
- declared: the same 40 as ``budgets.toml`` entries (``factory = "torchvision:NAME"``: built on the
            meta device, no weights).
- four:     a project of four budgets: GPT-2 and a Llama from transformers configs, timm's
            ViT-B/16, torchvision's ResNet-50 in training with AdamW.

Each project is made in a temporary folder, its baselines recorded once, then ``pytest`` is run
serially and with ``-n N`` (a fresh process each time, wall-clock from start to exit), ``--repeat``
times each; the table gives the medians and the speed-up. Goals: ``-n 2`` at least 1.7x faster on
the 40-model suites, and never slower than serial on the four.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

FIRST = 40


def _names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))[:FIRST]


def built(folder: Path) -> None:
    tests = ["import pytest", "import torchvision", ""]
    for name in _names():
        tests += [
            "",
            "@pytest.mark.budget",
            f"def test_{name}(model_budget):",
            f"    model_budget.check(torchvision.models.get_model({name!r}), input_size=(1, 3, 224, 224))",
            "",
        ]
    (folder / "test_models.py").write_text("\n".join(tests))


def declared(folder: Path) -> None:
    entries = [
        f'[budgets.{name}]\nfactory = "torchvision:{name}"\ninput_size = [1, 3, 224, 224]\n' for name in _names()
    ]
    (folder / "budgets.toml").write_text("\n".join(entries))


def four(folder: Path) -> None:
    (folder / "test_four.py").write_text(
        textwrap.dedent(
            """
            import pytest
            import timm
            import torch
            import torchvision
            import transformers


            @pytest.mark.budget
            def test_gpt2(model_budget):
                model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
                model_budget.check(model, inputs=torch.zeros(1, 128, dtype=torch.long))


            @pytest.mark.budget
            def test_llama(model_budget):
                config = transformers.LlamaConfig(
                    hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                    num_key_value_heads=4, vocab_size=32000,
                )
                model_budget.check(transformers.LlamaForCausalLM(config), inputs=torch.zeros(1, 256, dtype=torch.long))


            @pytest.mark.budget
            def test_vit(model_budget):
                model_budget.check(timm.create_model("vit_base_patch16_224"), input_size=(1, 3, 224, 224))


            @pytest.mark.budget(mode="training")
            def test_resnet_training(model_budget):
                model_budget.check(
                    torchvision.models.resnet50(), input_size=(8, 3, 224, 224),
                    optimizer=lambda params: torch.optim.AdamW(params),
                )
            """
        )
    )


PROJECTS = {
    "built": (built, ["torchvision"]),
    "declared": (declared, ["torchvision"]),
    "four": (four, ["torchvision", "timm", "transformers"]),
}


def _pytest(folder: Path, *args: str) -> float:
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} in {folder} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PROJECTS), help="comma-separated: " + ", ".join(PROJECTS))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the median is shown)")
    parser.add_argument("-n", "--workers", type=int, default=2, help="pytest-xdist workers")
    args = parser.parse_args(argv)
    print(f"| project | serial (s) | -n {args.workers} (s) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.only.split(","):
        make, needs = PROJECTS[name]
        missing = [module for module in needs if importlib.util.find_spec(module) is None]
        if missing:
            print(f"| {name} | skipped: needs {', '.join(missing)} | | |")
            continue
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            make(folder)
            _pytest(folder, "--update-budgets")
            serial, parallel = [], []
            for _ in range(args.repeat):  # interleaved: a noisy neighbour hurts both alike
                serial.append(_pytest(folder))
                parallel.append(_pytest(folder, "-n", str(args.workers)))
            one, many = statistics.median(serial), statistics.median(parallel)
            print(f"| {name} | {one:.1f} | {many:.1f} | {one / many:.2f}x |", flush=True)
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
