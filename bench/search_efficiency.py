"""Search efficiency: feasible-front hypervolume per training second, sdsearch vs plain TPE vs random.

Every method searches the same space (``spaces/iot_budget.yaml``'s space, short trials: ``--epochs``,
default 2, batch 32) on digits (or ``--npz``) under the same edge budget (default params <= 100k,
MACs <= 0.5M on digits, 8M on 32x32 ``--npz`` images: about 20 % of the space's random configs
are over budget on digits; ``--budget-params 60k`` rejects about 30 %) for the same budget of *search seconds* per seed, in one
process, without Ray (so the strategy is measured, not Ray):

* **sdsearch**: :class:`sdsearch.search.searcher.SDOptunaSearch` driven directly (``suggest`` ->
  train -> ``on_trial_complete``) over an in-memory study with the space's TPE sampler: configs
  over budget are told at once with their constraints (which TPE learns from) and never
  trained; every exit of a trained trial is a candidate for the front.
* **tpe**: plain Optuna multi-objective TPE (same sampler options, same seed, same space via
  ``Space.suggest``; objectives accuracy/params/macs of the deployed exit) training *every* sampled
  config; infeasible ones are excluded from the front afterwards. Trial front only.
* **random**: ``RandomSampler``, trains every config, infeasible ones excluded afterwards.

Two ablations come for free from the same runs (no extra training): ``sdsearch (trials)`` is the
sdsearch run's front of deployed exits only (the effect of budget rejection alone), and
``tpe (+exits)`` is the TPE run's front with every exit as a candidate (the effect of candidates).

Search seconds: the clock (``--clock cpu``, the default: CPU time of this process with
``--threads 1``, robust on a machine shared with others; or ``--clock wall``) is charged for
sampling, cost checks and tells as they run, and for training. A config trained once under a seed
is cached: any method that samples it again under that seed gets the same accuracies and is
charged the same measured training seconds, so methods are not favoured by load noise. A run stops
starting trials when its budget is spent; a trial counts at the moment it finishes.

Output, per method (mean ± std over seeds): normalised hypervolume (``sdsearch.search.front.
hypervolume``, one reference for everyone: accuracy 0 and the budget limits; ideal: accuracy 1,
zero cost) of the feasible front at 25/50/75/100 % of the budget; trained trials, configs rejected
before training, and the share of training seconds spent on infeasible configs. Then the **time
ratio**: seconds a method needs to reach the plain-TPE run's final HV divided by the seconds TPE
needed (per seed; < 1 means faster; ``>x`` means not reached within the budget, x is the bound).
``--plot hv.png`` draws mean HV against search seconds.

Run:  .venv/bin/python bench/search_efficiency.py [--seconds 120] [--seeds 3] [--epochs 2]
      [--budget-params 100k] [--budget-macs 0.5M] [--npz ../shared/data/cifar10_12k.npz] [--plot hv.png]
"""

from __future__ import annotations

import argparse
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
METHODS = ("sdsearch", "tpe", "random")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
OBJECTIVES = ("accuracy", "params", "macs")
DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass
class Event:
    """One trained trial: when it finished (search seconds) and its exits as candidates."""

    t: float
    deployed: dict[str, Any]
    exits: list[dict[str, Any]]


@dataclass
class RunLog:
    method: str
    seed: int
    events: list[Event] = field(default_factory=list)
    rejected: int = 0
    failed: int = 0
    train_seconds: float = 0.0
    infeasible_seconds: float = 0.0
    elapsed: float = 0.0


def build_space(args: argparse.Namespace, seed: int) -> Any:
    import yaml

    from sdsearch.space import parse_space

    doc = yaml.safe_load(SPACE_FILE.read_text())
    doc.update(
        name="bench_efficiency", seed=seed, budget={"params": args.budget_params, "macs": args.budget_macs}
    )
    doc["train"] = {**doc["train"], "epochs": args.epochs, "batch_size": args.batch_size}
    if args.npz:
        doc["data"] = {"dataset": "npz", "path": str(args.npz), "val_fraction": 0.2}
    return parse_space(doc, source=str(SPACE_FILE))


