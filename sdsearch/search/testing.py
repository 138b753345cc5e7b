"""Stand-ins for training, for tests and benchmarks of the search machinery (as optuna.testing).

:class:`FakeFit` replaces the training inside a Ray trial: it reports epochs at a chosen pace with an
accuracy that is a deterministic function of the config, and can fail the ways real training fails
(an exception, a NaN loss, out of memory), so the trial's real failure handling is exercised.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdsearch.core.config import TrialConfig
from sdsearch.core.exits import candidate_name

__all__ = ["FakeEpoch", "FakeFit", "fake_accuracy"]


@dataclass(frozen=True)
class FakeEpoch:
    """The fields of ``sdsearch.training.fit.EpochReport`` that trials read."""

    epoch: int
    train_loss: float
    val_accuracy: dict[str, float]
    seconds: float
    precision: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


def fake_accuracy(cfg: TrialConfig, exit_name: str) -> float:
    """A smooth, deterministic accuracy: wider, deeper and later exits do better; lr has an optimum."""
    exits = cfg.model.exits
    depth_gap = len(exits) - 1 - exits.index(exit_name)
    b = cfg.model.backbone
    lr_penalty = 0.05 * abs(cfg.train.lr - 0.05) / 0.05
    return max(
        0.05, min(0.99, 0.55 + 0.25 * min(b.width, 1.0) + 0.04 * b.depth - 0.06 * depth_gap - lr_penalty)
    )


@dataclass(frozen=True)
class FakeFit:
    """Picklable ``fit_fn`` for :func:`sdsearch.search.runner.run`.

    Args:
        epoch_seconds: sleep per epoch (makes trials overlap or last long enough to be killed).
        failures: learning rate -> ``"raise"``, ``"nan"`` or ``"oom"``: configs with that lr fail so.
        rendezvous: a folder where each trial checks in and waits (up to ``rendezvous_timeout``
            seconds) until ``rendezvous_count`` trials are there, then writes ``met-<pid>``: proof
            that that many trials ran at the same time, whatever the start-up delays.
    """

    epoch_seconds: float = 0.0
    failures: Mapping[float, str] = field(default_factory=dict)
    rendezvous: str | None = None
    rendezvous_count: int = 2
    rendezvous_timeout: float = 60.0

    def __call__(
        self,
        cfg: TrialConfig,
        dataset: Any,
        *,
        threads: int | None,
        report: Callable[[Any], Any],
        checkpoint: str | None = None,
    ) -> None:
        if self.rendezvous:
            self._meet(Path(self.rendezvous))
        failure = self.failures.get(cfg.train.lr)
        for epoch in range(1, cfg.train.epochs + 1):
            time.sleep(self.epoch_seconds)
            if failure == "raise":
                raise RuntimeError("simulated bug in a trial")
            if failure == "oom":
                import torch

                raise torch.OutOfMemoryError("simulated: CUDA out of memory. Tried to allocate 2.00 GiB")
            if failure == "nan" and epoch == 2:
                from sdsearch.training.fit import TrainingDivergedError

                raise TrainingDivergedError("loss", epoch=epoch, step=7, lr=cfg.train.lr, value=float("nan"))
            accuracy = {
                name: fake_accuracy(at, e) * (0.7 + 0.3 * epoch / cfg.train.epochs)
                for name, at, e in _candidates(cfg)
            }
            stop = report(
                FakeEpoch(
                    epoch=epoch, train_loss=1.0 / epoch, val_accuracy=accuracy, seconds=self.epoch_seconds
                )
            )
            if stop is True:
                return
        if checkpoint:  # a stand-in for the trained weights, where a real trial leaves them
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            Path(checkpoint).write_bytes(b"fake weights")

    def _meet(self, folder: Path) -> None:
        me = f"{os.getpid()}-{time.time_ns()}"
        (folder / f"in-{me}").touch()
        deadline = time.time() + self.rendezvous_timeout
        while time.time() < deadline:
            if len(list(folder.glob("in-*"))) >= self.rendezvous_count:
                (folder / f"met-{me}").touch()
                return
            time.sleep(0.05)
        (folder / f"in-{me}").unlink()  # gave up: a later trial must not count this one as present


def _candidates(cfg: TrialConfig) -> list[tuple[str, TrialConfig, str]]:
    """(name, the config that deploys it, exit) of every candidate; an elastic config's every width."""
    if not cfg.elastic:
        return [(e, cfg, e) for e in cfg.model.exits]
    return [
        (candidate_name(e, m), cfg.at_width(m), e) for m in cfg.train.elastic_widths for e in cfg.model.exits
    ]
