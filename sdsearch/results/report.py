"""Fronts for people and machines: rich tables, CSV and JSON records (the plot is :mod:`sdsearch.results.plot`).

Every view says which cost it shows and in which convention, from the metric table
(:mod:`sdsearch.core.metrics`): MACs are multiply-accumulates (what lightweight-CNN papers usually call
"FLOPs"; ``flops`` is torch's 2 × MACs), peak memory and size count bytes at the study's
``deploy.dtype`` (figures stored under an older convention say which, :meth:`Front.heading`), latency
is ONNX Runtime milliseconds. The config columns are the searchable leaves of
:mod:`sdsearch.core.config`, so a newly searched key shows up without touching this module.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sdsearch.core.config import LEAVES, TrialConfig
from sdsearch.core.files import output_file, write_atomic
from sdsearch.core.metrics import METRICS
from sdsearch.results.front import Candidate, Front
from sdsearch.space.document import leaf_value

__all__ = [
    "columns",
    "config_table",
    "front_json",
    "front_records",
    "front_report",
    "front_table",
    "metric_or_none",
    "read_csv",
    "write_csv",
    "write_json",
]

_ID_COLUMNS: dict[str, type] = {"trial": int, "exit": str, "deployed": bool, "partial": bool, "knee": bool}


# --------------------------------------------------------------------------------------------
# Records (CSV / JSON).


def columns(front: Front) -> dict[str, type]:
    """Columns of CSV rows and JSON records, with the type each is read back as: ids, every metric
    measured in the study, then every searchable leaf (``backbone.width``, ``train.weight_decay``...)."""
    measured = {m for c in (*front.points, *front.partial) for m in c.metrics}
    metrics = {m: float for m in METRICS.names() if m in measured or m in front.objectives}
    leaves = {key: _LEAF_TYPES.get(leaf.kind, str) for key, leaf in LEAVES.items()}
    return {**_ID_COLUMNS, **metrics, **leaves}


_LEAF_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "text": str, "list": str}


def front_records(front: Front) -> list[dict[str, Any]]:
    """One flat, JSON-friendly dict per member of :attr:`Front.front` (keys: :func:`columns`).

    List leaves (``branches.placement``) are one cell, ``"1,3"``; a leaf whose condition does not
    hold (``cbfe.ratio`` with CBFE off) is None, because its stored default means nothing there.
    """
    knee = front.knee
    names = columns(front)
    return [_record(c, names, knee=c is knee) for c in front.front]


def _record(c: Candidate, names: dict[str, type], *, knee: bool) -> dict[str, Any]:
    config = c.config
    if c.width is not None:  # a width of an elastic trial: the plain config that export writes for it
        config = TrialConfig.from_dict(config).at_width(c.width).to_dict()
    values = {key: leaf_value(config, leaf) for key, leaf in LEAVES.items()}
    row: dict[str, Any] = {"trial": c.trial, "exit": c.name, "deployed": c.deployed, "partial": c.partial}
    row["knee"] = knee
    for metric in (m for m in names if m in METRICS):
        row[metric] = metric_or_none(c, metric)
    for key, leaf in LEAVES.items():
        value = values[key]
        condition = leaf.applies
        if condition is not None and values.get(condition.key) is not None and not condition.holds(values):
            value = None
        row[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    return row


def metric_or_none(c: Candidate, metric: str) -> float | None:
    value = c.value(metric)
    return None if math.isnan(value) else value


def front_json(front: Front) -> list[dict[str, Any]]:
    """:func:`front_records` plus each member's full stored ``config`` (what export would use)."""
    return [r | {"config": c.config} for r, c in zip(front_records(front), front.front, strict=True)]


def write_json(front: Front, path: str | Path) -> Path:
    """Write :func:`front_json` to ``path``; returns the path."""
    return write_atomic(output_file(path, key="json"), json.dumps(front_json(front), indent=2) + "\n")