class Trainer:
    """Trains a config once per (config, seed) and remembers accuracies and the seconds it took."""

    def __init__(self, dataset: Any, threads: int, clock: Callable[[], float]) -> None:
        self.dataset, self.threads, self.clock = dataset, threads, clock
        self.cache: dict[str, tuple[dict[str, float], float]] = {}
        self.trained = 0

    def __call__(self, cfg: Any) -> tuple[dict[str, float] | None, float]:
        """Validation accuracy per exit (None: training failed, e.g. diverged) and training seconds."""
        from sdsearch.search.trainable import fit_config

        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key not in self.cache:
            t0 = self.clock()
            try:
                acc = dict(
                    fit_config(cfg, self.dataset, threads=self.threads, report=lambda _r: None).val_accuracy
                )
            except Exception:  # a failed trial still costs its seconds; every method handles it as FAIL
                acc = None
            self.cache[key] = (acc, self.clock() - t0)
            self.trained += 1
        return self.cache[key]


def search(method: str, space: Any, seed: int, budget_s: float, train: Trainer, cost_fn: Any,
           clock: Callable[[], float]) -> RunLog:  # fmt: skip
    """One method, one seed: sample, (reject,) train, tell until ``budget_s`` search seconds are spent."""
    import optuna
    from ray.tune.search import Searcher

    from sdsearch.config import TrialConfig
    from sdsearch.search.runner import make_sampler
    from sdsearch.search.searcher import SDOptunaSearch, SpaceSampler
    from sdsearch.search.trainable import exit_metrics

    sampler = (
        optuna.samplers.RandomSampler(seed=seed) if method == "random" else make_sampler(space, seed=seed)
    )
    study = optuna.create_study(directions=list(DIRECTIONS), sampler=sampler)
    log = RunLog(method, seed)
    searcher = None
    if method == "sdsearch":
        searcher = SDOptunaSearch(SpaceSampler(space), study=study, objectives=OBJECTIVES, budget=space.budget,
                                  cost_fn=cost_fn)  # fmt: skip
    i = 0
    while log.elapsed < budget_s:
        t0 = clock()
        spent = 0.0  # training seconds charged in this iteration (cached or measured)
        trained_now = train.trained
        if searcher is not None:
            s = searcher.suggest(f"t{i}")
            if s == Searcher.FINISHED:
                break
            cfg = TrialConfig.from_dict(s["config"])
            t_train = clock()
            acc, spent = train(cfg)
            fresh = clock() - t_train if train.trained > trained_now else 0.0
            if acc is None:
                result = {"fail_reason": "training failed", "epoch": 0}
            else:
                result = {**exit_metrics(acc, cfg.deploy_exit), "epoch": cfg.train.epochs}
            searcher.on_trial_complete(f"t{i}", result)
            exits = list(searcher.completed[-1][1].candidates)
            log.rejected = searcher.n_rejected
        else:
            trial = study.ask()
            cfg = space.suggest(trial)
            t_train = clock()
            acc, spent = train(cfg)
            fresh = clock() - t_train if train.trained > trained_now else 0.0
            costs = cost_fn(cfg)
            d = costs[cfg.deploy_exit]
            if acc is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                exits = []
            else:
                study.tell(trial, [acc[cfg.deploy_exit], d.params, d.macs])
                exits = [{"exit": e, "accuracy": float(acc[e]), "params": int(c.params), "macs": int(c.macs)}
                         for e, c in costs.items()]  # fmt: skip
        i += 1
        # measured non-training seconds of this iteration + the (possibly cached) training seconds
        log.elapsed += (clock() - t0 - fresh) + spent
        log.train_seconds += spent
        deployed = next((c for c in exits if c["exit"] == cfg.deploy_exit), None)
        if deployed is None:  # failed: its seconds are spent, it adds no point
            log.failed += 1
            continue
        if not feasible(deployed, space.budget):
            log.infeasible_seconds += spent
        log.events.append(Event(log.elapsed, deployed, exits))
    return log


def feasible(c: dict[str, Any], budget: dict[str, float]) -> bool:
    return all(float(c[m]) <= float(v) for m, v in budget.items())


