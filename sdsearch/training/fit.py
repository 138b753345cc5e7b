"""``fit()``: train a multi-exit network with its self-distillation loss, one report per epoch.

The trainer knows nothing about Optuna or Ray: the search wraps ``ray.tune.report`` around the
``report`` callback, ``sdsearch train`` wraps a progress bar around it. Batches come from
:class:`~sdsearch.data.loader.DeviceLoader` (data resident on the device, augmentation batched there).

Invariants:
    * Same seed, same network initialisation and same thread count on CPU -> identical metrics.
    * The learning rate is set every step from :func:`lr_at` (a pure function of the step), so
      schedules are per iteration and warm-up is linear from ``lr / warmup_steps``.
    * A non-finite loss or learning rate ends the run with :class:`TrainingDivergedError`; the
      network's weights are then meaningless.

Example:
    >>> result = fit(net, loss, data, TrainConfig(epochs=2), seed=0)  # doctest: +SKIP
    >>> result.val_accuracy["final"]                                   # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sdsearch.core.config import TrainConfig, TrialConfig
from sdsearch.core.errors import ConfigError, SdsearchError
from sdsearch.core.exits import FINAL
from sdsearch.data.datasets import augment_policy
from sdsearch.data.loader import DeviceLoader

if TYPE_CHECKING:
    from sdsearch.data.datasets import Dataset, DataShape

__all__ = [
    "EpochReport",
    "FitResult",
    "TrainingDivergedError",
    "evaluate",
    "fit",
    "lr_at",
    "resolve_device",
]

#: Batch size for evaluation (no activations kept for backward, so larger than training batches).
EVAL_BATCH_SIZE = 1024
#: On CUDA the loss is checked for NaN/inf every this many steps (each check synchronises the
#: device); on CPU every step, where a check costs nothing. The failing step is exact either way.
_CUDA_CHECK_EVERY = 25


class TrainingDivergedError(SdsearchError):
    """The loss (or the learning rate) became NaN or infinite; the trial's result is meaningless.

    Attributes:
        epoch: 1-based epoch of the first bad step.
        step: 1-based step within that epoch.
        lr: learning rate of that step.
        value: the bad value (``nan``, ``inf`` or ``-inf``).
    """

    exit_code = 1

    def __init__(self, what: str, *, epoch: int, step: int, lr: float, value: float) -> None:
        self.epoch, self.step, self.lr, self.value = epoch, step, lr, value
        super().__init__(f"{what} became {value} at epoch {epoch}, step {step} (lr={lr:.6g})")


@dataclass(frozen=True)
class EpochReport:
    """What ``fit`` tells its ``report`` callback after every epoch.

    Attributes:
        epoch: 1-based epoch just finished; ``epochs`` is how many were planned.
        train_loss: mean total loss over the epoch's steps.
        val_accuracy: top-1 validation accuracy per exit name (``"1"``, ..., ``"final"``; an elastic
            network's per candidate, ``"final@0.5"``).
        accuracy: ``val_accuracy`` of the deployed exit (the trial's objective).
        lr: learning rate of the epoch's last step.
        seconds: wall time of the epoch, evaluation included; ``train_seconds`` without it.
        images_per_second: training throughput of the epoch.
        loss_parts: mean of every named loss term (``LossOutput.parts``).
        precision: what measured ``val_accuracy``: the float32 network (every epoch), or the
            deployed int8 graph (a search trial's last report under ``deploy.quantize: int8``).
        extra: more results of a trial's last report (anytime metrics and their report).
    """

    epoch: int
    epochs: int
    train_loss: float
    val_accuracy: dict[str, float]
    accuracy: float
    lr: float
    seconds: float
    train_seconds: float
    images_per_second: float
    loss_parts: dict[str, float] = field(default_factory=dict)
    precision: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    ``stopped`` is True when the ``report`` callback ended training before the last epoch (as ASHA
    does); ``val_accuracy`` is then that of the last epoch done. ``history`` holds every report.
    """

    epochs_done: int
    val_accuracy: dict[str, float]
    train_loss: tuple[float, ...]
    seconds: float
    stopped: bool
    history: tuple[EpochReport, ...] = ()


def build(cfg: TrialConfig, shape: DataShape) -> tuple[nn.Module, nn.Module]:
    """The seeded multi-exit network and its loss for a config: the one place both are built.

    ``sdsearch run`` trials and ``sdsearch train`` build through here, so the same config and
    seed give the same initial weights in both. An elastic config (``train.elastic_widths``) builds
    an :class:`~sdsearch.nn.elastic.ElasticNet` and its sandwich loss.
    """
    from sdsearch.nn.losses import SandwichLoss, SelfDistillLoss  # nn loads only when a network is built
    from sdsearch.nn.network import SelfDistillNet

    torch.manual_seed(cfg.seed)  # weight init; fit() seeds batches and augmentation
    dims = {"num_classes": shape.num_classes, "in_chans": shape.in_chans, "input_size": shape.input_size}
    if cfg.elastic:
        from sdsearch.nn.elastic import ElasticNet

        elastic = ElasticNet(cfg.model, cfg.train.elastic_widths, **dims)
        return elastic, SandwichLoss(cfg.loss, elastic)
    net = SelfDistillNet(cfg.model, **dims)
    return net, SelfDistillLoss(cfg.loss, net)


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lr_at(step: int, cfg: TrainConfig, *, steps_per_epoch: int) -> float:
    """Learning rate of 0-based global ``step``: linear warm-up, then the configured schedule.

    ``cosine`` decays from ``lr`` towards 0 at the last step, ``step`` multiplies by ``gamma`` at
    each milestone (a fraction of ``epochs``, rounded to an epoch boundary), ``constant`` keeps
    ``lr``. Warm-up ramps linearly over ``warmup_epochs`` and the schedule starts after it.
    """
    total = cfg.epochs * steps_per_epoch
    warm = min(cfg.warmup_epochs * steps_per_epoch, total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        bounds = [round(m * cfg.epochs) * steps_per_epoch for m in cfg.milestones]
        return cfg.lr * cfg.gamma ** sum(step >= b for b in bounds)
    return cfg.lr


def fit(
    net: nn.Module,
    loss: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    seed: int,
    augment: str = "auto",
    device: torch.device | str | None = None,
    threads: int | None = None,
    report: Callable[[EpochReport], Any] | None = None,
    deploy_exit: str = FINAL,
) -> FitResult:
    """Train ``net`` with ``loss`` on ``data.x_train``; evaluate every exit on ``data.x_val`` each epoch.

    The optimizer updates ``net.parameters()`` and ``loss.parameters()`` (the loss owns adapters).
    Each step's loss is ``loss.batch_loss(net, x, y)`` (one forward pass for a
    :class:`~sdsearch.nn.losses.SelfDistillLoss`, the sandwich's widths for a ``SandwichLoss``).
    AMP (bf16 autocast) is used only on CUDA, when ``cfg.amp`` asks for it. Channels-last follows
    ``cfg.channels_last`` on every device: it was also 1.15-1.4x faster on CPU here
    (resnet / mobilenetv2 on digits, one thread), at the same determinism per thread count.

    Args:
        net: a multi-exit network (``SelfDistillNet``): ``net(x).logits`` maps exit name to logits.
        loss: ``loss(out, y).total`` is the scalar to minimise.
        data: the dataset; only the train and validation splits are used.
        cfg: optimizer, schedule, epochs and batch size.
        seed: seeds batch order, augmentation and any randomness inside the network.
        augment: ``auto|none|crop|crop_flip``, resolved for ``data.name``.
        device: training device; default CUDA when available.
        threads: ``torch.set_num_threads`` for the run (restored afterwards).
        report: called after every epoch; returning exactly ``True`` stops training early.
        deploy_exit: the exit whose accuracy is ``EpochReport.accuracy``.

    Returns:
        Epochs done, last-epoch validation accuracy per exit, loss history, wall time.

    Raises:
        TrainingDivergedError: the loss or learning rate became NaN or infinite.
        ConfigError: ``deploy_exit`` is not an exit of ``net``.
    """
    exits = tuple(getattr(net, "exits", ()))
    if exits and deploy_exit not in exits:
        raise ConfigError(f"deploy.exit: {deploy_exit!r} is not an exit of this network ({', '.join(exits)})")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    amp = cuda and cfg.amp
    channels_last = cfg.channels_last
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)  # process-wide; restored below
    try:
        # Seeds whatever the network draws from the global generator (dropout, stochastic depth).
        torch.manual_seed(seed)
        if cuda:
            torch.backends.cudnn.benchmark = True
        net.to(dev)
        loss.to(dev)
        if channels_last:
            net.to(memory_format=torch.channels_last)
        policy = augment_policy(augment, data.name, data.shape.input_size)
        train_loader = DeviceLoader(
            data.x_train, data.y_train, batch_size=cfg.batch_size, mean=data.mean, std=data.std,
            device=dev, shuffle=True, policy=policy, drop_last=True, seed=seed, channels_last=channels_last,
        )  # fmt: skip
        val_loader = DeviceLoader(
            data.x_val, data.y_val, batch_size=EVAL_BATCH_SIZE, mean=data.mean, std=data.std,
            device=dev, channels_last=channels_last,
        )  # fmt: skip
        optimizer = _optimizer(_unique_parameters(net, loss), cfg)
        return _loop(net, loss, train_loader, val_loader, optimizer, cfg, amp=amp, report=report,
                     deploy_exit=deploy_exit)  # fmt: skip
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)


def evaluate(
    net: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = EVAL_BATCH_SIZE,
    device: torch.device | str | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy of every exit of ``net`` on uint8 images ``x`` (eval mode, no grad, batched).

    Args:
        net: multi-exit network; it is moved to ``device`` (default: where its parameters are).
        x, y: uint8 images ``(N, C, H, W)`` and labels, e.g. ``data.x_test, data.y_test``.
        mean, std: normalisation of the training split (``Dataset.mean`` / ``.std``).
        amp: bf16 autocast (CUDA only). Without it the evaluation is strict float32 even inside
            a caller's autocast region, and on CUDA without TF32 convolutions and matmuls.
    """
    loader = eval_loader(net, x, y, mean=mean, std=std, batch_size=batch_size, device=device,
                         channels_last=channels_last)  # fmt: skip
    amp = amp and loader.device.type == "cuda"
    with contextlib.nullcontext() if amp else strict_float32(loader.device):
        return _evaluate(net, loader, amp=amp)


def eval_loader(
    net: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = EVAL_BATCH_SIZE,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> DeviceLoader:
    """The set-up every evaluation pass shares: ``net`` moved to ``device`` (default: where its
    parameters are) and a loader of normalised ``x, y`` batches there."""
    if device is None:
        param = next(net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    dev = torch.device(device)
    net.to(dev)
    return DeviceLoader(
        x, y, batch_size=batch_size, mean=mean, std=std, device=dev, channels_last=channels_last
    )


@contextlib.contextmanager
def strict_float32(device: torch.device) -> Iterator[None]:
    """No autocast on ``device``, and on CUDA IEEE float32 convolutions and matmuls (no TF32), then restore."""
    with torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
        before = matmul.fp32_precision, conv.fp32_precision
        matmul.fp32_precision = conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = before


# --------------------------------------------------------------------------------------------------


def _loop(
    net: nn.Module,
    loss: nn.Module,
    train_loader: DeviceLoader,
    val_loader: DeviceLoader,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    *,
    amp: bool,
    report: Callable[[EpochReport], Any] | None,
    deploy_exit: str,
) -> FitResult:
    dev = train_loader.device
    steps = len(train_loader)
    check_every = _CUDA_CHECK_EVERY if dev.type == "cuda" else 1
    history: list[EpochReport] = []
    stopped = False
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        loss.train()
        losses = torch.zeros(steps, device=dev)
        lrs: list[float] = []
        parts: dict[str, torch.Tensor] = {}
        checked = 0
        images = 0
        for i, (xb, yb) in enumerate(train_loader):
            lr = lr_at((epoch - 1) * steps + i, cfg, steps_per_epoch=steps)
            if not math.isfinite(lr):
                raise TrainingDivergedError("learning rate", epoch=epoch, step=i + 1, lr=lr, value=lr)
            lrs.append(lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(dev, amp):
                out = loss.batch_loss(net, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
            losses[i] = out.total.detach()
            for name, value in out.parts.items():
                parts[name] = parts.get(name, 0.0) + value.detach().float()
            images += len(yb)
            if (i + 1) % check_every == 0 or i + 1 == steps:
                _check_finite(losses, checked, i + 1, epoch, lrs)
                checked = i + 1
        train_loss = float(losses.mean())
        train_seconds = time.perf_counter() - t0
        val = _evaluate(net, val_loader, amp=amp)
        rep = EpochReport(
            epoch=epoch,
            epochs=cfg.epochs,
            train_loss=train_loss,
            val_accuracy=val,
            accuracy=val.get(deploy_exit, float("nan")),
            lr=lrs[-1],
            seconds=time.perf_counter() - t0,
            train_seconds=train_seconds,
            images_per_second=images / train_seconds if train_seconds > 0 else float("inf"),
            loss_parts={k: float(v) / steps for k, v in parts.items()},
        )
        history.append(rep)
        if report is not None and report(rep) is True:
            stopped = epoch < cfg.epochs
            break
    last = history[-1]
    return FitResult(
        epochs_done=len(history),
        val_accuracy=last.val_accuracy,
        train_loss=tuple(r.train_loss for r in history),
        seconds=time.perf_counter() - start,
        stopped=stopped,
        history=tuple(history),
    )


def _check_finite(losses: torch.Tensor, begin: int, end: int, epoch: int, lrs: list[float]) -> None:
    window = losses[begin:end]
    if bool(torch.isfinite(window).all()):
        return
    bad = begin + int((~torch.isfinite(window)).nonzero()[0, 0])
    value = float(losses[bad])
    raise TrainingDivergedError("loss", epoch=epoch, step=bad + 1, lr=lrs[bad], value=value)


@torch.no_grad()
def _evaluate(net: nn.Module, loader: DeviceLoader, *, amp: bool) -> dict[str, float]:
    if loader.num_samples == 0:
        raise ValueError("cannot evaluate on an empty split")
    net.eval()
    named = getattr(net, "named_logits", None)  # an elastic network: every (width, exit) candidate
    correct: dict[str, torch.Tensor] = {}
    for xb, yb in loader:
        with _autocast(loader.device, amp):
            logits = named(xb) if named is not None else net(xb).logits
        for name, z in logits.items():
            hits = (z.argmax(dim=1) == yb).sum()
            correct[name] = correct[name] + hits if name in correct else hits
    return {name: int(c) / loader.num_samples for name, c in correct.items()}


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _unique_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """Parameters of all modules, each once (a loss that holds the network must not double them)."""
    seen: set[int] = set()
    params = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def _optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
