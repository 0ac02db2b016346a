"""Plain-text and Markdown tables: the per-layer tree of the CLI and the end-of-run reports."""

from __future__ import annotations

from collections.abc import Sequence

from ..figures import FIGURES, LAYER_FIGURES, TABLE, TREE_DEFAULT
from ..quantities import format_bytes, format_count, format_quantity, format_time
from ..stats import ModelStats

Row = Sequence[str]


def text_table(headers: Row, rows: Sequence[Row], right_align_from: int = 1) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Row) -> str:
        parts = [
            str(cell).ljust(width) if index < right_align_from else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def elide_start(text: str, width: int) -> str:
    """``text`` in ``width`` characters, its start given up: the end of a layer's or a test's name
    says which it is."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def markdown_table(headers: Row, rows: Sequence[Row]) -> str:
    def escape(cell: str) -> str:
        return str(cell).replace("|", "\\|")

    lines = [
        "| " + " | ".join(map(escape, headers)) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(headers) - 1)) + " |",
    ]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
    return "\n".join(lines)


def details(summary: str, text: str) -> str:
    """A block GitHub folds: the summary line shown, the text (monospace) behind a click."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"<details><summary>{_html(summary)}</summary>\n\n{fence}text\n{text}\n{fence}\n\n</details>"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: The per-layer tree's columns, by the name ``--columns`` takes.
TREE_COLUMNS = {
    "type": "type",
    "output_shape": "output shape",
    **{figure.name: figure.column for figure in TABLE if figure.per_layer},
}
#: torchinfo's columns and ours, in 100 columns for a transformer's names; a figure that was not
#: measured (peak memory on a sharded step's layers, roofline time without a GPU) is left out.
DEFAULT_TREE = ("output_shape", *TREE_DEFAULT)


def format_shapes(shapes: list[list[int]], calls: int = 1) -> str:
    """``[1, 64, 56, 56]``, torchinfo's way; a module called N times with one shape ``... x N``;
    with different shapes, the first and ``...`` (the tree fits 100 columns; JSON has them all)."""
    if not shapes:
        return "-"
    distinct: list[list[int]] = []
    for shape in shapes:
        if shape not in distinct:
            distinct.append(shape)
    text = str(distinct[0]) + (", ..." if len(distinct) > 1 else "")
    if len(distinct) == 1 and len(shapes) > 1:
        text += f" x{len(shapes)}"
    return text


def layer_tree(
    stats: ModelStats, depth: int | None = None, columns: Sequence[str] = DEFAULT_TREE
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-module tree, indented by depth, totals last."""
    measured = {name for layer in stats.layers.values() for name in LAYER_FIGURES if getattr(layer, name) is not None}
    chosen = ["type", *[c for c in columns if c != "type" and (c not in LAYER_FIGURES or c in measured)]]
    headers = ["module", *(TREE_COLUMNS[c] for c in chosen)]
    rows = []
    for name, layer in stats.layers.items():
        level = 0 if name == "" else name.count(".") + 1
        if depth is not None and level > depth:
            continue
        label = "  " * level + (name.rsplit(".", 1)[-1] if name else "(root)")
        cells = {"type": layer.type, "output_shape": format_shapes(layer.output_shapes)}
        for figure in LAYER_FIGURES:
            value = getattr(layer, figure)
            cells[figure] = "-" if value is None else format_quantity(value, FIGURES[figure])
        rows.append([label, *(cells[c] for c in chosen)])
    return headers, rows


def totals_lines(stats: ModelStats) -> list[str]:
    lines = [
        f"params:           {stats.params:,} ({format_count(stats.params)}; "
        f"trainable {stats.trainable_params:,}, frozen {stats.frozen_params:,})",
        f"buffer elements:  {stats.buffer_elements:,}",
        f"bytes:            {stats.bytes:,} ({format_bytes(stats.bytes)})",
        f"MACs:             {stats.macs:,} ({format_count(stats.macs)})",
        f"FLOPs:            {stats.flops:,} ({format_count(stats.flops)})",
        f"memory traffic:   {stats.memory_traffic:,} ({format_bytes(stats.memory_traffic)} read and written by the forward's ops)",
    ]
    if stats.roofline_time is not None:
        lines.append(
            f"roofline time:    {stats.roofline_time:,} ns ({format_time(stats.roofline_time)} on {stats.gpu}, a lower bound: "
            "max(flops / peak, bytes / bandwidth) per op)"
        )
    if stats.peak_memory is not None:
        lines.append(
            f"peak memory:      {stats.peak_memory:,} ({format_bytes(stats.peak_memory)}, {stats.peak_memory_source})"
        )
        if stats.peak_memory_source == "cuda" and stats.peak_memory_estimate is not None:
            lines.append(
                f"  estimate:       {stats.peak_memory_estimate:,} ({format_bytes(stats.peak_memory_estimate)})"
            )
        lines += [f"  assumed:        {item}" for item in stats.peak_memory_approximations]
        if stats.peak_memory_split:
            lines.append(
                "  at the peak:    "
                + ", ".join(
                    f"{kind.replace('_', ' ')} {format_bytes(size)}" for kind, size in stats.peak_memory_split.items()
                )
            )
    if stats.kv_cache is not None:
        lines.append(
            f"KV cache:         {stats.kv_cache:,} ({format_bytes(stats.kv_cache)} for {stats.batch} x "
            f"{stats.context:,} tokens)"
        )
    if stats.max_batch is not None and stats.max_context is not None and stats.context is not None:
        lines.append(
            f"fits {stats.gpu}:".ljust(18)
            + f"max_batch {stats.max_batch:,} (sequences at {stats.context:,} tokens), max_context "
            f"{stats.max_context:,} (tokens at batch {stats.batch})"
        )
    serving = f", batch {stats.batch} x context {stats.context:,}" if stats.context is not None else ""
    lines.append(f"mode:             {stats.mode}{serving} ({stats.execution} execution)")
    if stats.shared_params:
        lines.append("shared:           " + "; ".join(" = ".join(group) for group in stats.shared_params))
    if stats.unused_params:
        shown = ", ".join(stats.unused_params[:8])
        more = f" and {len(stats.unused_params) - 8} more" if len(stats.unused_params) > 8 else ""
        lines.append(f"unused:           {shown}{more} (counted in params, never read by forward)")
    if stats.uncounted_ops:
        lines.append("uncounted ops:    " + ", ".join(f"{op} x{n}" for op, n in stats.uncounted_ops.items()))
    lines += [f"note:             {note}" for note in stats.notes]
    return lines
