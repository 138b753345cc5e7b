"""fit(): schedules, determinism, the NaN guard, early stopping and evaluation, on digits (CPU)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn

from sdsearch.core.config import BackboneConfig, DataConfig, LossConfig, ModelConfig, TrainConfig
from sdsearch.core.errors import ConfigError, SdsearchError
from sdsearch.data.datasets import Dataset, load_dataset
from sdsearch.nn.losses import LossOutput, SelfDistillLoss
from sdsearch.nn.network import SelfDistillNet
from sdsearch.training.fit import EpochReport, TrainingDivergedError, evaluate, fit, lr_at

TINY = ModelConfig(backbone=BackboneConfig(width=0.25, depth=1))
FAST = TrainConfig(epochs=2, batch_size=64, lr=0.1)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataConfig(dataset="digits"), seed=0)


@pytest.fixture(scope="module")
def small(digits: Dataset) -> Dataset:
    """A quarter of digits' training split: enough for a few steps, fast enough for many fits."""
    n = 288
    return dataclasses.replace(digits, x_train=digits.x_train[:n], y_train=digits.y_train[:n],
                               train_index=digits.train_index[:n])  # fmt: skip


def _build(seed: int = 0) -> tuple[SelfDistillNet, nn.Module]:
    torch.manual_seed(seed)
    net = SelfDistillNet(TINY, num_classes=10, in_chans=1, input_size=(8, 8))
    return net, SelfDistillLoss(LossConfig(), net)


# -- schedules -------------------------------------------------------------------------------------


def test_cosine_with_warmup_is_linear_then_decays_to_zero() -> None:
    cfg = TrainConfig(epochs=10, lr=0.1, schedule="cosine", warmup_epochs=2)
    lrs = [lr_at(s, cfg, steps_per_epoch=5) for s in range(50)]
    assert lrs[:10] == pytest.approx([0.01 * (i + 1) for i in range(10)])
    assert lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] < 1e-3


def test_step_schedule_milestones_are_fractions_of_epochs() -> None:
    cfg = TrainConfig(epochs=8, lr=1.0, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    lrs = [lr_at(s, cfg, steps_per_epoch=3) for s in range(24)]
    assert lrs[:12] == [1.0] * 12
    assert lrs[12:18] == pytest.approx([0.1] * 6)
    assert lrs[18:] == pytest.approx([0.01] * 6)
    assert lr_at(7, TrainConfig(schedule="constant", lr=0.3), steps_per_epoch=3) == 0.3


# -- fit -------------------------------------------------------------------------------------------


def test_fit_reports_every_epoch_and_learns(digits: Dataset) -> None:
    net, loss = _build()
    reports: list[EpochReport] = []
    result = fit(net, loss, digits, FAST.replace(epochs=3), seed=0, report=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3] and result.epochs_done == 3 and not result.stopped
    assert set(result.val_accuracy) == {"1", "2", "3", "final"}
    assert result.val_accuracy == reports[-1].val_accuracy
    assert reports[-1].accuracy == result.val_accuracy["final"]
    assert result.train_loss == tuple(r.train_loss for r in reports)
    assert result.train_loss[-1] < result.train_loss[0]
    assert max(result.val_accuracy.values()) > 0.5  # chance is 0.1
    assert all(r.images_per_second > 0 and r.seconds >= r.train_seconds for r in reports)
    assert reports[-1].lr < reports[0].lr  # cosine, stepped per iteration
    assert not net.training


def test_same_seed_gives_identical_metrics_on_cpu(small: Dataset) -> None:
    runs = []
    for _ in range(2):
        net, loss = _build(seed=1)
        result = fit(net, loss, small, FAST, seed=1, threads=1)
        runs.append((result.train_loss, result.val_accuracy, [r.loss_parts for r in result.history]))
    assert runs[0] == runs[1]
    net, loss = _build(seed=1)
    other = fit(net, loss, small, FAST, seed=2, threads=1)  # other batch order and crops
    assert other.train_loss != runs[0][0]


def test_threads_are_restored(small: Dataset) -> None:
    before = torch.get_num_threads()
    net, loss = _build()
    fit(net, loss, small, FAST.replace(epochs=1), seed=0, threads=1)
    assert torch.get_num_threads() == before


def test_adamw_step_schedule_and_no_augmentation(small: Dataset) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                      schedule="step", milestones=(0.5,), warmup_epochs=1)  # fmt: skip
    net, loss = _build()
    result = fit(net, loss, small, cfg, seed=0, augment="none")
    assert result.history[0].lr == pytest.approx(1e-3)  # end of warm-up
    assert result.history[1].lr == pytest.approx(1e-4)  # after the milestone at epoch 1
    assert all(math.isfinite(v) for v in result.train_loss)


