"""Serving steps of every generative type in transformers' registry, against the model's own run.

    python benchmarks/decode_sweep.py [--family llama,mistral] [--out benchmarks/decode_sweep.jsonl]
                                      [--timeout 120] [--jobs 2] [--fresh] [--summary]

Run by hand, not in CI. Each type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` (its causal LM class,
its default config cut to 2 layers, on the meta device) runs a prefill of 1 x 32 tokens for real on
meta tensors (PyTorch's own shape functions, none of ours), and then one decode step under
FlopCounterMode (math attention; experts as their eager loop, since it has no formula for grouped
matmuls). A model whose own run reads values (routers, ``nonzero``) runs on a CPU build of the
same config instead, under 2B parameters. The
references: the bytes of the storages of the cache transformers returns, and FlopCounterMode's
MACs (FLOPs / 2). Ours: ``measure(model, mode="decode", context=32, batch=1)``.

Statuses: exact (kv_cache and MACs equal), off (either differs), reference_failed (the model's own
run on meta failed: it reads values, or its cache is not returned), no_cache (it returns none),
build_failed, forward_raised (our run raised in the model's code), timeout, crashed (ours).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from zoo_sweep import done_specs, run  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "decode_sweep.jsonl"
TOKENS = 32


def generative_specs() -> list[tuple[str, str]]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return [
        (f"hf:{name}", kind)
        for kind, name in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items())
        if isinstance(name, str)
    ]


def cache_storage_bytes(cache: Any) -> int:
    """The storages of every tensor a transformers cache's layers hold (and the cache itself)."""
    import torch

    storages: dict[int, int] = {}
    for holder in (cache, *getattr(cache, "layers", ())):
        for value in vars(holder).values():
            for tensor in value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]:
                if isinstance(tensor, torch.Tensor):
                    storages[id(tensor.untyped_storage())] = tensor.untyped_storage().nbytes()
    return sum(storages.values())


def returned_cache(output: Any) -> Any:
    for name in ("cache", "past_key_values", "cache_params"):
        if getattr(output, name, None) is not None:
            return getattr(output, name)
    return None


def reference(model_class: Any, config: Any, params: int) -> tuple[int, int] | str:
    """The cache's bytes after a real prefill, and FlopCounterMode's decode MACs: on meta, else
    (a model that reads values) on a CPU build."""
    found = _reference_on(model_class, config, "meta")
    if isinstance(found, str) and params < 2_000_000_000:
        return _reference_on(model_class, config, "cpu")
    return found


def _reference_on(model_class: Any, config: Any, device: str) -> tuple[int, int] | str:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device(device):
            model = model_class._from_config(config, experts_implementation="eager")
    except (TypeError, ValueError):
        with torch.device(device):
            model = model_class._from_config(config)
    model = model.eval().requires_grad_(False)
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    ids = torch.zeros(1, TOKENS, dtype=torch.long, device=device)
    try:
        with torch.no_grad():
            cache = returned_cache(model(input_ids=ids, use_cache=True))
            if cache is None:
                return "no_cache"
            cache_bytes = cache_storage_bytes(cache)
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                model(input_ids=ids[:, :1], use_cache=True, **{keyword: cache})
    except Exception as exc:
        return f"reference_failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"
    return cache_bytes, counter.get_total_flops() // 2


def decode_one(spec: str, family: str) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    from pytest_modelbudget import measure
    from pytest_modelbudget.engine.specs import build_model_spec

    row: dict[str, Any] = {"spec": spec, "family": family}
    try:
        try:
            model = build_model_spec(spec, {"num_hidden_layers": 2}, meta=True).model
        except Exception:  # no num_hidden_layers field, or 2 layers do not build: the default config
            model = build_model_spec(spec, meta=True).model
    except Exception as exc:
        return {**row, "status": "build_failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
    row["params"] = sum(p.numel() for p in model.parameters())
    found = reference(type(model), model.config, row["params"])
    if isinstance(found, str):
        status, _, error = found.partition(": ")
        return {**row, "status": status, "error": error}
    row["kv_cache_reference"], row["macs_reference"] = found
    try:
        stats = measure(model, mode="decode", context=TOKENS, batch=1)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
        status = "forward_raised" if ".forward raised" in error else "crashed"
        return {**row, "status": status, "error": error}
    row["kv_cache"], row["macs"] = stats.kv_cache, stats.macs
    exact = stats.kv_cache == row["kv_cache_reference"] and stats.macs == row["macs_reference"]
    return {**row, "status": "exact" if exact else "off"}


def summary(out: Path) -> list[str]:
    rows: dict[str, dict] = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        rows[row["spec"]] = row
    counts = Counter(row["status"] for row in rows.values())
    checked = counts["exact"] + counts["off"]
    lines = [
        f"decode sweep of {datetime.date.today()}: {len(rows)} generative types, {checked} checked against "
        f"their own run: {counts['exact']} exact (kv_cache and decode MACs), {counts['off']} off",
        "  " + ", ".join(f"{status} {n}" for status, n in counts.most_common()),
    ]
    for row in sorted(rows.values(), key=lambda r: r["spec"]):
        if row["status"] == "off":
            lines.append(
                f"  off: {row['spec']} kv_cache {row['kv_cache']} vs {row['kv_cache_reference']}, "
                f"macs {row['macs']} vs {row['macs_reference']}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="", help="comma-separated model types to try")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    parser.add_argument("--summary", action="store_true", help="print the summary of --out and stop")
    args = parser.parse_args()
    if not args.summary:
        import torch  # noqa: F401 - imported once, before the forks
        import transformers

        transformers.logging.set_verbosity_error()
        if args.fresh and args.out.exists():
            args.out.unlink()
        done = done_specs(args.out)
        families = {f for f in args.family.split(",") if f}
        todo = [(s, f) for s, f in generative_specs() if s not in done and (not families or f in families)]
        print(f"{len(todo)} types to try ({len(done)} already in {args.out})", flush=True)
        run(todo, args.out, args.timeout, args.jobs, worker=decode_one)
    print("\n".join(summary(args.out)))


if __name__ == "__main__":
    main()
