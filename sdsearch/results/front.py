"""Pareto fronts of a stored study: over trials and over (trial, exit) candidates.

Everything here works on frozen records (``FrozenTrial``, :class:`Candidate`), never on a live
study, so ``show`` and ``export`` can read a study while a driver is still writing to it, and it is
testable without Optuna. :mod:`sdsearch.results.read` reads a storage into a :class:`StudyRecord`;
the Pareto maths is :mod:`sdsearch.core.pareto`'s.

Two fronts, one rule each (docs/ARCHITECTURE.md):

* **trials front**: Pareto set of the *feasible, trained* trials (state COMPLETE, not rejected,
  every stored constraint <= 0, inside the optional tighter budget), each represented by its
  deployed exit, whose values are Optuna's values.
* **candidates front**: Pareto set of every (trial, exit) of every trained trial whose *own* cost
  fits the budget. A shallow exit of a trial whose deployed exit broke the budget can fit it, so it
  is included: every exit is a deployable model.

Budget-rejected trials are never on a front; they are only counted. Trials a scheduler stopped
(PRUNED) are not either: their exits are *partial* candidates, measured at a rung, kept apart.

Example:
    >>> front = build_front(record, budget={"macs": "1M"})  # doctest: +SKIP
    >>> front.knee.trial, front.knee.exit, front.hypervolume  # doctest: +SKIP
    (12, 'final', 0.41)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sdsearch.core.errors import ConfigError, StudyError
from sdsearch.core.exits import FINAL, candidate_name, exit_order, split_candidate
from sdsearch.core.metrics import METRICS, describe_limits, limit_of, metric_value, quality_metrics
from sdsearch.core.pareto import Knee, find_knee, hypervolume, pareto_front
from sdsearch.results.budget import effective_budget
from sdsearch.store import attrs

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "Candidate",
    "Counts",
    "Front",
    "StudyRecord",
    "build_front",
    "is_trained",
    "reference_point",
    "trial_candidates",
]

#: Accuracy is a fraction in [0, 1]; its ideal value bounds the hypervolume box.
_ACCURACY_IDEAL = 1.0
#: Without a budget limit, a cost metric's reference is this factor times its worst observed value.
_NO_BUDGET_REFERENCE_FACTOR = 1.1
_NO_FEASIBLE = (
    "{study}: no feasible trial yet{why} ({counts}); run more trials with `sdsearch run`, "
    "loosen the budget, or look at every exit with --candidates"
)


@dataclass(frozen=True)
class Candidate:
    """One deployable model: a trial's exit with its validation accuracy and deploy costs.

    ``deployed`` is true for the exit the trial deployed (whose values Optuna stores); other exits
    come from the trial's ``candidates`` user attr. ``metrics`` holds every stored metric (accuracy,
    params, MACs, peak memory, size, latency when measured, ...) in stored units. ``config`` is the
    trial's ``TrialConfig.to_dict()`` with the *trial's* deployed exit (export sets the candidate's
    own). ``partial`` marks an exit of a trial a scheduler stopped at epoch ``epoch``. ``width`` is
    the multiplier of ``backbone.width`` of an elastic trial's candidate (None otherwise).
    """

    trial: int
    exit: str
    metrics: dict[str, float] = field(compare=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    deployed: bool = True
    partial: bool = False
    epoch: int | None = None
    width: float | None = None

    @property
    def name(self) -> str:
        """The candidate within its trial: the exit, ``EXIT@multiplier`` for a width of an elastic trial."""
        return candidate_name(self.exit, self.width)

    def value(self, metric: str) -> float:
        """The value of a metric (``flops`` from the stored MACs); NaN where it was not measured."""
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRICS.names())}")
        value = metric_value(self.metrics, metric)
        return math.nan if value is None else value

    def values(self, metrics: Sequence[str]) -> tuple[float, ...]:
        """Values in the order of ``metrics`` (e.g. the study's objectives)."""
        return tuple(self.value(m) for m in metrics)

    @property
    def accuracy(self) -> float:
        return self.value("accuracy")

    @property
    def params(self) -> float:
        return self.value("params")

    @property
    def macs(self) -> float:
        return self.value("macs")

    @property
    def label(self) -> str:
        """``#12`` for a trial's deployed exit, ``#12(2)`` for another exit: short enough for plots."""
        return f"#{self.trial}" if self.deployed else f"#{self.trial}({self.name})"


@dataclass(frozen=True)
class Counts:
    """How many trials of a study are in each state; each trial is counted once.

    Rejected trials (any state), duplicates (told another trial's result) and interrupted ones (FAIL,
    re-enqueued) are counted apart, exactly as
    ``sdsearch studies`` counts them; ``feasible`` is the part of ``complete`` inside the budget.
    """

    complete: int = 0
    feasible: int = 0
    rejected: int = 0
    duplicate: int = 0
    failed: int = 0
    pruned: int = 0
    interrupted: int = 0
    running: int = 0
    waiting: int = 0

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial], *, n_feasible: int) -> Counts:
        counts = attrs.count(trials)
        return cls(feasible=n_feasible, **{o.value: counts[o.value] for o in attrs.Outcome})

    def __str__(self) -> str:
        parts = [
            f"{self.complete} complete ({self.feasible} feasible)",
            f"{self.rejected} rejected",
            f"{self.failed} failed",
            f"{self.pruned} pruned",
            f"{self.running} running",
        ]
        if self.interrupted:
            parts.insert(-1, f"{self.interrupted} interrupted")
        if self.duplicate:
            parts.insert(2, f"{self.duplicate} duplicate")
        if self.waiting:
            parts.append(f"{self.waiting} waiting")
        return ", ".join(parts)


