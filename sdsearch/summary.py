"""Rich renderables for the small commands: ``validate``, ``cost`` and ``studies``.

Fronts and plots live in :mod:`sdsearch.report`; this module only formats records it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sdsearch.sizes import format_bytes, format_size

if TYPE_CHECKING:
    from sdsearch.search.runner import RunSummary
    from sdsearch.space import Space

__all__ = ["cost_table", "run_summary", "space_summary", "studies_table"]


def space_summary(space: Space) -> Group:
    """Name, budget and the searched dimensions of a space (conditional ones marked)."""
    from sdsearch.search.storage import mask_url

    data = f"data: {space.data.dataset}; {space.train.epochs} epochs; deploy exit {space.deploy_exit}"
    if space.is_fixed:
        return Group(
            Text.assemble(
                ("ok ", "bold green"), (space.source, "bold"), ": trainer config (every value fixed); ", data
            )
        )
    budget = ", ".join(f"{k} <= {format_size(v)}" for k, v in space.budget.items()) or "none"
    head = Text.assemble(
        ("ok ", "bold green"),
        (space.source, "bold"),
        f": {len(space.searched)} searched dimensions\n",
        f"study {space.name} in {mask_url(space.storage)}; {space.n_trials} trained trials; "
        f"sampler {space.sampler.type}; objectives {', '.join(space.objectives)}\n",
        f"budget: {budget}; {data}",
    )
    conditional = space.conditional
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("dimension")
    table.add_column("distribution")
    table.add_column("condition", style="dim")
    for dim in space.searched:
        table.add_row(dim.key, dim.describe(), conditional.get(dim.key, ""))
    return Group(head, table)


def cost_table(rows: Iterable[Mapping[str, Any]], *, dtype: str = "int8") -> Table:
    """Deploy cost per exit: params, MACs, peak activation memory and weight size at ``dtype``.

    Each row holds ``exit``, ``params``, ``macs``, ``flops``, ``peak_memory`` and ``size`` (bytes).
    """
    table = Table(
        title=f"deploy cost per exit at {dtype}",
        caption="peak memory: activations of a batch-1 inference; size: weights; kB = 1000 B\n"
        "MACs: multiply-accumulates of conv and linear layers; FLOPs = 2 x MACs",
        caption_justify="left",
    )
    columns = ("exit", "params", "MACs", "FLOPs", f"peak memory ({dtype}, bytes)", f"size ({dtype}, bytes)")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["exit"]),
            format_size(row["params"]),
            format_size(row["macs"]),
            format_size(row["flops"]),
            format_bytes(row["peak_memory"]),
            format_bytes(row["size"]),
        )
    return table


def studies_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """One line per study: trial counts by outcome."""
    table = Table(title="studies")
    columns = ("study", "complete", "rejected", "failed", "pruned", "running", "target")
    for column in columns:
        table.add_column(column, justify="left" if column == "study" else "right")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    return table


def run_summary(summary: RunSummary, source: str) -> Text:
    """What ``sdsearch run`` did, and the next command to type."""
    c = summary.counts
    counts = f"complete {c['complete']}, rejected {c['rejected']}, failed {c['failed']}, pruned {c['pruned']}"
    if summary.added == 0 and summary.trained >= summary.target:
        return Text(
            f"study {summary.study_name} is complete: {summary.trained}/{summary.target} trained trials ({counts}); "
            f"raise trials or pass --trials N to extend it. See it with: sdsearch show {source}"
        )
    minutes, seconds = divmod(int(summary.seconds), 60)
    return Text.assemble(
        ("done ", "bold green"),
        f"study {summary.study_name} in {summary.storage}: {summary.trained}/{summary.target} trained trials "
        f"(+{summary.added} in {minutes}:{seconds:02d}; {counts})\n",
        f"next: sdsearch show {source} --plot front.png   then   sdsearch export {source} --pick knee -o best.yaml",
    )
