"""Elastic width: every (width, exit) of one network is the deployed model of that width, bit for bit."""

from __future__ import annotations

import pytest
import torch

from sdsearch.core.config import BackboneConfig, BranchesConfig, FusionConfig, ModelConfig, TrialConfig
from sdsearch.core.errors import ConfigError
from sdsearch.cost.metrics import DeployMetrics
from sdsearch.data.datasets import DataShape
from sdsearch.nn.elastic import ElasticNet

SHAPE = DataShape(in_chans=3, height=16, width=16, num_classes=5)
WIDTHS = (1.0, 0.75, 0.5, 0.25)


def elastic(arch: str = "resnet", width: float = 0.5, multipliers=WIDTHS, style: str = "sd") -> ElasticNet:
    torch.manual_seed(0)
    model = ModelConfig(
        backbone=BackboneConfig(arch=arch, width=width, depth=1),
        branches=BranchesConfig(placement=(1, 3), style=style),
        fusion=FusionConfig(type="channel_attention"),
    )
    return ElasticNet(model, multipliers, num_classes=5, in_chans=3, input_size=(16, 16))


def _train_a_little(net: ElasticNet) -> None:
    """A few steps at every width, so weights and each width's BN statistics are not at init."""
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(2):
        for m in net.multipliers:
            opt.zero_grad()
            out = net(torch.randn(8, 3, 16, 16), width=m)
            sum(z.square().mean() for z in out.logits.values()).backward()
            opt.step()


@pytest.mark.parametrize(("arch", "style"), [("resnet", "sd"), ("mobilenetv2", "lite")])
def test_every_width_and_exit_deploys_to_the_same_logits_and_cost(arch: str, style: str) -> None:
    net = elastic(arch, style=style)
    _train_a_little(net)
    net.eval()
    x = torch.randn(4, 3, 16, 16)
    costs_seen = set()
    for m in net.multipliers:
        out = net(x, width=m)
        cfg = TrialConfig(model=net.width_config(m))
        costs = DeployMetrics(SHAPE)(cfg)
        for exit in net.net.exits:
            deployed = net.deploy(exit, m).eval()
            with torch.no_grad():
                assert torch.equal(deployed(x), out.logits[exit]), (m, exit)
            assert sum(p.numel() for p in deployed.parameters()) == costs[exit]["params"], (m, exit)
        costs_seen.add(costs["final"]["params"])
    assert len(costs_seen) == len(net.multipliers)  # every kept width is another network


def test_narrow_widths_train_slices_of_the_widest_weights_and_keep_their_own_bn_statistics() -> None:
    net = elastic()
    stem = net.net.stem
    conv = next(p for n, p in net.net.named_parameters() if n.endswith("conv.weight"))
    wide_stats = {n: b.clone() for n, b in net.net.named_buffers()}
    out = net(torch.randn(8, 3, 16, 16), width=0.25)
    out.logits["final"].sum().backward()
    narrow_shape = net.tensors(0.25)[next(n for n, p in net.net.named_parameters() if p is conv)].shape
    grad = conv.grad
    inside = grad[tuple(slice(0, s) for s in narrow_shape)]
    assert inside.abs().sum() > 0
    assert grad.abs().sum() == inside.abs().sum()  # nothing outside the slice is touched
    assert all(torch.equal(b, wide_stats[n]) for n, b in net.net.named_buffers())  # widest stats untouched
    assert any(
        n.endswith("running_mean") and b.abs().sum() > 0 for n, b in net.stats["w0_25"].named_buffers()
    )
    assert stem is net.net.stem and len(list(net.parameters())) == len(list(net.net.parameters()))


def test_multipliers_that_build_one_network_are_merged_into_the_largest() -> None:
    # Base width 1/8: stage channels 8-16-32-64; 0.95 rounds to the same channels at every stage.
    net = elastic(width=0.125, multipliers=(1.0, 0.95, 0.5))
    assert net.merged[0.95] == 1.0 and net.multipliers == (1.0, 0.5)
    x = torch.randn(2, 3, 16, 16)
    net.eval()
    assert torch.equal(net(x, width=0.95).logits["final"], net(x).logits["final"])


@pytest.mark.parametrize(
    ("multipliers", "match"),
    [((), "at least one"), ((1.0, 0.0), r"in \(0, 1\]"), ((1.5,), r"in \(0, 1\]")],
)
def test_bad_multipliers_name_the_key(multipliers, match) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        elastic(multipliers=multipliers)
    assert info.value.key == "train.elastic_widths"


def test_a_backbone_that_does_not_say_it_slices_is_refused() -> None:
    from sdsearch.core.registry import BACKBONES

    def plain(*, in_chans, width, depth):  # pragma: no cover - never built
        raise AssertionError

    BACKBONES.register("opaque", plain)
    try:
        model = ModelConfig(backbone=BackboneConfig(arch="opaque"))
        with pytest.raises(ConfigError, match="'opaque' cannot run at narrower widths") as info:
            ElasticNet(model, WIDTHS, num_classes=5)
        assert info.value.key == "train.elastic_widths"
    finally:
        BACKBONES.unregister("opaque")