def test_nan_learning_rate_raises_diverged(small: Dataset) -> None:
    net, loss = _build()
    with pytest.raises(TrainingDivergedError, match="nan") as info:
        fit(net, loss, small, FAST.model_copy(update={"lr": float("nan")}), seed=0)
    assert isinstance(info.value, SdsearchError) and info.value.epoch == 1 and info.value.step == 1


class _NanAfter(nn.Module):
    """Wraps a loss and makes it NaN from the ``n``-th call on (the network itself stays finite)."""

    def __init__(self, inner: nn.Module, n: int) -> None:
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def batch_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossOutput:
        return self(net(x), y)

    def forward(self, out: object, y: torch.Tensor) -> LossOutput:
        self.calls += 1
        res = self.inner(out, y)
        if self.calls >= self.n:
            return dataclasses.replace(res, total=res.total * float("nan"))
        return res


def test_nan_loss_names_epoch_step_and_lr(small: Dataset) -> None:
    net, loss = _build()
    steps = len(small.y_train) // FAST.batch_size
    with pytest.raises(TrainingDivergedError) as info:
        fit(net, _NanAfter(loss, steps + 3), small, FAST, seed=0)
    assert str(info.value).startswith("loss became nan at epoch 2, step 3 (lr=")
    assert info.value.lr > 0


def test_callback_returning_true_stops_early(small: Dataset) -> None:
    net, loss = _build()
    seen: list[int] = []

    def stop_after_first(rep: EpochReport) -> bool:
        seen.append(rep.epoch)
        return True

    result = fit(net, loss, small, FAST.replace(epochs=4), seed=0, report=stop_after_first)
    assert seen == [1] and result.epochs_done == 1 and result.stopped
    net, loss = _build()
    truthy = fit(net, loss, small, FAST, seed=0, report=lambda rep: {"done": rep.epoch})
    assert truthy.epochs_done == 2 and not truthy.stopped  # only exactly True stops


def test_bad_settings_are_refused(small: Dataset) -> None:
    net, loss = _build()
    with pytest.raises(ValueError, match=r"'lamb' is not one of sgd, adamw"):  # refused where declared
        FAST.replace(optimizer="lamb")
    with pytest.raises(ConfigError, match=r"deploy\.exit"):
        fit(net, loss, small, FAST, seed=0, deploy_exit="4")


def test_evaluate_every_exit_independent_of_batch_size(digits: Dataset) -> None:
    net, _ = _build()
    net.train()
    args = {"mean": digits.mean, "std": digits.std}
    full = evaluate(net, digits.x_test, digits.y_test, **args)
    assert not net.training
    assert set(full) == {"1", "2", "3", "final"} and all(0.0 <= v <= 1.0 for v in full.values())
    assert evaluate(net, digits.x_test, digits.y_test, batch_size=7, **args) == full
    # Agrees with a plain forward pass on the normalised images.
    x = (torch.from_numpy(digits.x_test).float() / 255 - digits.mean[0]) / digits.std[0]
    with torch.no_grad():
        pred = net(x).logits["final"].argmax(1)
    plain = (pred == torch.from_numpy(digits.y_test)).float().mean().item()
    assert full["final"] == pytest.approx(plain, abs=1 / len(pred))
