"""Every architecture we can build, measured and checked against references we did not compute.

    python benchmarks/zoo_sweep.py [--only transformers,timm,torchvision] [--family llama,vit]
                                   [--out benchmarks/zoo_sweep.jsonl] [--timeout 120] [--jobs 2]
                                   [--fresh | --retry crashed,off] [--summary]

Run by hand, not in CI. What it tries:
- transformers: every model type of ``MODEL_MAPPING_NAMES``, its default config built on the meta
  device (``hf:TYPE``), with the default inputs ``hf:`` specs get, shortened to 1x32 tokens.
- timm: two models per family (the first two names of each module), on meta, at their input size.
- torchvision: every builder of ``list_models()``, on meta, at its weights' crop size.

Each model runs in its own forked process with a timeout; results are appended to a JSON-lines file,
one line per model, so that a killed sweep resumes where it stopped (``--fresh`` starts over).

References, none of them ours:
- params: transformers' own ``num_parameters()``; for timm and torchvision, the count of the
  unique ``nn.Parameter`` objects (PyTorch's ``model.parameters()``).
- MACs: ``torch.utils.flop_counter.FlopCounterMode`` on the same meta model with the math attention
  path (FLOPs / 2), plus what PyTorch's counter has no formula for, counted here from shapes: the
  experts' grouped matmuls (``aten._grouped_mm``), oneDNN's LSTM layers, triangular solves and
  ``cdist``'s Euclidean distances.
  Where FlopCounterMode cannot run the meta model (it reads values) and the config has under 1B
  parameters, the reference runs on a CPU build of it.
- time: FlopCounterMode alone on the same meta model; the ratio is ours over it, each the best of
  the calls after the first (3 under 1 s, 2 under 5 s; the first pays one-time costs).

Statuses: exact (params and MACs equal), off (a figure differs), reference_failed (FlopCounterMode
could not run it: only params are compared), no_inputs (no default inputs for the family),
build_failed (the model did not build from its default config), forward_raised (the model's own
forward rejected its default config or the generic inputs), data_dependent_on_meta (it reads
values a meta model lacks, and its config is too big for a CPU build here), process_died (a
segfault in the model's kernels), timeout, and crashed: an error of ours.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "zoo_sweep.jsonl"
TOKENS = 32


# --- what to try ---------------------------------------------------------------------------------------


def transformers_specs() -> list[tuple[str, str]]:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return [(f"hf:{kind}", kind) for kind in sorted(MODEL_MAPPING_NAMES)]


def timm_specs() -> list[tuple[str, str]]:
    import timm

    # A family is a timm module (resnet, vision_transformer, ...): its first two models.
    return [
        (f"timm:{name}", module)
        for module in sorted(timm.list_modules())
        for name in timm.list_models(module=module)[:2]
    ]


def torchvision_specs() -> list[tuple[str, str]]:
    import torchvision

    return [(f"torchvision:{name}", name.split("_")[0]) for name in sorted(torchvision.models.list_models())]


LIBRARIES = {"transformers": transformers_specs, "timm": timm_specs, "torchvision": torchvision_specs}


# --- one model, in its own process -------------------------------------------------------------------------


def _grouped_mm_macs(func: Any, args: tuple) -> int:
    # (M, K) x (G, K, N): every routed row through its own expert's K x N matmul; (M, K) x (K, N)
    # split along K in G groups: still M*K*N.
    a, b = args[0], args[1]
    if a.dim() == 2 and b.dim() == 3:
        return a.shape[0] * a.shape[1] * b.shape[-1]
    if a.dim() == 2 and b.dim() == 2:
        return a.shape[0] * a.shape[1] * b.shape[1]
    if a.dim() == 3 and b.dim() == 3:
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[-1]
    return a.shape[-2] * a.shape[-1] * b.shape[-1]


def reference_macs(model: Any, inputs: Any, device: str = "meta") -> int:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class GroupedMatmuls(TorchDispatchMode):
        macs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten._grouped_mm:
                GroupedMatmuls.macs += _grouped_mm_macs(func, args)
            elif func.overloadpacket is torch.ops.aten.mkldnn_rnn_layer:
                # oneDNN's LSTM layer on the CPU: every time step multiplies by W_ih and W_hh.
                steps, batch = args[0].shape[0], args[0].shape[1]
                GroupedMatmuls.macs += steps * batch * (args[1].numel() + args[2].numel())
            elif func.overloadpacket is torch.ops.aten._euclidean_dist:
                # cdist: P x R distances over M features, one product each.
                GroupedMatmuls.macs += (
                    args[0].shape[-2]
                    * args[1].shape[-2]
                    * args[0].shape[-1]
                    * (args[0].numel() // (args[0].shape[-2] * args[0].shape[-1]))
                )
            elif func.overloadpacket in (torch.ops.aten._fft_c2c, torch.ops.aten._fft_r2c, torch.ops.aten._fft_c2r):
                # FFTs: 5 N log2 N real FLOPs per complex transform of N points, half that with a
                # real input or output; MACs are half the FLOPs (docs/FLOPS.md).
                out = func(*args, **(kwargs or {}))
                real = out if func.overloadpacket is torch.ops.aten._fft_c2r else args[0]
                points = math.prod(real.shape[d] for d in args[1])
                share = 5 if func.overloadpacket is torch.ops.aten._fft_c2c else 2.5
                if points > 1:
                    GroupedMatmuls.macs += int(real.numel() // points * share * points * math.log2(points)) // 2
                return out
            elif func.overloadpacket is torch.ops.aten.linalg_solve_triangular:
                n = args[0].shape[-1]  # substitution: n(n-1)/2 multiply-adds per right-hand side
                GroupedMatmuls.macs += (args[1].numel() // n) * n * (n - 1) // 2
            return func(*args, **(kwargs or {}))

    args, kwargs = _call(inputs, device)
    torch.manual_seed(0)
    model.requires_grad_(False)  # FlopCounterMode's module tracker trips on some models otherwise
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, GroupedMatmuls(), torch.no_grad():
            model(*args, **kwargs)
    except RuntimeError as exc:
        if "BFloat16" not in str(exc):
            raise
        # aten._grouped_mm takes no fp32 on this build: the same arithmetic in bf16.
        GroupedMatmuls.macs = 0
        model.to(torch.bfloat16)
        kwargs = {
            k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in kwargs.items()
        }
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, GroupedMatmuls(), torch.no_grad():
            model(*args, **kwargs)
    return counter.get_total_flops() // 2 + GroupedMatmuls.macs


def _call(inputs: Any, device: str = "meta") -> tuple[tuple, dict]:
    import torch

    from pytest_modelbudget.engine.inputs import is_size_table

    def to(value: Any) -> Any:
        # A vision tower's grid_thw stays on the CPU, as a user passes it: its values are read.
        return value.to(device) if isinstance(value, torch.Tensor) and not is_size_table(value) else value

    if isinstance(inputs, dict):
        return (), {k: to(v) for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(to(v) for v in inputs), {}
    return (to(inputs),), {}


def reference_params(spec: str, model: Any) -> int:
    if spec.startswith("hf:"):
        return model.num_parameters()
    return sum(p.numel() for p in model.parameters())


def _shorten(inputs: Any) -> Any:
    # Generic short inputs for the registry: 1 x TOKENS token ids.
    if isinstance(inputs, dict):
        return {k: v[:, :TOKENS] if k.endswith("input_ids") else v for k, v in inputs.items()}
    return inputs


#: Models whose default config has fewer parameters are built on the CPU when meta cannot run them.
CPU_FALLBACK_PARAMS = 1_000_000_000


def _measure(measure: Any, model: Any, inputs: Any, device: str) -> Any:
    import torch

    torch.manual_seed(0)  # stochastic models (VITS samples its durations) draw as the reference does
    args, kwargs = _call(inputs, device)
    if kwargs:
        return measure(model, inputs=kwargs)
    return measure(model, args if len(args) > 1 else args[0])


def _repeats(first: float) -> int:
    return 5 if first < 0.2 else 3 if first < 1 else 2 if first < 5 else 0


def _best_of(call: Any, first: float) -> float:
    """The best of a few more calls after a first one that took ``first`` seconds: the first
    pays one-time costs (imports, caches), and a shared machine adds noise to any one call."""
    repeats = _repeats(first)
    best = first if repeats == 0 else float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _best_of_both(ours: Any, reference: Any, firsts: tuple[float, float]) -> tuple[float, float]:
    """``_best_of`` for ours and the reference, their calls taken in turn: a noisy spell of the
    machine then slows both, not whichever happened to run during it."""
    repeats = _repeats(max(firsts))
    best = list(firsts) if repeats == 0 else [float("inf"), float("inf")]
    for _ in range(repeats):
        for index, call in enumerate((ours, reference)):
            start = time.perf_counter()
            call()
            best[index] = min(best[index], time.perf_counter() - start)
    return best[0], best[1]


def _buildable(spec: str) -> str:
    """The spec a row is built from: each transformers type's bare model (``AutoModel``'s class,
    by name), as the sweep always measured, although ``hf:TYPE`` now builds a decoder's causal LM."""
    if not spec.startswith("hf:"):
        return spec
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(spec.removeprefix("hf:"))
    return f"hf:{name}" if isinstance(name, str) else spec


