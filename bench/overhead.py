"""Search overhead: ``sdsearch.search.runner.run`` (Ray Tune) against a plain loop over the same configs.

Side by side in one run, on scikit-learn's digits (no download):

(a) **sdsearch**: ``run(space, n_trials=N, fresh=True, progress=False)`` on a fresh SQLite study in
    a temporary directory, with ``resources: {cpu: C, gpu: 0, concurrent: 1}`` (one trial at a time,
    ``C = --cpus`` threads, so it is comparable with a sequential loop) and the space of
    ``spaces/iot_budget.yaml`` with ``train.epochs = --epochs``. ``fit_fn`` is a thin timing wrapper
    around the default ``fit_config`` that also times how long each ``tune.report`` call blocks
    (Tune's function API is synchronous: the training thread waits at every report until the driver
    has processed the result and asked for the next one).
(b) **in-process**: the configs that (a) trained, read back from the study (``config`` user attr of
    each trained trial, in trial order), trained again one after another in this process with
    ``fit_config(cfg, dataset, threads=C, report=...)`` on one dataset object loaded exactly as the
    runner loads it.
(a') with ``--prototype NAME`` (repeatable): (a) again, same seed and so the same configs, with a
    prototype of a proposed change to sdsearch, to measure it side by side:
    ``report-last``: trials report only their last epoch (what ``train_trial`` could do when no
    scheduler needs per-epoch results): the cost of the per-epoch round trips to the driver;
    ``nice0``: ``RAY_worker_niceness=0`` in the environment before ``ray.init`` (what
    ``runner._quiet_ray_env`` could set): Ray starts its workers, and so every trial, at nice 15
    by default, so a trial can lose the CPU to any busy nice-0 process on the machine (the driver,
    Ray's daemons, other users); the in-process loop runs at nice 0;
    ``warm-worker``: ``ray.init(runtime_env={"worker_process_setup_hook": ...})`` importing torch,
    torch._dynamo and sdsearch's training modules in every worker as Ray starts it (what
    ``runner.ray_session`` could pass), so the first trial does not pay for them;
    ``warm-driver``: a thread imports torch._dynamo and sdsearch's network modules while
    ``ray.init`` runs (what ``runner._search`` could start before ``ray_session``), so the first
    budget check, which otherwise triggers that import, is not on the critical path;
    ``ray-running``: Ray is started before ``run()`` is timed (``runner.ray_session`` then neither
    starts nor stops it), as with a long-lived ``ray start --head`` and ``--address auto``, or
    ``ray.init()`` once before several ``sdsearch.run`` calls: what Ray's start and stop cost.

Every ``run()`` happens in a fresh child process, so each starts with a cold driver as
``sdsearch run`` does, and prototypes compare fairly with (a). An untimed 1-trial, 1-epoch
``run()`` goes first (``--no-warmup`` skips it), so the timed runs do not differ by cold file
caches (the first start of Ray and torch on a machine is slower still).

What the sdsearch wall time includes: everything between the call of ``run()`` and its return:
study creation and SQLite writes, dataset loading, ``ray.init``, the Tuner, worker start-up (the
worker imports torch and sdsearch), the dataset's trip through the object store, budget checks
(cost of every sampled config on the meta device, rejected ones too), every trial, ``tell``, and
``ray.shutdown``. It excludes the one-time ``import ray`` / ``import torch`` of the driver process
(printed separately, as the *driver imports* line, and added in the ``incl. imports`` ratio).

Output:

* per trial: in-worker time (worker ``started``..``finished`` user attr), the part of it spent
  blocked in ``tune.report``, and the in-process time of the same config, and whether both runs
  reached the same validation accuracy (determinism check);
* ``ratio = sdsearch wall / sum of in-process training times`` (the target is < 1.10 for trials of
  about 20 s: choose ``--epochs`` so the printed mean trial time is about 20 s) and the per-trial
  overhead ``(wall - sum) / N``;
* the same against the trials' own in-worker times from the same run (``wall / sum of in-worker
  times``): immune to load changing between (a) and (b) on a shared machine;
* a breakdown of the extra seconds along the run's timeline, which sums to the difference exactly:
  driver before ``Tuner.fit`` (``ray.init`` and dataset loading shown inside it), first worker
  start, the first trial's warm-up in the worker (imports torch and sdsearch), compute excess of
  later trials, report waits inside trials, gaps between trials (the last report's round trip,
  ``on_trial_complete`` + ``suggest`` in the driver, actor reuse), and the tail (``ray.shutdown``);
  then a fixed + per-trial model of the overhead and the ratio it projects for longer studies.

The loop runs in this process, which has imported torch but built no model yet, so its first
trial pays PyTorch's first-use warm-up as the worker's does; the import of torch itself is charged
to sdsearch only (the worker's first trial in the breakdown).

On a machine shared with others, two threads per trial (``--cpus 2``) make every timing swing by
several times (OpenMP threads wait on each other when a core is taken away); ``--cpus 1`` gives
steadier figures there. The 1-minute load average is printed before each part.

Run:  .venv/bin/python bench/overhead.py [--trials 5] [--epochs 50] [--cpus 2] [--prototype nice0] [--no-warmup]
      [--smoke]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPACE_FILE = REPO / "spaces" / "iot_budget.yaml"


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


class Timers:
    """Wall-clock spans of wrapped functions: name -> list of (start, end) in time.time()."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.setdefault(name, []).append((t0, time.time()))

        setattr(owner, attr, timed)


