"""The metrics a study can optimise, budget and show: the one table of their names, directions,
units and conventions.

Every table, plot label, budget parser and Optuna direction reads this table, so a new metric is one
entry here plus the code that measures it. Metrics *known before training* (params, MACs, peak
memory, size, latency) are costs of the deployed model: they can be budgeted, and over-budget
configs are rejected before they train. The others come out of training.

``flops`` is not stored: it is a unit of display and input (2 × MACs, torch's convention), so
a FLOPs budget or objective reads the stored MACs.

Some stored metrics changed meaning over time (at int8, ``peak_memory`` was a liveness count of
activations before it was TFLite Micro's arena). :func:`conventions` names what each one counts today,
as a short id a study is stamped with; a study stored under other ids is never resumed (its front would
mix two meanings), and its figures are shown under the label of the convention they were stored in.

Example:
    >>> METRICS.get("peak_memory").unit, METRICS.get("accuracy").direction
    ('bytes', 'maximize')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sdsearch.core.platforms import DEFAULT_PLATFORM
from sdsearch.core.registry import Registry
from sdsearch.core.units import DTYPE_BYTES, Unit, format_value

__all__ = [
    "METRICS",
    "Metric",
    "budget_metrics",
    "changed_conventions",
    "conventions",
    "cost_metrics",
    "current_convention",
    "describe_changes",
    "describe_limits",
    "directions",
    "legacy_conventions",
    "limit_of",
    "metric_value",
    "quality_metrics",
    "stored_conventions",
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
        convention: what exactly is counted, for captions and axis labels (for a metric with
            ``versions``, in words that hold for every version).
        before_training: known from the config alone (so it can be budgeted).
        base: ``(stored metric, factor)`` for a metric that is a unit of another (flops = 2 × macs).
        anytime: only defined for ``deploy.exit: anytime``.
        per_dtype: depends on ``deploy.dtype`` (labels then name the dtype).
        fallback: the metric that stands in where this one was not measured: a single exit
            deployed on its own is the anytime policy whose every image leaves there, so its
            anytime accuracy is its accuracy and its expected MACs its MACs.
        versions: for a metric whose meaning changed (:func:`conventions`), what each convention id
            counts, keyed by the id's part before ``:``; ``{bytes}`` is the dtype's element size,
            ``{platform}`` the id's part after ``:`` (``deploy.platform`` when none is given).
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
    versions: Mapping[str, str] = field(default_factory=dict)

    def describe(self, dtype: str | None = None, convention: str | None = None) -> str:
        """``peak memory (int8): ...``: the heading with what is counted, for captions.

        ``convention`` is the id a study's figures were stored under (None: today's); an older one
        says so, so figures of two meanings are never read as one.
        """
        text = f"{self.heading(dtype, convention)}: {self._counts(dtype, convention)}"
        if self._older(dtype, convention) is None:
            return text
        today = _family(current_convention(self.name, str(dtype)) or "")
        return f"{text} (an older convention: studies started now count {today})"

    def heading(self, dtype: str | None = None, convention: str | None = None) -> str:
        """``MACs``, ``peak memory (int8)``, ``latency (ms)``: a column or axis heading; figures of
        an older convention name it, ``peak memory (int8, liveness)``."""
        parts = [dtype] if self.per_dtype and dtype else []
        if (older := self._older(dtype, convention)) is not None:
            parts.append(older)
        if self.unit == "ms":
            parts.append("ms")
        return f"{self.label} ({', '.join(parts)})" if parts else self.label

    def _older(self, dtype: str | None, convention: str | None) -> str | None:
        """The meaning (``liveness``) of figures stored under ``convention`` when it is not today's at
        ``dtype``, else None. Another platform (after ``:``) is another space, not an older meaning."""
        current = current_convention(self.name, dtype) if dtype and convention else None
        if current is None or convention is None or _family(convention) == _family(current):
            return None
        return _family(convention)

    def _counts(self, dtype: str | None, convention: str | None) -> str:
        if not self.versions or dtype is None:
            return self.convention
        convention = convention or _family(current_convention(self.name, dtype) or "")
        family, _, platform = convention.partition(":")
        text = self.versions.get(family, f"counted as {convention}")
        return text.format(bytes=DTYPE_BYTES.get(dtype, "?"), platform=platform or "deploy.platform")

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
                "the peak SRAM of one batch-1 inference at deploy.dtype",
                True,
                per_dtype=True,
                versions={
                    "liveness": "peak activation memory of one batch-1 inference by liveness, {bytes}-byte "
                    "elements (BatchNorm folded, activations fused; weights excluded)",
                    "tflm-arena": "TFLite Micro arena of one batch-1 inference: planned tensors and "
                    "scratch + persistent structs, for {platform}",
                },
            ),
            Metric(
                "size",
                "minimize",
                "bytes",
                "size",
                "bytes of the deployed model at deploy.dtype, the flash a microcontroller needs",
                True,
                per_dtype=True,
                versions={
                    "tflite-bytes": "bytes of the int8 .tflite file, the flash a microcontroller needs",
                    "int8-weights": "bytes of the int8 weights: 1 byte a weight + a float32 scale and an "
                    "int32 bias per output channel",
                    "float32-params": "bytes of the float32 weights: 4 bytes a parameter, the flash a "
                    "microcontroller needs",
                },
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


# -- conventions: what a stored metric means, with versions ---------------------------------------

#: Per stored metric whose meaning has changed: per ``deploy.dtype``, the convention id of studies
#: stamped before the metric appeared here (legacy) and today's. ``{platform}`` becomes
#: ``deploy.platform``. A new meaning is one line here plus its words in the metric's ``versions``.
#: ``loss`` is no metric: it versions what every stored accuracy was trained under.
_VERSIONS: dict[str, dict[str, tuple[str, str]]] = {
    "peak_memory": {"int8": ("liveness", "tflm-arena:{platform}"), "float32": ("liveness", "liveness")},
    "size": {"int8": ("int8-weights", "tflite-bytes"), "float32": ("float32-params", "float32-params")},
    # Not a metric: the loss and modules every trial's accuracy was trained under (LOSS_CHANGES).
    "loss": dict.fromkeys(DTYPE_BYTES, ("sdsearch-0.2", "papers-1")),
}

#: What the ``loss`` convention ``papers-1`` changed from ``sdsearch-0.2``, in words for messages.
LOSS_CHANGES = (
    "KD without T² unless loss.kd_t2, CBFE hidden width C/r (was at least 8), "
    "sd branches with two depthwise-pointwise pairs per SepConv"
)


def _family(convention: str) -> str:
    """``tflm-arena`` of ``tflm-arena:cortex-m``: the meaning, without the platform it is for."""
    return convention.partition(":")[0]


def current_convention(metric: str, dtype: str, platform: str = DEFAULT_PLATFORM) -> str | None:
    """Today's convention id of ``metric`` at ``dtype`` (None: its meaning never changed)."""
    pair = _VERSIONS.get(metric, {}).get(dtype)
    return None if pair is None else pair[1].format(platform=platform)


