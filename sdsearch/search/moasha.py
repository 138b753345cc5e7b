"""Multi-objective asynchronous successive halving (MOASHA) for a Ray Tune run.

Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving",
https://arxiv.org/abs/2106.12639.

Stock ASHA promotes by accuracy alone. In a budget search that stops exactly the models the search
is for: a small model is less accurate than a big one at every rung, however good a trade-off it
is. MOASHA keeps ASHA's asynchronous rungs and promotes by non-dominated sorting of (accuracy at
the rung, cost) instead, with NSGA-II's crowding distance breaking ties inside a front.

Three layers, each usable without the next:

* rankings of plain points (:class:`ScalarRanking`, :class:`ParetoRanking`, :func:`rank_order`), on
  the non-dominated sorting and crowding distance of :mod:`sdsearch.core.pareto`;
* :class:`AsyncSuccessiveHalving`, the rung bookkeeping and the promotion rule, parametrised by a
  ranking (:class:`ScalarRanking` gives ASHA, :class:`ParetoRanking` gives MOASHA); it knows
  nothing of Ray, so a benchmark can simulate both schedulers in one process;
* :class:`MOASHAScheduler`, the Ray Tune adapter: the quality objective comes from each result,
  the cost objectives from the trial's config (``config["costs"]``, known before training).

Example:
    >>> halving = AsyncSuccessiveHalving(
    ...     grace_period=1, reduction_factor=2, max_t=4, ranking=ParetoRanking(["maximize", "minimize"])
    ... )
    >>> halving.on_result("big", 1, (0.90, 90_000))
    'CONTINUE'
    >>> halving.on_result("bigger", 1, (0.85, 95_000))  # dominated by "big"
    'STOP'
    >>> halving.on_result("small", 1, (0.60, 4_000))  # less accurate, but nothing dominates it
    'CONTINUE'
"""

from __future__ import annotations

import math
import numbers
import pickle
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from sdsearch.core.errors import ConfigError
from sdsearch.core.metrics import METRICS, metric_value
from sdsearch.core.pareto import check_directions, crowding_distance, nondominated_sort
from sdsearch.search.result_keys import ACCURACY, FAIL_REASON, exit_key

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = [
    "CANDIDATE_COSTS_KEY",
    "CONTINUE",
    "COSTS_KEY",
    "STOP",
    "AsyncSuccessiveHalving",
    "MOASHAScheduler",
    "ParetoRanking",
    "ScalarRanking",
    "cost_objectives",
    "in_top_fraction",
    "rank_order",
    "rung_levels",
    "trial_costs",
]

#: Decisions, the strings Ray Tune's schedulers answer.
CONTINUE = TrialScheduler.CONTINUE
STOP = TrialScheduler.STOP

#: Key of the trial config (what the searcher suggests) holding the deployed exit's cost per cost objective.
COSTS_KEY = "costs"
#: Key of an elastic trial's config: every candidate that fits the budget -> its cost per cost objective.
#: Each is ranked at a rung on its own accuracy; the trial goes on while one of them would.
CANDIDATE_COSTS_KEY = "candidate_costs"

#: A ranking maps n points to n keys; a smaller key ranks first and equal keys tie.
Ranking = Callable[[Sequence[Sequence[float]]], Sequence[tuple[float, ...]]]


# --------------------------------------------------------------------------------------------
# Rankings: points are sequences of floats, directions "maximize"/"minimize" per column.


