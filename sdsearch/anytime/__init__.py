"""Anytime inference: one multi-exit model that stops early on easy inputs.

A self-distilled network has several trained exits. Deployed as an anytime model it runs the
cheapest exit first and stops as soon as an exit is confident (BranchyNet, Teerapittayanon et al.,
ICPR 2016, https://arxiv.org/abs/1709.01686), so the mean cost per image falls well below the
deepest exit's while accuracy stays close. The pieces, in the order a deployment uses them:

- :func:`exit_statistics`: every exit's confidence and correctness on a split, one batched pass.
- :func:`anytime_cost`: MACs of each trunk segment and each exit's branch + head;
  :func:`anytime_worst_case_cost`: every metric of the model with every exit running, from a config.
- :func:`anytime_outcome`: accuracy, expected MACs and exit shares of a threshold vector.
- :func:`sweep` and :func:`calibrate`: thresholds for ``{accuracy_drop: d}`` or ``{expected_macs: m}``
  on the validation split.
- :class:`AnytimeModel`: the deployable module; :func:`save_anytime_onnx` exports it.
- :func:`anytime_report`, :func:`plot_anytime`, :func:`anytime_table`: what metrics.json stores
  and how ``show`` draws it.

Example:
    >>> from sdsearch import anytime
    >>> stats = anytime.exit_statistics(net, data.x_val, data.y_val, mean=data.mean, std=data.std)  # doctest: +SKIP
    >>> cost = anytime.anytime_cost(net, input_shape=(1, 8, 8))                                     # doctest: +SKIP
    >>> cal = anytime.calibrate(stats, cost, accuracy_drop=0.005)                                    # doctest: +SKIP
    >>> model = anytime.AnytimeModel(net, cal.thresholds).eval()                                     # doctest: +SKIP
"""

from __future__ import annotations

from sdsearch.anytime.export import read_anytime_metadata, run_anytime_onnx, save_anytime_onnx
from sdsearch.anytime.model import (
    AnytimeModel,
    WorstCase,
    anytime_cost,
    anytime_worst_case_cost,
    calibrate_network,
    exit_confidence,
    exit_statistics,
)
from sdsearch.anytime.policy import (
    ANYTIME_FORMAT,
    AnytimeCost,
    AnytimeOutcome,
    Calibration,
    ExitStats,
    anytime_outcome,
    anytime_report,
    calibrate,
    exit_indices,
    sweep,
)
from sdsearch.anytime.view import anytime_table, plot_anytime

__all__ = [
    "ANYTIME_FORMAT",
    "AnytimeCost",
    "AnytimeModel",
    "AnytimeOutcome",
    "Calibration",
    "ExitStats",
    "WorstCase",
    "anytime_cost",
    "anytime_outcome",
    "anytime_report",
    "anytime_table",
    "anytime_worst_case_cost",
    "calibrate",
    "calibrate_network",
    "exit_confidence",
    "exit_indices",
    "exit_statistics",
    "plot_anytime",
    "read_anytime_metadata",
    "run_anytime_onnx",
    "save_anytime_onnx",
    "sweep",
]
