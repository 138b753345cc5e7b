"""Rich renderables for the small commands: ``validate``, ``cost`` and ``studies``.

Fronts live in :mod:`sdsearch.results.report` and :mod:`sdsearch.results.plot`; this module only formats records it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sdsearch.core.units import format_value

if TYPE_CHECKING:
    from sdsearch.search.runner import RunSummary
    from sdsearch.space.space import Space

__all__ = ["cost_table", "run_summary", "space_summary", "studies_table"]


def space_summary(space: Space) -> Group:
    """Name, budget and the searched dimensions of a space (conditional ones marked)."""
    from sdsearch.store.urls import mask_url

    data = (
        f"data: {space.data.dataset}; {space.train.epochs} epochs; deploy exit {space.deploy_exit} "
        f"({space.deploy.dtype}{', int8-quantized accuracy' if space.deploy.quantize == 'int8' else ''})"
    )
    if space.is_fixed:
        return Group(
            Text.assemble(
                ("ok ", "bold green"), (space.source, "bold"), ": trainer config (every value fixed); ", data
            )
        )
    from sdsearch.core.metrics import describe_limits

    budget = describe_limits(space.budget)
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


def cost_table(
    rows: Iterable[Mapping[str, Any]], *, dtype: str = "int8", platform: str | None = None
) -> Table:
    """Deploy metrics per exit (params, MACs, FLOPs, peak memory, size, latency when measured), each
    column labelled with its unit and the caption with its convention (from the metric table), for
    ``platform`` (``deploy.platform``) when given."""
    from sdsearch.core.metrics import METRICS, conventions, metric_value

    ids = conventions(dtype, platform) if platform else {}

    rows = list(rows)
    names = [
        m
        for m in METRICS.names()
        if METRICS.get(m).before_training and any(metric_value(r, m) is not None for r in rows)
    ]
    table = Table(
        title=f"deploy metrics per exit ({dtype})",
        caption="\n".join(METRICS.get(m).describe(dtype, ids.get(m)) for m in names),
        caption_justify="left",
    )
    for column in ("exit", *(METRICS.get(m).heading(dtype) for m in names)):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["exit"]), *(METRICS.get(m).format(metric_value(row, m)) for m in names))
    return table


def tflm_check_table(checks: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Table:
    """Estimated against measured TFLite Micro bytes per exit (``sdsearch cost --tflm``)."""
    from sdsearch.core.platforms import MEASURED_PLATFORM
    from sdsearch.core.units import format_value
    from sdsearch.graphs.tflm import FIGURES as figures

    table = Table(
        title=f"TFLite Micro, estimated / measured ({MEASURED_PLATFORM})",
        caption="arena: the smallest tensor arena it runs in (planned tensors and scratch + persistent structs); "
        ".tflite: the file's bytes. Measured with random non-degenerate weights in the tflite-micro interpreter.",
        caption_justify="left",
    )
    table.add_column("exit", justify="right")
    for label in figures.values():
        table.add_column(label, justify="right")
    for exit_name, check in checks.items():
        cells = []
        for figure in figures:
            est, got = check["estimate"][figure], check["measured"][figure]
            cells.append(f"{format_value(est, 'bytes')} / {format_value(got, 'bytes')} ({est / got:.2f}x)")
        table.add_row(str(exit_name), *cells)
    return table


def studies_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """One line per study: trial counts by outcome, and the trained weights kept for it (bytes)."""
    table = Table(title="studies", caption="weights: trained trials' checkpoints kept in the study's folder")
    columns = (
        "study",
        "complete",
        "rejected",
        "duplicate",
        "failed",
        "pruned",
        "interrupted",
        "running",
        "target",
        "weights",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "study" else "right")
    for row in rows:
        cells = {**row, "weights": format_value(row["weights"], "bytes") if row.get("weights") else ""}
        table.add_row(*(str(cells.get(c, "")) for c in columns))
    return table


def run_summary(summary: RunSummary, source: str) -> Text:
    """What ``sdsearch run`` did, and the next command to type."""
    c = summary.counts
    counts = f"complete {c['complete']}, rejected {c['rejected']}, failed {c['failed']}, pruned {c['pruned']}"
    if c.get("duplicate"):
        counts += f", duplicates {c['duplicate']} (told an earlier trial's result, not trained again)"
    if summary.added == 0 and summary.trained >= summary.target:
        return Text(
            f"study {summary.study_name} is complete: {summary.trained}/{summary.target} trained trials ({counts}); "
            f"raise trials or pass --trials N to extend it. See it with: sdsearch show {source}"
        )
    if summary.exhausted:
        counts += (
            f"; stopped early: the sampler proposed only configurations the study had trained, so the space "
            f"has no untried one left (widen {source} to go on)"
        )
    minutes, seconds = divmod(int(summary.seconds), 60)
    return Text.assemble(
        ("done ", "bold green"),
        f"study {summary.study_name} in {summary.storage}: {summary.trained}/{summary.target} trained trials "
        f"(+{summary.added} in {minutes}:{seconds:02d}; {counts})\n",
        f"next: sdsearch show {source} --plot front.png   then   sdsearch export {source} --pick knee -o best.yaml",
    )
