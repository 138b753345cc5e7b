"""Every deploy metric known before training, for every exit of a config: what a budget can limit.

The analytic metrics (params, MACs, peak memory, size) come from one traced forward per exit on the
meta device (:mod:`sdsearch.cost.trace`, milliseconds, cached per config); ``latency`` is measured in ONNX
Runtime on a random-weight network (:mod:`sdsearch.cost.latency`), once per distinct model, and only
when asked for. Values are in stored units: counts, bytes at ``deploy.dtype``, milliseconds.

Example:
    >>> config = TrialConfig(model=ModelConfig(backbone=BackboneConfig(width=0.25, depth=1)))
    >>> DeployMetrics(DataShape(1, 8, 8, 10))(config)["final"]   # int8, cortex-m  # doctest: +SKIP
    {'params': 308538.0, 'macs': 993536.0, 'peak_memory': 15184.0, 'size': 333980.0}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sdsearch.core.config import TrialConfig
from sdsearch.core.exits import ANYTIME, candidate_name
from sdsearch.core.metrics import METRICS

if TYPE_CHECKING:
    from sdsearch.data.datasets import DataShape

__all__ = ["DeployMetrics", "config_metrics", "cost_values"]


def cost_values(cost: Any) -> dict[str, float]:
    """A :class:`~sdsearch.cost.trace.Cost` as ``{metric: value}`` for the stored metrics it holds."""
    names = [m for m in METRICS.names() if METRICS.get(m).before_training and METRICS.get(m).base is None]
    return {m: float(getattr(cost, m)) for m in names if getattr(cost, m, None) is not None}


class DeployMetrics:
    """config -> exit -> metric -> value; a module-level callable, so Ray can pickle it.

    Args:
        shape: the dataset's input shape and class count.
        latency: also measure ``latency`` (seconds per config, so only when a study uses it).
    """

    def __init__(self, shape: DataShape, *, latency: bool = False) -> None:
        self.shape = shape
        self.latency = latency
        self._latency_ms: dict[Any, float] = {}

    def __call__(self, config: TrialConfig) -> dict[str, dict[str, float]]:
        """Costs of every exit; for an elastic config, of every (width, exit) candidate ``EXIT@m`` of
        its distinct widths (each the plain config at that width, :meth:`TrialConfig.at_width`)."""
        if not config.elastic:
            return self._exits(config)
        from sdsearch.nn.elastic import distinct_widths

        s = self.shape
        widths = distinct_widths(config.model, config.train.elastic_widths, num_classes=s.num_classes,
                                 in_chans=s.in_chans, input_size=s.input_size)  # fmt: skip
        return {
            candidate_name(e, m): cost
            for m in dict.fromkeys(widths.values())
            for e, cost in self._exits(config.at_width(m)).items()
        }

    def _exits(self, config: TrialConfig) -> dict[str, dict[str, float]]:
        from sdsearch.cost.trace import exit_costs

        s = self.shape
        costs = exit_costs(
            config.model,
            num_classes=s.num_classes,
            in_chans=s.in_chans,
            input_size=s.input_size,
            dtype=config.deploy.dtype,
            platform=config.deploy.platform,
        )
        out = {name: cost_values(cost) for name, cost in costs.items()}
        if config.deploy.exit == ANYTIME:  # every exit in one model: budgets bound its worst case
            from sdsearch.cost.worst_case import every_exit_cost

            out[ANYTIME] = cost_values(
                every_exit_cost(
                    config.model,
                    num_classes=s.num_classes,
                    in_chans=s.in_chans,
                    input_size=s.input_size,
                    dtype=config.deploy.dtype,
                    platform=config.deploy.platform,
                )
            )
        if self.latency:
            for name, latency in self._latencies(config).items():
                out[name]["latency"] = latency
        return out

    def _key(self, config: TrialConfig, exit_name: str) -> Any:
        return (config.model, config.deploy.dtype, config.deploy.latency, exit_name)

    def _latencies(self, config: TrialConfig) -> dict[str, float]:
        """Latency of every exit, measured once per distinct model (one random-weight network each)."""
        keys = {e: self._key(config, e) for e in config.model.exits}
        missing = [e for e, k in keys.items() if k not in self._latency_ms]
        if missing:
            import torch

            from sdsearch.cost.latency import measure_latency
            from sdsearch.nn.network import SelfDistillNet

            s, timing = self.shape, config.deploy.latency
            with torch.random.fork_rng():  # random weights: the graph sets the time, not the weights
                net = SelfDistillNet(
                    config.model, num_classes=s.num_classes, in_chans=s.in_chans, input_size=s.input_size
                )
            for e in missing:
                self._latency_ms[keys[e]] = measure_latency(
                    net.deploy(e).eval(),
                    (s.in_chans, *s.input_size),
                    threads=timing.threads,
                    repeats=timing.repeats,
                    warmup=timing.warmup,
                    dtype=config.deploy.dtype,
                )
        return {e: self._latency_ms[k] for e, k in keys.items()}

    def remember(self, config: TrialConfig, candidates: list[Mapping[str, Any]]) -> None:
        """Reuse latencies an earlier run of the study measured (the same model times the same)."""
        for c in candidates:
            if c.get("latency") is not None:
                at = config.at_width(float(c["width"])) if c.get("width") is not None else config
                self._latency_ms.setdefault(self._key(at, str(c["exit"])), float(c["latency"]))


def config_metrics(
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    dtype: str | None = None,
    platform: str | None = None,
    latency: bool = True,
) -> dict[str, dict[str, float]]:
    """Every deploy metric of every exit of the model in a trainer config file (``sdsearch cost``).

    Args:
        path: trainer config YAML (a space with every value fixed).
        input_shape: ``(C, H, W)``; default: the shape of the config's dataset.
        num_classes: default: the class count of the config's dataset.
        dtype: the deployment's element type; default: the config's ``deploy.dtype``.
        platform: the microcontroller of the int8 figures; default: the config's ``deploy.platform``.
        latency: also measure ``latency`` with the config's ``deploy.latency`` settings.

    Raises:
        SpaceError: the file is not a valid trainer config.
        DataError: the dataset must be inspected for its shape but cannot be read.
    """
    from sdsearch.data.datasets import DataShape, describe
    from sdsearch.space.load import load_trial_config

    config = load_trial_config(path)
    if dtype is not None or platform is not None:
        config = config.replace(deploy=config.deploy.replace(dtype=dtype or config.deploy.dtype,
                                                             platform=platform or config.deploy.platform))  # fmt: skip
    if input_shape is None or num_classes is None:
        shape = describe(config.data)
        input_shape = input_shape or (shape.in_chans, shape.height, shape.width)
        num_classes = num_classes or shape.num_classes
    c, h, w = input_shape
    return DeployMetrics(DataShape(c, h, w, num_classes), latency=latency)(config)
