"""Ray Tune searcher over an Optuna study: budget rejection at zero cost, honest trial states.

Ray's stock ``OptunaSearch`` trains every sampled config, leaves a trial RUNNING when its metric is
NaN or missing (it only logs the failed ``tell``), records early-stopped trials as COMPLETE and has
no notion of a hardware budget. :class:`SDOptunaSearch` keeps its study/trial bookkeeping and fixes
those points. The decisions themselves are pure functions (:func:`budget_violations`,
:func:`final_state`) so tests can call them without Ray.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sdsearch.config import TrialConfig
from sdsearch.errors import SdsearchError
from sdsearch.search import attrs
from sdsearch.space import Space

if TYPE_CHECKING:
    from sdsearch.cost import Cost
    from sdsearch.data import DataShape

__all__ = [
    "ExitCosts",
    "SDOptunaSearch",
    "SpaceSampler",
    "TrialOutcome",
    "budget_violations",
    "final_state",
    "result_keys",
]

logger = logging.getLogger(__name__)

#: Constraint set on every trial of a space whose configs can break a cross-key rule (1: broken).
VALID_CONSTRAINT = "valid"
#: Consecutive budget rejections after which a space is declared infeasible.
MAX_CONSECUTIVE_REJECTIONS = 500


class SpaceSampler:
    """The define-by-run space: a module-level callable, so Ray can pickle it (closures cannot be)."""

    def __init__(self, space: Space) -> None:
        self.space = space

    def __call__(self, trial: optuna.trial.Trial) -> TrialConfig:
        return self.space.suggest(trial)


class ExitCosts:
    """Cost of every exit of a config for one data shape: a module-level callable (picklable)."""

    def __init__(self, shape: DataShape) -> None:
        self.shape = shape

    def __call__(self, config: TrialConfig) -> Mapping[str, Cost]:
        from sdsearch.cost import exit_costs

        s = self.shape
        return exit_costs(
            config.model, num_classes=s.num_classes, in_chans=s.in_chans, input_size=s.input_size
        )


def result_keys(exit_name: str) -> str:
    """Name of an exit's validation accuracy in a Ray result (flat: Ray nests keys that contain '/')."""
    return f"accuracy_{exit_name}"


def budget_violations(cost: Cost | Mapping[str, float], budget: Mapping[str, float]) -> dict[str, float]:
    """``value - limit`` per budget metric (<= 0 is within budget), as Optuna constraints expect."""
    get = cost.get if isinstance(cost, Mapping) else (lambda m: getattr(cost, m))
    return {metric: float(get(metric)) - float(limit) for metric, limit in budget.items()}


@dataclass(frozen=True)
class TrialOutcome:
    """How a trained trial ends in the study: its state, values and what to store with it."""

    state: TrialState
    values: list[float] | None
    reason: str | None = None
    epochs_done: int = 0
    candidates: list[dict[str, Any]] = field(default_factory=list)


def final_state(
    result: Mapping[str, Any] | None,
    *,
    error: bool,
    config: TrialConfig,
    costs: Mapping[str, Cost],
    objectives: tuple[str, ...] | list[str],
) -> TrialOutcome:
    """Decide how a trial handed to Ray ends, from its last result.

    - the trainable caught an exception or divergence (``fail_reason``), Ray reported an error, or
      the accuracy is missing / NaN / inf -> FAIL with the reason;
    - fewer epochs than configured and no failure -> PRUNED (a scheduler stopped it);
    - otherwise COMPLETE with the deployed exit's accuracy and cost as values.
    Every exit with a finite accuracy becomes a candidate in all non-failed cases.
    """
    result = result or {}
    epochs_done = int(result.get("epoch", 0) or 0)
    candidates = []
    for exit_name in config.model.exits:
        acc = result.get(result_keys(exit_name))
        if isinstance(acc, (int, float)) and math.isfinite(acc):
            cost = costs[exit_name]
            candidates.append(
                {
                    "exit": exit_name,
                    "accuracy": float(acc),
                    "params": int(cost.params),
                    "macs": int(cost.macs),
                    "flops": int(cost.flops),
                }
            )
    reason = result.get("fail_reason")
    accuracy = result.get("accuracy")
    if reason is None and error:
        reason = "the trial's worker raised or died (see the Ray logs); e.g. killed for memory"
    if reason is None and accuracy is None:
        reason = "the trial reported no accuracy"
    if reason is None and not (isinstance(accuracy, (int, float)) and math.isfinite(accuracy)):
        reason = f"the trial reported accuracy {accuracy!r}"
    if reason is not None:
        return TrialOutcome(TrialState.FAIL, None, str(reason), epochs_done, [])
    if epochs_done < config.train.epochs:
        return TrialOutcome(TrialState.PRUNED, None, None, epochs_done, candidates)
    deployed = costs[config.deploy_exit]
    values = [float(accuracy) if o == "accuracy" else float(getattr(deployed, o)) for o in objectives]
    return TrialOutcome(TrialState.COMPLETE, values, None, epochs_done, candidates)