class TimedFit:
    """``fit_fn`` for ``run()``: the default ``fit_config``, timing every ``report`` call it forwards.

    Defined in ``__main__``, so Ray pickles it by value. ``every_epoch=False`` forwards only the last
    epoch's report (the prototype of reporting once per trial). One JSON line per trial goes to
    ``log_path`` (the worker runs on this machine).
    """

    def __init__(self, log_path: str, every_epoch: bool = True) -> None:
        self.log_path, self.every_epoch = log_path, every_epoch

    def __call__(
        self, cfg: Any, dataset: Any, *, threads: int | None, report: Any, checkpoint: str | None = None
    ) -> Any:
        from sdsearch.search.trainable import fit_config

        blocked: list[float] = []

        def timed_report(epoch: Any) -> Any:
            if not self.every_epoch and epoch.epoch < epoch.epochs:
                return None
            t = time.perf_counter()
            out = report(epoch)
            blocked.append(time.perf_counter() - t)
            return out

        started = time.time()
        try:
            return fit_config(cfg, dataset, threads=threads, report=timed_report, checkpoint=checkpoint)
        finally:
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"started": started, "blocked": blocked, "module": fit_config.__module__,
                                    "file": sys.modules[fit_config.__module__].__file__}) + "\n")  # fmt: skip