@dataclass(frozen=True)
class StudyRecord:
    """A frozen snapshot of a stored sdsearch study: what :func:`build_front` and export need.

    ``storage`` is the URL with any password masked; ``budget`` the study's own limits;
    ``conventions`` what its versioned metrics count (:func:`~sdsearch.core.metrics.stored_conventions`).
    """

    study_name: str
    storage: str
    objectives: tuple[str, ...]
    budget: dict[str, float]
    spec: dict[str, Any]
    trials: tuple[FrozenTrial, ...]
    dtype: str = "int8"
    conventions: Mapping[str, str] = field(default_factory=dict)
    #: The study's folder of trained trials' weights (``store.attrs.ARTIFACTS``); None for older studies.
    artifacts: str | None = None

    def trained(self) -> list[FrozenTrial]:
        """Trials eligible for a front: trained to their full budget (COMPLETE, not rejected)."""
        return [t for t in self.trials if is_trained(t)]

    def searched(self) -> tuple[str, ...]:
        """Leaves the study's space searched (held a distribution), from its stored spec."""
        space = (self.spec.get("study_spec") or {}).get("space") or {}
        return tuple(k for k, v in space.items() if isinstance(v, dict))

    def stopped(self) -> list[FrozenTrial]:
        """Trials a scheduler stopped at a rung (PRUNED): their exits are partial candidates."""
        return [t for t in self.trials if attrs.outcome(t) is attrs.Outcome.PRUNED]


