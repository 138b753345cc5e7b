"""Params and MACs on the meta device: reference numbers, exactness, caching (memory: test_memory.py)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sdsearch.core.config import BackboneConfig, BranchesConfig, CBFEConfig, FusionConfig, ModelConfig
from sdsearch.core.errors import ConfigError
from sdsearch.cost.metrics import config_metrics, cost_values
from sdsearch.cost.trace import Cost, deploy_cost, exit_costs, module_cost
from sdsearch.nn.network import SelfDistillNet


def test_cifar_resnet18_reference() -> None:
    """The reference the README states: CIFAR ResNet-18 (100 classes, 32×32) = 11.22 M params, 0.556 G MACs."""
    config = ModelConfig(backbone=BackboneConfig(arch="resnet", width=1.0, depth=2))
    cost = deploy_cost(config, "final", num_classes=100, in_chans=3, input_size=(32, 32))
    assert cost.params == pytest.approx(11.22e6, rel=0.005)
    assert cost.macs == pytest.approx(0.556e9, rel=0.01)
    assert cost.flops == 2 * cost.macs


def test_torchvision_resnet18_reference() -> None:
    """A real (CPU) module goes through meta stand-ins and is left as it was."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    before = model.conv1.weight.clone()
    cost = module_cost(model, (3, 224, 224))
    assert cost.params == pytest.approx(11.69e6, rel=0.01)
    assert cost.macs == pytest.approx(1.82e9, rel=0.01)
    assert model.training and model.conv1.weight.device.type == "cpu"
    assert torch.equal(model.conv1.weight, before)
    assert model.bn1.num_batches_tracked.item() == 0


def test_module_cost_exact() -> None:
    # float32: peak = the largest input + output of one op, 4 B each; size = 4 B per parameter.
    f32 = "float32"
    assert module_cost(nn.Linear(10, 5), (10,), dtype=f32) == Cost(55, 50, 4 * 15, 4 * 55, f32)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert module_cost(conv, (3, 8, 8), dtype=f32) == Cost(
        params=8 * 27 + 8, macs=8 * 27 * 64, peak_memory=4 * (3 + 8) * 64, size=4 * (8 * 27 + 8), dtype=f32
    )
    seq = nn.Sequential(
        nn.Conv2d(2, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )
    assert module_cost(seq, (2, 4, 4), dtype=f32) == Cost(
        params=211, macs=320, peak_memory=4 * 96, size=4 * 211, dtype=f32
    )
    # int8: TFLite Micro's figures on the platform asked for; params and MACs do not change.
    int8 = module_cost(seq, (2, 4, 4), platform="tflm-reference")
    assert (int8.params, int8.macs, int8.platform) == (211, 320, "tflm-reference")
    assert int8.tflm is not None and (int8.peak_memory, int8.size) == (
        int8.tflm.arena_bytes,
        int8.tflm.model_bytes,
    )
    assert Cost(params=1, macs=7, peak_memory=0, size=0).flops == 14


@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2"])
def test_macs_are_flop_counter_mode_halved(arch: str) -> None:
    """The tracer counts MACs itself (FlopCounterMode is 10x slower): the same numbers, halved."""
    config = ModelConfig(
        backbone=BackboneConfig(arch=arch, width=0.25, depth=1),
        branches=BranchesConfig(placement=(1, 2), style="sd"),
        cbfe=CBFEConfig(location="branch"),
    )
    net = SelfDistillNet(config, num_classes=10, in_chans=3, input_size=(16, 16)).eval()
    costs = exit_costs(config, num_classes=10, in_chans=3, input_size=(16, 16))
    for e, cost in costs.items():
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            net.deploy(e)(torch.zeros(1, 3, 16, 16))
        assert cost.macs == counter.get_total_flops() // 2


@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2"])
def test_exit_costs_equal_deployed_modules(arch: str) -> None:
    config = ModelConfig(
        backbone=BackboneConfig(arch=arch, width=0.25, depth=1),
        branches=BranchesConfig(placement=(1, 3), style="lite"),
        cbfe=CBFEConfig(location="trunk"),
        fusion=FusionConfig(type="channel_attention"),
    )
    costs = exit_costs(config, num_classes=7, in_chans=1, input_size=(12, 12))
    assert list(costs) == ["1", "3", "final"]
    net = SelfDistillNet(config, num_classes=7, in_chans=1, input_size=(12, 12))
    for e, cost in costs.items():
        deployed = net.deploy(e)
        assert cost == module_cost(deployed, (1, 12, 12))
        assert cost.params == sum(p.numel() for p in deployed.parameters())
        assert deploy_cost(config, e, num_classes=7, in_chans=1, input_size=(12, 12)) == cost


def test_costs_are_cached_and_safe_to_mutate() -> None:
    config = ModelConfig(backbone=BackboneConfig(arch="mobilenetv2", width=0.5, depth=2))
    kw = {"num_classes": 10, "in_chans": 3, "input_size": (32, 32)}
    first = exit_costs(config, **kw)
    first.clear()
    start = time.perf_counter()
    again = exit_costs(config, **kw)
    assert time.perf_counter() - start < 0.01  # a cache hit, not a rebuild
    assert list(again) == ["1", "2", "3", "final"]
    assert deploy_cost(config, "2", input_size=[32, 32], num_classes=10, in_chans=3) == again["2"]


def test_huge_config_is_counted_without_memory() -> None:
    # ~0.7 G params (the widest, deepest config a space allows): ~2.8 GB if allocated for real; on
    # the meta device it is instant.
    config = ModelConfig(
        backbone=BackboneConfig(arch="resnet", width=4.0, depth=8), branches=BranchesConfig(placement=())
    )
    cost = deploy_cost(config, "final", num_classes=10, in_chans=3, input_size=(32, 32))
    assert cost.params > 5e8


def test_unknown_exit() -> None:
    config = ModelConfig(branches=BranchesConfig(placement=(2,)))
    with pytest.raises(ConfigError, match=r"exit '3' is not one of this config's exits: 2, final"):
        deploy_cost(config, "3", num_classes=10, in_chans=3, input_size=(32, 32))


def test_config_metrics_reads_a_trainer_config(tmp_path) -> None:
    """What `sdsearch cost` prints: the trace's figures of every exit, for the file's data or a given shape."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\n"
        "data: {dataset: digits}\n"
        "space:\n"
        "  backbone: {arch: mobilenetv2, width: 0.25, depth: 1}\n"
        "  branches: {placement: [1, 3], style: lite}\n"
        "deploy: {exit: final}\n"
    )
    model = ModelConfig(
        backbone=BackboneConfig(arch="mobilenetv2", width=0.25, depth=1),
        branches=BranchesConfig(placement=(1, 3), style="lite"),
    )

    def expected(**shape: object) -> dict[str, dict[str, float]]:
        return {e: cost_values(c) for e, c in exit_costs(model, **shape).items()}  # type: ignore[arg-type]

    digits = config_metrics(path, latency=False)  # digits: 1×8×8, 10 classes
    assert digits == expected(num_classes=10, in_chans=1, input_size=(8, 8))
    assert list(digits) == ["1", "3", "final"]
    assert config_metrics(path, input_shape=(3, 32, 32), num_classes=100, latency=False) == expected(
        num_classes=100, in_chans=3, input_size=(32, 32)
    )
    float32 = config_metrics(path, dtype="float32", latency=False)["final"]
    assert float32["size"] == 4 * float32["params"]