def rank_order(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of ``points`` best first: by front, then crowding distance descending, ties stable.

    Points holding a NaN come last, in their given order.
    """
    keys = ParetoRanking(directions)(points)
    return sorted(range(len(keys)), key=keys.__getitem__)


def in_top_fraction(keys: Sequence[tuple[float, ...]], index: int, reduction_factor: float) -> bool:
    """Whether point ``index`` ranks in the top ``1 / reduction_factor`` of all ``keys``.

    Its rank is the number of keys strictly smaller than its own (a tie shares the better rank),
    and it is in the top fraction iff ``rank < len(keys) / reduction_factor``. So a lone point always
    is, and a point tied with the best is.
    """
    mine = keys[index]
    ahead = sum(1 for key in keys if key < mine)
    return ahead * reduction_factor < len(keys)


class ScalarRanking:
    """Rank by one objective (ASHA): key ``(is NaN, loss)``; NaN ranks last.

    Args:
        direction: ``"maximize"`` or ``"minimize"``; a point is a 1-sequence.
    """

    def __init__(self, direction: str = "maximize") -> None:
        check_directions([direction])
        self.direction = direction

    def __call__(self, points: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
        sign = -1.0 if self.direction == "maximize" else 1.0
        keys = []
        for point in points:
            (value,) = point
            value = float(value)
            keys.append((1.0, 0.0) if math.isnan(value) else (0.0, sign * value))
        return keys

    def __repr__(self) -> str:
        return f"ScalarRanking({self.direction!r})"


class ParetoRanking:
    """Rank by non-dominated front, then crowding distance descending (MOASHA with NSGA-II ties).

    Key ``(has NaN, front, -crowding distance)``: points holding a NaN rank after every other point
    and tie among themselves. Within a front the most isolated points win, so a rung keeps a spread
    of trade-offs rather than a cluster of near-identical ones.

    Args:
        directions: ``"maximize"`` or ``"minimize"`` per objective.
    """

    def __init__(self, directions: Sequence[str]) -> None:
        check_directions(directions)
        self.directions = tuple(directions)

    def __call__(self, points: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
        arr = np.array(points, dtype=float).reshape(-1, len(self.directions))
        keys: list[tuple[float, ...]] = [(1.0, 0.0, 0.0)] * arr.shape[0]
        finite = np.flatnonzero(~np.isnan(arr).any(axis=1))
        sub = arr[finite]
        for f, front in enumerate(nondominated_sort(sub, self.directions)):
            for i, d in zip(front, crowding_distance(sub[front], self.directions)):
                keys[int(finite[i])] = (0.0, float(f), -d)
        return keys

    def __repr__(self) -> str:
        return f"ParetoRanking({list(self.directions)!r})"


# --------------------------------------------------------------------------------------------
# The asynchronous successive-halving core: no Ray objects.


def rung_levels(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """``grace_period * reduction_factor**k`` for k = 0, 1, ... while at most ``max_t``."""
    levels = []
    level = grace_period
    while level <= max_t:
        levels.append(level)
        level = level * reduction_factor
    return levels


class AsyncSuccessiveHalving:
    """Asynchronous successive halving over any ranking (ASHA, Li et al. 2020; MOASHA).

    Rungs sit at :func:`rung_levels`. When a trial first reports at time ``t >= level`` for the
    highest level ``<= t``, its point is recorded there and judged at once against every point
    recorded at that rung so far, itself included: it continues iff :func:`in_top_fraction` holds
    for it under ``ranking``. Nothing waits for a rung to fill, so the first arrivals continue,
    and a point once recorded stays (an early promotion is never revoked).

    Invariants: a trial is judged at most once per rung; a result at ``t >= max_t`` is STOP and is
    not recorded; a result without a point (the metric was missing) is CONTINUE and not recorded, so
    the trial is judged at its next result at that rung.

    With :class:`ScalarRanking`, this is Ray's ASHA rule on one bracket (stop iff the value is below
    the ``1 - 1/eta`` quantile of the values recorded before it) except for two points. Ray
    interpolates that quantile between the two recorded values around it; a rank rule cannot, so
    the two can disagree on a value strictly between those two. And Ray ignores NaN and lets a NaN
    trial continue, while here a NaN ranks last and counts as an arrival.

    Args:
        grace_period: the first rung (in units of the time the caller passes, e.g. epochs).
        reduction_factor: eta > 1; about 1/eta of the arrivals at a rung continue past it.
        max_t: trials stop at this time.
        ranking: maps a rung's points to sort keys, e.g. :class:`ParetoRanking`.

    Raises:
        ConfigError: ``grace_period <= 0``, ``max_t < grace_period`` or ``reduction_factor <= 1``.
    """

    def __init__(
        self, *, grace_period: float, reduction_factor: float, max_t: float, ranking: Ranking
    ) -> None:
        if not grace_period > 0:
            raise ConfigError(f"grace_period > 0 must hold, but got grace_period={grace_period!r}")
        if not max_t >= grace_period:
            raise ConfigError(
                f"grace_period <= max_t must hold, but got (grace_period={grace_period!r}, max_t={max_t!r}); "
                "lower the grace period or train longer"
            )
        if not reduction_factor > 1:
            raise ConfigError(
                f"reduction_factor > 1 must hold, but got reduction_factor={reduction_factor!r}"
            )
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.max_t = max_t
        self.ranking = ranking
        self.levels = rung_levels(grace_period, reduction_factor, max_t)
        self._rungs: dict[float, dict[Hashable, tuple[float, ...]]] = {level: {} for level in self.levels}

    def on_result(self, trial_id: Hashable, t: float, point: Sequence[float] | None) -> str:
        """Record a trial's result at time ``t`` and decide: :data:`CONTINUE` or :data:`STOP`.

        Args:
            trial_id: any hashable id, unique per trial.
            t: the trial's progress (epochs, iterations), non-decreasing per trial.
            point: the objective values at ``t`` in the ranking's order (NaN allowed), or None
                when the result lacks one: then nothing is recorded.
        """
        if t >= self.max_t:
            return STOP
        reached = [level for level in self.levels if level <= t]
        if not reached or point is None:
            return CONTINUE
        recorded = self._rungs[reached[-1]]
        if trial_id in recorded:
            return CONTINUE
        recorded[trial_id] = tuple(float(v) for v in point)
        keys = self.ranking(list(recorded.values()))
        return CONTINUE if in_top_fraction(keys, len(keys) - 1, self.reduction_factor) else STOP

    def recorded(self, level: float) -> dict[Hashable, tuple[float, ...]]:
        """A copy of the points recorded at a rung, in arrival order."""
        return dict(self._rungs[level])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{level:g}: {len(r)}" for level, r in self._rungs.items())
        return f"AsyncSuccessiveHalving({self.ranking!r}, eta={self.reduction_factor:g}, rungs {{{sizes}}})"


# --------------------------------------------------------------------------------------------
# Ray Tune adapter.


def cost_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    """The objectives known before training (params, MACs, peak memory, ...); the others come from results."""
    return tuple(
        o for o in objectives if METRICS.get(o).before_training and METRICS.get(o).direction == "minimize"
    )


def trial_costs(cost: Mapping[str, float], objectives: Sequence[str]) -> dict[str, float]:
    """What the searcher puts under :data:`COSTS_KEY`: the deployed exit's value per cost objective
    (FLOPs from the stored MACs).

    Example:
        >>> trial_costs({"params": 4_000, "macs": 90_000}, ["accuracy", "flops"])
        {'flops': 180000.0}
    """
    return {m: float(metric_value(cost, m)) for m in cost_objectives(objectives)}


class MOASHAScheduler(FIFOScheduler):
    """Ray Tune scheduler: MOASHA over a study's objectives, on one bracket.

    Each trial's point at a rung is the reported value of every objective that is not a cost
    (``accuracy``) and, for every cost objective, ``trial.config["costs"][metric]``, which the
    searcher puts in the config it suggests (see :func:`trial_costs`). With a single objective this
    is ASHA; see :class:`AsyncSuccessiveHalving` for the rule and how it relates to Ray's.

    Results without ``time_attr`` or a reported objective get CONTINUE and are not recorded, as
    Ray's ASHA does; a non-numeric or NaN value ranks last. A result carrying ``fail_reason`` (the
    trainable caught an error and is ending) is not recorded either: its accuracies are stale.

    Args:
        objectives: objective names, e.g. ``("accuracy", "params", "macs")``.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        grace_period: the first rung, in ``time_attr`` units (epochs in sdsearch).
        reduction_factor: eta > 1.
        max_t: trials are stopped here.
        time_attr: the result key that measures progress.
        stop_last_trials: stop trials that reach ``max_t`` (as Ray's ASHA's option of the same name).
            Off when ``max_t`` is every trial's last epoch: such a trial ends on its own, after the
            reports that follow its last epoch (int8 scores, anytime calibration) and after keeping
            its weights, which a stop there would cut.

    Raises:
        ConfigError: bad objectives, directions or rung arguments; and, from ``on_trial_add``, a
            trial whose config lacks a cost objective under ``costs``.

    Example:
        >>> scheduler = MOASHAScheduler(
        ...     ["accuracy", "params"], ["maximize", "minimize"], grace_period=1, reduction_factor=3, max_t=9
        ... )
        >>> tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        objectives: Sequence[str],
        directions: Sequence[str],
        grace_period: float = 1,
        reduction_factor: float = 3,
        max_t: float = 100,
        time_attr: str = "training_iteration",
        stop_last_trials: bool = True,
    ) -> None:
        super().__init__()
        self._stop_last_trials = stop_last_trials
        objectives, directions = tuple(objectives), tuple(directions)
        if len(objectives) != len(directions) or not objectives:
            raise ConfigError(
                "one direction per objective must be given, but got "
                f"(objectives={list(objectives)}, directions={list(directions)})"
            )
        check_directions(directions)
        self._costs = cost_objectives(objectives)
        reported = [o for o in objectives if o not in self._costs]
        if not reported:
            raise ConfigError(
                f"objectives {list(objectives)} are all costs, known before training, so no rung can "
                "tell trials apart; add a reported metric such as accuracy"
            )
        ranking: Ranking = ScalarRanking(directions[0]) if len(objectives) == 1 else ParetoRanking(directions)
        self._halving = AsyncSuccessiveHalving(
            grace_period=grace_period, reduction_factor=reduction_factor, max_t=max_t, ranking=ranking
        )
        self._objectives = objectives
        self._directions = directions
        self._time_attr = time_attr
        self._metric = reported[0]  # what Tune's `metric` property shows
        self._num_stopped = 0

    @property
    def halving(self) -> AsyncSuccessiveHalving:
        """The rung bookkeeping, for inspection."""
        return self._halving

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        """Check at once that the searcher put every cost objective in the trial's config."""
        self._config_costs(trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        """CONTINUE or STOP at a rung; an elastic trial goes on while one of its fitting candidates would."""
        if self._time_attr not in result or result.get(FAIL_REASON):
            return CONTINUE
        if result[self._time_attr] >= self._halving.max_t and not self._stop_last_trials:
            return CONTINUE  # its last epoch: it ends on its own
        actions = [
            self._halving.on_result(key, result[self._time_attr], point)
            for key, point in self._points(trial, result).items()
        ]
        action = CONTINUE if CONTINUE in actions else STOP
        if action == STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        """Record the last result at its rung if no earlier call did (as Ray's ASHA does)."""
        if result and self._time_attr in result and not result.get(FAIL_REASON):
            for key, point in self._points(trial, result).items():
                self._halving.on_result(key, result[self._time_attr], point)

    def debug_string(self) -> str:
        return f"Using MOASHA: num_stopped={self._num_stopped}, {self._halving!r}"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    # -- helpers -----------------------------------------------------------------------------------
    def _config_costs(self, trial: Trial) -> dict[str, float]:
        costs = (trial.config or {}).get(COSTS_KEY)
        missing = [m for m in self._costs if not isinstance(costs, Mapping) or m not in costs]
        if missing:
            got = sorted(costs) if isinstance(costs, Mapping) else costs
            raise ConfigError(
                f"trial {trial.trial_id}: config[{COSTS_KEY!r}] must hold {', '.join(missing)} "
                f"(the deployed exit's cost per cost objective), but got {got!r}; the searcher must "
                f"suggest {{..., {COSTS_KEY!r}: trial_costs(cost, objectives)}}"
            )
        return {m: _number(costs[m]) for m in self._costs}

    def _points(self, trial: Trial, result: Mapping[str, Any]) -> dict[Hashable, tuple[float, ...] | None]:
        """The points a result puts at its rung: the trial's, or one per fitting candidate of an elastic
        trial (its own accuracy, ``accuracy_<candidate>``, and its own costs)."""
        candidates = (trial.config or {}).get(CANDIDATE_COSTS_KEY)
        if not candidates:
            return {trial.trial_id: self._point(self._config_costs(trial) if self._costs else {}, result)}
        return {
            (trial.trial_id, name): self._point(
                {m: _number(costs.get(m)) for m in self._costs},
                {**result, ACCURACY: result.get(exit_key(name), math.nan)},
            )
            for name, costs in candidates.items()
        }

    def _point(self, costs: Mapping[str, float], result: Mapping[str, Any]) -> tuple[float, ...] | None:
        if any(o not in result for o in self._objectives if o not in self._costs):
            return None
        return tuple(costs[o] if o in costs else _number(result[o]) for o in self._objectives)


def _number(value: Any) -> float:
    """A value as a float; anything that is not a real number becomes NaN (so it ranks last)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return math.nan
