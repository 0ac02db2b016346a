"""The table of figures: one row per figure a budget can limit, with everything the rest of the
package needs to know about it. The schema's fields, the diff's order, the reports' columns, the
CLI's columns and help all read this table.

Adding a figure is one row here, plus the engine code that computes it: a field of the same name on
``ModelStats`` (and on ``LayerStats`` for a per-layer figure). No torch here, nor anything of the
package but the quantities' kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .quantities import Kind


@dataclass(frozen=True)
class Figure:
    name: str
    kind: Kind
    #: What it measures, in one line (the CLI's help, the docs).
    help: str
    #: Column header of the CLI's per-layer tree.
    column: str
    #: Also recorded per layer, so that a failure can say which layers moved.
    per_layer: bool = False
    #: A layer's figure includes its children's (params do; a layer's peak memory is its own).
    additive: bool = True
    #: Compared with the baseline unless ``[settings] figures`` says otherwise, and reported when
    #: it moves (``--update-budgets``, ``--budget-compare``).
    compared: bool = False
    #: A column of the end-of-run table unless ``--budget-columns`` says otherwise.
    summary_column: bool = False
    #: Position among the CLI tree's default columns (None: only when asked for with --columns).
    tree_rank: int | None = None
    #: Position in a failure's per-layer diff, most telling first (None: never diffed).
    diff_rank: int | None = None
    #: The figure this one mostly moves with (bytes with params): diffed after the others, left
    #: out of ``--budget-compare``'s layer tables, and the first column a narrow terminal drops.
    follows: str | None = None
    #: For a figure only some steps have: what measures it (said when a limit finds none).
    measured_by: str = ""
    #: Higher is better (how many sequences fit): a limit is the least it may be, and a drop
    #: below the baseline fails.
    floor: bool = False


PARAMS = Figure(
    "params",
    "count",
    "elements of unique parameters (a tied weight counts once)",
    "params",
    per_layer=True,
    compared=True,
    summary_column=True,
    tree_rank=1,
    diff_rank=1,
)
TRAINABLE_PARAMS = Figure("trainable_params", "count", "parameters with requires_grad", "trainable")
FROZEN_PARAMS = Figure("frozen_params", "count", "parameters without requires_grad", "frozen")
BUFFER_ELEMENTS = Figure("buffer_elements", "count", "elements of unique buffers (running statistics...)", "buffers")
BYTES = Figure(
    "bytes",
    "bytes",
    "bytes of unique parameters and buffers at their real dtypes",
    "bytes",
    per_layer=True,
    compared=True,
    summary_column=True,
    diff_rank=6,
    follows="params",
)
MACS = Figure(
    "macs",
    "count",
    "multiply-accumulates of the step",
    "MACs",
    per_layer=True,
    compared=True,
    summary_column=True,
    tree_rank=2,
    diff_rank=2,
)
FLOPS = Figure(
    "flops",
    "count",
    "floating point operations of the step (docs/FLOPS.md)",
    "FLOPs",
    per_layer=True,
    compared=True,
    summary_column=True,
    diff_rank=7,
    follows="macs",
)
PEAK_MEMORY = Figure(
    "peak_memory",
    "bytes",
    "peak bytes of device memory during the step, measured on CUDA or estimated (docs/MEMORY.md)",
    "peak memory",
    per_layer=True,
    additive=False,
    compared=True,
    summary_column=True,
    tree_rank=4,
    diff_rank=3,
)
KV_CACHE = Figure(
    "kv_cache",
    "bytes",
    "bytes the model's cache holds for batch sequences of context tokens (mode='prefill' or 'decode')",
    "KV cache",
    per_layer=True,
    compared=True,
    diff_rank=4,
    measured_by='a serving step: mode = "prefill" or "decode", with context (and batch)',
)
MEMORY_TRAFFIC = Figure(
    "memory_traffic",
    "bytes",
    "bytes the step's ops read and wrote (docs/MEMORY.md)",
    "traffic",
    per_layer=True,
    compared=True,
    tree_rank=3,
    diff_rank=5,
)
ROOFLINE_TIME = Figure(
    "roofline_time",
    "time",
    "the step's time on a named GPU by the roofline model, a lower bound (docs/ROOFLINE.md)",
    "roofline",
    per_layer=True,
    tree_rank=5,
    measured_by='a GPU named: gpu = "h100-sxm" (or another of pytest_modelbudget.gpus.GPUS)',
)
MAX_BATCH = Figure(
    "max_batch",
    "count",
    "decode: the most sequences of context tokens whose step fits the named GPU's memory (a floor)",
    "max batch",
    compared=True,
    measured_by='a decode step on a GPU named: mode = "decode", context and gpu = "h100-sxm"',
    floor=True,
)
MAX_CONTEXT = Figure(
    "max_context",
    "count",
    "decode: the most tokens a cache may hold for batch sequences whose step fits the named GPU's memory (a floor)",
    "max context",
    compared=True,
    measured_by='a decode step on a GPU named: mode = "decode", context and gpu = "h100-sxm"',
    floor=True,
)
UNUSED_PARAMS = Figure(
    "unused_params", "count", "parameters forward never read (a limit of 0 fails on a dead layer)", "unused"
)

#: Every figure, in the order checks and limits are listed.
TABLE: tuple[Figure, ...] = (
    PARAMS,
    TRAINABLE_PARAMS,
    FROZEN_PARAMS,
    BUFFER_ELEMENTS,
    BYTES,
    MACS,
    FLOPS,
    PEAK_MEMORY,
    KV_CACHE,
    MEMORY_TRAFFIC,
    ROOFLINE_TIME,
    MAX_BATCH,
    MAX_CONTEXT,
    UNUSED_PARAMS,
)
BY_NAME: dict[str, Figure] = {figure.name: figure for figure in TABLE}

#: Name -> the kind of quantity it is written in (the public ``pytest_modelbudget.FIGURES``).
FIGURES: dict[str, Kind] = {figure.name: figure.kind for figure in TABLE}
#: Figures recorded per layer.
LAYER_FIGURES: tuple[str, ...] = tuple(figure.name for figure in TABLE if figure.per_layer)
#: Figures compared with the baseline by default.
COMPARED: tuple[str, ...] = tuple(figure.name for figure in TABLE if figure.compared)
#: The end-of-run table's columns by default.
SUMMARY_COLUMNS: tuple[str, ...] = tuple(figure.name for figure in TABLE if figure.summary_column)
#: A failure's per-layer diff, most telling first.
DIFF_ORDER: tuple[str, ...] = tuple(
    figure.name for figure in sorted(TABLE, key=lambda f: f.diff_rank or 0) if figure.diff_rank is not None
)
#: Diffed figures that move on their own (--budget-compare's per-layer tables).
LEADING: tuple[str, ...] = tuple(name for name in DIFF_ORDER if BY_NAME[name].follows is None)
#: The summary table's columns dropped first when it is wider than the terminal.
NARROWING: tuple[str, ...] = tuple(name for name in reversed(DIFF_ORDER) if BY_NAME[name].follows is not None)
#: The "vs baseline" column's figure: the first of these that moved in any budget (the table's own
#: columns first).
BASELINE_ORDER: tuple[str, ...] = tuple(
    sorted(DIFF_ORDER, key=lambda name: (not BY_NAME[name].summary_column, BY_NAME[name].diff_rank))
)
#: The CLI tree's default figure columns.
TREE_DEFAULT: tuple[str, ...] = tuple(
    figure.name for figure in sorted(TABLE, key=lambda f: f.tree_rank or 0) if figure.tree_rank is not None
)
