"""Fronts for people and machines: a rich table, a two-panel PNG, CSV and JSON.

Every view says which cost it shows: MACs are multiply-accumulates (what lightweight-CNN papers
usually call "FLOPs"); ``flops`` is torch's 2 x MACs. matplotlib is imported only by
:func:`plot_front`, so ``sdsearch show`` without ``--plot`` starts fast, and the figure is drawn on
its own Agg canvas (no pyplot global state, no backend switch for the caller).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sdsearch.paths import output_file
from sdsearch.search import attrs
from sdsearch.search.front import Candidate, Front, pareto_front
from sdsearch.sizes import format_size

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "COLUMNS",
    "front_json",
    "front_records",
    "front_report",
    "front_table",
    "plot_front",
    "read_csv",
    "write_csv",
    "write_json",
]

#: Columns of CSV rows and JSON records, with the type each is read back as.
COLUMNS: dict[str, type] = {
    "trial": int,
    "exit": str,
    "deployed": bool,
    "accuracy": float,
    "params": int,
    "macs": int,
    "flops": int,
    "arch": str,
    "width": float,
    "depth": int,
    "placement": str,
    "branch_style": str,
    "cbfe_location": str,
    "cbfe_ratio": int,
    "fusion": str,
    "teacher": str,
    "kd_weight": float,
    "temperature": float,
    "feature_weight": float,
    "lr": float,
    "epochs": int,
    "knee": bool,
}
_METRIC_LABEL = {"accuracy": "accuracy", "params": "params", "macs": "MACs", "flops": "FLOPs"}
_FRONT_COLOR, _KNEE_COLOR, _BUDGET_COLOR = "#1f77b4", "#d62728", "#444444"
#: Fronts larger than this get labels only on each panel's staircase, or the plot becomes unreadable.
_MAX_LABELS = 30


# --------------------------------------------------------------------------------------------
# Records (CSV / JSON).


def front_records(front: Front) -> list[dict[str, Any]]:
    """One flat, JSON-friendly dict per member of :attr:`Front.front` (keys: :data:`COLUMNS`).

    ``placement`` is the exit stages as ``"1,3"`` (one CSV cell); ``cbfe_ratio`` is None where CBFE
    is off, because the stored default ratio means nothing there.
    """
    knee = front.knee
    return [_record(c, knee=c is knee) for c in front.front]


def _record(c: Candidate, *, knee: bool) -> dict[str, Any]:
    model = c.config.get("model", {})
    backbone, branches = model.get("backbone", {}), model.get("branches", {})
    cbfe, loss, train = model.get("cbfe", {}), c.config.get("loss", {}), c.config.get("train", {})
    location = cbfe.get("location", "none")
    return {
        "trial": c.trial,
        "exit": c.exit,
        "deployed": c.deployed,
        "accuracy": c.accuracy,
        "params": c.params,
        "macs": c.macs,
        "flops": c.flops,
        "arch": backbone.get("arch"),
        "width": backbone.get("width"),
        "depth": backbone.get("depth"),
        "placement": ",".join(str(s) for s in branches.get("placement", [])),
        "branch_style": branches.get("style"),
        "cbfe_location": location,
        "cbfe_ratio": None if location == "none" else cbfe.get("ratio"),
        "fusion": model.get("fusion", {}).get("type"),
        "teacher": loss.get("teacher"),
        "kd_weight": loss.get("kd_weight"),
        "temperature": loss.get("temperature"),
        "feature_weight": loss.get("feature_weight"),
        "lr": train.get("lr"),
        "epochs": train.get("epochs"),
        "knee": knee,
    }


def front_json(front: Front) -> list[dict[str, Any]]:
    """:func:`front_records` plus each member's full stored ``config`` (what export would use)."""
    return [r | {"config": c.config} for r, c in zip(front_records(front), front.front, strict=True)]


