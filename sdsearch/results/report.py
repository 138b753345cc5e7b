"""Fronts for people and machines: a rich table, a PNG with one panel per cost, CSV and JSON.

Every view says which cost it shows and in which convention, from the metric table
(:mod:`sdsearch.core.metrics`): MACs are multiply-accumulates (what lightweight-CNN papers usually call
"FLOPs"; ``flops`` is torch's 2 × MACs), peak memory and size count bytes at the study's
``deploy.dtype``, latency is ONNX Runtime milliseconds. The config columns are the searchable
leaves of :mod:`sdsearch.core.config`, so a newly searched key shows up without touching this module.
matplotlib is imported only by :func:`plot_front`, so ``sdsearch show`` without ``--plot`` starts
fast, and the figure is drawn on its own Agg canvas (no pyplot global state).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sdsearch.core.config import LEAVES
from sdsearch.core.files import output_file, write_atomic
from sdsearch.core.metrics import METRICS, limit_of
from sdsearch.core.pareto import pareto_front
from sdsearch.results.front import Candidate, Front
from sdsearch.space.document import leaf_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "columns",
    "config_table",
    "front_json",
    "front_records",
    "front_report",
    "front_table",
    "plot_anytime_of",
    "plot_front",
    "read_csv",
    "write_csv",
    "write_json",
]

_FRONT_COLOR, _CANDIDATE_COLOR, _KNEE_COLOR, _BUDGET_COLOR = "#1f77b4", "#ff7f0e", "#d62728", "#444444"
#: Fronts larger than this get labels only on each panel's staircase, or the plot becomes unreadable.
_MAX_LABELS = 30
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
    values = {key: leaf_value(c.config, leaf) for key, leaf in LEAVES.items()}
    row: dict[str, Any] = {"trial": c.trial, "exit": c.exit, "deployed": c.deployed, "partial": c.partial}
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
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{k: _parse_cell(v, types.get(k, str)) for k, v in row.items()} for row in csv.DictReader(f)]


def _parse_cell(text: str, kind: type) -> Any:
    if text == "" and kind is not str:
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
    knee, best = front.knee, front.best
    what = "(trial, exit) candidates" if front.candidates else "trials (deployed exit)"
    metrics = _shown_metrics(front)
    table = Table(title=f"{front.study_name}: Pareto front of {what}", caption=_caption(front, metrics))
    for column in ("trial", "exit", *(METRICS.get(m).heading(front.dtype) for m in metrics)):
        # Figures are what the table is for: a narrow terminal wraps the caption, never a number.
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("")
    for c in front.front:
        tags = [f"best {METRICS.get(m).label}" for m, b in best.items() if b is c]
        table.add_row(
            str(c.trial),
            c.exit,
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
    return "; ".join(
        METRICS.get(m).describe(front.dtype) for m in metrics if METRICS.get(m).direction == "minimize"
    )


def partial_table(front: Front) -> Table:
    """Exits of trials a scheduler stopped, measured at their rung: shown apart, never on a front."""
    metrics = _shown_metrics(front)
    table = Table(title="stopped early (partial: measured at the rung where the scheduler stopped them)")
    for column in ("trial", "exit", "epoch", *(METRICS.get(m).heading(front.dtype) for m in metrics)):
        table.add_column(column, justify="right")
    for c in front.partial:
        table.add_row(
            str(c.trial),
            c.exit,
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
        f"{word} {METRICS.get(metric).label}: trial {c.trial} exit {c.exit}: {100 * c.accuracy:.2f}%, {costs}"
    )


def _describe_reference(front: Front) -> str:
    return ", ".join(
        f"{METRICS.get(m).label} {METRICS.get(m).format(v)}"
        for m, v in zip(front.objectives, front.reference, strict=True)
    )


# --------------------------------------------------------------------------------------------
# Plot.


def plot_front(front: Front, path: str | Path, *, dpi: int = 150) -> Path:
    """Write a PNG with one panel per cost objective: accuracy against that cost, on a log x axis.

    Every trained candidate is faded grey; the trials front (deployed exits) is blue, the
    candidates front (every exit of every trial) orange, each a staircase over the members that are
    Pareto-optimal in that panel's two metrics (hollow markers are on a front thanks to another
    cost); the knee of the selected front is a red star; budget limits are dashed lines; exits of
    trials a scheduler stopped early are grey crosses.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = output_file(path, key="plot", suffix=".png")  # before the (slow) drawing
    costs = [m for m in front.objectives if METRICS.get(m).direction == "minimize"] or ["macs"]
    fig = Figure(figsize=(6.5 * len(costs), 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(costs), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, costs, strict=True):
        _panel(ax, front, metric)
    axes[0].set_ylabel("validation accuracy (%)")
    legend: dict[str, Any] = {}  # label -> handle, all panels (a budget may limit only one metric)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="outside lower center",
        ncol=min(len(legend), 4),
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(
        f"{front.study_name}: {len(front.trials_front)} trials and {len(front.candidates_front)} (trial, exit) "
        f"candidates on the fronts, {len(front.trials)} trained trials; budget {front.describe_budget().replace('<=', '≤')}",
        fontsize=12,
    )
    return _save_png(fig, path, dpi)


def _panel(ax: Axes, front: Front, metric: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    spec = METRICS.get(metric)
    on_a_front = {(c.trial, c.exit) for c in (*front.trials_front, *front.candidates_front)}
    rest = [c for c in front.all_candidates if (c.trial, c.exit) not in on_a_front and _finite(c, metric)]
    if rest:  # empty groups would still get a legend entry
        ax.scatter(
            [c.value(metric) for c in rest],
            [100 * c.accuracy for c in rest],
            s=20,
            color="0.6",
            alpha=0.45,
            edgecolors="none",
            label="other trained candidates",
            zorder=1,
        )
    partial = [c for c in front.partial if _finite(c, metric)]
    if partial:
        ax.scatter(
            [c.value(metric) for c in partial],
            [100 * c.accuracy for c in partial],
            s=22,
            marker="x",
            color="0.45",
            linewidths=0.9,
            label="stopped early (partial, at its rung)",
            zorder=1,
        )
    for members, color, marker, name, style in (
        (front.candidates_front, _CANDIDATE_COLOR, "D", "candidates front (every exit)", "--"),
        (front.trials_front, _FRONT_COLOR, "o", "trials front (deployed exits)", "-"),
    ):
        _staircase(ax, [c for c in members if _finite(c, metric)], metric, color, marker, name, style)
    selected = [c for c in front.front if _finite(c, metric)]
    labelled = selected if len(selected) <= _MAX_LABELS else selected[:_MAX_LABELS]
    for k, c in enumerate(sorted(labelled, key=lambda c: c.value(metric))):
        ax.annotate(
            c.label,
            (c.value(metric), 100 * c.accuracy),
            xytext=(5, 5 if k % 2 == 0 else -11),
            textcoords="offset points",
            fontsize=7.5,
            color="#0b3d66",
            zorder=4,
        )
    knee = front.knee
    if _finite(knee, metric):
        ax.scatter(
            [knee.value(metric)],
            [100 * knee.accuracy],
            marker="*",
            s=260,
            color=_KNEE_COLOR,
            edgecolors="black",
            linewidths=0.6,
            label=f"knee {knee.label}",
            zorder=5,
        )
    xs = [c.value(metric) for c in (*front.points, *partial) if _finite(c, metric)] or [1.0]
    limit = limit_of(metric, front.budget)
    if limit is not None:
        ax.axvline(limit, ls="--", lw=1.3, color=_BUDGET_COLOR, label="budget limit", zorder=1)
        ax.annotate(
            f"budget {spec.label} ≤ {spec.format(limit)}",
            (limit, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, 6),
            textcoords="offset points",
            rotation=90,
            ha="right",
            va="bottom",
            fontsize=8,
            color=_BUDGET_COLOR,
        )
        xs.append(limit)
    ax.set_xscale("log")
    lo, hi = max(min(xs), 1e-9), max(xs)
    ax.set_xlim(lo / 1.35, hi * 1.35)
    # Bytes tick at powers of two (4 KiB, 8 KiB, ...), counts and milliseconds at 1-2-5 decades.
    ax.xaxis.set_major_locator(
        LogLocator(base=2) if spec.unit == "bytes" else LogLocator(base=10, subs=(1.0, 2.0, 5.0))
    )
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: spec.format(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_axis_label(metric, front.dtype), fontsize=9, wrap=True)
    ax.set_title(f"accuracy vs {spec.heading(front.dtype)}", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)


def _axis_label(metric: str, dtype: str) -> str:
    spec = METRICS.get(metric)
    units = {"count": "k = 10³, M = 10⁶", "bytes": "KiB = 2¹⁰ bytes", "ms": "milliseconds"}.get(spec.unit, "")
    extra = "; papers' FLOPs, torch FLOPs = 2 × MACs" if metric == "macs" else ""
    return f"{spec.heading(dtype)}, log scale ({units}{extra})"


def _staircase(
    ax: Axes, members: list[Candidate], metric: str, color: str, marker: str, name: str, style: str
) -> None:
    if not members:
        return
    stair = set(pareto_front([(c.accuracy, c.value(metric)) for c in members], ["maximize", "minimize"]))
    steps = sorted((members[i] for i in stair), key=lambda c: (c.value(metric), -c.accuracy))
    ax.step(
        [c.value(metric) for c in steps],
        [100 * c.accuracy for c in steps],
        where="post",
        color=color,
        lw=1.5,
        ls=style,
        zorder=2,
    )
    for filled in (True, False):
        group = [c for i, c in enumerate(members) if (i in stair) == filled]
        if group:
            ax.scatter(
                [c.value(metric) for c in group],
                [100 * c.accuracy for c in group],
                s=40,
                marker=marker,
                facecolors=color if filled else "white",
                edgecolors=color,
                linewidths=1.2,
                label=name if filled else f"{name}: better on another cost",
                zorder=3,
            )


def _finite(c: Candidate, metric: str) -> bool:
    value = c.value(metric)
    return math.isfinite(value) and value > 0


def plot_anytime_of(
    report: dict[str, Any], path: str | Path, *, title: str | None = None, dpi: int = 150
) -> Path:
    """Write one trained network's anytime plot (accuracy against expected MACs) as a PNG."""
    from sdsearch.anytime.view import plot_anytime

    path = output_file(path, key="plot", suffix=".png")
    return _save_png(plot_anytime(report, title=title), path, dpi)


def _save_png(fig: Any, path: Path, dpi: int) -> Path:
    """Render to memory, then write whole: a full disk leaves no torn PNG (see write_atomic)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_atomic(path, buffer.getvalue())