def write_csv(front: Front, path: str | Path) -> Path:
    """Write :func:`front_records` as CSV (header = :func:`columns`); None becomes an empty cell."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns(front)))
    writer.writeheader()
    for row in front_records(front):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return write_atomic(output_file(path, key="csv"), text.getvalue())


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a file from :func:`write_csv` back into typed records (the inverse, empty cell = None)."""
    types = {**_ID_COLUMNS, **dict.fromkeys(METRICS.names(), float)}
    types |= {key: _LEAF_TYPES.get(leaf.kind, str) for key, leaf in LEAVES.items()}
    # An empty cell is None (a leaf that did not apply), except where "" is a value (no placement).
    conditional = {key for key, leaf in LEAVES.items() if leaf.applies is not None}
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [
            {k: _parse_cell(v, types.get(k, str), nullable=k in conditional) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def _parse_cell(text: str, kind: type, *, nullable: bool = False) -> Any:
    if text == "" and (kind is not str or nullable):
        return None
    if kind is bool:
        return text == "True"
    return kind(text)


# --------------------------------------------------------------------------------------------
# Terminal.


def _shown_metrics(front: Front) -> list[str]:
    """Metrics for the table: the objectives, then every other cost the study measured."""
    measured = {m for c in front.points for m in c.metrics}
    rest = [m for m in METRICS.names() if m in measured and m not in front.objectives]
    return [*front.objectives, *rest]


def _shown_leaves(front: Front, rows: list[dict[str, Any]]) -> list[str]:
    """Leaves for the table: those the study searched, or (a study stored without its spec) those
    whose value differs across the front."""
    if front.searched:
        return [k for k in LEAVES if k in front.searched]
    return [k for k in LEAVES if len({repr(r[k]) for r in rows}) > 1]


def front_table(front: Front) -> Table:
    """The selected front's figures, cheapest first; the knee row is bold and tagged."""
    knee = front.knee if front.knee_note is None else None  # no knee: nothing is tagged one
    best = front.best
    what = "(trial, exit) candidates" if front.candidates else "trials (deployed exit)"
    metrics = _shown_metrics(front)
    caption = _caption(front, metrics) + (f"\n{front.knee_note}" if front.knee_note else "")
    table = Table(title=f"{front.study_name}: Pareto front of {what}", caption=caption)
    for column in ("trial", "exit", *(front.heading(m) for m in metrics)):
        # Figures are what the table is for: a narrow terminal wraps the caption, never a number.
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("")
    for c in front.front:
        tags = [f"best {METRICS.get(m).label}" for m, b in best.items() if b is c]
        table.add_row(
            str(c.trial),
            c.name,
            *(METRICS.get(m).format(metric_or_none(c, m)) for m in metrics),
            ", ".join((["knee"] if c is knee else []) + tags),
            style="bold" if c is knee else None,
        )
    return table


def config_table(front: Front) -> Table:
    """The configs behind the front, one column per trial (a front has few trials and a config many
    keys, so this way round fits a terminal)."""
    names = columns(front)
    rows: dict[int, dict[str, Any]] = {}  # trial -> its config, in front order (a trial's exits share one)
    for c in front.front:
        rows.setdefault(c.trial, _record(c, names, knee=False))
    table = Table(title="their configs (searched keys)")
    table.add_column("key", no_wrap=True)
    for t in rows:
        table.add_column(f"trial {t}", justify="right", overflow="fold")
    for key in _shown_leaves(front, list(rows.values())):
        table.add_row(key, *(_format_value(row[key]) for row in rows.values()))
    return table


def _format_value(value: Any) -> str:
    if value is None:
        return "-"  # the key does not apply to this config
    if value == "":
        return "(none)"  # an empty subset, e.g. no exit branches
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _caption(front: Front, metrics: list[str]) -> str:
    return "; ".join(front.describe(m) for m in metrics if METRICS.get(m).direction == "minimize")


def partial_table(front: Front) -> Table:
    """Exits of trials a scheduler stopped, measured at their rung: shown apart, never on a front."""
    metrics = _shown_metrics(front)
    table = Table(title="stopped early (partial: measured at the rung where the scheduler stopped them)")
    for column in ("trial", "exit", "epoch", *(front.heading(m) for m in metrics)):
        table.add_column(column, justify="right")
    for c in front.partial:
        table.add_row(
            str(c.trial),
            c.name,
            str(c.epoch),
            *(METRICS.get(m).format(metric_or_none(c, m)) for m in metrics),
        )
    return table


def front_report(front: Front) -> Group:
    """Header (storage, objectives, budget), the front table, trial counts and the best per objective."""
    view = "candidates" if front.candidates else "trials"
    header = Text.assemble(
        (front.study_name, "bold"),
        f" in {front.storage}; objectives {', '.join(front.objectives)}; budget {front.describe_budget()}",
    )
    other = "candidates" if not front.candidates else "trials"
    other_front = front.candidates_front if not front.candidates else front.trials_front
    counts = Text(
        f"trials: {front.counts}; front: {len(front.front)} {view} ({len(other_front)} on the {other} front"
        f"{', add --candidates' if not front.candidates else ''}); "
        f"hypervolume {front.hypervolume:.4f} (normalised to the ideal-reference box, reference "
        f"{_describe_reference(front)})"
    )
    best = Text("\n".join(_best_line(front, m, c) for m, c in front.best.items()))
    parts: list[Any] = [header, front_table(front), counts, best]
    if front.front:
        parts.append(config_table(front))
    if front.partial:
        parts.insert(2, partial_table(front))
    return Group(*parts)


def _best_line(front: Front, metric: str, c: Candidate) -> str:
    word = (
        "best"
        if METRICS.get(metric).direction == "maximize"
        else "fewest"
        if metric in ("params", "macs", "flops")
        else "lowest"
    )
    costs = ", ".join(
        f"{METRICS.get(m).format(metric_or_none(c, m))} {METRICS.get(m).label}"
        for m in front.objectives
        if METRICS.get(m).direction == "minimize"
    )
    return (
        f"{word} {METRICS.get(metric).label}: trial {c.trial} exit {c.name}: {100 * c.accuracy:.2f}%, {costs}"
    )


def _describe_reference(front: Front) -> str:
    return ", ".join(
        f"{METRICS.get(m).label} {METRICS.get(m).format(v)}"
        for m, v in zip(front.objectives, front.reference, strict=True)
    )
