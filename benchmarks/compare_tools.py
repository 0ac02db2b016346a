"""pytest-modelbudget beside torchinfo, fvcore, ptflops (both backends), thop, calflops and
``torch.utils.flop_counter.FlopCounterMode``: the same models, in one run, against published
references.

    pip install -e ".[bench]"          # torchvision must match the installed torch
    python benchmarks/compare_tools.py [--models resnet50,gpt2] [--tools ours,thop] [--json out.json]

Each (tool, model) pair runs in a fresh process, so that its peak RSS is its own: the model is
built, measured once (the tool's own warm-up: lazy imports, caches), built again and measured
again; the second call is timed. Peak RSS is the worker's ``ru_maxrss``, model weights included.
A tool that raises is listed with its error, not dropped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

# --- models and their outside references -----------------------------------------------------------


def _torchvision(name: str, weights: str) -> tuple[Any, tuple, dict, dict]:
    import torch
    import torchvision

    model = getattr(torchvision.models, name)().eval()
    meta = getattr(torchvision.models, weights).IMAGENET1K_V1.meta
    reference = {
        "params": meta["num_params"],
        "macs": round(meta["_ops"] * 1e9),
        "macs_digits": 3,
        "source": f"torchvision {weights}.IMAGENET1K_V1 num_params / _ops",
    }
    return model, (torch.randn(1, 3, 224, 224),), {}, reference


def _gpt2() -> tuple[Any, tuple, dict, dict]:
    import torch
    import transformers

    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    reference = {"params": 124_439_808, "macs": 16_114_089_984, "source": "GPT-2 small, tied head once, 1x128"}
    return model, (torch.zeros(1, 128, dtype=torch.long),), {}, reference


def _llama7b_meta() -> tuple[Any, tuple, dict, dict]:
    import torch
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config).eval()
    reference = {"params": 6_738_415_616, "macs": None, "source": "Llama-2-7B's published parameter count"}
    return model, (torch.zeros(1, 128, dtype=torch.long, device="meta"),), {}, reference


def _tied() -> tuple[Any, tuple, dict, dict]:
    """A language model whose output head is its embedding: the shared weight counts once."""
    import torch
    from torch import nn

    class TiedLM(nn.Module):
        def __init__(self, vocab: int = 32000, dim: int = 512) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.body = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
            self.head = nn.Linear(dim, vocab, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.body(self.embed(ids)))

    tokens, vocab, dim = 128, 32000, 512
    reference = {
        "params": vocab * dim + 2 * (dim * dim + dim),  # embedding once, two linears
        "macs": tokens * (2 * dim * dim + dim * vocab),
        "source": "arithmetic: 32000x512 tied embedding/head, two 512x512 linears, 128 tokens",
    }
    return TiedLM().eval(), (torch.zeros(1, tokens, dtype=torch.long),), {}, reference


MODELS: dict[str, Callable[[], tuple[Any, tuple, dict, dict]]] = {
    "resnet50": lambda: _torchvision("resnet50", "ResNet50_Weights"),
    "vit_b_16": lambda: _torchvision("vit_b_16", "ViT_B_16_Weights"),
    "gpt2": _gpt2,
    "llama7b_meta": _llama7b_meta,
    "tied_lm": _tied,
}

# --- tools: each returns (params, macs); None where the tool does not report it -------------------


def _ours(model, args, kwargs):
    from pytest_modelbudget import measure

    stats = measure(model, args, kwargs=kwargs)  # every figure, per layer, peak memory estimate
    return stats.params, stats.macs


def _flop_counter(model, args, kwargs):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return None, counter.get_total_flops() // 2


def _torchinfo(model, args, kwargs):
    import torchinfo

    device = next(model.parameters()).device
    summary = torchinfo.summary(model, input_data=list(args), verbose=0, device=device, **kwargs)
    return summary.total_params, summary.total_mult_adds


def _fvcore(model, args, kwargs):
    from fvcore.nn import FlopCountAnalysis, parameter_count

    analysis = FlopCountAnalysis(model, args).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return parameter_count(model)[""], analysis.total()  # fvcore's "flop" is one multiply-add


def _ptflops(backend: str):
    def run(model, args, kwargs):
        from ptflops import get_model_complexity_info

        (tensor,) = args
        macs, params = get_model_complexity_info(
            model,
            tuple(tensor.shape[1:]),
            input_constructor=lambda _: tensor,
            as_strings=False,
            print_per_layer_stat=False,
            verbose=False,
            backend=backend,
        )
        return params, macs

    return run


def _thop(model, args, kwargs):
    from thop import profile

    macs, params = profile(model, inputs=args, verbose=False)
    return params, macs


def _calflops(model, args, kwargs):
    from calflops import calculate_flops

    _, macs, params = calculate_flops(
        model=model,
        args=list(args),
        kwargs=kwargs or None,
        print_results=False,
        print_detailed=False,
        output_as_string=False,
    )
    return params, macs


TOOLS: dict[str, Callable[[Any, tuple, dict], tuple[int | None, int | None]]] = {
    "pytest-modelbudget": _ours,
    "FlopCounterMode": _flop_counter,
    "torchinfo": _torchinfo,
    "fvcore": _fvcore,
    "ptflops (pytorch)": _ptflops("pytorch"),
    "ptflops (aten)": _ptflops("aten"),
    "thop": _thop,
    "calflops": _calflops,
}

# --- one (tool, model) pair, in its own process ---------------------------------------------------------


def worker(tool: str, model_name: str) -> dict[str, Any]:
    import resource
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    result: dict[str, Any] = {"tool": tool, "model": model_name}
    try:
        model, args, kwargs, reference = MODELS[model_name]()
        result["reference"] = reference
        TOOLS[tool](model, args, kwargs)  # warm-up on a first copy: tools may mutate the model
        model, args, kwargs, _ = MODELS[model_name]()
        start = time.perf_counter()
        params, macs = TOOLS[tool](model, args, kwargs)
        result["seconds"] = time.perf_counter() - start
        result["params"] = None if params is None else int(params)
        result["macs"] = None if macs is None else int(macs)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ''}"
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_pair(tool: str, model_name: str, timeout: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", tool, model_name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE))
    except subprocess.TimeoutExpired:
        return {"tool": tool, "model": model_name, "error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"tool": tool, "model": model_name, "error": f"crashed: {tail[:80]}"}
    return json.loads(lines[-1])


# --- the table ------------------------------------------------------------------------------------------------


def _error(value: int | None, reference: int | None, digits: int | None = None) -> str:
    if value is None or reference is None:
        return "-"
    if digits is not None and round(value / 1e9, digits) == round(reference / 1e9, digits):
        return "0 (to the published digits)"
    if value == reference:
        return "0"
    return f"{100 * (value - reference) / reference:+.2f}%"


def table(results: list[dict[str, Any]]) -> str:
    ours = {r["model"]: r.get("seconds") for r in results if r["tool"] == "pytest-modelbudget"}
    lines = [
        "| model | tool | params | params error | MACs | MACs error | time (s) | x ours | peak RSS (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['tool']} | fails: {r['error']} | | | | | | {r.get('peak_rss_mb', 0):.0f} |"
            )
            continue
        ref = r["reference"]
        base = ours.get(r["model"])
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        lines.append(
            f"| {r['model']} | {r['tool']} | {'-' if r['params'] is None else format(r['params'], ',')} | "
            f"{_error(r['params'], ref['params'])} | {'-' if r['macs'] is None else format(r['macs'], ',')} | "
            f"{_error(r['macs'], ref['macs'], ref.get('macs_digits'))} | {r['seconds']:.3f} | {ratio} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def versions() -> str:
    from importlib import metadata

    names = [
        "torch",
        "torchvision",
        "transformers",
        "pytest-modelbudget",
        "torchinfo",
        "fvcore",
        "ptflops",
        "thop",
        "calflops",
    ]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: " + ", ".join(TOOLS))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per (tool, model) pair")
    parser.add_argument("--json", help="also write the raw results here")
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(worker(*options.worker)))
        return 0
    models = [m for m in options.models.split(",") if m]
    tools = [t for t in options.tools.split(",") if t]
    unknown = [m for m in models if m not in MODELS] + [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown model or tool: {', '.join(unknown)}")
    results = []
    for model_name in models:
        for tool in tools:
            result = run_pair(tool, model_name, options.timeout)
            print(
                f"{model_name:>14}  {tool:<20} {result.get('error') or format(result['seconds'], '.3f') + ' s'}",
                file=sys.stderr,
            )
            results.append(result)
    print(
        f"{datetime.date.today()}, {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}; {versions()}\n"
    )
    print(table(results))
    if options.json:
        with open(options.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