@dataclass(frozen=True)
class Front:
    """The fronts of one study, a snapshot; ``candidates`` selects which one :attr:`front` is.

    Invariants: every member of a front fits :attr:`budget` (the study budget, tightened by the
    caller's); fronts are sorted by the first cost objective ascending, then accuracy descending,
    so they read as a trade-off from cheapest to most accurate.

    Attributes:
        study_name: the study's name.
        storage: storage URL, password masked.
        objectives: the study's objectives, e.g. ``("accuracy", "params", "macs")``.
        budget: effective limits, metric -> number (study budget, tightened by ``load_front(budget=)``).
        candidates: whether :attr:`front` is the candidates front (else the trials front).
        trials: the deployed-exit candidate of every trained trial, feasible or not (plots grey them).
        all_candidates: every exit of every trained trial, fitting the budget or not.
        trials_front: Pareto set of feasible trained trials (deployed exits).
        candidates_front: Pareto set of all (trial, exit) candidates that fit the budget.
        counts: trial counts by state.
        partial: the exits of trials a scheduler stopped, measured at their rung (never on a front).
        dtype: the deploy dtype the byte metrics count in.
        conventions: what the study's versioned metrics count (``{"peak_memory": "liveness"}``);
            every label of a figure comes from :meth:`heading` and :meth:`describe`, which read it.
        searched: the leaves the study searched (``backbone.width``...), from its stored spec.
    """

    study_name: str
    storage: str
    objectives: tuple[str, ...]
    budget: dict[str, float]
    candidates: bool
    trials: tuple[Candidate, ...]
    all_candidates: tuple[Candidate, ...]
    trials_front: tuple[Candidate, ...]
    candidates_front: tuple[Candidate, ...]
    counts: Counts
    partial: tuple[Candidate, ...] = ()
    dtype: str = "int8"
    searched: tuple[str, ...] = ()
    conventions: Mapping[str, str] = field(default_factory=dict)

    def heading(self, metric: str) -> str:
        """``metric``'s column or axis heading for this study: its dtype, and the convention its
        figures were stored under when that is not today's (``peak memory (int8, liveness)``)."""
        return METRICS.get(metric).heading(self.dtype, self.conventions.get(metric))

    def describe(self, metric: str) -> str:
        """``metric``'s caption line for this study: what its figures count, older conventions named."""
        return METRICS.get(metric).describe(self.dtype, self.conventions.get(metric))

    @property
    def directions(self) -> tuple[str, ...]:
        """``"maximize"`` / ``"minimize"`` per objective."""
        return tuple(METRICS.get(m).direction for m in self.objectives)

    @property
    def front(self) -> tuple[Candidate, ...]:
        """The selected front: candidates front if ``candidates`` else trials front."""
        return self.candidates_front if self.candidates else self.trials_front

    @property
    def points(self) -> tuple[Candidate, ...]:
        """Everything the selected front was chosen from (shown faded in plots)."""
        return self.all_candidates if self.candidates else self.trials

    @cached_property
    def best(self) -> dict[str, Candidate]:
        """Best member of :attr:`front` per objective (the front holds each objective's optimum).

        Ties: higher accuracy, then fewer MACs, then the lower trial number, so the answer is stable.
        """
        return {m: min(self.front, key=lambda c, m=m: _best_key(c, m)) for m in self.objectives}

    @cached_property
    def reference(self) -> tuple[float, ...]:
        """Hypervolume reference point, per objective; see :func:`reference_point`."""
        return reference_point(self.objectives, self.points, self.budget)

    @cached_property
    def hypervolume(self) -> float:
        """Normalised hypervolume of :attr:`front` in [0, 1] (fraction of the ideal-reference box)."""
        pts = [c.values(self.objectives) for c in self.front]
        ideal = [_ACCURACY_IDEAL if d == "maximize" else 0.0 for d in self.directions]
        return hypervolume(pts, self.directions, self.reference, ideal=ideal)

    @cached_property
    def knee_of_front(self) -> Knee:
        """The knee of :attr:`front` by :func:`~sdsearch.core.pareto.find_knee`, costs on a log scale
        (as the plots show them); its ``reason`` says why there is none."""
        pts = [c.values(self.objectives) for c in self.front]
        log = [d == "minimize" for d in self.directions]
        return find_knee(pts, self.directions, log=log)

    @property
    def knee(self) -> Candidate:
        """The knee of :attr:`front`; where it has none, its most accurate point (:attr:`knee_note` says so)."""
        index = self.knee_of_front.index
        if index is not None:
            return self.front[index]
        return self.best[next(m for m in self.objectives if m in quality_metrics())]

    @property
    def knee_note(self) -> str | None:
        """One line when :attr:`knee` is the most accurate point for want of a knee, else None."""
        reason = self.knee_of_front.reason
        return None if reason is None else f"no knee: {reason}; the most accurate point stands in for it"

    def describe_budget(self) -> str:
        """``params <= 50k, macs <= 2M, peak_memory <= 64 KiB`` (or ``none``) for tables and messages."""
        return describe_limits(self.budget)


def reference_point(
    objectives: Sequence[str], points: Sequence[Candidate], budget: Mapping[str, float]
) -> tuple[float, ...]:
    """The hypervolume reference point for a study's objectives.

    * a quality (accuracy): 0 (a model no better than nothing adds no volume);
    * a cost with a budget limit: the limit (the budget *is* the worst acceptable cost; a MACs
      limit bounds FLOPs at twice the number);
    * a cost without one: 1.1 times its largest value among ``points`` (every trained model then
      adds volume), or 1 when there are no points.
    """
    ref: list[float] = []
    for metric in objectives:
        limit = limit_of(metric, budget)
        if METRICS.get(metric).direction == "maximize":
            ref.append(0.0)
        elif limit is not None:
            ref.append(float(limit))
        else:
            worst = max((c.value(metric) for c in points), default=0.0)
            ref.append(_NO_BUDGET_REFERENCE_FACTOR * worst if worst > 0 else 1.0)
    return tuple(ref)


def _best_key(c: Candidate, metric: str) -> tuple[float, ...]:
    primary = -c.value(metric) if METRICS.get(metric).direction == "maximize" else c.value(metric)
    return (primary, -c.accuracy, c.macs, c.params, c.trial, not c.deployed)


# --------------------------------------------------------------------------------------------
# Stored trials -> candidates -> fronts.