class SDOptunaSearch(OptunaSearch):
    """OptunaSearch over a stored study with budget rejection and honest final states.

    Ownership of RUNNING trials: a trial this searcher asked for is moved out of RUNNING either in
    :meth:`suggest` (budget-rejected or invalid: told at once, never sent to Ray) or in
    :meth:`on_trial_complete` (COMPLETE, PRUNED or FAIL). Trials still in flight when the driver
    stops stay RUNNING; the runner tells them FAIL and re-enqueues them (see runner.py).

    Args:
        space: the define-by-run callable (a :class:`SpaceSampler`).
        study: the Optuna study (directions match ``objectives``; its storage is the truth).
        objectives: objective names in the study's order.
        budget: metric -> limit on the deployed exit.
        cost_fn: config -> cost per exit (meta device, milliseconds).
        max_rejections: consecutive rejections before the space is declared infeasible.
    """

    def __init__(
        self,
        space: SpaceSampler,
        *,
        study: optuna.Study,
        objectives: tuple[str, ...],
        budget: Mapping[str, float],
        cost_fn: Callable[[TrialConfig], Mapping[str, Cost]],
        max_rejections: int = MAX_CONSECUTIVE_REJECTIONS,
    ) -> None:
        super().__init__(space=None, metric="accuracy", mode="max", study_name=study.study_name)
        self._space = space
        self._ot_study = study
        self._objectives = tuple(objectives)
        self._budget = dict(budget)
        self._cost_fn = cost_fn
        self._max_rejections = max_rejections
        self._pending: dict[str, tuple[TrialConfig, Mapping[str, Cost]]] = {}
        self._untold: dict[int, optuna.trial.Trial] = {}  # asked, not yet told: storage trial id -> trial
        self._lock = threading.Lock()  # _pending and _untold are read by the heartbeat thread
        self.consecutive_rejections = 0
        self.n_rejected = 0
        self.infeasible = False
        self.completed: list[tuple[int, TrialOutcome]] = []

    # -- Ray Searcher API --------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """Ask until a config fits the budget; rejected ones are told at once and never trained."""
        if self.infeasible:
            return Searcher.FINISHED
        while self.consecutive_rejections < self._max_rejections:
            with warnings.catch_warnings():  # "heartbeats are meant for Study.optimize": we beat ourselves
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                ot_trial = self._ot_study.ask()
            with self._lock:  # from here until tell, a stopping driver must find it (see in_flight)
                self._untold[ot_trial._trial_id] = ot_trial
            config = self._space(ot_trial)
            ot_trial.set_user_attr(attrs.CONFIG, config.to_dict())
            try:
                costs = self._cost_fn(config)
            except (SdsearchError, ValueError, RuntimeError) as exc:
                # Unbuildable (e.g. an input too small for the network): nothing to learn from.
                self._reject(ot_trial, attrs.REJECTED_INVALID, f"cannot be built: {exc}", None)
                continue
            deployed = costs[config.deploy_exit]
            ot_trial.set_user_attr(attrs.COST, _cost_dict(deployed))
            constraints = budget_violations(deployed, self._budget)
            invalid = self._space.space.invalid_reason(config)
            if self._space.space.can_be_invalid:
                constraints[VALID_CONSTRAINT] = 1.0 if invalid else 0.0
            for metric, value in constraints.items():
                ot_trial.set_constraint(metric, value)
            if invalid or any(v > 0 for v in constraints.values()):
                values = [0.0 if o == "accuracy" else float(getattr(deployed, o)) for o in self._objectives]
                why = attrs.REJECTED_INVALID if invalid else attrs.REJECTED_BUDGET
                self._reject(ot_trial, why, invalid, values)
                continue
            self.consecutive_rejections = 0
            self._ot_trials[trial_id] = ot_trial
            with self._lock:
                self._pending[trial_id] = (config, costs)
            self._beat(ot_trial)
            return {"config": config.to_dict(), "trial_number": ot_trial.number}
        self.infeasible = True
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Multi-objective Optuna keeps no intermediate values; heartbeats keep shared studies honest."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            self._beat(ot_trial)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell the study exactly once, with candidates and the reason stored before ``tell``."""
        if trial_id in self._completed_trials or trial_id not in self._pending:
            return
        ot_trial = self._ot_trials[trial_id]
        with self._lock:
            config, costs = self._pending.pop(trial_id)
        self._completed_trials.add(trial_id)
        if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            # Another driver judged it stale and failed it; its retry is queued, so drop this result.
            logger.warning("trial %d was finished elsewhere; its late result is dropped", ot_trial.number)
            self._told(ot_trial)
            return
        outcome = final_state(result, error=error, config=config, costs=costs, objectives=self._objectives)
        ot_trial.set_user_attr(attrs.EPOCHS_DONE, outcome.epochs_done)
        if outcome.candidates:
            ot_trial.set_user_attr(attrs.CANDIDATES, outcome.candidates)
        if outcome.reason:
            ot_trial.set_user_attr(attrs.FAIL_REASON, outcome.reason)
        worker = _nested(result or {}, "worker")
        if worker:
            ot_trial.set_user_attr(attrs.WORKER, worker)
        self._ot_study.tell(ot_trial, outcome.values, state=outcome.state)
        self._told(ot_trial)
        self.completed.append((ot_trial.number, outcome))

    def save(self, checkpoint_path: str) -> None:
        """No snapshot: the study storage is the only truth, and resume never uses Tuner.restore."""

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("sdsearch resumes from the study storage, not from a Ray searcher snapshot")

    def __getstate__(self) -> dict[str, Any]:
        """Tuner pickles its searcher for a restore we never do; a lock cannot be pickled."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- heartbeats --------------------------------------------------------------------------------
    def _beat(self, ot_trial: optuna.trial.Trial) -> None:
        storage = self._ot_study._storage
        if heartbeat_enabled(storage):
            storage.record_heartbeat(ot_trial._trial_id)

    @contextlib.contextmanager
    def heartbeats(self) -> Iterator[None]:
        """Keep every trial in flight alive for other drivers of a shared (server) study.

        Results arrive once per epoch, which may be rarer than the grace period, and a trial waiting
        for resources reports nothing; so a thread beats for all of them, as ``Study.optimize`` does.
        """
        storage = self._ot_study._storage
        if not heartbeat_enabled(storage):
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(storage.get_heartbeat_interval()):
                with self._lock:
                    trial_ids = list(self._untold)
                for trial_id in trial_ids:
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:  # a missed beat is retried next interval
                        logger.warning(
                            "could not record a heartbeat for trial id %d", trial_id, exc_info=True
                        )

        thread = threading.Thread(target=beat, name="sdsearch-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def in_flight(self) -> list[optuna.trial.Trial]:
        """Trials this driver asked for and has not told yet: with Ray, or still inside ``suggest``
        or ``on_trial_complete`` when a Ctrl-C lands there. The runner retires them on exit."""
        with self._lock:
            return list(self._untold.values())

    def _told(self, ot_trial: optuna.trial.Trial) -> None:
        with self._lock:
            self._untold.pop(ot_trial._trial_id, None)

    def _reject(
        self, ot_trial: optuna.trial.Trial, why: str, message: str | None, values: list[float] | None
    ) -> None:
        """Tell a config that will never train: COMPLETE with accuracy 0 and its real cost when it has
        one, so every sampler (TPE, NSGA-II/III, GP) sees its positive constraints; FAIL otherwise."""
        ot_trial.set_user_attr(attrs.REJECTED, why)
        if message:
            ot_trial.set_user_attr(attrs.FAIL_REASON, message)
        if values is None:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            self._ot_study.tell(ot_trial, values)
        self._told(ot_trial)
        self.consecutive_rejections += 1
        self.n_rejected += 1


def heartbeat_enabled(storage: Any) -> bool:
    """Whether an Optuna storage records heartbeats (RDB storages with ``heartbeat_interval``)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and interval() is not None


def _nested(result: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``result[key]`` as a dict, also when Ray flattened it into ``key/field`` entries."""
    value = result.get(key)
    if isinstance(value, dict):
        return dict(value)
    prefix = f"{key}/"
    return {k[len(prefix) :]: v for k, v in result.items() if k.startswith(prefix)}


def _cost_dict(cost: Cost) -> dict[str, int]:
    return {"params": int(cost.params), "macs": int(cost.macs), "flops": int(cost.flops)}
