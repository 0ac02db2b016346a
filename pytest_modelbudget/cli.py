"""``python -m pytest_modelbudget module:factory --input-size 1,3,224,224``: inspect a model
without writing a test."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from .errors import ModelBudgetError
from .factories import FactoryError, load_callable
from .figures import ROOFLINE_TIME
from .gate.render import DEFAULT_TREE, TREE_COLUMNS
from .gpus import GPUS
from .options import ACCUMULATION_STEPS, AUTOCAST, BATCH, CONTEXT, EXECUTION, MODE, OUTPUTS, SET_TO_NONE, STEP, resolve


def _shape(text: str) -> list[int]:
    try:
        shape = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape such as 1,3,224,224, found {text!r}") from None
    if not shape or any(dim < 0 for dim in shape):
        raise argparse.ArgumentTypeError(f"expected a shape such as 1,3,224,224, found {text!r}")
    return shape


def _columns(text: str) -> list[str]:
    columns = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in columns if c not in TREE_COLUMNS]
    if unknown or not columns:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(TREE_COLUMNS)}, found {text!r}")
    return columns


def _kwarg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_modelbudget",
        description="Print the parameters, bytes, MACs, FLOPs and peak memory of a model, per module.",
        epilog="python -m pytest_modelbudget merge-reports --help: merge the --budget-json reports of CI jobs "
        "that split one suite into one report.",
    )
    parser.add_argument(
        "factory",
        help='import path of a callable returning an nn.Module, "package.module:function", a .pt2 file '
        "(torch.export.save), or a model spec: "
        "torchvision:NAME, timm:NAME, hf:PATH_OR_TYPE (random weights on the meta device, default inputs)",
    )
    parser.add_argument(
        "--input-size",
        type=_shape,
        action="append",
        help="shape of a random input tensor, e.g. 1,3,224,224 (repeat for several inputs)",
    )
    parser.add_argument("--inputs", help='import path of a callable returning the inputs, "package.module:function"')
    parser.add_argument("--dtype", help="dtype of --input-size tensors, e.g. long for token ids, float16")
    parser.add_argument(
        "--kwarg", type=_kwarg, action="append", default=[], help="factory keyword argument KEY=VALUE (JSON values)"
    )
    parser.add_argument(
        "--meta",
        action="store_true",
        help="build the model on the meta device (no memory for weights; specs always are)",
    )
    parser.add_argument("--depth", type=int, default=None, help="deepest module level to show (root is 0)")
    parser.add_argument(
        "--columns",
        type=_columns,
        default=None,
        help=f"the tree's columns, comma-separated, from {', '.join(c for c in TREE_COLUMNS if c != 'type')} "
        f"(default: {','.join(DEFAULT_TREE)}; a figure not measured is left out)",
    )
    parser.add_argument(
        "--mode",
        choices=MODE.choices,
        help="inference: forward under no_grad (default); training: forward, backward of the summed outputs; "
        "prefill: a generative model's forward over --batch x --context tokens; decode: one new token per sequence "
        "on a cache holding --context tokens",
    )
    parser.add_argument("--context", type=int, help=CONTEXT.help)
    parser.add_argument("--batch", type=int, help=BATCH.help)
    parser.add_argument(
        "--device",
        default=None,
        help="device whose peak memory is reported: cuda (default; measured if available, else estimated) or cpu",
    )
    parser.add_argument(
        "--outputs",
        choices=OUTPUTS.choices,
        help="training: the forward's outputs held through backward (default) or released before it",
    )
    parser.add_argument(
        "--optimizer", help='training: the optimizer class that takes the step, e.g. "torch.optim:AdamW"'
    )
    parser.add_argument("--step", choices=STEP.choices, help=STEP.help)
    parser.add_argument("--accumulation-steps", type=int, help=ACCUMULATION_STEPS.help)
    parser.add_argument("--set-to-none", choices=("true", "false"), help=SET_TO_NONE.help)
    parser.add_argument("--execution", choices=EXECUTION.choices, help=EXECUTION.help)
    parser.add_argument("--autocast", choices=AUTOCAST.choices, help="run the step under torch.autocast to this dtype")
    parser.add_argument(
        "--gpu",
        default=None,
        help=f"add {ROOFLINE_TIME.name}: {ROOFLINE_TIME.help} ({', '.join(GPUS)})",
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=None,
        help="peak memory of one rank of a sharded step over this many ranks (FSDP2, simulated: no GPU, no processes)",
    )
    parser.add_argument(
        "--strategy",
        choices=("fsdp", "tp", "fsdp+tp"),
        default="fsdp",
        help="how the step is sharded with --world-size (default: fsdp; tp and fsdp+tp use the model's tensor-parallel plan)",
    )
    parser.add_argument(
        "--tp-size", type=int, default=None, help="with --strategy fsdp+tp: tensor-parallel ranks in each FSDP rank"
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="with --world-size: recompute each sharded unit's forward in backward",
    )
    parser.add_argument(
        "--param-dtype",
        choices=("float32", "bfloat16", "float16"),
        help="with --world-size: FSDP gathers parameters in this dtype",
    )
    parser.add_argument(
        "--units",
        choices=("si", "binary"),
        default="si",
        help="byte sizes in SI units (KB, MB: default) or binary ones (KiB, MiB); JSON is always in bytes",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json", "markdown"),
        default="table",
        help="table: the per-layer tree and totals (default); json: every figure; markdown: a table to paste",
    )
    return parser


def merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_modelbudget merge-reports",
        description="Merge the --budget-json reports of CI jobs that split one suite (a matrix) into one report, "
        "as one run would have written it; optionally its Markdown and the comparison with a base report.",
    )
    parser.add_argument("reports", nargs="+", metavar="REPORT", help="--budget-json reports, one per job")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="write the merged JSON report here")
    parser.add_argument("--markdown", metavar="PATH", help="also write its Markdown (the pull request's comment)")
    parser.add_argument(
        "--compare", metavar="BASE", help="compare the merged report with the base branch's (as --budget-compare)"
    )
    return parser


def merge_main(argv: Sequence[str]) -> int:
    from pathlib import Path

    from .gate.compare import load_base
    from .gate.documents import comparison_with, json_document, markdown_document
    from .gate.merge import merge_reports
    from .gate.reports import write_text

    args = merge_parser().parse_args(argv)
    try:
        merged = merge_reports([Path(path) for path in args.reports])
        base = load_base(Path(args.compare), "merge-reports --compare") if args.compare else None
        comparison = comparison_with(base, merged.budgets)
        write_text(Path(args.output), json_document(merged.budgets, merged.extra, base, comparison))
        if args.markdown:
            write_text(Path(args.markdown), markdown_document(merged.budgets, merged.extra["stale"], base, comparison))
    except ModelBudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: merge-reports: cannot write {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    failed = sum(1 for record in merged.budgets.values() if record.verdict.failed)
    written = args.output + (f" and {args.markdown}" if args.markdown else "")
    print(
        f"merged {len(args.reports)} reports: {len(merged.budgets)} budgets ({failed} failed), "
        f"{len(merged.extra['stale'])} stale; written to {written}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge-reports"]:
        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    # As ``python -m`` does: the project's own modules import from the working directory, also
    # when run as the ``pytest-modelbudget`` script.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return _run(args)
    except (FactoryError, ModelBudgetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Piped into head: the reader has gone. Say nothing more, and let Python's exit flush
        # of stdout go nowhere (its own error would follow otherwise).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    # What the model's own code prints while it is built and run (nanoGPT prints its parameter
    # count) goes to stderr: stdout carries our table or JSON alone, so it can be piped.
    with contextlib.redirect_stdout(sys.stderr):
        stats = _measure(args)
    return _print(args, stats)


def _measure(args: argparse.Namespace) -> Any:
    import torch

    from .engine import build, measure

    dtype = None
    if args.dtype:
        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise FactoryError(f"--dtype: {args.dtype!r} is not a torch dtype (try long, float16, bfloat16)")
    built = build(args.factory, dict(args.kwarg), meta=True if args.meta else None)
    serving = args.mode in ("prefill", "decode")
    inputs = None
    if args.inputs:
        # A serving step calls it with (batch, context) itself.
        inputs = load_callable(args.inputs) if serving else load_callable(args.inputs)()
    input_size = None
    if args.input_size:
        input_size = args.input_size[0] if len(args.input_size) == 1 else args.input_size
    if inputs is None and input_size is None and not serving:
        inputs = built.inputs
    parallel = None
    if args.world_size is not None:
        parallel = {
            "strategy": args.strategy,
            "world_size": args.world_size,
            "activation_checkpointing": args.activation_checkpointing,
        }
        if args.param_dtype:
            parallel["param_dtype"] = args.param_dtype
        if args.tp_size is not None:
            parallel["tp_size"] = args.tp_size
    elif args.activation_checkpointing or args.param_dtype:
        raise FactoryError("--activation-checkpointing and --param-dtype apply to a sharded step: add --world-size N")
    given = {
        "mode": args.mode,
        "outputs": args.outputs,
        "device": args.device,
        "gpu": args.gpu,
        "parallel": parallel,
        "step": args.step,
        "accumulation_steps": args.accumulation_steps,
        "set_to_none": None if args.set_to_none is None else args.set_to_none == "true",
        "context": args.context,
        "batch": args.batch,
        "execution": args.execution,
    }
    optimizer = None
    if args.optimizer:
        if (args.mode or MODE.default) != "training":
            raise FactoryError("--optimizer applies to training: add --mode training")
        optimizer_class = load_callable(args.optimizer)

        def optimizer(params: list[Any]) -> Any:
            return optimizer_class(params)

    chosen = resolve({"argument": {**given, "autocast": args.autocast}})
    stats = measure(
        built.model,
        inputs,
        input_size=input_size,
        dtype=dtype,
        mode=chosen["mode"],
        device=chosen["device"],
        autocast=getattr(torch, chosen["autocast"]) if chosen["autocast"] else None,
        outputs=chosen["outputs"],
        parallel=chosen["parallel"],
        gpu=chosen["gpu"],
        optimizer=optimizer,
        step=chosen["step"],
        accumulation_steps=chosen["accumulation_steps"],
        set_to_none=chosen["set_to_none"],
        execution=chosen["execution"],
        context=chosen["context"],
        batch=chosen["batch"],
    )
    return stats


def _print(args: argparse.Namespace, stats: Any) -> int:
    from .quantities import byte_units

    with byte_units(args.units):
        return _print_in_units(args, stats)


def _print_in_units(args: argparse.Namespace, stats: Any) -> int:
    from .gate.render import layer_tree, markdown_table, text_table, totals_lines

    if args.format == "json":
        print(json.dumps(stats.to_dict(), indent=2))
        return 0
    columns = args.columns or DEFAULT_TREE
    headers, rows = layer_tree(stats, args.depth, columns)
    if args.format == "markdown":
        print(markdown_table(headers, rows))
        print()
        print("\n".join(f"- {line}" for line in totals_lines(stats)))
        return 0
    print(text_table(headers, rows, right_align_from=2))
    print()
    # Long notes wrap under their label, at the terminal's width.
    width = max(60, shutil.get_terminal_size((100, 24)).columns)
    for line in totals_lines(stats):
        print(textwrap.fill(line, width, subsequent_indent=" " * 18, break_on_hyphens=False))
    return 0
