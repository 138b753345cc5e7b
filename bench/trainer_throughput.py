"""Training throughput: sdsearch's trainer (DeviceLoader + fit) vs a plain PyTorch loop.

Both train the same network (ResNet width 0.25, depth 1, exits after stages 1-3) with the same
self-distillation loss, optimizer and batch size for the same number of timed steps, in one run:

* sdsearch: ``fit()`` on a split of ``steps * batch`` images; the second epoch's training time
  (``EpochReport.images_per_second``, evaluation excluded) is timed, the first is warm-up.
* plain: ``torch.utils.data.DataLoader`` over a Dataset that, like torchvision's CIFAR10, makes a
  PIL image per sample and applies RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and
  Normalize; ``num_workers`` 0 and 2; ``warmup`` untimed steps first.

It also times the data pipelines alone (batches only, no model), which is where the difference
comes from: with a model this small on a CPU, convolution time bounds the end-to-end ratio.

Each loop runs once per round, rounds interleaved; the best round counts, since other load on the
machine only ever slows a run down. A "model only" row (training on one fixed batch) and the
per-batch data times give the bound on the end-to-end ratio that any data pipeline could reach.

Run:  .venv/bin/python bench/trainer_throughput.py [--npz PATH] [--steps 15] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)
from sdsearch.data.datasets import Dataset, augment_policy, load_dataset
from sdsearch.data.loader import DeviceLoader
from sdsearch.nn.losses import SelfDistillLoss
from sdsearch.nn.network import SelfDistillNet
from sdsearch.training.fit import fit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = REPO.parent / "shared" / "data" / "cifar10_12k.npz"
MODEL = ModelConfig(backbone=BackboneConfig(arch="resnet", width=0.25, depth=1),
                    branches=BranchesConfig(placement=(1, 2, 3)))  # fmt: skip


def _build(data: Dataset, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    s = data.shape
    net = SelfDistillNet(MODEL, num_classes=s.num_classes, in_chans=s.in_chans, input_size=s.input_size)
    return net, SelfDistillLoss(LossConfig(), net)


# -- the plain PyTorch baseline --------------------------------------------------------------------


class _PlainDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does per sample: PIL image from HWC uint8, then the transforms."""

    def __init__(self, x_nchw: np.ndarray, y: np.ndarray, data: Dataset) -> None:
        from torchvision import transforms

        self.x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))  # HWC, as CIFAR is stored
        self.y = y
        h, w = data.shape.input_size
        policy = augment_policy("auto", data.name, (h, w))
        steps = [transforms.RandomCrop((h, w), padding=policy.pad)]
        if policy.flip:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        img = self.x[i]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(img), int(self.y[i])


def _plain_loader(data: Dataset, n: int, batch: int, workers: int) -> torch.utils.data.DataLoader:
    ds = _PlainDataset(data.x_train[:n], data.y_train[:n], data)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0)  # fmt: skip