@dataclass
class RunRecord:
    """What one ``run()`` did, on the driver's clock."""

    wall: float
    t0: float
    t1: float
    trained: list[dict[str, Any]]  # number, config, candidates of each trained trial, in order
    rejected: int
    work: list[tuple[float, float]]  # worker started..finished per trained trial
    blocked: list[list[float]]  # seconds blocked in each forwarded report, per trial
    driver_cpu: float = 0.0  # CPU seconds of the driver process (all threads) during run()
    ray_cpu: float = 0.0  # CPU seconds of Ray's processes (daemons, workers: training included)
    imports: float = 0.0  # the driver's import of ray, tune, torch, optuna, sdsearch before run()
    spans: dict[str, list[tuple[float, float]]] | None = None  # Timers.spans of the driver

    def within(
        self, name: str, lo: float | None = None, hi: float | None = None
    ) -> list[tuple[float, float]]:
        """Spans of a timed function inside [lo, hi] (default: the run)."""
        lo, hi = self.t0 if lo is None else lo, self.t1 if hi is None else hi
        return [(s, e) for s, e in (self.spans or {}).get(name, []) if s >= lo and e <= hi]

    def total(self, name: str, lo: float | None = None, hi: float | None = None) -> float:
        return sum(e - s for s, e in self.within(name, lo, hi))

    @property
    def worker(self) -> list[float]:
        return [e - s for s, e in self.work]

    @property
    def waits_inside(self) -> list[float]:
        """Report waits inside the worker span: every report but the last (its wait is in the gap)."""
        return [sum(b[:-1]) for b in self.blocked]

    @property
    def gaps(self) -> list[float]:
        return [self.work[i + 1][0] - self.work[i][1] for i in range(len(self.work) - 1)]


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def descendants_cpu() -> float:
    """CPU seconds (user + system) of every live descendant process of this one, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    me, total = os.getpid(), 0.0
    for pid in cpu:
        p = pid
        while p in parent and p not in (0, 1, me):
            p = parent[p]
        if p == me and pid != me:
            total += cpu[pid]
    return total


#: CPU of Ray's processes, sampled just before each ray.shutdown (they are gone after it).
RAY_CPU: list[float] = []


#: Prototype changes to sdsearch measured side by side with the current code (see the docstring).
PROTOTYPES = {
    "report-last": "trials report only their last epoch",
    "nice0": "RAY_worker_niceness=0 (Ray's workers at nice 0 instead of 15)",
    "warm-worker": "ray.init(runtime_env={'worker_process_setup_hook': import torch + sdsearch})",
    "warm-driver": "import torch._dynamo + sdsearch.nn in a thread while ray.init runs",
    "ray-running": "Ray already started before run() (a long-lived local Ray, or --address auto)",
}


def _warm_worker() -> None:
    """Worker setup hook (prototype): import what a trial needs while the driver is still busy."""
    import torch._dynamo  # noqa: F401  (imported lazily by the first optimizer step / nn.init otherwise)

    import sdsearch.nn.losses
    import sdsearch.nn.network
    import sdsearch.search.trainable
    import sdsearch.training.fit  # noqa: F401


def _warm_driver() -> None:
    """Driver warm-up (prototype): what the first budget check would otherwise import."""
    import torch._dynamo  # noqa: F401

    import sdsearch.cost.trace
    import sdsearch.nn.network  # noqa: F401


def make_space(tmp: Path, *, trials: int, epochs: int, seed: int, cpus: int) -> Any:
    import yaml

    from sdsearch.space.space import parse_space

    doc = yaml.safe_load(SPACE_FILE.read_text())
    doc.update(
        name="bench_overhead",
        storage=f"sqlite:///{tmp}/overhead.db",
        trials=trials,
        seed=seed,
        resources={"cpu": cpus, "gpu": 0, "concurrent": 1},
    )
    doc["train"] = {**doc["train"], "epochs": epochs}
    return parse_space(doc, source=str(SPACE_FILE))


def child_run(args: argparse.Namespace) -> None:
    """One ``run()`` in this fresh process (a cold driver), instrumented; writes a RunRecord as JSON."""
    t = time.time()
    import optuna
    import ray
    from ray import tune

    import sdsearch.cost.trace
    import sdsearch.data.datasets
    from sdsearch.search.runner import run
    from sdsearch.search.searcher import SDOptunaSearch
    from sdsearch.store import attrs

    imports = time.time() - t
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    variant = args.child_variant

    # prototypes that change how Ray starts: wrap ray.init (the runner calls it through the module)
    init = ray.init

    def prototype_init(*a: Any, **kw: Any) -> Any:
        if variant == "warm-worker":
            kw = {**kw, "runtime_env": {"worker_process_setup_hook": _warm_worker}}
        if variant == "warm-driver":
            import threading

            threading.Thread(target=_warm_driver, daemon=True).start()
        return init(*a, **kw)

    ray.init = prototype_init
    if variant == "nice0":
        os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112  (Ray reads this exact, case-sensitive name)
    shutdown = ray.shutdown

    def sampled_shutdown(*a: Any, **kw: Any) -> Any:
        RAY_CPU.append(descendants_cpu())
        return shutdown(*a, **kw)

    ray.shutdown = sampled_shutdown
    timers = Timers()
    timers.wrap(ray, "init", "ray.init")
    timers.wrap(ray, "shutdown", "ray.shutdown")
    timers.wrap(tune.Tuner, "fit", "Tuner.fit")
    timers.wrap(SDOptunaSearch, "suggest", "suggest")
    timers.wrap(SDOptunaSearch, "on_trial_complete", "on_trial_complete")
    timers.wrap(sdsearch.cost.trace, "exit_costs", "exit_costs")
    timers.wrap(sdsearch.data.datasets, "load_dataset", "load_dataset")

    with tempfile.TemporaryDirectory(prefix="sdsearch-overhead-") as tmp:
        space = make_space(Path(tmp), trials=args.trials, epochs=args.epochs, seed=args.seed, cpus=args.cpus)
        log_path = Path(tmp) / "fit.jsonl"
        if variant == "ray-running":  # what ray_session would find: it then neither starts nor stops Ray
            from sdsearch.search.runner import ray_session

            ray_ctx = ray_session(None, object_store_bytes=256 * 2**20)
            ray_ctx.__enter__()
        t0 = time.time()
        self0 = _cpu(resource.RUSAGE_SELF)
        summary = run(space, n_trials=args.trials, fresh=True, progress=False,
                      fit_fn=TimedFit(str(log_path), every_epoch=variant != "report-last"))  # fmt: skip
        t1 = time.time()
        driver_cpu = _cpu(resource.RUSAGE_SELF) - self0
        if variant == "ray-running":
            RAY_CPU.append(descendants_cpu())
            ray_ctx.__exit__(None, None, None)
        every = optuna.load_study(study_name=space.name, storage=space.storage).get_trials(deepcopy=False)
        fits = sorted((json.loads(x) for x in log_path.read_text().splitlines()), key=lambda r: r["started"])
    import sdsearch.search.trainable

    if any(f["file"] != sdsearch.search.trainable.__file__ for f in fits):
        print(f"  note: the worker ran sdsearch from {fits[0]['file']}, the driver from "
              f"{sdsearch.search.trainable.__file__}")  # fmt: skip
    trained = [tr for tr in every if tr.state.name == "COMPLETE" and attrs.REJECTED not in tr.user_attrs]
    if len(trained) != args.trials or len(fits) != args.trials:
        raise SystemExit(f"expected {args.trials} trained trials, got {summary.counts}")
    record = {
        "wall": t1 - t0, "t0": t0, "t1": t1,
        "trained": [{"number": tr.number, "config": tr.user_attrs[attrs.CONFIG],
                     "candidates": tr.user_attrs.get(attrs.CANDIDATES, [])} for tr in trained],
        "rejected": sum(attrs.REJECTED in tr.user_attrs for tr in every),
        "work": [(tr.user_attrs[attrs.WORKER]["started"], tr.user_attrs[attrs.WORKER]["finished"]) for tr in trained],
        "blocked": [f["blocked"] for f in fits],
        "driver_cpu": driver_cpu, "ray_cpu": RAY_CPU[-1] if RAY_CPU else float("nan"),
        "imports": imports, "spans": timers.spans,
    }  # fmt: skip
    Path(args.child_out).write_text(json.dumps(record))


def sdsearch_run(args: argparse.Namespace, variant: str) -> RunRecord:
    """Run :func:`child_run` in a fresh process and read its record."""
    with tempfile.TemporaryDirectory(prefix="sdsearch-overhead-out-") as tmp:
        out = Path(tmp) / "record.json"
        cmd = [sys.executable, __file__, "--trials", str(args.trials), "--epochs", str(args.epochs),
               "--cpus", str(args.cpus), "--seed", str(args.seed), "--child-variant", variant,
               "--child-out", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True)
        data = json.loads(out.read_text())
    data["work"] = [tuple(w) for w in data["work"]]
    data["spans"] = {k: [tuple(x) for x in v] for k, v in data["spans"].items()}
    return RunRecord(**data)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5, help="trained trials (default 5)")
    parser.add_argument("--epochs", type=int, default=50,
                        help="epochs per trial (default 50: about 20 s per trial with 1-2 threads on 2 cores)")  # fmt: skip
    parser.add_argument(
        "--cpus", type=int, default=2, help="resources.cpu = torch threads per trial (default 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    parser.add_argument("--prototype", action="append", default=[], choices=sorted(PROTOTYPES),
                        help="also run sdsearch with a prototype change (repeatable): "
                             + "; ".join(f"{k}: {v}" for k, v in PROTOTYPES.items()))  # fmt: skip
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed 1-trial run that warms file caches (then (a) is a cold start)")  # fmt: skip
    parser.add_argument(
        "--smoke", action="store_true", help="2 trials of 1 epoch, no warm-up run (what CI runs)"
    )
    parser.add_argument("--child-variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_variant is not None:
        child_run(args)
        return
    if args.smoke:
        args.trials, args.epochs, args.no_warmup = 2, 1, True

    print(f"load average (1 min) at start: {_load()}  cores: {os.cpu_count()}")
    if not args.no_warmup:
        print(f"warm-up run() in a child process (1 trial, 1 epoch, untimed); load {_load()}", flush=True)
        sdsearch_run(
            argparse.Namespace(**{**vars(args), "trials": 1, "epochs": 1, "seed": args.seed + 1}), "current"
        )

    # -- (a) sdsearch, in a fresh process ------------------------------------------------------------------
    print(f"(a) sdsearch run(): {args.trials} trials x {args.epochs} epochs, concurrency 1, "
          f"{args.cpus} CPU(s) per trial, fresh driver process; load {_load()}", flush=True)  # fmt: skip
    a = sdsearch_run(args, "current")

    # -- (b) the same configs in a plain loop in this process ----------------------------------------------
    import optuna
    import ray
    import torch

    import sdsearch.data.datasets
    from sdsearch.core.config import TrialConfig
    from sdsearch.search.trainable import fit_config

    space = make_space(Path(tempfile.gettempdir()), trials=args.trials, epochs=args.epochs, seed=args.seed,
                       cpus=args.cpus)  # fmt: skip
    dataset = sdsearch.data.datasets.load_dataset(space.data, seed=space.seed)
    print(f"(b) in-process loop over the same {len(a.trained)} configs; load {_load()}", flush=True)
    inproc: list[float] = []
    same: list[bool] = []
    for tr in a.trained:
        cfg = TrialConfig.from_dict(tr["config"])
        s = time.perf_counter()
        res = fit_config(cfg, dataset, threads=args.cpus, report=lambda _r: None)
        inproc.append(time.perf_counter() - s)
        stored = {c["exit"]: c["accuracy"] for c in tr["candidates"]}
        same.append(all(abs(stored.get(k, -1) - v) < 1e-9 for k, v in res.val_accuracy.items()))

    # -- (a') prototypes, each in a fresh process ----------------------------------------------------------
    variants: list[tuple[str, RunRecord]] = []
    for name in args.prototype:
        print(f"(a') sdsearch run() with prototype {name!r} ({PROTOTYPES[name]}); load {_load()}", flush=True)
        rec = sdsearch_run(args, name)
        if [tr["config"] for tr in rec.trained] != [tr["config"] for tr in a.trained]:
            print(f"  note: {name} sampled other configs than (a); compare ratios, not wall times")
        variants.append((name, rec))
    load_end = _load()

    # -- figures -----------------------------------------------------------------------------------------
    total_inproc = sum(inproc)
    n = len(a.trained)
    print()
    print(f"{'trial':>5} {'arch':>12} {'w':>5} {'d':>2} {'exits':>6} {'worker s':>9} {'(report wait)':>13} "
          f"{'in-proc s':>9}  same acc")  # fmt: skip
    for tr, w, r, p, ok in zip(a.trained, a.worker, a.waits_inside, inproc, same):
        m = tr["config"]["model"]
        print(f"{tr['number']:>5} {m['backbone']['arch']:>12} {m['backbone']['width']:>5} "
              f"{m['backbone']['depth']:>2} {','.join(map(str, m['branches']['placement'])) or '-':>6} {w:>9.2f} "
              f"{r:>13.2f} {p:>9.2f}  {'yes' if ok else 'NO'}")  # fmt: skip
    print()
    print(f"trials: {n} trained, {a.rejected} budget-rejected; torch {torch.__version__}, ray {ray.__version__}, "
          f"optuna {optuna.__version__}; {args.cpus} thread(s) per trial")  # fmt: skip
    print(f"mean trial time (in-process): {statistics.mean(inproc):.2f} s  "
          f"(min {min(inproc):.2f}, max {max(inproc):.2f})")  # fmt: skip
    print(f"sdsearch wall time (run() call to return): {a.wall:.2f} s")
    print(f"sum of in-process training times:           {total_inproc:.2f} s")
    print(f"ratio sdsearch / in-process:                {a.wall / total_inproc:.3f}   (target < 1.10)")
    print(f"per-trial overhead (wall - sum) / N:        {(a.wall - total_inproc) / n:.2f} s")
    total_worker = sum(a.worker)
    print(f"sum of in-worker trial times (same run):    {total_worker:.2f} s; wall / that: {a.wall / total_worker:.3f}; "
          f"non-trial seconds per trial: {(a.wall - total_worker) / n:.2f} s")  # fmt: skip
    print(f"driver imports (ray, tune, torch, optuna, sdsearch; once per process): {a.imports:.2f} s; "
          f"ratio incl. imports: {(a.wall + a.imports) / total_inproc:.3f}")  # fmt: skip
    print(f"results identical to the in-process replay: {sum(same)}/{len(same)}")
    print()

    # -- timeline breakdown of (a): the rows sum to wall - sum(in-process) ---------------------------------
    fit_start, fit_end = a.within("Tuner.fit")[0]
    between = [(a.work[i][1], a.work[i + 1][0]) for i in range(n - 1)]
    in_gaps_driver = sum(
        a.total("on_trial_complete", lo, hi) + a.total("suggest", lo, hi) for lo, hi in between
    )
    first_suggest = a.within("suggest")[0]
    compute = [w - r for w, r in zip(a.worker, a.waits_inside)]
    rounds = sum(len(x) - 1 for x in a.blocked)
    rows = [
        ("driver before Tuner.fit", fit_start - a.t0,
         f"ray.init {a.total('ray.init'):.2f} s, load_dataset {a.total('load_dataset'):.2f} s, "
         "study creation + SQLite, Tune imports"),
        ("Tuner.fit start -> first trial starts in worker", a.work[0][0] - fit_start,
         f"first suggest {first_suggest[1] - first_suggest[0]:.2f} s (first cost: torch._dynamo import), actor start"),
        ("first trial: worker compute - in-process", compute[0] - inproc[0],
         "worker imports torch + sdsearch, first-use warm-up in a fresh process"),
        ("later trials: worker compute - in-process", sum(compute[1:]) - sum(inproc[1:]),
         "CPU placement, Ray's own processes, load noise"),
        ("report waits inside trials (all but last report)", sum(a.waits_inside),
         f"{rounds} round trips to the driver, {1000 * sum(a.waits_inside) / max(1, rounds):.0f} ms each"),
        ("gaps between trials", sum(a.gaps),
         f"last report's round trip, driver on_trial_complete + suggest {in_gaps_driver:.2f} s, actor reuse"),
        ("last trial ends -> Tuner.fit returns", fit_end - a.work[-1][1], "last report, actor stop"),
        ("Tuner.fit returns -> run() returns", a.t1 - fit_end,
         f"ray.shutdown {a.total('ray.shutdown'):.2f} s, orphan check, counts"),
    ]  # fmt: skip
    print("where the extra seconds of (a) go (sdsearch wall - in-process sum), along the run's timeline:")
    for name, sec, note in rows:
        print(f"  {name:<50} {sec:>7.2f} s   {note}")
    print(f"  {'total':<50} {sum(r[1] for r in rows):>7.2f} s   (= {a.wall - total_inproc:.2f} s)")
    print()
    suggests, completes, costs = a.within("suggest"), a.within("on_trial_complete"), a.within("exit_costs")
    print(f"driver totals: suggest {sum(e - s for s, e in suggests):.2f} s over {len(suggests)} calls "
          f"(exit_costs {sum(e - s for s, e in costs):.2f} s over {len(costs)} configs, the first "
          f"{costs[0][1] - costs[0][0]:.2f} s), on_trial_complete {sum(e - s for s, e in completes):.2f} s "
          f"over {len(completes)} calls")  # fmt: skip
    beyond = (
        f", i.e. {a.ray_cpu - sum(a.worker):+.2f} s beyond the in-worker trial time" if args.cpus == 1 else ""
    )
    print(f"CPU seconds during run(): driver process {a.driver_cpu:.2f} s; Ray's processes (daemons + workers, "
          f"training included, sampled before ray.shutdown) {a.ray_cpu:.2f} s{beyond}")  # fmt: skip
    if n > 1:
        print(f"gap between trials: mean {statistics.mean(a.gaps):.2f} s, max {max(a.gaps):.2f} s")
        per_trial = (sum(a.gaps) + sum(a.worker[1:]) - sum(inproc[1:])) / (n - 1)
        fixed = (a.wall - total_inproc) - (n - 1) * per_trial
        print(f"model: overhead = fixed {fixed:.2f} s (Ray start/stop, first suggest, worker warm-up) "
              f"+ {per_trial:.2f} s per further trial (gap + report waits + compute excess)")  # fmt: skip
        for k in (5, 12, 50):
            print(
                f"  projected ratio for {k:>2} trials of 20 s: {1 + (fixed + (k - 1) * per_trial) / (k * 20):.3f}"
            )
    if variants:
        print()
        print("side by side with the current code, (a), every run a fresh driver process; 'to first trial' =")
        print(
            "Tuner.fit start -> first trial starts + its warm-up over the in-process time; 'per-trial part' ="
        )
        print("(in-worker sum - in-process sum + gaps) / N, what grows with the trial count:")
        for label, rec in [("(a) current", a), *((f"(a') {k}", r) for k, r in variants)]:
            per = (sum(rec.worker) - total_inproc + sum(rec.gaps)) / n
            start = rec.within("Tuner.fit")[0][0]
            first = rec.work[0][0] - start + (rec.worker[0] - rec.waits_inside[0]) - inproc[0]
            print(f"  {label:<18} wall {rec.wall:>7.2f} s  ratio {rec.wall / total_inproc:.3f}  before Tuner.fit "
                  f"{start - rec.t0:>5.2f} s  to first trial {first:>5.2f} s  per-trial part {per:>5.2f} s  "
                  f"in-worker sum {sum(rec.worker):>7.2f} s  report waits {sum(rec.waits_inside):.2f} s  "
                  f"gaps {sum(rec.gaps):.2f} s  driver CPU {rec.driver_cpu:.2f} s  Ray CPU {rec.ray_cpu:.2f} s")  # fmt: skip
        for k, r in variants:
            print(
                f"  {k}: wall / (a) {r.wall / a.wall:.3f}; in-worker sum / (a) {sum(r.worker) / sum(a.worker):.3f}"
            )
    print(f"load average (1 min) at end: {load_end}")


if __name__ == "__main__":
    main()
