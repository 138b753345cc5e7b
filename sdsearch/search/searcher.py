"""Ray Tune searcher over an Optuna study: budget rejection at zero cost, honest trial states.

:class:`SDOptunaSearch` is a plain ``ray.tune.search.Searcher`` that asks and tells a stored
Optuna study through public APIs only (Ray's ``OptunaSearch`` leaves a trial RUNNING when its
metric is NaN or missing, records early-stopped trials as COMPLETE and has no notion of a hardware
budget). The decisions themselves are pure functions (:func:`budget_violations`,
:func:`final_state`) so tests call them without Ray.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from sdsearch.core.config import TrialConfig
from sdsearch.core.errors import DiskFullError, SdsearchError, StorageUnavailableError
from sdsearch.core.exits import candidate_name, split_candidate
from sdsearch.core.metrics import METRICS, metric_value
from sdsearch.search import result_keys as keys
from sdsearch.search.moasha import CANDIDATE_COSTS_KEY, COSTS_KEY, trial_costs
from sdsearch.space.space import Space
from sdsearch.store import attrs

__all__ = [
    "SDOptunaSearch",
    "SpaceSampler",
    "TrialOutcome",
    "budget_violations",
    "deployed_candidate",
    "driver_identity",
    "final_state",
    "heartbeat_enabled",
    "restart_record",
    "within_budget",
]

logger = logging.getLogger(__name__)

#: Constraint set on every trial of a space whose configs can break a cross-key rule (1: broken).
VALID_CONSTRAINT = "valid"
#: Consecutive budget rejections after which a space is declared infeasible.
MAX_CONSECUTIVE_REJECTIONS = 500
#: Consecutive duplicates (configs that train what a trial of the study trains) after which the
#: space is taken to have no untried configuration left.
MAX_CONSECUTIVE_DUPLICATES = 100

#: Costs of one config: exit -> metric -> value (stored units: counts, bytes, ms).
Costs = Mapping[str, Mapping[str, float]]


class SpaceSampler:
    """The define-by-run space: a module-level callable, so Ray can pickle it (closures cannot be)."""

    def __init__(self, space: Space) -> None:
        self.space = space

    def __call__(self, trial: optuna.trial.Trial) -> TrialConfig:
        return self.space.suggest(trial)


def budget_violations(cost: Mapping[str, float], budget: Mapping[str, float]) -> dict[str, float]:
    """``value - limit`` per budget metric (<= 0 is within budget), as Optuna constraints expect.

    ``flops`` limits are read against the stored MACs (flops = 2 x MACs).
    """
    return {metric: float(metric_value(cost, metric)) - float(limit) for metric, limit in budget.items()}


def within_budget(cost: Mapping[str, float], budget: Mapping[str, float]) -> bool:
    """Whether a cost fits every limit of ``budget`` (:func:`budget_violations` all <= 0)."""
    return all(v <= 0 for v in budget_violations(cost, budget).values())


def deployed_candidate(config: TrialConfig, costs: Costs, budget: Mapping[str, float]) -> str:
    """The candidate whose values stand for a trial: its deployed exit; for an elastic trial, that exit
    at the widest width whose network fits the budget, so the sampler learns from every trial that
    trains (the narrowest when none fits: the trial is then rejected on that one's excess)."""
    if not config.elastic:
        return config.deploy_exit
    widths = sorted(
        (w for e, w in map(split_candidate, costs) if e == config.deploy_exit and w is not None), reverse=True
    )
    names = [candidate_name(config.deploy_exit, w) for w in widths]
    fits = (n for n in names if within_budget(costs[n], budget))
    return next(fits, names[-1])


def driver_identity() -> dict[str, Any]:
    """Who asked for a trial: host, pid and the pid's start time (pids are reused)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_start_time(os.getpid())}


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (Linux ``/proc``; None where unknown): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return float(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


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
    costs: Costs,
    objectives: tuple[str, ...] | list[str],
    deployed: str | None = None,
) -> TrialOutcome:
    """Decide how a trial handed to Ray ends, from its last result.

    ``costs`` has every candidate of the trial (exit, or ``EXIT@multiplier`` of an elastic trial);
    ``deployed`` names the one whose values Optuna is told (default: ``config.deploy_exit``).

    - the trainable caught an exception or divergence (``fail_reason``), Ray reported an error, or
      the accuracy is missing / NaN / inf -> FAIL with the reason;
    - fewer epochs than configured and no failure -> PRUNED (a scheduler stopped it); its exits are
      candidates marked ``partial`` with the epoch they were measured at;
    - otherwise COMPLETE with the deployed exit's objective values.
    """
    result = result or {}
    epochs_done = _epoch(result)
    partial = epochs_done < config.train.epochs
    deployed = deployed or config.deploy_exit
    candidates = []
    for name in costs:
        acc = result.get(keys.exit_key(name))
        if isinstance(acc, (int, float)) and math.isfinite(acc):
            exit_name, width = split_candidate(name)
            candidate = {"exit": exit_name, **({} if width is None else {"width": width})}
            candidate.update(accuracy=float(acc), **costs[name])
            f32 = result.get(keys.FLOAT32_PREFIX + keys.exit_key(name))  # beside an int8 accuracy
            if isinstance(f32, (int, float)) and math.isfinite(f32):
                candidate[attrs.FLOAT32_ACCURACY] = float(f32)
            if name == deployed:  # metrics only training gives (expected MACs, ...)
                candidate.update({k: float(v) for k, v in result.items() if k in METRICS and k not in candidate
                                  and isinstance(v, (int, float))})  # fmt: skip
            if partial:
                candidate.update(partial=True, epoch=epochs_done)
            candidates.append(candidate)
    reason = result.get(keys.FAIL_REASON)
    accuracy = result.get(keys.ACCURACY)
    if reason is None and error:
        reason = _lost_worker(result)
    if reason is None and accuracy is None:
        reason = "the trial reported no accuracy"
    if reason is None and not (isinstance(accuracy, (int, float)) and math.isfinite(accuracy)):
        reason = f"the trial reported accuracy {accuracy!r}"
    if reason is not None:
        return TrialOutcome(TrialState.FAIL, None, str(reason), epochs_done, [])
    if partial:
        return TrialOutcome(TrialState.PRUNED, None, None, epochs_done, candidates)
    measured = {**costs[deployed], **{k: v for k, v in result.items() if k in METRICS}}
    values = [float(metric_value(measured, o)) for o in objectives]
    return TrialOutcome(TrialState.COMPLETE, values, None, epochs_done, candidates)


def restart_record(last: Mapping[str, Any]) -> dict[str, Any]:
    """What :data:`attrs.RESTARTS` stores for one attempt Ray gave up on: its last result's worker,
    epoch and why (:func:`final_state`'s wording for a dead worker)."""
    worker = _nested(last, keys.WORKER)
    return {
        "epoch": _epoch(last),
        "node": worker.get("node"),
        "host": worker.get("host"),
        "reason": _lost_worker(last),
    }


def _epoch(result: Mapping[str, Any]) -> int:
    return int(result.get(keys.EPOCH, 0) or 0)


def _new_attempt(result: Mapping[str, Any], last: Mapping[str, Any]) -> bool:
    """Whether ``result`` comes from a re-run of the trial, not from the attempt that sent ``last``.

    An attempt is known by its worker's start time: one attempt may report an epoch twice (the int8
    scores, the anytime report and a failure all follow the last epoch on the same epoch). Without
    start times, an epoch going back means a re-run.
    """
    now, before = _nested(result, keys.WORKER).get("started"), _nested(last, keys.WORKER).get("started")
    if now is not None and before is not None:
        return now != before
    return _epoch(result) < _epoch(last)


def _lost_worker(result: Mapping[str, Any]) -> str:
    """Why Ray reported an error: name the node the trial last reported from, and whether it is gone."""
    worker = _nested(result, keys.WORKER)
    node, host = worker.get("node"), worker.get("host")
    if not node:
        return "the trial's worker raised or died before reporting (see the Ray logs); e.g. killed for memory"
    where = f"{host} (Ray node {str(node)[:12]})" if host else f"Ray node {str(node)[:12]}"
    if _node_alive(str(node)) is False:
        return f"its Ray node {where} was lost mid-trial (the node died or left the cluster)"
    return f"the trial's worker on {where} raised or died (see the Ray logs); e.g. killed for memory"


def _node_alive(node_id: str) -> bool | None:
    try:
        import ray

        if not ray.is_initialized():
            return None
        return next((bool(n.get("Alive")) for n in ray.nodes() if n.get("NodeID") == node_id), False)
    except Exception:  # the cluster's own view is best effort; the reason stays truthful without it
        return None


class SDOptunaSearch(Searcher):
    """A Ray Tune searcher over a stored Optuna study, with budget rejection and honest final states.

    Ownership of RUNNING trials: a trial this searcher asked for is moved out of RUNNING either in
    :meth:`suggest` (budget-rejected or invalid: told at once, never sent to Ray) or in
    :meth:`on_trial_complete` (COMPLETE, PRUNED or FAIL). Trials still in flight when the driver
    stops stay RUNNING; the runner tells them FAIL and re-runs them (see runner.py).

    Args:
        space: the define-by-run callable (a :class:`SpaceSampler`).
        study: the Optuna study (directions match ``objectives``; its storage is the truth).
        storage: the study's storage (the same object the study was created or loaded with).
        objectives: objective names in the study's order.
        budget: metric -> limit on the deployed exit.
        cost_fn: config -> exit -> metric -> value (meta device and ONNX Runtime, before training).
        max_rejections: consecutive rejections before the space is declared infeasible.
        fingerprint_fn: config -> what it trains (:func:`~sdsearch.training.identity.training_fingerprint`);
            a config whose fingerprint a trial of the study already has is not trained again: it is
            told that trial's result (at once, or when that trial ends) and does not count.
        max_duplicates: consecutive duplicates before the space is taken to be exhausted.
        checkpoints: the study's folder for trained weights: a trial that completes leaves its
            network there (``trial-N.pt``, stored as ``attrs.CHECKPOINT``); None keeps none.
    """

    def __init__(
        self,
        space: SpaceSampler,
        *,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        objectives: tuple[str, ...],
        budget: Mapping[str, float],
        cost_fn: Callable[[TrialConfig], Costs],
        max_rejections: int = MAX_CONSECUTIVE_REJECTIONS,
        fingerprint_fn: Callable[[TrialConfig], str] | None = None,
        max_duplicates: int = MAX_CONSECUTIVE_DUPLICATES,
        checkpoints: Path | None = None,
    ) -> None:
        super().__init__(metric=keys.ACCURACY, mode="max")
        self._space = space
        self._study = study
        self._storage = storage
        self._study_id = storage.get_study_id_from_name(study.study_name)
        self._objectives = tuple(objectives)
        self._budget = dict(budget)
        self._cost_fn = cost_fn
        self._max_rejections = max_rejections
        self._fingerprint_fn = fingerprint_fn
        self._max_duplicates = max_duplicates
        self._checkpoints = checkpoints
        self._fingerprints: dict[str, str] = {}  # Ray trial id -> fingerprint of what it trains
        self._in_flight: dict[str, int] = {}  # fingerprint -> number of the trial training it
        # fingerprint -> the duplicates waiting for the in-flight trial that trains it
        self._waiting: dict[str, list[optuna.trial.Trial]] = {}
        self._trials: dict[str, optuna.trial.Trial] = {}  # Ray trial id -> asked Optuna trial
        self._pending: dict[str, tuple[TrialConfig, Costs, str]] = {}  # config, costs, deployed candidate
        self._told_ray: set[str] = set()
        self._untold: dict[int, optuna.trial.Trial] = {}  # asked, not yet told: storage trial id -> trial
        # Ray trial id -> its latest result: Ray reports a worker that died without any result.
        self._last: dict[str, dict[str, Any]] = {}
        self._restarts: dict[str, list[dict[str, Any]]] = {}  # results before Ray re-ran a trial
        self._lock = threading.Lock()  # _pending and _untold are read by the heartbeat thread
        self.consecutive_rejections = 0
        self.n_rejected = 0
        self.infeasible = False
        self.consecutive_duplicates = 0
        self.n_duplicates = 0
        #: Only duplicates were left to ask for: the space has no untried configuration.
        self.exhausted = False
        self.completed: list[tuple[int, TrialOutcome]] = []
        #: The storage became unreachable or full: the run must end (the runner raises this).
        self.fatal: SdsearchError | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """The space comes from the YAML, never from Tune's ``param_space``; accept Tune's metric."""
        return True

    # -- Ray Searcher API --------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """Ask until a config fits the budget; rejected ones are told at once and never trained."""
        if self.fatal is None:
            with self._storage_faults():
                return self._suggest(trial_id)
        return Searcher.FINISHED

    def _suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.infeasible or self.exhausted:
            return Searcher.FINISHED
        while self.consecutive_rejections < self._max_rejections:
            if self.consecutive_duplicates >= self._max_duplicates:
                self.exhausted = True
                return Searcher.FINISHED
            with warnings.catch_warnings():  # "heartbeats are meant for Study.optimize": we beat ourselves
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                ot_trial = self._study.ask()
            storage_id = self._storage.get_trial_id_from_study_id_trial_number(
                self._study_id, ot_trial.number
            )
            with self._lock:  # from here until tell, a stopping driver must find it (see in_flight)
                self._untold[storage_id] = ot_trial
            ot_trial.set_user_attr(attrs.DRIVER, driver_identity())
            config = self._space(ot_trial)
            ot_trial.set_user_attr(attrs.CONFIG, config.to_dict())
            try:
                costs = self._cost_fn(config)
            except (SdsearchError, ValueError, RuntimeError) as exc:
                # Unbuildable (e.g. an input too small for the network): nothing to learn from.
                self._reject(ot_trial, attrs.REJECTED_INVALID, f"cannot be built: {exc}", None)
                continue
            deployed_name = deployed_candidate(config, costs, self._budget)
            deployed = costs[deployed_name]
            if config.elastic:
                ot_trial.set_user_attr(attrs.DEPLOYED, deployed_name)
            ot_trial.set_user_attr(attrs.COST, dict(deployed))
            constraints = budget_violations(deployed, self._budget)
            invalid = self._space.space.invalid_reason(config)
            if self._space.space.can_be_invalid:
                constraints[VALID_CONSTRAINT] = 1.0 if invalid else 0.0
            with warnings.catch_warnings():  # a retry queued by Optuna's stale-trial check has them already
                warnings.filterwarnings("ignore", message="The constraint value is ignored")
                for metric, value in constraints.items():
                    ot_trial.set_constraint(metric, value)
            if invalid or any(v > 0 for v in constraints.values()):
                why = attrs.REJECTED_INVALID if invalid else attrs.REJECTED_BUDGET
                self._reject(ot_trial, why, invalid, self._rejected_values(deployed))
                continue
            self.consecutive_rejections = 0
            try:
                fingerprint = self._fingerprint(ot_trial, config)
            except (SdsearchError, ValueError, RuntimeError) as exc:  # its loss cannot be built
                self._reject(ot_trial, attrs.REJECTED_INVALID, f"cannot be built: {exc}", None)
                continue
            if fingerprint is not None and self._settled_as_duplicate(ot_trial, fingerprint):
                continue
            self.consecutive_duplicates = 0
            if fingerprint is not None:
                self._fingerprints[trial_id] = fingerprint
                self._in_flight[fingerprint] = ot_trial.number
            self._trials[trial_id] = ot_trial
            with self._lock:
                self._pending[trial_id] = (config, costs, deployed_name)
            self._beat(storage_id)
            return {
                "config": config.to_dict(),
                "trial_number": ot_trial.number,
                keys.DEPLOYED: deployed_name,
                COSTS_KEY: trial_costs(deployed, self._objectives),  # what MO-ASHA ranks by
                **({CANDIDATE_COSTS_KEY: self._fitting(costs)} if config.elastic else {}),
                **({keys.CHECKPOINT: str(self._checkpoint(ot_trial.number))} if self._checkpoints else {}),
            }
        self.infeasible = True
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Multi-objective Optuna keeps no intermediate values; heartbeats keep shared studies honest.

        The latest result is kept: it names the worker when Ray later reports the trial's death
        without one, and an epoch that does not follow it means Ray re-ran the trial after its
        worker died (the runner allows one such retry).
        """
        if self.fatal is not None:  # the run is stopping: the next driver re-runs what is in flight
            return
        with self._storage_faults():
            self._on_trial_result(trial_id, result)

    def _on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        ot_trial = self._trials.get(trial_id)
        if ot_trial is None:
            return
        last = self._last.get(trial_id)
        if last is not None and _new_attempt(result, last):
            self._restarts.setdefault(trial_id, []).append(last)
        self._last[trial_id] = dict(result)
        self._beat(self._storage_id(ot_trial))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell the study exactly once, with candidates and the reason stored before ``tell``."""
        if self.fatal is not None:  # Tune's stop hands in cut-short trials: they must stay in flight
            return
        with self._storage_faults():
            self._on_trial_complete(trial_id, result, error)

    def _on_trial_complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        if trial_id in self._told_ray or trial_id not in self._pending:
            return
        ot_trial = self._trials[trial_id]
        with self._lock:
            config, costs, deployed = self._pending.pop(trial_id)
        self._told_ray.add(trial_id)
        last, restarts = self._last.pop(trial_id, None), self._restarts.pop(trial_id, [])
        if result is None and error:  # Tune reports a dead worker without the trial's last result
            result = last
        if self._storage.get_trial(self._storage_id(ot_trial)).state.is_finished():
            # Another driver judged it stale and failed it; its retry is queued, so drop this result.
            logger.warning("trial %d was finished elsewhere; its late result is dropped", ot_trial.number)
            self._told(ot_trial)
            fingerprint = self._fingerprints.pop(trial_id, "")
            self._in_flight.pop(fingerprint, None)
            for duplicate in self._waiting.pop(fingerprint, []):  # no result of its own to wait for
                duplicate.set_user_attr(
                    attrs.FAIL_REASON,
                    f"trial {ot_trial.number}, the same training, was finished by another driver",
                )
                self._study.tell(duplicate, state=TrialState.FAIL)
                self._told(duplicate)
            return
        outcome = final_state(
            result, error=error, config=config, costs=costs, objectives=self._objectives, deployed=deployed
        )
        ot_trial.set_user_attr(attrs.EPOCHS_DONE, outcome.epochs_done)
        if outcome.candidates:
            ot_trial.set_user_attr(attrs.CANDIDATES, outcome.candidates)
        if outcome.reason:
            ot_trial.set_user_attr(attrs.FAIL_REASON, outcome.reason)
        if outcome.state == TrialState.PRUNED:
            ot_trial.set_constraint(attrs.STOPPED_EARLY_CONSTRAINT, 1.0)
        worker = _nested(result or {}, keys.WORKER)
        if worker:
            ot_trial.set_user_attr(attrs.WORKER, worker)
        anytime = (result or {}).get(keys.ANYTIME)  # JSON text (see trainable.anytime_report)
        if isinstance(anytime, str) and outcome.state != TrialState.FAIL:
            ot_trial.set_user_attr(attrs.ANYTIME, json.loads(anytime))
        if restarts:
            ot_trial.set_user_attr(attrs.RESTARTS, [restart_record(r) for r in restarts])
        checkpoint = self._checkpoint(ot_trial.number)
        if outcome.state == TrialState.COMPLETE and checkpoint is not None:
            if checkpoint.is_file():
                ot_trial.set_user_attr(
                    attrs.CHECKPOINT, {"file": checkpoint.name, "bytes": checkpoint.stat().st_size}
                )
            else:  # e.g. a worker whose disk the driver cannot see: say so, the results stand
                logger.warning("trial %d: its trained weights are not in %s; it deploys only by retraining",
                               ot_trial.number, checkpoint.parent)  # fmt: skip
        self._study.tell(ot_trial, outcome.values, state=outcome.state)
        self._told(ot_trial)
        self.completed.append((ot_trial.number, outcome))
        fingerprint = self._fingerprints.pop(trial_id, None)
        if fingerprint is not None:
            self._in_flight.pop(fingerprint, None)
            for duplicate in self._waiting.pop(fingerprint, []):
                self._settle(duplicate, ot_trial.number, outcome.state, outcome.values)

    @contextlib.contextmanager
    def _storage_faults(self) -> Iterator[None]:
        """A storage that is gone or full ends the run: keep the first such error as :attr:`fatal`
        (the runner stops Tune, see :meth:`stopper`, and raises it) instead of raising into Tune,
        which takes an error in ``on_trial_complete`` for the trial's own failure, logs a traceback
        and re-runs the trial. The trial being told stays in :attr:`in_flight`."""
        try:
            yield
        except (StorageUnavailableError, DiskFullError) as exc:
            if self.fatal is None:
                self.fatal = exc

    def stopper(self) -> Stopper:
        """A Tune ``Stopper`` that ends the whole run once :attr:`fatal` is set."""
        return _StopOnFatal(self)

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
    def _beat(self, storage_id: int) -> None:
        if heartbeat_enabled(self._storage):
            self._storage.record_heartbeat(storage_id)

    @contextlib.contextmanager
    def heartbeats(self) -> Iterator[None]:
        """Keep every trial in flight alive for other drivers of a shared (server) study.

        Results arrive once per epoch, which may be rarer than the grace period, and a trial waiting
        for resources reports nothing; so a thread beats for all of them, as ``Study.optimize`` does.
        """
        storage = self._storage
        if not heartbeat_enabled(storage):
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(storage.get_heartbeat_interval()):
                with self._lock:
                    trial_ids = list(self._untold)
                for trial_id in trial_ids:
                    try:  # the storage itself rides out a restarting database (sdsearch.store.rdb)
                        storage.record_heartbeat(trial_id)
                    except (StorageUnavailableError, DiskFullError):  # the driver's own calls report it, once
                        logger.debug("no heartbeat for trial id %d: the storage is unreachable", trial_id)
                    except Exception as exc:  # a missed beat is harmless: the next one comes in an interval
                        logger.warning(
                            "could not record a heartbeat for trial id %d (%s: %s); trying again in %d s",
                            trial_id,
                            type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "",
                            storage.get_heartbeat_interval(),
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

    def _storage_id(self, ot_trial: optuna.trial.Trial) -> int:
        with self._lock:
            for storage_id, trial in self._untold.items():
                if trial is ot_trial:
                    return storage_id
        return self._storage.get_trial_id_from_study_id_trial_number(self._study_id, ot_trial.number)

    def _told(self, ot_trial: optuna.trial.Trial) -> None:
        with self._lock:
            for storage_id, trial in list(self._untold.items()):
                if trial is ot_trial:
                    del self._untold[storage_id]

    # -- duplicates --------------------------------------------------------------------------------
    def _fingerprint(self, ot_trial: optuna.trial.Trial, config: TrialConfig) -> str | None:
        if self._fingerprint_fn is None:
            return None
        fingerprint = self._fingerprint_fn(config)
        ot_trial.set_user_attr(attrs.FINGERPRINT, fingerprint)
        return fingerprint

    def _settled_as_duplicate(self, ot_trial: optuna.trial.Trial, fingerprint: str) -> bool:
        """Whether the trial trains what another one of the study trains: then it is told that
        trial's result (or waits for it, if that trial is still training here) and never trained."""
        running = self._in_flight.get(fingerprint)
        if running is not None:
            ot_trial.set_user_attr(attrs.DUPLICATE_OF, running)
            self._waiting.setdefault(fingerprint, []).append(ot_trial)
            self._count_duplicate()
            return True
        original = next(
            (
                t
                for t in self._study.get_trials(deepcopy=False, states=_TRAINED_STATES)
                if t.user_attrs.get(attrs.FINGERPRINT) == fingerprint and attrs.outcome(t).counts
            ),
            None,
        )
        if original is None:
            return False
        self._settle(ot_trial, original.number, original.state, original.values)
        self._count_duplicate()
        return True

    def _settle(
        self, ot_trial: optuna.trial.Trial, original: int, state: TrialState, values: list[float] | None
    ) -> None:
        """Tell a duplicate what its original was told, so the sampler learns from every trial."""
        ot_trial.set_user_attr(attrs.DUPLICATE_OF, original)
        if state == TrialState.COMPLETE:
            self._study.tell(ot_trial, values)
        elif state == TrialState.PRUNED:
            ot_trial.set_constraint(attrs.STOPPED_EARLY_CONSTRAINT, 1.0)
            self._study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            ot_trial.set_user_attr(attrs.FAIL_REASON, f"the same training as trial {original}, which failed")
            self._study.tell(ot_trial, state=TrialState.FAIL)
        self._told(ot_trial)

    def _checkpoint(self, number: int) -> Path | None:
        return None if self._checkpoints is None else self._checkpoints / f"trial-{number}.pt"

    def _fitting(self, costs: Costs) -> dict[str, dict[str, float]]:
        """Every candidate within the budget -> its cost per cost objective (what MO-ASHA ranks)."""
        return {
            name: trial_costs(cost, self._objectives)
            for name, cost in costs.items()
            if within_budget(cost, self._budget)
        }

    def _count_duplicate(self) -> None:
        self.consecutive_duplicates += 1
        self.n_duplicates += 1

    def _rejected_values(self, deployed: Mapping[str, float]) -> list[float]:
        """Objective values of a config that never trains: accuracy 0 and its real costs (a cost known
        only after training, such as expected MACs, takes its metric's fallback, the worst case)."""
        return [
            0.0 if METRICS.get(o).direction == "maximize" else float(metric_value(deployed, o))
            for o in self._objectives
        ]

    def _reject(
        self, ot_trial: optuna.trial.Trial, why: str, message: str | None, values: list[float] | None
    ) -> None:
        """Tell a config that will never train: COMPLETE with accuracy 0 and its real cost when it has
        one, so every sampler (TPE, NSGA-II/III, GP) sees its positive constraints; FAIL otherwise."""
        ot_trial.set_user_attr(attrs.REJECTED, why)
        if message:
            ot_trial.set_user_attr(attrs.FAIL_REASON, message)
        if values is None:
            self._study.tell(ot_trial, state=TrialState.FAIL)
        else:
            self._study.tell(ot_trial, values)
        self._told(ot_trial)
        self.consecutive_rejections += 1
        self.n_rejected += 1


#: States of a trial whose result a duplicate takes over. Not FAIL: a failure may be the machine's
#: (a worker killed for memory), and a later proposal of the config deserves its own training.
_TRAINED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class _StopOnFatal(Stopper):
    """Stops every trial once the searcher's storage is gone or full (module level: Tune pickles it)."""

    def __init__(self, searcher: SDOptunaSearch) -> None:
        self._searcher = searcher

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self._searcher.fatal is not None


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