def sweep_one(spec: str, family: str) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from pytest_modelbudget import measure
    from pytest_modelbudget.engine.specs import build_model_spec
    from pytest_modelbudget.engine.specs.hf import NoDefaultInputs

    row: dict[str, Any] = {"spec": spec, "family": family}
    try:
        built = build_model_spec(_buildable(spec), meta=True)
    except NoDefaultInputs as exc:
        return {**row, "status": "no_inputs", "error": str(exc)}
    except Exception as exc:
        return {
            **row,
            "status": "build_failed",
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300],
        }
    model, inputs = built.model, _shorten(built.inputs)
    row["params_reference"] = reference_params(spec, model)
    # Specs build on meta, but for models whose forward needs values (torchvision's detectors).
    device = "meta" if any(p.is_meta for p in model.parameters()) else "cpu"
    start = time.perf_counter()
    try:
        stats = _measure(measure, model, inputs, device)
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        if "on meta tensors" not in error or row["params_reference"] > CPU_FALLBACK_PARAMS:
            return {**row, "status": "crashed", "error": error, "where": traceback.format_exc().splitlines()[-3][:200]}
        # Data-dependent on meta (its buffers or inputs' values are read): measure() says to
        # build it on the CPU; so does the sweep, where the default config is small enough.
        row["meta_error"] = error
        device = "cpu"
        try:
            model = build_model_spec(_buildable(spec), meta=False).model
            start = time.perf_counter()
            stats = _measure(measure, model, inputs, device)
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            return {**row, "status": "crashed", "error": error, "where": traceback.format_exc().splitlines()[-3][:200]}
    row["seconds"] = time.perf_counter() - start
    row["device"] = device
    row.update(params=stats.params, macs=stats.macs, execution=stats.execution, uncounted_ops=stats.uncounted_ops)
    try:
        start = time.perf_counter()
        row["macs_reference"] = reference_macs(model, inputs, device)
        row["reference_seconds"] = time.perf_counter() - start
        row["reference_device"] = device
    except Exception as exc:
        row["seconds"] = _best_of(lambda: _measure(measure, model, inputs, device), row["seconds"])
        row["reference_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        if device == "meta" and row["params_reference"] <= CPU_FALLBACK_PARAMS:
            # FlopCounterMode cannot run it on meta (it reads values ours did not need): the
            # reference runs on a CPU build of the same config.
            try:
                cpu_model = build_model_spec(_buildable(spec), meta=False).model
                start = time.perf_counter()
                row["macs_reference"] = reference_macs(cpu_model, inputs, "cpu")
                row["reference_device"] = "cpu"
                row["reference_seconds"] = _best_of(
                    lambda: reference_macs(cpu_model, inputs, "cpu"), time.perf_counter() - start
                )
            except Exception as exc:
                row["reference_error"] += (
                    f"; on the CPU: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                )
    else:
        row["seconds"], row["reference_seconds"] = _best_of_both(
            lambda: _measure(measure, model, inputs, device),
            lambda: reference_macs(model, inputs, device),
            (row["seconds"], row["reference_seconds"]),
        )
    params_ok = row["params"] == row["params_reference"]
    if "macs_reference" not in row:
        row["status"] = "reference_failed" if params_ok else "off"
    else:
        row["status"] = "exact" if params_ok and row["macs"] == row["macs_reference"] else "off"
    return row


def _child(spec: str, family: str, conn: Any, worker: Any = None) -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the models' own prints
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    try:
        conn.send((worker or sweep_one)(spec, family))
    except BaseException as exc:
        conn.send({"spec": spec, "family": family, "status": "crashed", "error": repr(exc)[:300]})


# --- the sweep -------------------------------------------------------------------------------------------


def run(todo: list[tuple[str, str]], out: Path, timeout: float, jobs: int, worker: Any = None) -> None:
    """Each (spec, family) through ``worker`` (default ``sweep_one``) in a forked process of its own."""
    context = multiprocessing.get_context("fork")
    running: list[tuple[Any, Any, str, str, float]] = []
    with out.open("a") as sink:
        while todo or running:
            while todo and len(running) < jobs:
                spec, family = todo.pop(0)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(spec, family, send, worker), daemon=True)
                process.start()
                send.close()  # the child's end: its death then reads as end of file here
                running.append((process, receive, spec, family, time.monotonic()))
            time.sleep(0.05)
            for item in list(running):
                process, receive, spec, family, started = item
                row = None
                if receive.poll():
                    try:
                        row = receive.recv()
                    except EOFError:  # died without a word: killed for memory, a segfault
                        process.join(5)
                        row = {
                            "spec": spec,
                            "family": family,
                            "status": "crashed",
                            "error": f"process died (exit {process.exitcode})",
                        }
                    process.join(5)
                elif not process.is_alive():
                    row = {
                        "spec": spec,
                        "family": family,
                        "status": "crashed",
                        "error": f"process died (exit {process.exitcode})",
                    }
                elif time.monotonic() - started > timeout:
                    process.kill()
                    row = {"spec": spec, "family": family, "status": "timeout", "error": f"over {timeout:g} s"}
                if row is not None:
                    if process.is_alive():
                        process.kill()
                    running.remove(item)
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    print(f"{row['status']:16} {spec}  {row.get('error', '')[:100]}", flush=True)


def classify(row: dict[str, Any]) -> str:
    """A "crashed" row, split by whose code raised: measure() says "X.forward raised" when the
    model's own code did (its default config or our generic inputs do not suit it), and "on meta
    tensors" when it read values a meta model does not have (and its config was too big to build
    on the CPU); anything else is ours."""
    if row["status"] != "crashed":
        return row["status"]
    error = row.get("error", "")
    if error.startswith("process died"):
        return "process_died"
    if error.startswith("MeasureError: ") and ".forward raised" in error:
        return "data_dependent_on_meta" if "on meta tensors" in error else "forward_raised"
    if error.startswith("MeasureError: the inputs do not match"):
        return "no_inputs"
    return "crashed"


def summary(out: Path) -> list[str]:
    rows: dict[str, dict] = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        row["status"] = classify(row)
        rows[row["spec"]] = row  # the newest line of a spec wins
    lines = [f"zoo sweep of {datetime.date.today()}: {len(rows)} models"]
    for library in ("hf", "timm", "torchvision"):
        mine = [r for r in rows.values() if r["spec"].startswith(library + ":")]
        if not mine:
            continue
        counts = Counter(r["status"] for r in mine)
        measured = [r for r in mine if "macs" in r]
        # Only where both ran on the same device (a CPU reference of a meta measurement is not a race).
        ratios = sorted(
            r["seconds"] / r["reference_seconds"]
            for r in measured
            if r.get("reference_seconds") and r.get("reference_device", r.get("device")) == r.get("device")
        )
        # Meta measurements FlopCounterMode could only check on a real CPU run (values read).
        across = sorted(
            r["seconds"] / r["reference_seconds"]
            for r in measured
            if r.get("reference_seconds") and r.get("reference_device", r.get("device")) != r.get("device")
        )
        real = sum(1 for r in measured if r["execution"] != "fake")
        on_cpu = sum(1 for r in measured if r.get("device") == "cpu")
        uncounted = Counter(op for r in measured for op in r.get("uncounted_ops", {}))
        checked = counts["exact"] + counts["off"]
        lines.append(
            f"{library}: {counts['exact']} of {checked} checked exact; "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + f"; data-dependent, built on the CPU {on_cpu}, of which run for real {real}"
        )
        if ratios:
            lines.append(
                f"  time against FlopCounterMode: median {statistics.median(ratios):.2f}x, "
                f"p90 {ratios[int(0.9 * (len(ratios) - 1))]:.2f}x, worst {ratios[-1]:.2f}x"
            )
        if across:
            lines.append(
                f"  on meta, against FlopCounterMode's real CPU run (it cannot run them on meta): "
                f"{len(across)} models, median {statistics.median(across):.2f}x, worst {across[-1]:.2f}x"
            )
        if uncounted:
            lines.append("  uncounted ops: " + ", ".join(f"{op} ({n})" for op, n in uncounted.most_common(12)))
    return lines


def done_specs(out: Path, retry: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """The specs ``out`` already has a row for (its newest row's status not among ``retry``):
    a sweep resumes where it stopped."""
    latest = {}
    for line in out.read_text().splitlines() if out.exists() else ():
        row = json.loads(line)
        latest[row["spec"]] = row["status"]
    return {spec for spec, status in latest.items() if status not in retry}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="transformers,timm,torchvision")
    parser.add_argument("--family", default="", help="comma-separated families (model types) to try")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    parser.add_argument("--retry", default="", help="comma-separated statuses to try again (crashed,off,...)")
    parser.add_argument("--summary", action="store_true", help="print the summary of --out and stop")
    args = parser.parse_args()
    if not args.summary:
        import torch  # noqa: F401 - imported once, before the forks
        import transformers

        transformers.logging.set_verbosity_error()
        if args.fresh and args.out.exists():
            args.out.unlink()
        retry = {status for status in args.retry.split(",") if status}
        done = done_specs(args.out, retry)
        families = {f for f in args.family.split(",") if f}
        todo = []
        for library in args.only.split(","):
            try:
                specs = LIBRARIES[library]()
            except ImportError as exc:
                print(f"{library}: skipped ({exc})")
                continue
            todo += [(s, f) for s, f in specs if s not in done and (not families or f in families)]
        print(f"{len(todo)} models to try ({len(done)} already in {args.out})", flush=True)
        run(todo, args.out, args.timeout, args.jobs)
    print("\n".join(summary(args.out)))


if __name__ == "__main__":
    main()