def front_points(log: RunLog, t: float, budget: dict[str, float], *, exits: bool) -> list[tuple[float, ...]]:
    """Feasible points known at search second ``t``: deployed exits, or every exit if ``exits``."""
    pts = []
    for ev in log.events:
        if ev.t > t:
            break
        for c in ev.exits if exits else [ev.deployed]:
            if feasible(c, budget):
                pts.append((c["accuracy"], float(c["params"]), float(c["macs"])))
    return pts


def hv_at(log: RunLog, t: float, budget: dict[str, float], *, exits: bool) -> float:
    from sdsearch.search.front import hypervolume, reference_point

    ref = reference_point(OBJECTIVES, [], budget)
    return hypervolume(front_points(log, t, budget, exits=exits), DIRECTIONS, ref, ideal=(1.0, 0.0, 0.0))


#: Rows of the table: label -> (method whose runs are read, every exit a candidate?).
ROWS = {
    "sdsearch": ("sdsearch", True),
    "tpe": ("tpe", False),
    "random": ("random", False),
    "sdsearch (trials) [ablation]": ("sdsearch", False),
    "tpe (+exits) [ablation]": ("tpe", True),
}


def time_to_reach(
    log: RunLog, target: float, budget: dict[str, float], *, exits: bool, limit: float
) -> float | None:
    for ev in log.events:
        if ev.t > limit:
            return None
        if hv_at(log, ev.t, budget, exits=exits) >= target - 1e-12:
            return ev.t
    return None


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f}±{sd:.3f}"


def report(logs: list[RunLog], budget: dict[str, float], budget_s: float, seeds: list[int]) -> None:
    by = {(lg.method, lg.seed): lg for lg in logs}
    header = f"{'method':<30}" + "".join(f"{f'HV@{int(f * 100)}%':>14}" for f in FRACTIONS)
    print(header + f"{'trained':>9}{'rejected':>9}{'infeas. train':>14}")
    for label, (method, exits) in ROWS.items():
        cells = []
        for f in FRACTIONS:
            cells.append(_ms([hv_at(by[(method, s)], f * budget_s, budget, exits=exits) for s in seeds]))
        runs = [by[(method, s)] for s in seeds]
        n_trained = statistics.mean(len([e for e in r.events if e.t <= budget_s]) for r in runs)
        n_rej = statistics.mean(r.rejected for r in runs)
        share = sum(r.infeasible_seconds for r in runs) / max(1e-9, sum(r.train_seconds for r in runs))
        extra = f"{n_trained:>9.1f}{n_rej:>9.1f}{share:>13.0%}" if "ablation" not in label else ""
        print(f"{label:<30}" + "".join(f"{c:>14}" for c in cells) + extra)
    print()
    print(
        "time to reach the plain-TPE run's final HV (same seed), as a ratio to TPE's own time (< 1: faster):"
    )
    ratios: dict[str, list[str]] = {label: [] for label in ROWS}
    means: dict[str, list[float]] = {label: [] for label in ROWS}
    for s in seeds:
        base = by[("tpe", s)]
        target = hv_at(base, budget_s, budget, exits=False)
        t_base = time_to_reach(base, target, budget, exits=False, limit=budget_s)
        if target <= 0 or not t_base:
            for label in ROWS:
                ratios[label].append("n/a")
            continue
        for label, (method, exits) in ROWS.items():
            t = time_to_reach(by[(method, s)], target, budget, exits=exits, limit=budget_s)
            if t is None:
                ratios[label].append(f">{budget_s / t_base:.2f}")
            else:
                ratios[label].append(f"{t / t_base:.2f}")
                means[label].append(t / t_base)
    for label in ROWS:
        reached = means[label]
        gm = math.exp(statistics.mean(math.log(max(r, 1e-9)) for r in reached)) if reached else float("nan")
        print(f"  {label:<30} per seed: {', '.join(ratios[label]):<28} geo-mean of reached: {gm:.2f} "
              f"({len(reached)}/{len(seeds)} reached)")  # fmt: skip