def _plain_train(data: Dataset, cfg: TrainConfig, steps: int, warmup: int, workers: int) -> float:
    """Images/s of the timed steps of a plain loop (same net, loss, optimizer as fit)."""
    net, loss = _build(data)
    params = list(net.parameters()) + list(loss.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = _plain_loader(data, (steps + warmup) * cfg.batch_size, cfg.batch_size, workers)
    net.train()
    loss.train()
    start = None
    for i, (xb, yb) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        out = loss(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
    return steps * cfg.batch_size / (time.perf_counter() - start)


def _model_only(
    data: Dataset, cfg: TrainConfig, steps: int, warmup: int, channels_last: bool = False
) -> float:
    """Images/s of training steps on one fixed, already normalised batch: no data pipeline at all.

    ``channels_last`` shows what that memory format would give on this CPU (fit uses it on CUDA only).
    """
    net, loss = _build(data)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    params = list(net.parameters()) + list(loss.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    xb, yb = next(iter(_device_pipeline(data, cfg.batch_size, cfg.batch_size)))
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    net.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        out = loss(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
    return steps * cfg.batch_size / (time.perf_counter() - start)


def _sdsearch_train(data: Dataset, cfg: TrainConfig, steps: int) -> float:
    n = steps * cfg.batch_size
    sub = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n],
                              x_val=data.x_val[:256], y_val=data.y_val[:256])  # fmt: skip
    net, loss = _build(data)
    result = fit(net, loss, sub, cfg.replace(epochs=2), seed=0, device="cpu")
    return result.history[1].images_per_second  # epoch 1 is warm-up; evaluation is not timed


# -- data pipelines alone --------------------------------------------------------------------------


def _pipeline_rate(batches: object, steps: int, warmup: int, batch: int) -> float:
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch / (time.perf_counter() - t)


def _device_pipeline(data: Dataset, n: int, batch: int) -> DeviceLoader:
    policy = augment_policy("auto", data.name, data.shape.input_size)
    return DeviceLoader(data.x_train[:n], data.y_train[:n], batch_size=batch, mean=data.mean, std=data.std,
                        shuffle=True, policy=policy, drop_last=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="npz dataset (default: the CIFAR-10 subset)")
    p.add_argument("--steps", type=int, default=15, help="timed training steps per loop")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing (plain loop)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to compare")
    p.add_argument("--repeats", type=int, default=3, help="rounds (interleaved); the best is reported")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--smoke", action="store_true", help="a few seconds on digits (what CI runs)")
    args = p.parse_args()
    if args.smoke:
        args.npz, args.steps, args.warmup, args.batch_size, args.workers, args.repeats = (
            None,
            2,
            1,
            32,
            [0],
            1,
        )
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.npz is not None and args.npz.is_file():
        data = load_dataset(DataConfig(dataset="npz", path=str(args.npz)), seed=0)
        source = str(args.npz)
    else:
        data = load_dataset(DataConfig(dataset="digits"), seed=0)
        source = "digits" if args.npz is None else f"digits ({args.npz} not found)"
    cfg = TrainConfig(batch_size=args.batch_size, lr=0.05)
    need = (args.steps + args.warmup) * args.batch_size
    if len(data.y_train) < need:
        raise SystemExit(f"{source} has {len(data.y_train)} training images; need {need}: lower --steps")
    s = data.shape
    print(f"data: {source}  {s.in_chans}x{s.height}x{s.width}, {s.num_classes} classes; "
          f"model: resnet w0.25 d1, exits 1,2,3,final; batch {args.batch_size}; {args.steps} timed steps; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.get_num_interop_threads()} "
          f"interop; best of {args.repeats} interleaved rounds (other load only ever slows a run down)")  # fmt: skip

    names = ["sdsearch fit (DeviceLoader)"] + [f"plain DataLoader workers={w}" for w in args.workers]
    model_only = "model only (one fixed batch)"
    model_cl = "model only, channels_last"
    train_rates: dict[str, list[float]] = {k: [] for k in [*names, model_only, model_cl]}
    pipe_rates: dict[str, list[float]] = {k: [] for k in names}
    pipe_steps = 50
    for _ in range(args.repeats):
        train_rates[names[0]].append(_sdsearch_train(data, cfg, args.steps))
        for name, w in zip(names[1:], args.workers, strict=True):
            train_rates[name].append(_plain_train(data, cfg, args.steps, args.warmup, w))
        train_rates[model_only].append(_model_only(data, cfg, args.steps, args.warmup))
        train_rates[model_cl].append(_model_only(data, cfg, args.steps, args.warmup, channels_last=True))
        n = (pipe_steps + 5) * args.batch_size
        if len(data.y_train) >= n:
            pipe_rates[names[0]].append(_pipeline_rate(_device_pipeline(data, n, args.batch_size), pipe_steps, 5,
                                                       args.batch_size))  # fmt: skip
            for name, w in zip(names[1:], args.workers, strict=True):
                loader = _plain_loader(data, n, args.batch_size, w)
                pipe_rates[name].append(_pipeline_rate(loader, pipe_steps, 5, args.batch_size))

    best: dict[str, dict[str, float]] = {}
    for title, rates in (("training (forward + backward + step)", train_rates),
                         ("data pipeline only (batches, no model)", pipe_rates)):  # fmt: skip
        if not all(rates.values()):
            continue
        best[title] = top = {k: max(v) for k, v in rates.items()}
        print(f"\n{title}: images/s")
        for k in rates:
            runs = ", ".join(f"{v:,.0f}" for v in rates[k])
            print(f"  {k:<30} {top[k]:>10,.0f}   ({runs})")
        for k in names[1:]:
            print(f"  ratio sdsearch / {k.removeprefix('plain '):<20} {top[names[0]] / top[k]:6.2f}x")
    if len(best) == 2:
        # Per batch: t_model + t_data. The best an ideal data pipeline can do is remove t_data.
        train, pipe = best.values()
        b = args.batch_size
        t_model = b / train[model_only]
        t_dev = b / pipe[names[0]]
        print(
            f"\nper batch of {b}: model step {t_model * 1e3:,.1f} ms; data {t_dev * 1e3:.2f} ms (sdsearch)",
            end="",
        )
        for k in names[1:]:
            t_plain = b / pipe[k]
            bound = (t_model + t_plain) / (t_model + t_dev)
            print(
                f", {t_plain * 1e3:.2f} ms ({k.removeprefix('plain ')}: data alone can give at most {bound:.2f}x)",
                end="",
            )
        print()
        cl_gain = train[model_cl] / train[model_only]
        print(
            f"channels_last on this CPU (model only): {cl_gain:.2f}x; fit uses it (train.channels_last), "
            "the plain loop does not: the end-to-end ratio above is data pipeline x memory layout"
        )


if __name__ == "__main__":
    main()
