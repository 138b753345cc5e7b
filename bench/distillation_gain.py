"""Distillation gain: the same small backbone trained plain and self-distilled, side by side.

Both arms train the same backbone (default: ResNet width 0.25, depth 1) on the same data, for the
same epochs, batch size, optimizer and schedule, with the same seeds, through the path every
search trial and ``sdsearch train`` take (``sdsearch.training.fit.build`` and ``fit``):

* **plain**: the backbone and its final head only: ``branches.placement: []``, ``kd_weight: 0``,
  ``feature_weight: 0``, so the loss is the final exit's cross-entropy.
* **self-distilled**: exit branches after stages 1-3, a fusion head, KD from the deepest exit and
  feature hints (``loss.style: byot``, kd_weight 0.3, T 3, feature_weight 0.03: the BYOT setting).

The figure is the **final exit's** test accuracy, the model both arms deploy: self-distillation is
only worth its training cost if it makes that exit better (the shallow exits come for free and are
printed too). Both arms train on the whole training split (``load_dataset(..., full=True)``): the
test split is never seen, and no validation split is needed since nothing is selected.

Training time is the process's CPU seconds inside ``fit`` (one thread by default, so a shared
machine's other load does not inflate it; the per-epoch evaluation of a 1% split is in it and is
negligible). The wall seconds of the training steps (``EpochReport.train_seconds``) are printed too:
on a busy machine they also count waiting for a core. The arms alternate per seed (plain first for
even seeds, self-distilled first for odd ones), so drift in the machine's load hits both.

Run:  .venv/bin/python bench/distillation_gain.py --npz PATH [--epochs 15] [--seeds 3] [--width 0.25]
      .venv/bin/python bench/distillation_gain.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    DataConfig,
    FusionConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.data.datasets import Dataset, load_dataset
from sdsearch.training.fit import build, evaluate, fit

ARMS = ("plain", "self-distilled")


def configs(args: argparse.Namespace, data: DataConfig) -> dict[str, TrialConfig]:
    """The two arms' configs: identical but for branches, fusion and the loss weights."""
    backbone = BackboneConfig(arch=args.arch, width=args.width, depth=args.depth)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
                        warmup_epochs=1, weight_decay=5.0e-4, momentum=0.9)  # fmt: skip
    plain = TrialConfig(
        model=ModelConfig(backbone=backbone, branches=BranchesConfig(placement=())),
        loss=LossConfig(kd_weight=0.0, feature_weight=0.0),
        data=data,
        train=train,
    )
    sd = TrialConfig(
        model=ModelConfig(
            backbone=backbone,
            branches=BranchesConfig(placement=(1, 2, 3), style=args.branch_style),
            fusion=FusionConfig(type=args.fusion),
        ),
        loss=LossConfig(teacher="deepest", kd_weight=0.3, temperature=3.0, feature_weight=0.03, style="byot"),
        data=data,
        train=train,
    )
    return dict(zip(ARMS, (plain, sd), strict=True))


def train_once(
    cfg: TrialConfig, data: Dataset, *, seed: int, threads: int
) -> tuple[dict[str, float], float, float]:
    """Test accuracy per exit, wall seconds of the training steps and process CPU seconds of ``fit``."""
    cfg = cfg.replace(seed=seed)
    net, loss = build(cfg, data.shape)
    cpu = time.process_time()
    result = fit(
        net, loss, data, cfg.train, seed=seed, augment=cfg.data.augment, device="cpu", threads=threads
    )
    cpu = time.process_time() - cpu
    test = evaluate(net, data.x_test, data.y_test, mean=data.mean, std=data.std, device="cpu")
    return test, sum(r.train_seconds for r in result.history), cpu


def _mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} ± {sd:4.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", type=Path, default=None, help="npz dataset (e.g. the 10k/2k CIFAR-10 subset)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (0, 1, ...)")
    p.add_argument("--arch", default="resnet")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--branch-style", default="sd", help="exit branches of the self-distilled arm: sd | lite")
    p.add_argument("--fusion", default="channel_attention", help="fusion of the self-distilled arm")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (CPU results repeat only at the same count)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="seconds on digits, one seed, one epoch (what CI runs)"
    )
    args = p.parse_args()
    if args.smoke:
        args.epochs, args.seeds, args.batch_size = 1, 1, 64
    elif args.npz is None or not args.npz.is_file():
        raise SystemExit(f"--npz: {args.npz} is not a file")

    # Nothing is selected on validation images; a small split keeps the per-epoch evaluation cheap.
    data_cfg = (
        DataConfig(dataset="npz", path=str(args.npz), val_fraction=0.01)
        if args.npz is not None
        else DataConfig(dataset="digits", val_fraction=0.05)
    )
    data = load_dataset(data_cfg, seed=0, full=True)
    arms = configs(args, data_cfg)
    s = data.shape
    print(f"data: {args.npz.name if args.npz else 'digits'}: {len(data.y_train)} training / {len(data.y_test)} test images, "
          f"{s.in_chans}x{s.height}x{s.width}, {s.num_classes} classes; {args.arch} width {args.width} depth "
          f"{args.depth}; {args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} cosine; self-distilled: "
          f"{args.branch_style} branches after stages 1-3, {args.fusion} fusion, byot loss (kd 0.3, T 3, "
          f"feature 0.03); torch {torch.__version__}, {args.threads} thread(s)", flush=True)  # fmt: skip

    acc: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}
    seconds: dict[str, list[float]] = {a: [] for a in ARMS}
    cpu: dict[str, list[float]] = {a: [] for a in ARMS}
    for seed in range(args.seeds):
        for arm in ARMS if seed % 2 == 0 else ARMS[::-1]:
            test, secs, cpu_secs = train_once(arms[arm], data, seed=seed, threads=args.threads)
            acc[arm].append(test)
            seconds[arm].append(secs)
            cpu[arm].append(cpu_secs)
            exits = "  ".join(f"{e} {100 * v:.2f}" for e, v in test.items())
            print(f"  seed {seed} {arm:<15} test accuracy (%): {exits}   CPU {cpu_secs:.0f} s (wall {secs:.0f} s)",
                  flush=True)  # fmt: skip

    final = {a: [100 * t["final"] for t in acc[a]] for a in ARMS}
    print(f"\nfinal exit, test accuracy (%), mean ± std over {args.seeds} seeds:")
    for arm in ARMS:
        print(f"  {arm:<15} {_mean_std(final[arm])}   {statistics.mean(cpu[arm]):.0f} CPU s per run")
    paired = [b - a for a, b in zip(final["plain"], final["self-distilled"], strict=True)]
    gain = statistics.mean(final["self-distilled"]) - statistics.mean(final["plain"])
    print(f"  gain            {gain:+6.2f} pp (paired by seed: {_mean_std(paired)} pp)")
    for e in acc["self-distilled"][0]:
        if e != "final":
            print(f"  self-distilled exit {e}: {_mean_std([100 * t[e] for t in acc['self-distilled']])}")
    ratio = sum(seconds["self-distilled"]) / sum(seconds["plain"])
    cpu_ratio = sum(cpu["self-distilled"]) / sum(cpu["plain"])
    print(f"training time, self-distilled / plain: {cpu_ratio:.2f}x in CPU seconds "
          f"({ratio:.2f}x in wall seconds of the training steps, which also count waiting for a core)")  # fmt: skip


if __name__ == "__main__":
    main()
