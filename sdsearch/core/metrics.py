"""The metrics a study can optimise, budget and show: the one table of their names, directions,
units and conventions.

Every table, plot label, budget parser and Optuna direction reads this table, so a new metric is one
entry here plus the code that measures it. Metrics *known before training* (params, MACs, peak
memory, size, latency) are costs of the deployed model: they can be budgeted, and over-budget
configs are rejected before they train. The others come out of training.

``flops`` is not stored: it is a unit of display and input (2 × MACs, torch's convention), so
a FLOPs budget or objective reads the stored MACs.

Example:
    >>> METRICS.get("peak_memory").unit, METRICS.get("accuracy").direction
    ('bytes', 'maximize')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sdsearch.core.registry import Registry
from sdsearch.core.units import Unit, format_value

__all__ = [
    "METRICS",
    "Metric",
    "budget_metrics",
    "cost_metrics",
    "describe_limits",
    "directions",
    "limit_of",
    "metric_value",
    "quality_metrics",
    "stored_limits",
]


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: the YAML name (``objectives``, ``budget``, ``--budget``).
        direction: ``maximize`` (a quality) or ``minimize`` (a cost).
        unit: how values are read and shown (:mod:`sdsearch.core.units`).
        label: short column and axis label.
        convention: what exactly is counted, for captions and axis labels.
        before_training: known from the config alone (so it can be budgeted).
        base: ``(stored metric, factor)`` for a metric that is a unit of another (flops = 2 × macs).
        anytime: only defined for ``deploy.exit: anytime``.
        per_dtype: depends on ``deploy.dtype`` (labels then name the dtype).
        fallback: the metric that stands in where this one was not measured: a single exit
            deployed on its own is the anytime policy whose every image leaves there, so its
            anytime accuracy is its accuracy and its expected MACs its MACs.
    """

    name: str
    direction: Literal["maximize", "minimize"]
    unit: Unit
    label: str
    convention: str
    before_training: bool
    base: tuple[str, float] | None = None
    anytime: bool = False
    per_dtype: bool = False
    fallback: str | None = None

    def describe(self, dtype: str | None = None) -> str:
        """``peak memory (int8, bytes): ...``: the label with its convention, for captions."""
        return f"{self.heading(dtype)}: {self.convention}"

    def heading(self, dtype: str | None = None) -> str:
        """``MACs``, ``peak memory (int8)``, ``latency (ms)``: a column or axis heading."""
        parts = [dtype] if self.per_dtype and dtype else []
        if self.unit == "ms":
            parts.append("ms")
        return f"{self.label} ({', '.join(parts)})" if parts else self.label

    def format(self, value: float | None) -> str:
        return "-" if value is None else format_value(value, self.unit)


METRICS: Registry[Metric] = Registry(
    "metric",
    {
        m.name: m
        for m in (
            Metric(
                "accuracy",
                "maximize",
                "fraction",
                "accuracy",
                "top-1 validation accuracy of the deployed exit (of the int8 model when deploy.quantize is int8)",
                before_training=False,
            ),
            Metric("params", "minimize", "count", "params", "parameters of the deployed model", True),
            Metric(
                "macs",
                "minimize",
                "count",
                "MACs",
                "multiply-accumulates of conv and linear layers per image (what papers often call FLOPs)",
                True,
            ),
            Metric(
                "flops", "minimize", "count", "FLOPs", "2 x MACs (torch's convention)", True, ("macs", 2.0)
            ),
            Metric(
                "peak_memory",
                "minimize",
                "bytes",
                "peak memory",
                "peak activation memory of one batch-1 inference (BatchNorm folded, activations fused; "
                "weights excluded), the peak SRAM of a microcontroller",
                True,
                per_dtype=True,
            ),
            Metric(
                "size",
                "minimize",
                "bytes",
                "size",
                "bytes of the deployed weights (int8: 1 byte a weight + a float32 scale and an int32 bias "
                "per output channel; float32: 4 bytes a parameter), the flash a microcontroller needs",
                True,
                per_dtype=True,
            ),
            Metric(
                "latency",
                "minimize",
                "ms",
                "latency",
                "median batch-1 inference time in ONNX Runtime on the CPU that ran the search "
                "(random weights: the graph sets the time)",
                True,
                per_dtype=True,
            ),
            Metric(
                "expected_macs",
                "minimize",
                "count",
                "expected MACs",
                "mean MACs per validation image with early exiting (every exit that ran counts; an exit "
                "deployed alone: its MACs)",
                False,
                anytime=True,
                fallback="macs",
            ),
            Metric(
                "anytime_accuracy",
                "maximize",
                "fraction",
                "anytime accuracy",
                "top-1 validation accuracy with early exiting at the calibrated thresholds",
                False,
                anytime=True,
                fallback="accuracy",
            ),
        )
    },
)


def quality_metrics() -> list[str]:
    """Metrics to maximise (accuracy and its anytime form)."""
    return [n for n in METRICS.names() if METRICS.get(n).direction == "maximize"]


def cost_metrics() -> list[str]:
    """Metrics to minimise."""
    return [n for n in METRICS.names() if METRICS.get(n).direction == "minimize"]


def budget_metrics() -> list[str]:
    """Metrics a budget may limit: costs known before training."""
    return [n for n in cost_metrics() if METRICS.get(n).before_training]


def directions(names: list[str] | tuple[str, ...]) -> list[str]:
    """Optuna directions for metric names."""
    return [METRICS.get(n).direction for n in names]


def metric_value(values: Mapping[str, Any], name: str) -> float | None:
    """The value of metric ``name`` from stored values (``flops`` from ``macs``); None when absent."""
    metric = METRICS.get(name)
    if metric.base is not None:
        base, factor = metric.base
        stored = values.get(base)
        return None if stored is None else float(stored) * factor
    stored = values.get(name)
    if stored is None and metric.fallback is not None:
        return metric_value(values, metric.fallback)
    return None if stored is None else float(stored)


def stored_limits(budget: Mapping[str, float]) -> dict[str, float]:
    """A budget in stored metrics (a FLOPs limit becomes a MACs limit); the tighter limit wins."""
    out: dict[str, float] = {}
    for name, limit in budget.items():
        metric = METRICS.get(name)
        stored, value = (
            (metric.base[0], float(limit) / metric.base[1]) if metric.base else (name, float(limit))
        )
        out[stored] = min(value, out.get(stored, value))
    return out


def limit_of(name: str, budget: Mapping[str, float]) -> float | None:
    """The limit a stored-metric budget puts on metric ``name`` (a MACs limit bounds FLOPs at 2x)."""
    return metric_value(budget, name)


def describe_limits(budget: Mapping[str, float]) -> str:
    """A budget in words with units, e.g. ``macs <= 2M, peak_memory <= 64 KiB`` (``none`` when empty)."""
    if not budget:
        return "none"
    return ", ".join(f"{m} <= {METRICS.get(m).format(v)}" for m, v in budget.items())
