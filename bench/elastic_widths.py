"""Elastic widths: one sandwich training against one plain training per width, side by side.

What an elastic trial (``train.elastic_widths``) buys and costs, on one config:

* **cost**: CPU seconds of the elastic training (every step: the widest network under the
  self-distillation loss, the narrowest and one random width distilled in place) against a plain
  training of the widest network alone, the same epochs and batches: the sandwich's price per trial;
* **what each width is worth**: the test accuracy of every (width, exit) sliced out of the elastic
  network (what ``sdsearch train --from-study`` deploys, no retraining) against the same width trained
  from scratch as a plain config (what ``export --pick trial:N:EXIT@WIDTH`` and ``sdsearch train``
  give), and the plain trainings' CPU seconds summed: what the elastic trial replaces;
* **ablations**: the same elastic network with every width's BN statistics recomputed after training
  (recalibration) instead of kept per width while training (switchable BN), and an elastic training
  whose narrower widths learn the labels instead of the widest network (in-place distillation off).

Every run goes through ``sdsearch.training.fit.build`` and ``fit``, one thread, the same seed, on the
same split; the test split is never used to choose anything.

Run:  .venv/bin/python bench/elastic_widths.py [--epochs 40] [--widths 1 0.75 0.5 0.25] [--width 0.25]
      .venv/bin/python bench/elastic_widths.py --npz PATH --epochs 30 --arch resnet --width 0.25
      .venv/bin/python bench/elastic_widths.py --smoke
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch

from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    DataConfig,
    ModelConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.core.exits import FINAL, candidate_name
from sdsearch.data.datasets import Dataset, load_dataset
from sdsearch.data.loader import DeviceLoader
from sdsearch.nn.losses import SandwichLoss
from sdsearch.training.fit import build, evaluate, fit


def train(cfg: TrialConfig, data: Dataset, threads: int, *, inplace: bool = True) -> tuple[Any, float]:
    """The trained network of ``cfg`` and the CPU seconds ``fit`` took; ``inplace=False`` trains an
    elastic network's narrower widths on the labels instead of distilling them (the ablation)."""
    net, loss = build(cfg, data.shape)
    if cfg.elastic and not inplace:
        loss = SandwichLoss(cfg.loss, net, inplace=False)
    deploy_exit = candidate_name(FINAL, net.multipliers[0]) if cfg.elastic else FINAL
    cpu = time.process_time()
    fit(net, loss, data, cfg.train, seed=cfg.seed, augment=cfg.data.augment, device="cpu", threads=threads,
        deploy_exit=deploy_exit)  # fmt: skip
    return net, time.process_time() - cpu


def test_accuracy(net: Any, data: Dataset) -> dict[str, float]:
    """Test accuracy of every exit of a plain network."""
    return evaluate(net, data.x_test, data.y_test, mean=data.mean, std=data.std, device="cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npz", type=Path, default=None, help="an .npz dataset (default: digits)")
    p.add_argument("--arch", default="resnet", choices=("resnet", "mobilenetv2"))
    p.add_argument("--width", type=float, default=0.25, help="backbone.width of the widest network")
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="2 epochs, two widths, on digits (what CI runs)")
    args = p.parse_args()
    if args.smoke:
        args.npz, args.epochs, args.widths = None, 2, [1.0, 0.5]
    if args.npz is not None and not args.npz.is_file():
        print(f"skipped: {args.npz} does not exist")
        return
    data_cfg = (
        DataConfig(dataset="npz", path=args.npz, val_fraction=0.1)
        if args.npz
        else DataConfig(dataset="digits", val_fraction=0.25)
    )
    data = load_dataset(data_cfg, seed=args.seed)
    model = ModelConfig(
        backbone=BackboneConfig(arch=args.arch, width=args.width, depth=args.depth),
        branches=BranchesConfig(placement=(2,)),
    )
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=1)
    base = TrialConfig(model=model, data=data_cfg, train=train_cfg, seed=args.seed)
    elastic_cfg = base.replace(train=train_cfg.replace(elastic_widths=tuple(args.widths)))
    print(f"{data.name}: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test; "
          f"{args.arch} width {args.width} depth {args.depth}, exit after stage 2; {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}; widths {args.widths}; {args.threads} thread(s)", flush=True)  # fmt: skip

    elastic, elastic_s = train(elastic_cfg, data, args.threads)
    widest, widest_s = train(base.at_width(elastic.multipliers[0]), data, args.threads)
    print(f"CPU seconds: elastic (sandwich) {elastic_s:.0f} s, the widest network alone {widest_s:.0f} s: "
          f"{elastic_s / widest_s:.2f}x per trial", flush=True)  # fmt: skip
    labels_only, _ = train(elastic_cfg, data, args.threads, inplace=False)
    recalibrated = recalibrate(elastic_cfg, elastic, data)
    rows, plain_total = [], 0.0
    for m in elastic.multipliers:
        if m == elastic.multipliers[0]:
            plain, seconds = widest, widest_s
        else:
            plain, seconds = train(base.at_width(m), data, args.threads)
        plain_total += seconds
        tests = [test_accuracy(net.subnet(m).eval(), data) for net in (elastic, recalibrated, labels_only)]
        plain_test = test_accuracy(plain, data)
        rows += [(candidate_name(e, m), *(t[e] for t in tests), plain_test[e]) for e in plain_test]
    print("test accuracy (%)")
    print(
        f"{'candidate':<12}{'sliced':>9}{'recal. BN':>11}{'no inplace':>12}{'plain':>9}{'sliced - plain':>16}"
    )
    for name, sliced, recal, labels, plain_acc in rows:
        print(f"{name:<12}{100 * sliced:>9.2f}{100 * recal:>11.2f}{100 * labels:>12.2f}{100 * plain_acc:>9.2f}"
              f"{100 * (sliced - plain_acc):>+16.2f}")  # fmt: skip
    mean = [100 * sum(r[i] for r in rows) / len(rows) for i in range(1, 5)]
    print(f"mean over candidates: sliced {mean[0]:.2f}, recalibrated BN {mean[1]:.2f}, in-place distillation "
          f"off {mean[2]:.2f}, plain {mean[3]:.2f}")  # fmt: skip
    print(
        "(sliced: the width cut out of the one elastic network, switchable BN, as --from-study deploys it; "
        "recal. BN: the same network, every width's statistics recomputed on the training images; no "
        "inplace: an elastic training whose narrower widths learn the labels; plain: that width trained "
        "alone from scratch)"
    )
    print(f"the {len(elastic.multipliers)} plain trainings took {plain_total:.0f} CPU s, the one elastic "
          f"training {elastic_s:.0f} s: {plain_total / elastic_s:.2f}x")  # fmt: skip


def recalibrate(cfg: TrialConfig, elastic: Any, data: Dataset) -> Any:
    """A copy of ``elastic`` whose every width's BN statistics are recomputed on the training split
    (the universally slimmable network's calibration) instead of those kept while training."""
    net = copy.deepcopy(elastic)
    batches = DeviceLoader(data.x_train, data.y_train, batch_size=cfg.train.batch_size, mean=data.mean,
                           std=data.std, device=torch.device("cpu"))  # fmt: skip
    for m in net.multipliers:
        net.recalibrate(m, (x for x, _ in batches))
    return net


if __name__ == "__main__":
    main()
