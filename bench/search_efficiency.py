"""Search efficiency: feasible-front hypervolume per search second, with and without early stopping.

Every method searches the same space (``spaces/iot_budget.yaml``'s space) on digits (or ``--npz``,
e.g. CIFAR-10) under the same edge budget (default params <= 100k, MACs <= 0.5M on digits, 8M on
32x32 ``--npz`` images; each method's line reports how many configs it rejected or trained over
budget) for the same budget of *search seconds* per seed, in one process, without Ray (so the
strategy is measured, not Ray):

* **tpe**: plain Optuna multi-objective TPE (the space's sampler options, same seed, same space
  via ``Space.suggest``; objectives accuracy/params/macs of the deployed exit) training *every*
  sampled config to the full epochs; infeasible ones are excluded from the front afterwards.
  Trial front only.
* **random**: ``RandomSampler``, otherwise as tpe.
* **sdsearch**: :class:`sdsearch.search.searcher.SDOptunaSearch` driven directly (``suggest`` ->
  train -> ``on_trial_complete``) over an in-memory study with the space's TPE sampler: configs
  over budget are told at once with their constraints and never trained; every exit of a trained
  trial is a candidate for the front. Every trial trains to the full epochs.
* **sdsearch+elastic**: sdsearch whose every trial trains one elastic network at ``--elastic-widths``
  (multipliers of the sampled width; sandwich rule, in-place distillation, per-width BN): every
  (width, exit) that fits the budget is a candidate, and the sampler is told the widest fitting width's
  deployed exit. Its report adds the final HV against plain sdsearch per seed, the share of the budget
  where its mean curve is ahead, seconds per trained trial and candidates per trial.
* **sdsearch+asha** / **sdsearch+moasha**: sdsearch with a scheduler, simulated with the rule code
  the Ray schedulers use (:class:`sdsearch.search.moasha.AsyncSuccessiveHalving`, one bracket,
  ``--grace-epochs``, ``--reduction-factor``, ``max_t`` = the epochs): ASHA ranks a rung by the
  deployed exit's accuracy (``ScalarRanking("maximize")``); MOASHA by non-dominated sorting of
  (that accuracy, the deployed exit's params, MACs) with crowding-distance ties
  (``ParetoRanking``), the costs read from the suggested config as ``MOASHAScheduler`` reads them.
  Trials run one at a time (sequential asynchronous SH: a trial is judged at each rung against the
  points recorded there so far). The trainer reports every epoch and stops when the rule says
  STOP; the stopped trial is told with its last epoch's result, so it ends PRUNED (partial
  candidates, a positive ``stopped_early`` constraint) as in a real run. Only COMPLETE trials
  (full epochs) and their exits count on a front, as ``sdsearch show`` counts them.

Two ablations come from the same runs (no extra training): ``sdsearch (trials)`` is the sdsearch
run's front of deployed exits only (the effect of budget rejection alone), and ``tpe (+exits)``
is the TPE run's front with every exit as a candidate (the effect of candidates).

Search seconds: the clock (``--clock cpu``, the default: CPU time of this process with
``--threads 1``, robust on a machine shared with others; or ``--clock wall``) is charged for
sampling, cost checks, scheduler decisions and tells as they run, and for the epochs trained.
Training a config under a seed is cached as its per-epoch curve (validation accuracy of every
exit, seconds of each epoch; the first includes building the network): a method that samples the
config again gets the same accuracies and is charged the same seconds for the epochs it trains,
so methods are not favoured by load noise. A method that needs more epochs than are cached
retrains the config from scratch (same seed: the cached epochs are reproduced exactly; that
replay is checked and not charged) and the new epochs join the cache. A run stops starting trials
when its budget is spent; a trial counts at the moment it finishes.

Output, per method (mean ± std over seeds): normalised hypervolume (``sdsearch.results.front.
hypervolume``, one reference for everyone: accuracy 0 and the budget limits; ideal: accuracy 1,
zero cost) of the feasible front at 25/50/75/100 % of the budget; trials trained to the end,
pruned by the scheduler, failed and rejected before training; epochs trained; the share of
training seconds spent on infeasible configs. Then the **time ratio**: seconds a method needs to
reach the plain-TPE run's final HV divided by the seconds TPE needed (per seed; < 1 means faster;
``>x`` means not reached within the budget, x is the bound), and MOASHA against ASHA at equal
seconds. ``--plot hv.png`` draws mean HV against search seconds.

Run:  .venv/bin/python bench/search_efficiency.py [--seconds 120] [--seeds 3] [--epochs 4]
      [--grace-epochs 1] [--reduction-factor 3] [--methods tpe sdsearch ...]
      [--npz cifar10_12k.npz --train-images 2000] [--plot hv.png] [--save runs.json | --load runs.json]
      [--smoke]
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPACE_FILE = REPO / "spaces" / "iot_budget.yaml"
METHODS = ("tpe", "random", "sdsearch", "sdsearch+asha", "sdsearch+moasha", "sdsearch+elastic")
#: Method -> scheduler simulated over the sdsearch searcher.
SCHEDULERS = {
    "sdsearch": None,
    "sdsearch+asha": "asha",
    "sdsearch+moasha": "moasha",
    "sdsearch+elastic": None,
}
#: Methods whose trials train elastic networks (``train.elastic_widths``: every width a candidate).
ELASTIC = ("sdsearch+elastic",)
#: The multipliers of ``backbone.width`` an elastic trial trains (``--elastic-widths``).
ELASTIC_WIDTHS = (1.0, 0.75, 0.5, 0.25)
#: Order the methods run in per seed: the ones that train every config to the end fill the cache first.
RUN_ORDER = ("tpe", "random", "sdsearch", "sdsearch+moasha", "sdsearch+asha", "sdsearch+elastic")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
OBJECTIVES = ("accuracy", "params", "macs")
DIRECTIONS = ("maximize", "minimize", "minimize")
#: The goal of the early-stopping issue: MOASHA reaches TPE's final HV in at most this share of TPE's seconds.
TARGET_RATIO = 0.3
#: The goal of elastic trials: sdsearch+elastic reaches TPE's final HV in at most this share of its seconds.
ELASTIC_TARGET_RATIO = 0.2


@dataclass
class Event:
    """One trial trained to the end: when it finished (search seconds), its exits (an elastic trial's
    every width's) as candidates, and the seconds its training was charged."""

    t: float
    deployed: dict[str, Any]
    exits: list[dict[str, Any]]
    seconds: float = math.nan


@dataclass
class RunLog:
    method: str
    seed: int
    events: list[Event] = field(default_factory=list)
    rejected: int = 0
    pruned: int = 0
    failed: int = 0
    epochs: int = 0
    train_seconds: float = 0.0
    infeasible_seconds: float = 0.0
    elapsed: float = 0.0
    _hv: dict[bool, list[float]] = field(default_factory=dict, repr=False)


@dataclass
class Curve:
    """What training one config under one seed has shown so far, epoch by epoch.

    ``failure`` is set when training raised (e.g. diverged) in the epoch after the recorded ones:
    why, and the seconds that partial epoch ran.
    """

    accuracy: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failure: tuple[str, float] | None = None


@dataclass(frozen=True)
class Trained:
    """One method's run of one config: epochs done and charged, the last epoch's accuracies."""

    epochs: int
    accuracy: dict[str, float] | None
    charged: float
    fresh: float  # clock seconds this call really spent training (decisions excluded)
    failure: str | None = None


class _DecisionError(Exception):
    """A scheduler decision raised inside the training callback: a bug, never a failed trial."""


class Trainer:
    """Trains configs once per (config, seed), epoch by epoch, and serves their curves from a cache.

    ``decide(epoch, val_accuracy) -> stop?`` is asked after every epoch but the last (None: train
    to the end). Only the epochs a call goes through are charged, at their first measured seconds.
    """

    def __init__(self, dataset: Any, threads: int, clock: Callable[[], float]) -> None:
        self.dataset, self.threads, self.clock = dataset, threads, clock
        self.cache: dict[str, Curve] = {}
        self.epochs_trained = 0  # fresh epochs, replays excluded
        self.epochs_replayed = 0
        self.mismatches = 0  # replayed epochs whose accuracies differ from the cached ones

    def __call__(self, cfg: Any, decide: Callable[[int, dict[str, float]], bool] | None = None) -> Trained:
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        curve = self.cache.setdefault(key, Curve())
        epochs = cfg.train.epochs
        state = {"done": 0, "charged": 0.0, "decide": 0.0}
        start = self.clock()

        def step(epoch: int) -> bool:
            """Charge ``epoch`` (cached by now) and ask whether to stop after it."""
            state["done"], state["charged"] = epoch, state["charged"] + curve.seconds[epoch - 1]
            if decide is None or epoch >= epochs:
                return False
            t = self.clock()
            stop = decide(epoch, curve.accuracy[epoch - 1])
            state["decide"] += self.clock() - t
            return stop

        stopped = any(step(e) for e in range(1, len(curve.accuracy) + 1))  # any() stops at the first True
        if not stopped and state["done"] < epochs and curve.failure is None:
            self._train(
                cfg, curve, step, lambda seconds: state.__setitem__("charged", state["charged"] + seconds)
            )
        failure = None
        if state["done"] < epochs and curve.failure is not None and len(curve.accuracy) == state["done"]:
            failure = curve.failure[0]
            state["charged"] += curve.failure[1]
        fresh = self.clock() - start - state["decide"]
        done = state["done"]
        return Trained(done, curve.accuracy[done - 1] if done else None, state["charged"], fresh, failure)

    def _train(
        self, cfg: Any, curve: Curve, step: Callable[[int], bool], charge: Callable[[float], None]
    ) -> None:
        """Train from scratch until ``step`` says stop or the epochs are done, extending ``curve``;
        ``charge`` bills seconds that belong to an epoch already stepped through."""
        from sdsearch.search.trainable import fit_config

        known = len(curve.accuracy)
        mark = [self.clock()]

        def report(r: Any) -> bool:
            now = self.clock()
            if known < r.epoch == len(curve.accuracy):
                # A follow-up on the last epoch (the anytime calibration, int8 scores): a real trial
                # pays for it, so its seconds join that epoch's (charged now, and on every replay).
                curve.accuracy[-1] = dict(r.val_accuracy)
                curve.seconds[-1] += now - mark[0]
                charge(now - mark[0])
                mark[0] = self.clock()
                return False
            if r.epoch <= known:  # a replay: same seed and threads give the same numbers, so only check
                self.epochs_replayed += 1
                self.mismatches += dict(r.val_accuracy) != curve.accuracy[r.epoch - 1]
                mark[0] = self.clock()
                return False
            curve.accuracy.append(dict(r.val_accuracy))
            curve.seconds.append(now - mark[0])
            self.epochs_trained += 1
            try:
                stop = step(r.epoch)
            except Exception as exc:
                raise _DecisionError from exc
            mark[0] = self.clock()
            return stop

        try:
            fit_config(cfg, self.dataset, threads=self.threads, report=report)
        except _DecisionError as exc:
            raise exc.__cause__ from None
        except Exception as exc:  # a failed trial still costs its seconds; every method handles it as FAIL
            curve.failure = (f"{type(exc).__name__}: {exc}", self.clock() - mark[0])

    def full_trial_seconds(self, epochs: int) -> list[float]:
        """Charged seconds of every cached config trained to the end (``epochs``)."""
        return [sum(c.seconds) for c in self.cache.values() if len(c.seconds) == epochs]


def make_halving(kind: str, args: argparse.Namespace) -> Any:
    """The rung rule of one run: ASHA on accuracy or MOASHA on (accuracy, costs)."""
    from sdsearch.search.moasha import AsyncSuccessiveHalving, ParetoRanking, ScalarRanking

    ranking = ScalarRanking("maximize") if kind == "asha" else ParetoRanking(DIRECTIONS)
    return AsyncSuccessiveHalving(grace_period=args.grace_epochs, reduction_factor=args.reduction_factor,
                                  max_t=args.epochs, ranking=ranking)  # fmt: skip


def search(method: str, space: Any, seed: int, budget_s: float, train: Trainer, cost_fn: Any,
           clock: Callable[[], float], args: argparse.Namespace) -> RunLog:  # fmt: skip
    """One method, one seed: sample, (reject,) train, tell until ``budget_s`` search seconds are spent."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search import Searcher

    from sdsearch.core.config import TrialConfig
    from sdsearch.core.exits import candidate_name
    from sdsearch.search.moasha import COSTS_KEY, STOP
    from sdsearch.search.result_keys import DEPLOYED, exit_metrics
    from sdsearch.search.searcher import SDOptunaSearch, SpaceSampler
    from sdsearch.search.study import make_sampler

    sampler = (
        optuna.samplers.RandomSampler(seed=seed) if method == "random" else make_sampler(space, seed=seed)
    )
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(directions=list(DIRECTIONS), sampler=sampler, storage=storage)
    log = RunLog(method, seed)
    searcher = halving = None
    if method in SCHEDULERS:
        searcher = SDOptunaSearch(SpaceSampler(space), study=study, storage=storage, objectives=OBJECTIVES,
                                  budget=space.budget, cost_fn=cost_fn)  # fmt: skip
        if SCHEDULERS[method]:
            halving = make_halving(SCHEDULERS[method], args)
    i = 0
    while log.elapsed < budget_s:
        t0 = clock()
        tid = f"t{i}"
        if searcher is not None:
            s = searcher.suggest(tid)
            if s == Searcher.FINISHED:
                break
            cfg = TrialConfig.from_dict(s["config"])
            deployed_name = s[DEPLOYED]  # an elastic trial's widest width that fits
            decide = None
            if halving is not None:
                costs = s[COSTS_KEY]  # the deployed exit's costs, known before training

                def decide(epoch: int, acc: dict[str, float], tid: str = tid, cfg: Any = cfg,
                           costs: dict[str, float] = costs) -> bool:  # fmt: skip
                    quality = acc[cfg.deploy_exit]
                    point = (quality,) if SCHEDULERS[method] == "asha" else (
                        tuple(quality if o == "accuracy" else costs[o] for o in OBJECTIVES))  # fmt: skip
                    return halving.on_result(tid, epoch, point) == STOP

            run = train(cfg, decide)
            result: dict[str, Any] = {"epoch": run.epochs}
            if run.accuracy is not None:
                result.update(exit_metrics(run.accuracy, deployed_name))
            if run.failure is not None:
                result["fail_reason"] = run.failure
            searcher.on_trial_complete(tid, result)
            outcome = searcher.completed[-1][1]
            state = outcome.state
            exits = list(outcome.candidates) if state == TrialState.COMPLETE else []
            log.rejected = searcher.n_rejected
        else:
            trial = study.ask()
            cfg = space.suggest(trial)
            deployed_name = cfg.deploy_exit
            run = train(cfg)
            costs = cost_fn(cfg)
            d = costs[cfg.deploy_exit]
            if run.failure is not None:
                study.tell(trial, state=TrialState.FAIL)
                state, exits = TrialState.FAIL, []
            else:
                study.tell(trial, [run.accuracy[cfg.deploy_exit], d["params"], d["macs"]])
                state = TrialState.COMPLETE
                exits = [{"exit": e, "accuracy": float(run.accuracy[e]), "params": int(c["params"]),
                          "macs": int(c["macs"])} for e, c in costs.items()]  # fmt: skip
        i += 1
        # measured non-training seconds of this iteration + the (possibly cached) training seconds
        log.elapsed += (clock() - t0 - run.fresh) + run.charged
        log.train_seconds += run.charged
        log.epochs += run.epochs
        if state == TrialState.PRUNED:
            log.pruned += 1
            continue
        if state == TrialState.FAIL:  # its seconds are spent, it adds no point
            log.failed += 1
            continue
        deployed = next(c for c in exits if candidate_name(c["exit"], c.get("width")) == deployed_name)
        if not feasible(deployed, space.budget):
            log.infeasible_seconds += run.charged
        log.events.append(Event(log.elapsed, deployed, exits, run.charged))
    return log


def feasible(c: dict[str, Any], budget: dict[str, float]) -> bool:
    return all(float(c[m]) <= float(v) for m, v in budget.items())


def hv_steps(log: RunLog, budget: dict[str, float], *, exits: bool) -> list[float]:
    """HV of the feasible front after each event (deployed exits, or every exit if ``exits``); cached."""
    if exits not in log._hv:
        from sdsearch.core.pareto import hypervolume
        from sdsearch.results.front import reference_point

        ref = reference_point(OBJECTIVES, [], budget)
        pts: list[tuple[float, ...]] = []
        out = []
        for ev in log.events:
            for c in ev.exits if exits else [ev.deployed]:
                if feasible(c, budget):
                    pts.append((c["accuracy"], float(c["params"]), float(c["macs"])))
            out.append(hypervolume(pts, DIRECTIONS, ref, ideal=(1.0, 0.0, 0.0)))
        log._hv[exits] = out
    return log._hv[exits]


def hv_at(log: RunLog, t: float, budget: dict[str, float], *, exits: bool) -> float:
    """HV of the feasible front known at search second ``t``."""
    n = bisect.bisect_right([ev.t for ev in log.events], t)
    return hv_steps(log, budget, exits=exits)[n - 1] if n else 0.0


#: Rows of the table: label -> (method whose runs are read, every exit a candidate?).
ROWS = {
    "tpe": ("tpe", False),
    "random": ("random", False),
    "sdsearch": ("sdsearch", True),
    "sdsearch+asha": ("sdsearch+asha", True),
    "sdsearch+moasha": ("sdsearch+moasha", True),
    "sdsearch+elastic": ("sdsearch+elastic", True),
    "sdsearch (trials) [ablation]": ("sdsearch", False),
    "tpe (+exits) [ablation]": ("tpe", True),
}


def time_to_reach(
    log: RunLog, target: float, budget: dict[str, float], *, exits: bool, limit: float
) -> float | None:
    for ev, hv in zip(log.events, hv_steps(log, budget, exits=exits)):
        if ev.t > limit:
            return None
        if hv >= target - 1e-12:
            return ev.t
    return None


def _ms(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f}±{sd:.{digits}f}"


def report(logs: list[RunLog], budget: dict[str, float], budget_s: float, seeds: list[int]) -> None:
    by = {(lg.method, lg.seed): lg for lg in logs}
    rows = {label: v for label, v in ROWS.items() if (v[0], seeds[0]) in by}
    header = f"{'method':<30}" + "".join(f"{f'HV@{int(f * 100)}%':>14}" for f in FRACTIONS)
    print(header + f"{'full':>7}{'pruned':>8}{'failed':>7}{'rejected':>9}{'epochs':>8}{'infeas. train':>14}")
    for label, (method, exits) in rows.items():
        cells = [
            _ms([hv_at(by[(method, s)], f * budget_s, budget, exits=exits) for s in seeds]) for f in FRACTIONS
        ]
        runs = [by[(method, s)] for s in seeds]
        extra = ""
        if "ablation" not in label:
            n_full = statistics.mean(len([e for e in r.events if e.t <= budget_s]) for r in runs)
            share = sum(r.infeasible_seconds for r in runs) / max(1e-9, sum(r.train_seconds for r in runs))
            extra = (f"{n_full:>7.1f}{statistics.mean(r.pruned for r in runs):>8.1f}"
                     f"{statistics.mean(r.failed for r in runs):>7.1f}{statistics.mean(r.rejected for r in runs):>9.1f}"
                     f"{statistics.mean(r.epochs for r in runs):>8.0f}{share:>13.0%}")  # fmt: skip
        print(f"{label:<30}" + "".join(f"{c:>14}" for c in cells) + extra)
    print("(full: trials trained to the end, the only ones on a front; epochs: epochs trained, all trials)")
    print()
    print(
        "time to reach the plain-TPE run's final HV (same seed), as a ratio to TPE's own time (< 1: faster):"
    )
    ratios: dict[str, list[str]] = {label: [] for label in rows}
    reached: dict[str, list[float]] = {label: [] for label in rows}
    refs = []
    for s in seeds:
        base = by[("tpe", s)]
        target = hv_at(base, budget_s, budget, exits=False)
        t_base = time_to_reach(base, target, budget, exits=False, limit=budget_s)
        refs.append(f"seed {s}: {target:.3f} at {t_base or 0:.0f} s")
        for label, (method, exits) in rows.items():
            if target <= 0 or not t_base:
                ratios[label].append("n/a")
                continue
            t = time_to_reach(by[(method, s)], target, budget, exits=exits, limit=budget_s)
            if t is None:
                ratios[label].append(f">{budget_s / t_base:.2f}")
            else:
                ratios[label].append(f"{t / t_base:.2f}")
                reached[label].append(t / t_base)
    print(f"  (TPE's final HV and when it reached it: {'; '.join(refs)})")
    for label in rows:
        r = reached[label]
        gm = math.exp(statistics.mean(math.log(max(x, 1e-9)) for x in r)) if r else float("nan")
        print(f"  {label:<30} per seed: {', '.join(ratios[label]):<24} geo-mean of reached: {gm:.2f} "
              f"({len(r)}/{len(seeds)} reached)")  # fmt: skip
    if "sdsearch+moasha" in rows:
        met = [x <= TARGET_RATIO for x in reached["sdsearch+moasha"]]
        print(
            f"  goal: sdsearch+moasha within {TARGET_RATIO}x of TPE's seconds: met on {sum(met)}/{len(seeds)} seeds"
        )
    if "sdsearch+elastic" in rows:
        met = [x <= ELASTIC_TARGET_RATIO for x in reached["sdsearch+elastic"]]
        print(f"  goal: sdsearch+elastic within {ELASTIC_TARGET_RATIO}x of TPE's seconds: met on "
              f"{sum(met)}/{len(seeds)} seeds")  # fmt: skip
    if ("sdsearch+asha", seeds[0]) in by and ("sdsearch+moasha", seeds[0]) in by:
        print()
        compare(by, budget, budget_s, seeds)
    if ("sdsearch+elastic", seeds[0]) in by and ("sdsearch", seeds[0]) in by:
        print()
        elastic_report(by, budget, budget_s, seeds)


def elastic_report(
    by: dict[tuple[str, int], RunLog], budget: dict[str, float], budget_s: float, seeds: list[int]
) -> None:
    """Elastic against plain sdsearch: final HV per seed, the share of the budget where the mean curve
    is ahead, seconds per trial and candidates per trial."""
    el, sd = [[by[(m, s)] for s in seeds] for m in ("sdsearch+elastic", "sdsearch")]
    final = [hv_at(a, budget_s, budget, exits=True) - hv_at(b, budget_s, budget, exits=True)
             for a, b in zip(el, sd, strict=True)]  # fmt: skip
    grid = [budget_s * k / 120 for k in range(1, 121)]
    ahead = sum(
        statistics.mean(hv_at(a, t, budget, exits=True) for a in el)
        > statistics.mean(hv_at(b, t, budget, exits=True) for b in sd)
        for t in grid
    )
    print("sdsearch+elastic vs sdsearch (HV difference, elastic - plain; > 0: elastic better):")
    print(f"  at the final budget: per seed {', '.join(f'{x:+.3f}' for x in final)}; elastic ahead on "
          f"{sum(x > 0 for x in final)}/{len(seeds)}; mean curve ahead at {ahead}/{len(grid)} budget points")  # fmt: skip
    for label, runs in (("sdsearch", sd), ("sdsearch+elastic", el)):
        secs = [e.seconds for r in runs for e in r.events if math.isfinite(e.seconds)]
        cands = [len(e.exits) for r in runs for e in r.events]
        print(f"  {label:<18} seconds per trained trial: median {statistics.median(secs) if secs else math.nan:.1f}; "
              f"candidates per trial: mean {statistics.mean(cands) if cands else math.nan:.1f}")  # fmt: skip


def compare(
    by: dict[tuple[str, int], RunLog], budget: dict[str, float], budget_s: float, seeds: list[int]
) -> None:
    """MOASHA against ASHA at equal search seconds, per seed and over the whole budget."""
    print(
        "sdsearch+moasha vs sdsearch+asha at equal seconds (HV difference, moasha - asha; > 0: moasha better):"
    )
    for f in FRACTIONS:
        d = [hv_at(by[("sdsearch+moasha", s)], f * budget_s, budget, exits=True)
             - hv_at(by[("sdsearch+asha", s)], f * budget_s, budget, exits=True) for s in seeds]  # fmt: skip
        print(f"  at {int(f * 100):>3}% ({f * budget_s:>6.0f} s): per seed {', '.join(f'{x:+.3f}' for x in d)}; "
              f"mean {_ms(d)}; moasha ahead on {sum(x > 0 for x in d)}/{len(seeds)}")  # fmt: skip
    grid = [budget_s * k / 120 for k in range(1, 121)]
    diffs = [[hv_at(by[("sdsearch+moasha", s)], t, budget, exits=True)
              - hv_at(by[("sdsearch+asha", s)], t, budget, exits=True) for t in grid] for s in seeds]  # fmt: skip
    mean = [statistics.mean(col) for col in zip(*diffs)]
    print(f"  over the budget (120 points): mean HV ahead at {sum(x > 0 for x in mean)}, behind at "
          f"{sum(x < 0 for x in mean)}, tied at {sum(x == 0 for x in mean)}; mean difference "
          f"{statistics.mean(mean):+.3f}")  # fmt: skip


def plot(logs: list[RunLog], budget: dict[str, float], budget_s: float, seeds: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sdsearch.core.units import format_value

    by = {(lg.method, lg.seed): lg for lg in logs}
    grid = np.linspace(0, budget_s, 241)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, (method, exits) in ROWS.items():
        if (method, seeds[0]) not in by:
            continue
        curves = np.array([[hv_at(by[(method, s)], t, budget, exits=exits) for t in grid] for s in seeds])
        mean, sd = curves.mean(axis=0), curves.std(axis=0)
        (line,) = ax.plot(
            grid, mean, "--" if "ablation" in label else "-", label=label, drawstyle="steps-post"
        )
        ax.fill_between(grid, mean - sd, mean + sd, color=line.get_color(), alpha=0.1, step="post")
    ax.set_xlabel("search seconds (training + sampling + cost checks + scheduler)")
    ax.set_ylabel("normalised hypervolume of the feasible front")
    limits = ", ".join(f"{m} <= {format_value(v, 'count')}" for m, v in budget.items())
    ax.set_title(f"mean ± std over {len(seeds)} seeds; budget {limits}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def build_space(args: argparse.Namespace, seed: int, *, elastic: bool = False) -> Any:
    """The benchmark's space for a seed; ``elastic`` trains every trial at ``--elastic-widths``."""
    import yaml

    from sdsearch.space.space import parse_space

    doc = yaml.safe_load(SPACE_FILE.read_text())
    doc.update(
        name="bench_efficiency",
        seed=seed,
        objectives=list(OBJECTIVES),  # what every method optimises and the HV measures
        budget={"params": args.budget_params, "macs": args.budget_macs},
    )
    doc["train"] = {**doc["train"], "epochs": args.epochs, "batch_size": args.batch_size}
    if elastic:
        doc["train"]["elastic_widths"] = list(args.elastic_widths)
    if args.depth is not None:
        doc["space"]["backbone"]["depth"] = args.depth
    if args.npz:
        doc["data"] = {"dataset": "npz", "path": str(args.npz), "val_fraction": args.val_fraction}
    else:
        doc["data"] = {**doc["data"], "val_fraction": args.val_fraction}
    return parse_space(doc, source=str(SPACE_FILE))


def subset_train(dataset: Any, n: int | None) -> Any:
    """The first ``n`` images per class-balanced draw of the training split (fixed seed); all if None."""
    import numpy as np

    if n is None or n >= len(dataset.y_train):
        return dataset
    rng = np.random.default_rng(0)
    y = dataset.y_train
    classes = np.unique(y)
    per_class = {c: rng.permutation(np.flatnonzero(y == c)) for c in classes}
    take = [per_class[c][: n // len(classes) + (k < n % len(classes))] for k, c in enumerate(classes)]
    index = np.sort(np.concatenate(take))
    return dataclasses.replace(dataset, x_train=dataset.x_train[index], y_train=y[index],
                               train_index=dataset.train_index[index])  # fmt: skip


def main() -> None:
    from sdsearch.core.units import parse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="search seconds per method per seed (120)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (3)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="methods to run (all); tpe is the reference of the time ratios")  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (4 on digits, 8 with --npz)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="batch size (32 on digits, 64 with --npz)"
    )
    parser.add_argument("--depth", type=int, default=None,
                        help="fix backbone.depth (default: the space's 1-2 on digits, 1 with --npz)")  # fmt: skip
    parser.add_argument("--grace-epochs", type=int, default=1, help="first rung of asha/moasha (1)")
    parser.add_argument("--elastic-widths", type=float, nargs="+", default=list(ELASTIC_WIDTHS),
                        help="multipliers of backbone.width an sdsearch+elastic trial trains (1 0.75 0.5 0.25)")  # fmt: skip
    parser.add_argument("--reduction-factor", type=float, default=3.0, help="eta of asha/moasha (3)")
    parser.add_argument("--budget-params", default="100k", help="params limit of the deployed model (100k)")
    parser.add_argument("--budget-macs", default=None,
                        help="MACs limit of the deployed model (0.5M on digits, 8M with --npz)")  # fmt: skip
    parser.add_argument("--npz", type=Path, default=None,
                        help="an .npz dataset (e.g. CIFAR-10), relative to the repo or absolute; "
                             "skipped with a message when absent")  # fmt: skip
    parser.add_argument("--train-images", type=int, default=None,
                        help="train on a class-balanced subset of this many images (all on digits, 2000 with --npz)")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="validation share of the training set (0.2 on digits, 0.1 with --npz)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (1)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="what a search second is: CPU time of this process (default) or wall time")  # fmt: skip
    parser.add_argument("--plot", default=None, help="write a PNG of HV vs search seconds")
    parser.add_argument("--save", default=None, help="write the runs (every trial's time and exits) as JSON")
    parser.add_argument("--load", default=None,
                        help="report (and --plot) the runs of a --save file instead of searching")  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="one seed, 8 search seconds per method, 1-epoch trials on digits (what CI runs)")  # fmt: skip
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.seconds, args.epochs, args.npz = 1, 8.0, 1, None
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        logs = [_log_from_dict(d) for d in saved["runs"]]
        print(saved["settings"])
        report(logs, saved["budget"], saved["seconds"], saved["seeds"])
        if args.plot:
            plot(logs, saved["budget"], saved["seconds"], saved["seeds"], args.plot)
        return
    npz = args.npz is not None
    defaults = {"epochs": (4, 8), "batch_size": (32, 64), "depth": (None, 1), "budget_macs": ("0.5M", "8M"),
                "train_images": (None, 2000), "val_fraction": (0.2, 0.1)}  # fmt: skip
    for name, (digits, with_npz) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, with_npz if npz else digits)
    if "tpe" not in args.methods:
        parser.error("--methods must include tpe: it is the reference of the time ratios")
    args.budget_params, args.budget_macs = (
        parse(args.budget_params, "count"),
        parse(args.budget_macs, "count"),
    )
    if npz:
        args.npz = args.npz if args.npz.is_absolute() else (REPO / args.npz).resolve()
        if not args.npz.is_file():
            print(f"skipped: {args.npz} does not exist")
            return

    import optuna
    import torch

    from sdsearch.cost.metrics import DeployMetrics
    from sdsearch.data.datasets import load_dataset
    from sdsearch.search.moasha import rung_levels

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    space0 = build_space(args, 0)
    # the split seed is fixed; trial seeds vary
    dataset = subset_train(load_dataset(space0.data, seed=space0.seed), args.train_images)
    shape = dataset.shape
    cost_fn = DeployMetrics(shape)  # config -> exit -> metric -> value, what the runner passes the searcher
    rungs = ", ".join(f"{r:g}" for r in rung_levels(args.grace_epochs, args.reduction_factor, args.epochs))

    settings = (f"dataset {dataset.name}: {len(dataset.y_train)} train / {len(dataset.y_val)} val, "
          f"{shape.in_chans}x{shape.height}x{shape.width}; budget {dict(space0.budget)}; depth "
          f"{args.depth or 'searched'}; epochs {args.epochs}, batch {args.batch_size}; asha/moasha grace "
          f"{args.grace_epochs}, eta {args.reduction_factor:g}, rungs at epochs {rungs} (max_t {args.epochs}); "
          f"{args.seconds:g} s ({args.clock} clock, {args.threads} thread) per method per seed; seeds {seeds}; "
          f"methods {', '.join(args.methods)}; {SPACE_FILE.name} as of spec {space0.spec_hash()}")  # fmt: skip
    print(f"{settings}; load average {os.getloadavg()[0]:.2f}")
    # warm-up (untimed): PyTorch's first-use costs and the cost counter's first call; then one
    # epoch of a config that fits the budget, to size the search budget in full trials
    warm = Trainer(dataset, args.threads, clock)
    first = _first_config(space0, cost_fn)
    warm(first.replace(train=first.train.replace(epochs=1)))
    run = warm(first.replace(seed=1, train=first.train.replace(epochs=1)))  # another seed: not cached
    full = run.charged * args.epochs
    b = first.model.backbone
    print(f"one epoch of a feasible config ({b.arch} width {b.width:g} depth {b.depth}): {run.charged:.1f} s, "
          f"so a full trial ~{full:.0f} s and the budget ~{args.seconds / full:.0f} full trials of it", flush=True)  # fmt: skip

    logs: list[RunLog] = []
    started = time.perf_counter()
    for seed in seeds:
        trainer = Trainer(dataset, args.threads, clock)  # one cache per seed, shared by the methods
        for method in [m for m in RUN_ORDER if m in args.methods]:
            space = build_space(args, seed, elastic=method in ELASTIC)
            log = search(method, space, seed, args.seconds, trainer, cost_fn, clock, args)
            logs.append(log)
            print(f"  seed {seed} {method:<16} full {sum(e.t <= args.seconds for e in log.events):>3}, pruned {log.pruned:>3}, failed "
                  f"{log.failed}, rejected {log.rejected:>3}, epochs {log.epochs:>4}, infeasible-trained "
                  f"{sum(not feasible(e.deployed, space.budget) for e in log.events):>3}, final HV "
                  f"{hv_at(log, args.seconds, space.budget, exits=method in SCHEDULERS):.3f}; "
                  f"wall {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
        fulls = trainer.full_trial_seconds(args.epochs)
        print(f"  seed {seed}: {len(trainer.cache)} distinct configs, {trainer.epochs_trained} epochs trained, "
              f"{trainer.epochs_replayed} replayed ({trainer.mismatches} differed from the cache); a full trial "
              f"took {statistics.median(fulls) if fulls else float('nan'):.0f} s (median of {len(fulls)})", flush=True)  # fmt: skip
    print(f"total wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    print()
    if args.save:
        runs = [{k: v for k, v in dataclasses.asdict(lg).items() if not k.startswith("_")} for lg in logs]
        doc = {"settings": settings, "budget": dict(space0.budget), "seconds": args.seconds, "seeds": seeds,
               "runs": runs}  # fmt: skip
        Path(args.save).write_text(json.dumps(doc))
        print(f"wrote {args.save}")
    report(logs, dict(space0.budget), args.seconds, seeds)
    if args.plot:
        plot(logs, dict(space0.budget), args.seconds, seeds, args.plot)


def _log_from_dict(d: dict[str, Any]) -> RunLog:
    return RunLog(**{**d, "events": [Event(**e) for e in d["events"]]})


def _first_config(space: Any, cost_fn: Any) -> Any:
    """The first config a seeded random search samples that fits the budget."""
    import optuna

    from sdsearch.search.searcher import within_budget

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    while True:
        cfg = space.suggest(study.ask())
        if within_budget(cost_fn(cfg)[cfg.deploy_exit], space.budget):
            return cfg


if __name__ == "__main__":
    sys.exit(main())
