"""Distillation gain per method: each paper's self-distillation against the same network trained plain.

Every method trains the same backbone (default: ResNet width 0.25, depth 1) on the same data, for
the same epochs, batch size, optimizer and schedule, with the same seeds, through the path every
search trial and ``sdsearch train`` take (``sdsearch.training.fit.build`` and ``fit``). What differs
is what each method's paper adds (``METHODS`` below has every setting):

* ``plain``: the backbone and its final head only, cross-entropy (no branches, no KD, no hints).
* ``byot``: BYOT (Zhang et al., ICCV 2019): bottleneck (``lite``) branches after stages 1-3, the
  deepest exit teaches, eq. 1 as written: every CE times 1 - alpha, KD without T², the hint an L2
  between each bottleneck's map and the deepest map with no adapter (``hint: byot``).
* ``byot_t2``: the same with Hinton's T² on KD (an unofficial re-implementation's, sdsearch 0.2's).
* ``sd``: SD (Zhang et al., TPAMI 2021, its public code): attention + SepConv branches, the deepest
  exit teaches, the deepest CE in full and the shallow ones times 1 - alpha, KD without T²,
  hints through adapters.
* ``cbfe_ca``: Zheng et al. 2025: CBFE (r = 4) on each branch input, channel-attention fusion of
  the branch maps and the deepest map, and the fused head teaches every exit (``teacher: fused``).
* ``spatial_mask``: Qin et al. 2025: spatial-mask-averaging fusion, the fused head teaches.
* ``rskd``: RSKD (Liu et al. 2025): SD's branches and loss plus the residual-gap regression at
  every level (``rskd_weight: 1``, ``rskd_layers: all``).
* ``ensemble``: the mean of every exit's logits teaching every exit (``teacher: ensemble``), SD's
  branches: a teacher the shipped spaces search.
* ``residual``: sdsearch's own residual fusion (no paper's), the fused head teaching, as the spatial
  mask is run: the shipped spaces search it, so it must show its gain like the papers' fusions.

Figures: the **final exit's** test accuracy (the model every method deploys at full depth) and the
**best exit's** (the most accurate exit per run; a shallower exit may win), paired with ``plain`` by
seed; training cost as the process's CPU seconds inside ``fit`` (one thread by default, so other
load on the machine does not inflate it). Every method trains on the whole training split
(``load_dataset(..., full=True)``): the test split is never seen, nothing is selected on it.

Runs take minutes each and the full set hours on 2 cores, so each run is saved to ``--results`` as
it finishes and a rerun skips the runs already there (with the same settings); ``--report`` prints
the table from the file without training.

Run:  .venv/bin/python bench/distillation_gain.py --npz PATH [--epochs 30] [--seeds 3] [--methods ...]
      .venv/bin/python bench/distillation_gain.py --npz PATH --arch mobilenetv2 --width 0.5 --methods plain sd
      .venv/bin/python bench/distillation_gain.py --report
      .venv/bin/python bench/distillation_gain.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    CBFEConfig,
    DataConfig,
    FusionConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.data.datasets import Dataset, load_dataset
from sdsearch.training.fit import build, evaluate, fit

RESULTS = Path(__file__).parent / "results" / "distillation_gain.json"

#: The BYOT/SD reproduction weights every self-distilled method shares: alpha 0.3, T 3, hints 0.03.
_KD = {"kd_weight": 0.3, "temperature": 3.0, "feature_weight": 0.03}

#: Method -> (branches style and placement, CBFE, fusion, loss). ``plain`` has no branches.
METHODS: dict[str, dict[str, Any]] = {
    "plain": {
        "branches": BranchesConfig(placement=()),
        "loss": LossConfig(kd_weight=0.0, feature_weight=0.0),
    },
    "byot": {
        "branches": BranchesConfig(style="lite"),
        "loss": LossConfig(style="byot", kd_t2=False, hint="byot", **_KD),
    },
    "byot_t2": {
        "branches": BranchesConfig(style="lite"),
        "loss": LossConfig(style="byot", kd_t2=True, hint="byot", **_KD),
    },
    "sd": {"branches": BranchesConfig(style="sd"), "loss": LossConfig(style="sd", hint="adapter", **_KD)},
    "cbfe_ca": {
        "branches": BranchesConfig(style="sd"),
        "cbfe": CBFEConfig(location="branch", ratio=4),
        "fusion": FusionConfig(type="channel_attention"),
        "loss": LossConfig(teacher="fused", style="byot", **_KD),
    },
    "spatial_mask": {
        "branches": BranchesConfig(style="sd"),
        "fusion": FusionConfig(type="spatial_mask_avg"),
        "loss": LossConfig(teacher="fused", style="byot", **_KD),
    },
    "rskd": {
        "branches": BranchesConfig(style="sd"),
        "loss": LossConfig(style="sd", rskd_weight=1.0, rskd_layers="all", **_KD),
    },
    "ensemble": {
        "branches": BranchesConfig(style="sd"),
        "loss": LossConfig(teacher="ensemble", style="byot", **_KD),
    },
    "residual": {
        "branches": BranchesConfig(style="sd"),
        "fusion": FusionConfig(type="residual"),
        "loss": LossConfig(teacher="fused", style="byot", **_KD),
    },
}


def config(method: str, args: argparse.Namespace, data: DataConfig, seed: int) -> TrialConfig:
    """One method's trial config: the shared backbone and training, the method's model and loss."""
    spec = METHODS[method]
    model = ModelConfig(
        backbone=BackboneConfig(arch=args.arch, width=args.width, depth=args.depth),
        **{k: v for k, v in spec.items() if k != "loss"},
    )
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
                        warmup_epochs=1, weight_decay=5.0e-4, momentum=0.9)  # fmt: skip
    return TrialConfig(model=model, loss=spec["loss"], data=data, train=train, seed=seed)


def train_once(cfg: TrialConfig, data: Dataset, *, threads: int) -> dict[str, Any]:
    """Train one run; its test accuracy per exit, CPU seconds of ``fit`` and wall seconds of the steps."""
    net, loss = build(cfg, data.shape)
    cpu = time.process_time()
    result = fit(net, loss, data, cfg.train, seed=cfg.seed, augment=cfg.data.augment, device="cpu",
                 threads=threads)  # fmt: skip
    cpu = time.process_time() - cpu
    test = evaluate(net, data.x_test, data.y_test, mean=data.mean, std=data.std, device="cpu")
    return {
        "test_accuracy": test,
        "cpu_seconds": round(cpu, 1),
        "train_wall_seconds": round(sum(r.train_seconds for r in result.history), 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def settings(args: argparse.Namespace, data_name: str) -> dict[str, Any]:
    """What makes runs comparable: a run stored under other settings is not reused."""
    return {
        "data": data_name, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "threads": args.threads, "torch": torch.__version__,
    }  # fmt: skip


def run_key(method: str, args: argparse.Namespace, seed: int) -> str:
    return f"{args.arch}-w{args.width:g}-d{args.depth}/{method}/seed{seed}"


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file: shards running side by side add their runs one at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def add_run(path: Path, key: str, run: dict[str, Any]) -> dict[str, Any]:
    """Add one finished run to the file (read again under the lock, written atomically)."""
    with locked(path):
        results = load_results(path)
        results["runs"][key] = run
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    return results


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} ± {sd:4.2f}"


def report(results: dict[str, Any]) -> None:
    """The table: per network and method, final- and best-exit test accuracy and the paired gain."""
    by_net: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for key, run in results["runs"].items():
        net, method, seed = key.split("/")
        by_net.setdefault(net, {}).setdefault(method, {})[int(seed.removeprefix("seed"))] = run
    for net, methods in by_net.items():
        print(f"\n{net} ({json.dumps(next(iter(next(iter(methods.values())).values()))['settings'])})")
        print(f"  {'method':<13} {'final exit %':>14} {'gain (paired) pp':>18} {'>0':>4} "
              f"{'best exit %':>14} {'best gain pp':>13} {'CPU s':>7} {'x plain':>8}")  # fmt: skip
        plain = methods.get("plain", {})
        for method in sorted(methods, key=lambda m: list(METHODS).index(m) if m in METHODS else 99):
            runs = methods[method]
            seeds = sorted(runs)
            final = [100 * runs[s]["test_accuracy"]["final"] for s in seeds]
            best = [100 * max(runs[s]["test_accuracy"].values()) for s in seeds]
            cpu = [runs[s]["cpu_seconds"] for s in seeds]
            paired = [s for s in seeds if s in plain]
            gains = [final[seeds.index(s)] - 100 * plain[s]["test_accuracy"]["final"] for s in paired]
            best_gains = [best[seeds.index(s)] - 100 * plain[s]["test_accuracy"]["final"] for s in paired]
            cpu_ratio = (
                statistics.mean(runs[s]["cpu_seconds"] for s in paired)
                / statistics.mean(plain[s]["cpu_seconds"] for s in paired)
                if paired
                else float("nan")
            )
            gain = _mean_sd(gains) if gains and method != "plain" else "-"
            wins = f"{sum(g > 0 for g in gains)}/{len(gains)}" if gains and method != "plain" else "-"
            best_gain = _mean_sd(best_gains) if best_gains and method != "plain" else "-"
            print(f"  {method:<13} {_mean_sd(final):>14} {gain:>18} {wins:>4} {_mean_sd(best):>14} "
                  f"{best_gain:>13} {statistics.mean(cpu):7.0f} {cpu_ratio:7.2f}x   (seeds {seeds})")  # fmt: skip


def _shard(text: str) -> tuple[int, int]:
    """``K/N`` with 0 <= K < N, for argparse (a bad value is a usage error, not a traceback)."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N, e.g. 0/2")
    return int(k), int(n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", type=Path, default=None, help="npz dataset (e.g. the 10k/2k CIFAR-10 subset)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (0, 1, ...)")
    p.add_argument("--arch", default="resnet")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (CPU results repeat only at the same count)"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="runs are saved here as they finish")
    p.add_argument("--report", action="store_true", help="print the table of --results and exit")
    p.add_argument(
        "--shard",
        default=(0, 1),
        type=_shard,
        help="K/N: train every N-th run from the K-th (N processes share the cores)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="seconds on digits, one seed, one epoch (what CI runs)"
    )
    args = p.parse_args()
    if args.report:
        report(load_results(args.results))
        return
    if args.smoke:
        args.epochs, args.seeds, args.batch_size = 1, 1, 64
        args.results = Path(tempfile.mkdtemp()) / "smoke.json"  # never mixed with the real runs
    elif args.npz is None or not args.npz.is_file():
        raise SystemExit(f"--npz: {args.npz} is not a file")

    # Nothing is selected on validation images; a small split keeps the per-epoch evaluation cheap.
    data_cfg = (
        DataConfig(dataset="npz", path=str(args.npz), val_fraction=0.01)
        if args.npz is not None
        else DataConfig(dataset="digits", val_fraction=0.05)
    )
    data = load_dataset(data_cfg, seed=0, full=True)
    data_name = args.npz.name if args.npz else "digits"
    s = data.shape
    print(f"data: {data_name}: {len(data.y_train)} training / {len(data.y_test)} test images, "
          f"{s.in_chans}x{s.height}x{s.width}, {s.num_classes} classes; {args.arch} width {args.width} depth "
          f"{args.depth}; {args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} cosine; "
          f"torch {torch.__version__}, {args.threads} thread(s); results: {args.results}", flush=True)  # fmt: skip

    want = settings(args, data_name)
    shard, n_shards = args.shard
    # Seed by seed, so every method has its first seeds early; within a seed the methods rotate, so
    # drift in the machine's load hits every method alike.
    runs = [
        (seed, method)
        for seed in range(args.seeds)
        for method in args.methods[seed % len(args.methods) :] + args.methods[: seed % len(args.methods)]
    ]
    for seed, method in runs[shard::n_shards]:
        key = run_key(method, args, seed)
        if load_results(args.results)["runs"].get(key, {}).get("settings") == want:
            continue
        run = train_once(config(method, args, data_cfg, seed), data, threads=args.threads)
        add_run(args.results, key, {**run, "settings": want})
        exits = "  ".join(f"{e} {100 * v:.2f}" for e, v in run["test_accuracy"].items())
        print(f"  {key:<40} test accuracy (%): {exits}   CPU {run['cpu_seconds']:.0f} s", flush=True)
    report(load_results(args.results))


if __name__ == "__main__":
    main()
