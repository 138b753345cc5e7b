"""Views of a stored anytime report (:func:`~sdsearch.anytime.policy.anytime_report`): a plot and a table.

Both read only the report dict, so ``sdsearch show --anytime TRIAL`` needs no network, no data and
no torch. matplotlib is imported inside :func:`plot_anytime`, and the figure is drawn on its own Agg
canvas (no pyplot global state), as in :mod:`sdsearch.results.plot`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.table import Table

from sdsearch.core.units import format_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MACS_LABEL", "anytime_table", "plot_anytime"]

#: The x axis of every anytime plot: what a MAC is, and the FLOPs conventions it maps to.
MACS_LABEL = "expected MACs per image (multiply-accumulates; papers' FLOPs; torch FLOPs = 2 × MACs)"


def format_size(value: float) -> str:
    """A MAC count as the rest of sdsearch shows counts: ``1.23M``."""
    return format_value(value, "count")


_CURVE, _STATIC, _CHOSEN, _TEST, _LIMIT = "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#444444"


def plot_anytime(report: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """Accuracy against expected MACs for one trained network, on one matplotlib Figure.

    Drawn: the shared-threshold sweep (validation) as a curve from exit 1 alone to every exit
    running; each exit's static deploy model as a labelled point (its deploy MACs, its validation
    accuracy); the chosen operating point (validation) as a star, and the same thresholds on the
    test split as a hollow star when the report has them; the target (accuracy floor or MACs
    budget) dashed and the worst case, every exit running, dotted.

    Args:
        report: an :func:`~sdsearch.anytime.policy.anytime_report` dict (metrics.json ``anytime``).
        title: the figure title; default names the thresholds and the method.

    Returns:
        The Figure, on an Agg canvas: ``fig.savefig("anytime.png", dpi=150)`` writes it.

    Example:
        >>> plot_anytime(json.load(open("runs/best/metrics.json"))["anytime"]).savefig("anytime.png")  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    exits = list(report["exits"])
    macs, val, test = report["macs"], report["val"], report.get("test")
    fig = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    sweep = sorted(report["sweep"], key=lambda p: (p[2], -p[1]))
    ax.plot([p[2] for p in sweep], [100 * p[1] for p in sweep], "-", marker=".", ms=3.5, lw=1.4,
            color=_CURVE, label="one shared threshold, swept (validation)", zorder=2)  # fmt: skip
    static = [(macs["deploy"][e], 100 * val["exit_accuracy"][e]) for e in exits]
    ax.scatter(*zip(*static, strict=True), s=48, marker="s", color=_STATIC, zorder=3,
               label="static exits: deploy model alone (validation)")  # fmt: skip
    for e, (x, y) in zip(exits, static, strict=True):
        ax.annotate(
            f"exit {e}", (x, y), xytext=(6, -4), textcoords="offset points", fontsize=8.5, color="#1b5e20"
        )
    ax.scatter([val["expected_macs"]], [100 * val["accuracy"]], marker="*", s=280, color=_CHOSEN,
               edgecolors="black", linewidths=0.6, zorder=5,
               label=f"chosen thresholds ({report['method'].replace('_', '-')}), validation")  # fmt: skip
    if test is not None:
        ax.scatter([test["expected_macs"]], [100 * test["accuracy"]], marker="*", s=200, facecolors="white",
                   edgecolors=_TEST, linewidths=1.4, zorder=5, label="same thresholds, test split")  # fmt: skip
    worst = macs["worst_case"]
    ax.axvline(worst, ls=":", lw=1.3, color=_LIMIT, zorder=1,
               label=f"worst case, every exit runs: {format_size(worst)} MACs")  # fmt: skip
    target = report["target"]
    if "accuracy_drop" in target:
        floor = 100 * (val["deepest_accuracy"] - target["accuracy_drop"])
        ax.axhline(floor, ls="--", lw=1.2, color=_CHOSEN, alpha=0.7, zorder=1,
                   label=f"target: final exit − {100 * target['accuracy_drop']:g} points")  # fmt: skip
    else:
        ax.axvline(target["expected_macs"], ls="--", lw=1.2, color=_CHOSEN, alpha=0.7, zorder=1,
                   label=f"target: ≤ {format_size(target['expected_macs'])} expected MACs")  # fmt: skip
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_size(v)))
    ax.set_xlabel(MACS_LABEL)
    ax.set_ylabel("top-1 accuracy (%), validation split unless marked test")
    ax.grid(True, alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    if title is None:
        shown = ", ".join(f"{e}: {t:.4g}" for e, t in report["thresholds"].items()) or "none"
        title = (f"anytime inference: thresholds {shown}; "
                 f"{format_size(val['expected_macs'])} expected MACs, {100 * val['accuracy']:.2f}% (validation)")  # fmt: skip
    ax.set_title(title, fontsize=10)
    return fig


def anytime_table(report: Mapping[str, Any]) -> Table:
    """One row per exit: threshold, static accuracy and MACs, MACs when leaving there, shares."""
    exits, macs, val, test = report["exits"], report["macs"], report["val"], report.get("test")
    table = Table(
        title=f"anytime: {report['method'].replace('_', '-')} thresholds for {_describe_target(report['target'])}"
        + ("" if report["met"] else " (NOT met)"),
        caption="MACs = multiply-accumulates (papers often call them FLOPs); leaving at an exit also pays "
        "every shallower exit's branch and head",
    )
    for column in ("exit", "threshold", "val acc (alone)", "deploy MACs", "MACs if leaving here",
                   "val share", *(["test share"] if test else [])):  # fmt: skip
        table.add_column(column, justify="right")
    for e in exits:
        threshold = report["thresholds"].get(e)
        table.add_row(
            e,
            "-" if threshold is None else f"{threshold:.6g}",
            f"{100 * val['exit_accuracy'][e]:.2f}%",
            format_size(macs["deploy"][e]),
            format_size(macs["leave"][e]),
            f"{100 * val['exit_share'][e]:.1f}%",
            *([f"{100 * test['exit_share'][e]:.1f}%"] if test else []),
        )
    rows = [("validation", val), *([("test", test)] if test else [])]
    table.add_section()
    for name, out in rows:
        table.add_row(
            name,
            "",
            f"{100 * out['accuracy']:.2f}%",
            "",
            f"{format_size(out['expected_macs'])} expected",
            "",
            *([""] if test else []),
        )
    return table


def _describe_target(target: Mapping[str, float]) -> str:
    if "accuracy_drop" in target:
        return f"accuracy_drop {100 * target['accuracy_drop']:g} points"
    return f"expected_macs {format_size(target['expected_macs'])}"
