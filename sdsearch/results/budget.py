"""Budgets a user gives after the search (``show --budget``, ``export --budget``, ``load_front(budget=)``):
one parser, one message per mistake, and the study budget they tighten.

Limits are read in the metric's unit (:mod:`sdsearch.core.units`: ``1M``, ``64KiB``, ``5ms``) and
kept in stored metrics (a FLOPs limit becomes a MACs limit). Errors name the key ``budget``; the
CLI shows them against ``--budget``.

Example:
    >>> parse_budget_items(["macs=1M", "peak_memory=64KiB"])
    {'macs': '1M', 'peak_memory': '64KiB'}
    >>> effective_budget({"macs": 2e6}, {"macs": "1M"})
    {'macs': 1000000.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sdsearch.core.errors import ConfigError
from sdsearch.core.metrics import METRICS, budget_metrics, stored_limits
from sdsearch.core.units import parse

__all__ = ["effective_budget", "parse_budget_items", "parse_limits"]

_EXAMPLES = "e.g. macs=1M, peak_memory=64KiB, latency=5ms"


def parse_limits(extra: Mapping[str, Any] | None) -> dict[str, float]:
    """Budget limits given by a user (metric -> number or string with its unit) in stored metrics.

    Raises:
        ConfigError: (key ``budget``) an unknown metric, or a limit that is not a positive value in
            the metric's unit.
    """
    parsed: dict[str, float] = {}
    for metric, raw in (extra or {}).items():
        if metric not in budget_metrics():
            raise ConfigError(
                f"unknown metric {metric!r}; a budget limits one of {', '.join(budget_metrics())} ({_EXAMPLES})",
                key="budget",
            )
        try:
            limit = parse(raw, METRICS.get(metric).unit)
        except ValueError as exc:
            raise ConfigError(f"{metric}: {exc}", key="budget") from None
        if not limit > 0:
            raise ConfigError(f"{metric}: a limit must be positive, got {raw!r}", key="budget")
        parsed[metric] = limit
    return stored_limits(parsed)


def parse_budget_items(items: Iterable[str]) -> dict[str, str]:
    """``["macs=1M", "peak_memory=64KiB"]`` (the CLI's repeated ``--budget``) as ``{metric: value}``,
    checked by :func:`parse_limits` so a bad limit is refused before any storage is read.

    Raises:
        ConfigError: (key ``budget``) an item that is not ``METRIC=VALUE``, or what :func:`parse_limits` refuses.
    """
    limits: dict[str, str] = {}
    for item in items:
        metric, sep, value = str(item).partition("=")
        if not sep or not value.strip():
            raise ConfigError(
                f"{item!r} is not METRIC=VALUE with METRIC one of {', '.join(budget_metrics())} ({_EXAMPLES})",
                key="budget",
            )
        limits[metric.strip()] = value.strip()
    parse_limits(limits)
    return limits


def effective_budget(study: Mapping[str, float], extra: Mapping[str, Any] | None) -> dict[str, float]:
    """The study budget tightened by ``extra`` (metric -> number or string with its unit, ``"1M"``,
    ``"64KiB"``, ``"5ms"``), in stored metrics (a FLOPs limit tightens MACs).

    A limit looser than the study's has no effect: configs over the study budget were never trained.

    Raises:
        ConfigError: (key ``budget``) an unknown metric, or a limit that is not a positive value in
            the metric's unit.
    """
    limits = {m: float(v) for m, v in study.items()}
    for metric, limit in parse_limits(extra).items():
        limits[metric] = min(limit, limits.get(metric, math.inf))
    return limits