def plot(logs: list[RunLog], budget: dict[str, float], budget_s: float, seeds: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by = {(lg.method, lg.seed): lg for lg in logs}
    grid = np.linspace(0, budget_s, 121)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (method, exits) in ROWS.items():
        curves = np.array([[hv_at(by[(method, s)], t, budget, exits=exits) for t in grid] for s in seeds])
        mean, sd = curves.mean(axis=0), curves.std(axis=0)
        style = "--" if "ablation" in label else "-"
        (line,) = ax.plot(grid, mean, style, label=label)
        ax.fill_between(grid, mean - sd, mean + sd, color=line.get_color(), alpha=0.12)
    ax.set_xlabel("search seconds (training + sampling + cost checks)")
    ax.set_ylabel("normalised hypervolume of the feasible front")
    from sdsearch.units import format_value

    limits = ", ".join(f"{m} <= {format_value(v, 'count')}" for m, v in budget.items())
    ax.set_title(f"mean ± std over {len(seeds)} seeds; budget {limits}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    from sdsearch.units import parse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="search seconds per method per seed (120)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (2; 1-3 keeps trials short)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    parser.add_argument("--budget-params", default="100k", help="params limit of the deployed model (100k)")
    parser.add_argument("--budget-macs", default=None,
                        help="MACs limit of the deployed model (0.5M on digits, 8M with --npz: ~half the space fits)")  # fmt: skip
    parser.add_argument("--npz", type=Path, default=None,
                        help="an .npz dataset (e.g. ../shared/data/cifar10_12k.npz, relative to the repo); "
                             "skipped with a message when absent")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (1)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="what a search second is: CPU time of this process (default) or wall time")  # fmt: skip
    parser.add_argument("--plot", default=None, help="write a PNG of HV vs search seconds")
    args = parser.parse_args()
    if args.budget_macs is None:
        args.budget_macs = "8M" if args.npz else "0.5M"
    args.budget_params, args.budget_macs = (
        parse(args.budget_params, "count"),
        parse(args.budget_macs, "count"),
    )
    if args.npz is not None:
        args.npz = args.npz if args.npz.is_absolute() else (REPO / args.npz).resolve()
        if not args.npz.is_file():
            print(f"skipped: {args.npz} does not exist")
            return

    import optuna
    import torch

    from sdsearch.cost import exit_costs
    from sdsearch.data import load_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    space0 = build_space(args, 0)
    dataset = load_dataset(space0.data, seed=space0.seed)  # the split seed is fixed; trial seeds vary
    shape = dataset.shape

    def cost_fn(cfg: Any) -> Any:
        return exit_costs(cfg.model, num_classes=shape.num_classes, in_chans=shape.in_chans,
                          input_size=(shape.height, shape.width))  # fmt: skip

    print(f"dataset {dataset.name}: {len(dataset.y_train)} train / {len(dataset.y_val)} val, "
          f"{shape.in_chans}x{shape.height}x{shape.width}; budget {dict(space0.budget)}; epochs {args.epochs}, "
          f"batch {args.batch_size}; {args.seconds:g} s ({args.clock} clock, {args.threads} thread) per method "
          f"per seed; seeds {seeds}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    # warm-up (untimed): PyTorch's first-use costs and the cost counter's first call
    warm = Trainer(dataset, args.threads, clock)
    first = _first_config(space0)
    warm(first.replace(train=dataclasses.replace(first.train, epochs=1)))
    cost_fn(first)

    logs: list[RunLog] = []
    started = time.perf_counter()
    for seed in seeds:
        space = build_space(args, seed)
        trainer = Trainer(dataset, args.threads, clock)  # one cache per seed, shared by the methods
        for method in METHODS:
            log = search(method, space, seed, args.seconds, trainer, cost_fn, clock)
            logs.append(log)
            print(f"  seed {seed} {method:<9} trained {len(log.events) + log.failed:>3} ({log.failed} failed), "
                  f"rejected {log.rejected:>3}, "
                  f"infeasible-trained {sum(not feasible(e.deployed, space.budget) for e in log.events):>3}, "
                  f"final HV {hv_at(log, args.seconds, space.budget, exits=method == 'sdsearch'):.3f}; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
        print(f"  seed {seed}: {trainer.trained} distinct configs trained", flush=True)
    print(f"total wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    print()
    report(logs, dict(space0.budget), args.seconds, seeds)
    if args.plot:
        plot(logs, dict(space0.budget), args.seconds, seeds, args.plot)


def _first_config(space: Any) -> Any:
    import optuna

    return space.suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())


if __name__ == "__main__":
    sys.exit(main())