def build_front(
    record: StudyRecord, *, candidates: bool = False, budget: Mapping[str, Any] | None = None
) -> Front:
    """Compute both fronts of a study snapshot (pure: no storage access).

    Args:
        record: the study snapshot, from :func:`~sdsearch.results.read.read_study` (or built by hand in tests).
        candidates: make :attr:`Front.front` the candidates front.
        budget: extra limits, metric -> number or size string (``{"macs": "1M"}``). They can only
            tighten the study budget: configs over the study budget were never trained.

    Returns:
        The :class:`Front`.

    Raises:
        ConfigError: an unknown budget metric or a limit that is not a positive size.
        StudyError: the selected front is empty (no feasible trial, or no fitting candidate).
    """
    limits = effective_budget(record.budget, budget)
    trials: list[Candidate] = []
    every: list[Candidate] = []
    feasible: list[Candidate] = []
    for trial in record.trained():
        exits = trial_candidates(trial, record.objectives)
        if exits is None:
            continue
        deployed = next(c for c in exits if c.deployed)
        trials.append(deployed)
        every.extend(exits)
        if all(v <= 0 for v in trial.constraints.values()) and _fits(deployed, limits):
            feasible.append(deployed)
    partial = [c for trial in record.stopped() for c in trial_candidates(trial, record.objectives) or ()]
    fitting = [c for c in every if _fits(c, limits)]
    counts = Counts.of(record.trials, n_feasible=len(feasible))
    front = Front(
        study_name=record.study_name,
        storage=record.storage,
        objectives=record.objectives,
        budget=limits,
        candidates=candidates,
        trials=tuple(trials),
        all_candidates=tuple(every),
        trials_front=_front_of(feasible, record.objectives),
        candidates_front=_front_of(fitting, record.objectives),
        counts=counts,
        partial=tuple(partial),
        dtype=record.dtype,
        searched=record.searched(),
        conventions=record.conventions,
    )
    if not front.front:
        why = f" within {front.describe_budget()}" if budget else ""
        if candidates:
            why = f"{why} (and no exit of any trained trial fits)"
        raise StudyError(_NO_FEASIBLE.format(study=record.study_name, why=why, counts=counts))
    return front


def _front_of(points: list[Candidate], objectives: Sequence[str]) -> tuple[Candidate, ...]:
    directions = [METRICS.get(m).direction for m in objectives]
    members = [points[i] for i in pareto_front([c.values(objectives) for c in points], directions)]
    first_cost = next((m for m, d in zip(objectives, directions) if d == "minimize"), "macs")
    members.sort(key=lambda c: (c.value(first_cost), -c.accuracy, c.trial, c.name))
    return tuple(members)


def _fits(c: Candidate, limits: Mapping[str, float]) -> bool:
    return all(not c.value(m) > limit for m, limit in limits.items())


def is_trained(trial: FrozenTrial) -> bool:
    """Whether a trial may stand on a front: trained to its full budget (COMPLETE, not rejected)."""
    return attrs.outcome(trial).on_front


def trial_candidates(trial: FrozenTrial, objectives: Sequence[str]) -> list[Candidate] | None:
    """Every exit of a trained (or stopped) trial; the deployed one carries Optuna's values.

    Returns None (with a warning) for a trial whose stored record lacks a cost, e.g. one added by
    hand without sdsearch's user attrs: guessing a cost would put it on a front wrongly.
    """
    from sdsearch.core.config import TrialConfig

    config = trial.user_attrs.get(attrs.CONFIG) or {}
    try:
        deploy_exit = TrialConfig.from_dict(config).deploy_exit if config else FINAL
    except ValueError:
        deploy_exit = str((config.get("deploy") or {}).get("exit", config.get("deploy_exit", FINAL)))
    stored = {
        candidate_name(str(c["exit"]), c.get("width")): dict(c)
        for c in trial.user_attrs.get(attrs.CANDIDATES) or []
        if c.get("exit") is not None
    }
    deploy_name = str(trial.user_attrs.get(attrs.DEPLOYED, deploy_exit))  # an elastic trial's width
    exit_name, width = split_candidate(deploy_name)
    deployed = stored.setdefault(deploy_name, {"exit": exit_name, "width": width})
    deployed.update(trial.user_attrs.get(attrs.COST) or {})
    for name, value in zip(objectives, trial.values or (), strict=False):
        base = METRICS.get(name).base
        deployed[base[0] if base else name] = value / base[1] if base else value  # FLOPs stored as MACs
    out: list[Candidate] = []
    for name, c in stored.items():
        metrics = {k: float(v) for k, v in c.items() if k in METRICS and _is_number(v)}
        if not all(math.isfinite(metrics.get(m, math.nan)) for m in ("accuracy", "params", "macs")):
            if name == deploy_name:
                warnings.warn(
                    f"trial {trial.number} has no complete cost record (user attrs "
                    f"{attrs.COST!r}/{attrs.CANDIDATES!r}); it is left out of the fronts",
                    stacklevel=2,
                )
                return None
            continue
        out.append(
            Candidate(
                trial=trial.number,
                exit=str(c["exit"]),
                metrics=metrics,
                config=config,
                deployed=name == deploy_name,
                partial=bool(c.get("partial", False)),
                epoch=c.get("epoch"),
                width=None if c.get("width") is None else float(c["width"]),
            )
        )
    return sorted(out, key=lambda c: (-(c.width or 1.0), exit_order(c.exit)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