def conventions(dtype: str, platform: str = DEFAULT_PLATFORM) -> dict[str, str]:
    """What each versioned stored metric counts today, e.g. at int8 ``{"peak_memory":
    "tflm-arena:cortex-m", "size": "tflite-bytes"}``: the stamp of a study started now."""
    return {m: c for m in _VERSIONS if (c := current_convention(m, dtype, platform)) is not None}


def legacy_conventions(dtype: str) -> dict[str, str]:
    """What a study stored without a stamp (or without a metric in its stamp) counted."""
    return {m: by_dtype[dtype][0] for m, by_dtype in _VERSIONS.items() if dtype in by_dtype}


def stored_conventions(stamp: Mapping[str, str] | None, dtype: str) -> dict[str, str]:
    """A study's conventions from its stamp: a metric the stamp lacks is legacy."""
    return {**legacy_conventions(dtype), **(stamp or {})}


def changed_conventions(stored: Mapping[str, str], current: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{metric: (stored id, current id)}`` for every metric whose convention differs."""
    return {m: (stored[m], c) for m, c in current.items() if m in stored and stored[m] != c}


def describe_changes(changes: Mapping[str, tuple[str, str]]) -> str:
    """``peak_memory: liveness -> tflm-arena:cortex-m; size: int8-weights -> tflite-bytes``."""
    return "; ".join(
        f"{m}: {old} -> {new}" + (f" ({LOSS_CHANGES})" if m == "loss" else "")
        for m, (old, new) in changes.items()
    )
