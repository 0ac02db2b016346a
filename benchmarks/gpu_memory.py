"""Peak memory: the estimate against the allocator's own figure, on the cases that matter.

    python benchmarks/gpu_memory.py                 # every case; --help for the options

With CUDA (a GPU machine: run it there before anything else), each case's step runs on the GPU and
the table gives the estimate a CPU-only run makes (``peak_memory_estimate``: fake execution,
simulated for CUDA) beside ``torch.cuda.max_memory_allocated`` of the same step. Without CUDA the
same cases run on the CPU against the CPU allocator's record (``tests/memory_reference.py``:
torch.profiler's memory events), with the estimate made for the CPU. One Markdown table on stdout,
the rows as JSON with ``--out``. Training cases use AdamW, the loop's steady step included (the
figure is the larger of the first and the steady step, on both sides).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_modelbudget import measure  # noqa: E402
from tests.memory_reference import allocator_peaks  # noqa: E402


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    #: The step's inputs: a tensor, or a dict of keyword arguments.
    inputs: Callable[[], Any]
    loss: Callable[[Any], torch.Tensor] | None = None
    mode: str = "training"
    autocast: torch.dtype | None = None
    #: Every case with this tag runs in --quick (the suite's smoke test).
    quick: bool = False
    needs: list[str] = field(default_factory=list)


def _adamw(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-6)


# --- the models ---------------------------------------------------------------------------------


def mlp(checkpointing: str | None = None) -> nn.Module:
    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)) for _ in range(4)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            from torch.utils.checkpoint import checkpoint

            for block in self.blocks:
                x = block(x) if checkpointing is None else checkpoint(block, x, use_reentrant=False)
            return x

    torch.manual_seed(0)
    return Blocks()


def lstm_lm() -> nn.Module:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(1000, 256)
            self.rnn = nn.LSTM(256, 256, num_layers=2, batch_first=True)
            self.head = nn.Linear(256, 1000)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(self.embed(ids))[0])

    torch.manual_seed(0)
    return LM()


def vision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, name)()

    return build


def hf(kind: str, checkpointing: bool = False, **sizes: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        if kind == "gpt2":
            config = transformers.GPT2Config(**sizes)
            model = transformers.GPT2LMHeadModel(config)
        elif kind == "bert":
            model = transformers.BertForMaskedLM(transformers.BertConfig(**sizes))
        elif kind == "mamba":
            model = transformers.MambaForCausalLM(transformers.MambaConfig(**sizes))
        else:
            config = transformers.LlamaConfig(**sizes)
            model = transformers.LlamaForCausalLM(config)
        if checkpointing:
            model.config.use_cache = False
            model.gradient_checkpointing_enable()
        return model

    return build


def tokens(batch: int, length: int, vocab: int) -> Callable[[], Any]:
    def make() -> Any:
        torch.manual_seed(0)
        ids = torch.randint(0, vocab, (batch, length))
        return {"input_ids": ids, "labels": ids}

    return make


def images(batch: int, size: int = 224) -> Callable[[], Any]:
    return lambda: torch.randn(batch, 3, size, size)


def classes(out: Any) -> torch.Tensor:
    return F.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long, device=out.device))


def hf_loss(out: Any) -> torch.Tensor:
    return out.loss


GPT2 = {"n_layer": 12, "n_embd": 768, "n_head": 12}
LLAMA = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
}
BERT = {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}
BF16 = torch.bfloat16

CASES = [
    Case("mlp 16x128x256 inference", mlp, lambda: torch.randn(16, 128, 256), mode="inference", quick=True),
    Case("mlp 16x128x256 AdamW", mlp, lambda: torch.randn(16, 128, 256), quick=True),
    Case("mlp checkpointed AdamW", lambda: mlp("non-reentrant"), lambda: torch.randn(16, 128, 256), quick=True),
    Case("mlp AdamW bf16 autocast", mlp, lambda: torch.randn(16, 128, 256), autocast=BF16),
    Case("mlp AdamW fp16 autocast, GradScaler", mlp, lambda: torch.randn(16, 128, 256), autocast=torch.float16),
    Case(
        "LSTM LM 2x256, 8x128 AdamW", lstm_lm, lambda: torch.randint(0, 1000, (8, 128)), loss=lambda o: o.pow(2).mean()
    ),
    Case("resnet18 bs32 inference", vision("resnet18"), images(32), mode="inference", needs=["torchvision"]),
    Case("resnet50 bs8 inference", vision("resnet50"), images(8), mode="inference", needs=["torchvision"]),
    Case("resnet50 bs32 AdamW", vision("resnet50"), images(32), loss=classes, needs=["torchvision"]),
    Case(
        "resnet50 bs32 AdamW bf16", vision("resnet50"), images(32), loss=classes, autocast=BF16, needs=["torchvision"]
    ),
    Case(
        "mobilenet_v3_small bs64 AdamW", vision("mobilenet_v3_small"), images(64), loss=classes, needs=["torchvision"]
    ),
    Case("vit_b_16 bs8 inference", vision("vit_b_16"), images(8), mode="inference", needs=["torchvision"]),
    Case("vit_b_16 bs32 AdamW", vision("vit_b_16"), images(32), loss=classes, needs=["torchvision"]),
    Case(
        "vit_b_16 bs32 AdamW bf16", vision("vit_b_16"), images(32), loss=classes, autocast=BF16, needs=["torchvision"]
    ),
    Case(
        "GPT-2 124M 1x1024 inference",
        hf("gpt2", **GPT2),
        tokens(1, 1024, 50257),
        mode="inference",
        needs=["transformers"],
    ),
    Case("GPT-2 124M 8x512 AdamW", hf("gpt2", **GPT2), tokens(8, 512, 50257), hf_loss, needs=["transformers"]),
    Case(
        "GPT-2 124M 8x512 AdamW checkpointing",
        hf("gpt2", True, **GPT2),
        tokens(8, 512, 50257),
        hf_loss,
        needs=["transformers"],
    ),
    Case(
        "GPT-2 124M 8x512 AdamW bf16",
        hf("gpt2", **GPT2),
        tokens(8, 512, 50257),
        hf_loss,
        autocast=BF16,
        needs=["transformers"],
    ),
    Case(
        "GPT-2 124M 8x512 AdamW fp16, GradScaler",
        hf("gpt2", **GPT2),
        tokens(8, 512, 50257),
        hf_loss,
        autocast=torch.float16,
        needs=["transformers"],
    ),
    Case(
        "Llama 8L-1024 4x1024 inference",
        hf("llama", **LLAMA),
        tokens(4, 1024, 32000),
        mode="inference",
        needs=["transformers"],
    ),
    Case("Llama 8L-1024 4x1024 AdamW", hf("llama", **LLAMA), tokens(4, 1024, 32000), hf_loss, needs=["transformers"]),
    Case(
        "Llama 8L-1024 4x1024 AdamW checkpointing",
        hf("llama", True, **LLAMA),
        tokens(4, 1024, 32000),
        hf_loss,
        needs=["transformers"],
    ),
    Case(
        "Llama 8L-1024 4x1024 AdamW bf16",
        hf("llama", **LLAMA),
        tokens(4, 1024, 32000),
        hf_loss,
        autocast=BF16,
        needs=["transformers"],
    ),
    Case(
        "Llama 8L-1024 4x1024 AdamW bf16 checkpointing",
        hf("llama", True, **LLAMA),
        tokens(4, 1024, 32000),
        hf_loss,
        autocast=BF16,
        needs=["transformers"],
    ),
    # Without mamba_ssm's kernels transformers runs Mamba's scan as a Python loop over time steps.
    Case(
        "Mamba 4L-256 4x256 AdamW",
        hf("mamba", hidden_size=256, num_hidden_layers=4, vocab_size=32000),
        tokens(4, 256, 32000),
        hf_loss,
        needs=["transformers"],
    ),
    Case("BERT-base 8x512 MLM AdamW", hf("bert", **BERT), tokens(8, 512, 30522), hf_loss, needs=["transformers"]),
    Case(
        "BERT-base 16x512 MLM inference",
        hf("bert", **BERT),
        tokens(16, 512, 30522),
        mode="inference",
        needs=["transformers"],
    ),
]


# --- one case -----------------------------------------------------------------------------------


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _to(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)


def _default_loss(out: Any) -> torch.Tensor:
    return out.sum() if isinstance(out, torch.Tensor) else out.logits.sum()


def cpu_reference(case: Case, model: nn.Module, inputs: Any) -> int:
    """The CPU allocator's peak over real steps of the loop measure() models: outputs kept until
    the next forward returns, the loss under autocast, backward outside it, AdamW's steady step."""
    model = copy.deepcopy(model)
    loss_fn = case.loss or _default_loss
    if case.mode == "inference":
        model.eval()

        def infer() -> None:
            with torch.no_grad(), _autocast(case, "cpu"):
                _call(model, inputs)

        return max(allocator_peaks(infer, [*model.parameters(), *model.buffers(), *_tensors(inputs)], 1))
    model.train()
    optimizer = _adamw(list(model.parameters()))
    held: dict[str, Any] = {}

    # float16 trains with PyTorch's loss scaler, as measure() assumes; a scale that does not
    # overflow these sum losses, or the scaler skips the optimizer's steps (and makes no state).
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0) if case.autocast == torch.float16 else None

    def train() -> None:
        with _autocast(case, "cpu"):
            held["out"] = _call(model, inputs)
            held["loss"] = loss_fn(held["out"])
        if scaler is not None:
            scaler.scale(held["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            held["loss"].backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return max(allocator_peaks(train, [*model.parameters(), *model.buffers(), *_tensors(inputs)], 2))


def _tensors(inputs: Any) -> list[torch.Tensor]:
    return list(inputs.values()) if isinstance(inputs, dict) else [inputs]


def _autocast(case: Case, device_type: str) -> Any:
    import contextlib

    return torch.autocast(device_type, dtype=case.autocast) if case.autocast else contextlib.nullcontext()


def run_case(case: Case, on_cuda: bool) -> dict[str, Any]:
    started = time.perf_counter()
    model, inputs = case.build(), case.inputs()
    options: dict[str, Any] = {"mode": case.mode, "autocast": case.autocast}
    if case.loss is not None:
        options["loss_fn"] = case.loss
    if case.mode == "training":
        options["optimizer"] = _adamw
    if on_cuda:
        device = torch.device("cuda")
        stats = measure(model, _to(inputs, device), device="cuda", **options)
        reference, estimate, source = stats.peak_memory, stats.peak_memory_estimate, "cuda max_memory_allocated"
    else:
        stats = measure(model, inputs, device="cpu", **options)
        reference, estimate, source = cpu_reference(case, model, inputs), stats.peak_memory, "cpu allocator"
    assert reference and estimate is not None
    return {
        "case": case.name,
        "mode": case.mode,
        "reference": reference,
        "reference_source": source,
        "estimate": estimate,
        "error": estimate / reference - 1,
        "step": stats.peak_memory_step,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _available(case: Case) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in case.needs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small cases only (the test suite's smoke test)")
    parser.add_argument("--cases", help="comma-separated substrings: run the cases whose name holds one")
    parser.add_argument("--cpu", action="store_true", help="against the CPU allocator even where CUDA is available")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    on_cuda = torch.cuda.is_available() and not args.cpu
    chosen = [c for c in CASES if (not args.quick or c.quick)]
    if args.cases:
        wanted = [part.strip() for part in args.cases.split(",")]
        chosen = [c for c in chosen if any(w in c.name for w in wanted)]
    where = torch.cuda.get_device_name() if on_cuda else f"CPU ({platform.machine()})"
    rows, skipped = [], []
    for case in chosen:
        if not _available(case):
            skipped.append(f"{case.name} (needs {', '.join(case.needs)})")
            continue
        try:
            rows.append(run_case(case, on_cuda))
        except Exception as error:  # one case's failure is a row, not the end of the run
            rows.append({"case": case.name, "mode": case.mode, "failed": f"{type(error).__name__}: {error}"[:200]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.out:  # after each case: a run cut short (out of memory, out of time) keeps its rows
            args.out.write_text(json.dumps({"device": where, "torch": torch.__version__, "rows": rows}, indent=2))
    print(
        f"### Peak memory: estimate against {'CUDA' if on_cuda else 'the CPU allocator'} on {where}, torch {torch.__version__}\n"
    )
    print("| case | mode | reference | estimate | error | step | seconds |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        if "failed" in row:
            print(f"| {row['case']} | {row['mode']} | failed: {row['failed']} | | | | |")
        else:
            print(
                f"| {row['case']} | {row['mode']} | {row['reference']:,} | {row['estimate']:,} | "
                f"{row['error'] * 100:+.2f}% | {row['step'] or '-'} | {row['seconds']} |"
            )
    for line in skipped:
        print(f"\nskipped: {line}")
    return 1 if any("failed" in row for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