def test_sandwich_training_on_digits_teaches_every_width() -> None:
    """fit() with the sandwich rule: the widest network learns from labels, the narrower ones from
    it in place, and every width ends well above chance on held-out digits."""
    from sdsearch.core.config import DataConfig, LossConfig, TrainConfig
    from sdsearch.data.datasets import load_dataset
    from sdsearch.nn.losses import SandwichLoss
    from sdsearch.training.fit import evaluate, fit

    data = load_dataset(DataConfig(dataset="digits", val_fraction=0.2), seed=0)
    torch.manual_seed(0)
    model = ModelConfig(backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(2,)))
    net = ElasticNet(model, (1.0, 0.75, 0.5, 0.25), num_classes=10, in_chans=1, input_size=(8, 8))
    loss = SandwichLoss(LossConfig(), net)
    train = TrainConfig(epochs=6, batch_size=64, lr=0.1)
    result = fit(net, loss, data, train, seed=0, threads=1, deploy_exit="final@0.5")
    assert result.history[-1].loss_parts["inplace"] > 0
    assert set(result.val_accuracy) == {f"{e}@{m:g}" for m in net.multipliers for e in ("2", "final")}
    assert result.history[-1].accuracy == result.val_accuracy["final@0.5"]
    for m in net.multipliers:
        subnet = net.subnet(m).eval()
        acc = evaluate(subnet, data.x_val, data.y_val, mean=data.mean, std=data.std)
        assert min(acc.values()) > 0.5, (m, acc)
        assert acc == {e: result.val_accuracy[f"{e}@{m:g}"] for e in acc}  # what fit() reported


def test_the_sandwich_is_the_narrowest_and_one_width_between() -> None:
    from sdsearch.core.config import LossConfig
    from sdsearch.nn.losses import SandwichLoss

    loss = SandwichLoss(LossConfig(), elastic())
    torch.manual_seed(0)
    drawn = [tuple(loss.sandwich()) for _ in range(40)]
    assert {d[0] for d in drawn} == {0.25} and {d[1] for d in drawn} == {0.75, 0.5}
    assert SandwichLoss(LossConfig(), elastic(multipliers=(1.0, 0.5))).sandwich() == [0.5]


def test_evaluating_at_a_width_is_evaluating_its_network() -> None:
    from sdsearch.core.config import DataConfig
    from sdsearch.data.datasets import load_dataset
    from sdsearch.training.fit import evaluate

    data = load_dataset(DataConfig(dataset="digits", val_fraction=0.2), seed=0)
    torch.manual_seed(0)
    model = ModelConfig(backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(2,)))
    net = ElasticNet(model, (1.0, 0.5), num_classes=10, in_chans=1, input_size=(8, 8))
    args = {"mean": data.mean, "std": data.std}
    for m in net.multipliers:
        assert evaluate(net.at(m), data.x_val, data.y_val, **args) == evaluate(
            net.subnet(m), data.x_val, data.y_val, **args
        )


def test_recalibration_sets_one_widths_statistics_to_the_exact_batch_mean() -> None:
    net = elastic()
    _train_a_little(net)  # statistics away from their initial values, so a reset would show
    net.eval()
    wide_before = {n: b.clone() for n, b in net.net.named_buffers()}
    xs = [torch.randn(16, 3, 16, 16) for _ in range(3)]
    net.recalibrate(0.5, xs)
    assert all(torch.equal(b, wide_before[n]) for n, b in net.net.named_buffers())  # other widths untouched
    stats = net.stats["w0_5"].as_dict()
    # The stem's BN sees the stem conv's output: its statistic is the mean over all batches.
    conv_w = net.tensors(0.5)["stem.conv.weight"]
    means = [torch.nn.functional.conv2d(x, conv_w, padding=1).mean(dim=(0, 2, 3)) for x in xs]
    torch.testing.assert_close(stats["stem.bn.running_mean"], torch.stack(means).mean(0))
    assert int(stats["stem.bn.num_batches_tracked"]) == 3 and not net.training
    assert net.net.stem.bn.momentum == 0.1  # restored


def test_without_inplace_distillation_the_narrower_widths_learn_the_labels() -> None:
    """The ablation of SandwichLoss: the same widths per step, cross-entropy instead of the widest's exits."""
    from sdsearch.core.config import LossConfig
    from sdsearch.nn.losses import SandwichLoss

    net = elastic()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    torch.manual_seed(0)
    out = SandwichLoss(LossConfig(), net, inplace=False).batch_loss(net, x, y)
    assert "narrow_ce" in out.parts and "inplace" not in out.parts
    torch.manual_seed(0)
    kd = SandwichLoss(LossConfig(), net).batch_loss(net, x, y)
    assert out.total != kd.total and out.parts["narrow_ce"] > 0