def write_json(front: Front, path: str | Path) -> Path:
    """Write :func:`front_json` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(front_json(front), indent=2) + "\n", encoding="utf-8")
    return path


def write_csv(front: Front, path: str | Path) -> Path:
    """Write :func:`front_records` as CSV (header = :data:`COLUMNS`); None becomes an empty cell."""
    path = output_file(path, option="--csv")
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in front_records(front):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a file from :func:`write_csv` back into typed records (the inverse, empty cell = None)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{k: _parse_cell(v, COLUMNS.get(k, str)) for k, v in row.items()} for row in csv.DictReader(f)]


def _parse_cell(text: str, kind: type) -> Any:
    if text == "" and kind is not str:
        return None
    if kind is bool:
        return text == "True"
    return kind(text)


# --------------------------------------------------------------------------------------------
# Terminal.


def front_table(front: Front) -> Table:
    """The selected front as a table, cheapest first; the knee row is bold and tagged."""
    knee, best = front.knee, front.best
    show_flops = "flops" in front.objectives or "flops" in front.budget
    what = "(trial, exit) candidates" if front.candidates else "trials (deployed exit)"
    table = Table(
        title=f"{front.study_name}: Pareto front of {what}",
        caption="MACs = multiply-accumulates (papers often call them FLOPs); FLOPs = 2 x MACs",
    )
    for column in ("trial", "exit", "accuracy", "params", "MACs", *(["FLOPs"] if show_flops else [])):
        table.add_column(column, justify="right")
    for column in ("arch", "width", "depth", "exits at", "branch", "CBFE", "fusion", "teacher", ""):
        table.add_column(column)
    for c in front.front:
        r = _record(c, knee=c is knee)
        tags = [f"best {_METRIC_LABEL[m]}" for m, b in best.items() if b is c]
        costs = [format_size(c.params), format_size(c.macs), *([format_size(c.flops)] if show_flops else [])]
        cbfe = "none" if r["cbfe_location"] == "none" else f"{r['cbfe_location']}/{r['cbfe_ratio']}"
        table.add_row(
            str(c.trial),
            c.exit,
            f"{100 * c.accuracy:.2f}%",
            *costs,
            str(r["arch"]),
            str(r["width"]),
            str(r["depth"]),
            r["placement"] or "-",
            str(r["branch_style"]),
            cbfe,
            str(r["fusion"]),
            str(r["teacher"]),
            ", ".join((["knee"] if c is knee else []) + tags),
            style="bold" if c is knee else None,
        )
    return table


def front_report(front: Front) -> Group:
    """Header (storage, objectives, budget), the front table, trial counts and the best per objective."""
    view = "candidates" if front.candidates else "trials"
    header = Text.assemble(
        (front.study_name, "bold"),
        f" in {front.storage}; objectives {', '.join(front.objectives)}; budget {front.describe_budget()}",
    )
    counts = Text(
        f"trials: {front.counts}; front: {len(front.front)} {view}; "
        f"hypervolume {front.hypervolume:.4f} (normalised to the ideal-reference box, reference "
        f"{_describe_reference(front)})"
    )
    best = Text("\n".join(_best_line(front, m, c) for m, c in front.best.items()))
    return Group(header, front_table(front), counts, best)


def _best_line(front: Front, metric: str, c: Candidate) -> str:
    word = "best" if attrs.DIRECTIONS[metric] == "maximize" else "fewest"
    return (
        f"{word} {_METRIC_LABEL[metric]}: trial {c.trial} exit {c.exit}: {100 * c.accuracy:.2f}%, "
        f"{format_size(c.params)} params, {format_size(c.macs)} MACs"
    )


def _describe_reference(front: Front) -> str:
    parts = []
    for metric, value in zip(front.objectives, front.reference, strict=True):
        parts.append(
            f"{_METRIC_LABEL[metric]} {value:g}" if metric == "accuracy" else f"{metric} {format_size(value)}"
        )
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Plot.


def plot_front(front: Front, path: str | Path, *, dpi: int = 150) -> Path:
    """Write a two-panel PNG: accuracy vs MACs and accuracy vs params, both with a log x axis.

    Every trained point is faded grey; front members are blue and labelled ``#trial`` or
    ``#trial(exit)``; in each panel the staircase joins the members that are Pareto-optimal in that
    panel's two metrics (hollow markers are on the front thanks to the other cost); the knee is a
    red star; budget limits are dashed vertical lines.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = output_file(path, option="--plot", suffix=".png")  # before the (slow) drawing
    fig = Figure(figsize=(13, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric in zip(axes, ("macs", "params"), strict=True):
        _panel(ax, front, metric)
    axes[0].set_ylabel("validation accuracy (%)")
    legend: dict[str, Any] = {}  # label -> handle, both panels (a budget may limit only one metric)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="outside lower center",
        ncol=len(legend),
        fontsize=9,
        frameon=False,
    )
    what = "(trial, exit) candidates" if front.candidates else "trials"
    fig.suptitle(
        f"{front.study_name}: Pareto front of {what} — {len(front.front)} on the front, "
        f"{len(front.points)} trained {'candidate' if front.candidates else 'trial'}"
        f"{'' if len(front.points) == 1 else 's'}, "
        f"budget {front.describe_budget().replace('<=', '≤')}",
        fontsize=12,
    )
    fig.savefig(path, dpi=dpi)
    return path


def _panel(ax: Axes, front: Front, metric: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    on_front = {(c.trial, c.exit) for c in front.front}
    rest = [c for c in front.points if (c.trial, c.exit) not in on_front]
    if rest:  # empty groups would still get a legend entry
        ax.scatter(
            [c.value(metric) for c in rest],
            [100 * c.accuracy for c in rest],
            s=22,
            color="0.6",
            alpha=0.45,
            edgecolors="none",
            label=f"other trained {'candidates' if front.candidates else 'trials'}",
            zorder=1,
        )
    members = list(front.front)
    stair = set(pareto_front([(c.accuracy, c.value(metric)) for c in members], ["maximize", "minimize"]))
    steps = sorted((members[i] for i in stair), key=lambda c: (c.value(metric), -c.accuracy))
    ax.step(
        [c.value(metric) for c in steps],
        [100 * c.accuracy for c in steps],
        where="post",
        color=_FRONT_COLOR,
        lw=1.6,
        zorder=2,
    )
    for filled in (True, False):
        group = [c for i, c in enumerate(members) if (i in stair) == filled]
        if not group:
            continue
        ax.scatter(
            [c.value(metric) for c in group],
            [100 * c.accuracy for c in group],
            s=42,
            facecolors=_FRONT_COLOR if filled else "white",
            edgecolors=_FRONT_COLOR,
            linewidths=1.3,
            label="Pareto front" if filled else "front member (better on the other cost)",
            zorder=3,
        )
    # Past _MAX_LABELS members, labels would pile up: label only this panel's staircase (and the knee).
    labelled = members if len(members) <= _MAX_LABELS else [members[i] for i in stair] + [front.knee]
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
    xs = [c.value(metric) for c in front.points] or [1.0]
    limit, text = _budget_limit(front, metric)
    if limit is not None:
        ax.axvline(limit, ls="--", lw=1.3, color=_BUDGET_COLOR, label="budget limit", zorder=1)
        ax.annotate(
            text,
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
    lo, hi = max(min(xs), 1.0), max(xs)
    ax.set_xlim(lo / 1.35, hi * 1.35)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_size(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if metric == "macs":
        ax.set_xlabel("MACs per image, log scale (k = 10³, M = 10⁶; papers' FLOPs; torch FLOPs = 2 × MACs)")
    else:
        ax.set_xlabel("parameters of the deployed model, log scale (k = 10³, M = 10⁶)")
    ax.set_title(f"accuracy vs {_METRIC_LABEL[metric]}", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)


def _budget_limit(front: Front, metric: str) -> tuple[float | None, str]:
    """Budget limit to draw on a panel's axis; a FLOPs budget shows on the MACs axis at half."""
    if metric in front.budget:
        return front.budget[metric], f"budget {_METRIC_LABEL[metric]} ≤ {format_size(front.budget[metric])}"
    if metric == "macs" and "flops" in front.budget:
        flops = front.budget["flops"]
        return flops / 2, f"budget FLOPs ≤ {format_size(flops)} (= {format_size(flops / 2)} MACs)"
    return None, ""
