"""The front as a picture: one panel per cost objective, accuracy against that cost on a log axis.

Each panel says which cost it shows and in which convention (from :mod:`sdsearch.core.metrics`).
matplotlib is imported by the functions, so ``sdsearch show`` without ``--plot`` starts fast, and
every figure is drawn on its own Agg canvas (no pyplot global state). :func:`front_figure` returns
the Figure (what tests inspect); :func:`plot_front` writes it as a PNG, whole or not at all.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdsearch.core.files import output_file, write_atomic
from sdsearch.core.metrics import METRICS, limit_of
from sdsearch.core.pareto import pareto_front
from sdsearch.results.front import Candidate, Front

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BUDGET_LABEL",
    "CANDIDATES_LABEL",
    "TRIALS_LABEL",
    "front_figure",
    "plot_anytime_of",
    "plot_front",
]

_FRONT_COLOR, _CANDIDATE_COLOR, _KNEE_COLOR, _BUDGET_COLOR = "#1f77b4", "#ff7f0e", "#d62728", "#444444"
#: Fronts larger than this get labels only on each panel's staircase, or the plot becomes unreadable.
_MAX_LABELS = 30
#: Legend labels of what a panel draws.
TRIALS_LABEL = "trials front (deployed exits)"
CANDIDATES_LABEL = "candidates front (every exit)"
BUDGET_LABEL = "budget limit"


def plot_front(front: Front, path: str | Path, *, dpi: int = 150) -> Path:
    """Write :func:`front_figure` as a PNG at ``path`` (``.png`` added when the name has no suffix).

    Returns:
        The path written.
    """
    path = output_file(path, key="plot", suffix=".png")  # before the (slow) drawing
    return _save_png(front_figure(front), path, dpi)


def front_figure(front: Front) -> Figure:
    """One panel per cost objective: accuracy against that cost, on a log x axis.

    Every trained candidate is faded grey; the trials front (deployed exits) is blue, the
    candidates front (every exit of every trial) orange, each a staircase over the members that are
    Pareto-optimal in that panel's two metrics (hollow markers are on a front thanks to another
    cost); the knee of the selected front is a red star; budget limits are dashed lines; exits of
    trials a scheduler stopped early are grey crosses.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    return fig


def _panel(ax: Axes, front: Front, metric: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    spec = METRICS.get(metric)
    on_a_front = {(c.trial, c.name) for c in (*front.trials_front, *front.candidates_front)}
    rest = [c for c in front.all_candidates if (c.trial, c.name) not in on_a_front and _finite(c, metric)]
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
        (front.candidates_front, _CANDIDATE_COLOR, "D", CANDIDATES_LABEL, "--"),
        (front.trials_front, _FRONT_COLOR, "o", TRIALS_LABEL, "-"),
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
            label=f"knee {knee.label}" if front.knee_note is None else f"no knee; most accurate {knee.label}",
            zorder=5,
        )
    xs = [c.value(metric) for c in (*front.points, *partial) if _finite(c, metric)] or [1.0]
    limit = limit_of(metric, front.budget)
    if limit is not None:
        ax.axvline(limit, ls="--", lw=1.3, color=_BUDGET_COLOR, label=BUDGET_LABEL, zorder=1)
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
    ax.set_xlabel(_axis_label(metric, front), fontsize=9, wrap=True)
    ax.set_title(f"accuracy vs {front.heading(metric)}", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)


def _axis_label(metric: str, front: Front) -> str:
    spec = METRICS.get(metric)
    units = {"count": "k = 10³, M = 10⁶", "bytes": "KiB = 2¹⁰ bytes", "ms": "milliseconds"}.get(spec.unit, "")
    extra = "; papers' FLOPs, torch FLOPs = 2 × MACs" if metric == "macs" else ""
    return f"{front.heading(metric)}, log scale ({units}{extra})"


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
