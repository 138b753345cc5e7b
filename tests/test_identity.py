"""The fingerprint of what a config trains: equal exactly when network, loss and training are."""

from __future__ import annotations

import pytest

from sdsearch.core.config import BackboneConfig, CBFEConfig, LossConfig, ModelConfig, TrialConfig
from sdsearch.data.datasets import DataShape
from sdsearch.training.identity import training_fingerprint

SHAPE = DataShape(in_chans=1, height=8, width=8, num_classes=10)


def config(ratio: int = 4, width: float = 1 / 32, **loss) -> TrialConfig:
    model = ModelConfig(
        backbone=BackboneConfig(width=width, depth=1), cbfe=CBFEConfig(location="trunk", ratio=ratio)
    )
    return TrialConfig(model=model, loss=LossConfig(**loss))


def same(a: TrialConfig, b: TrialConfig) -> bool:
    return training_fingerprint(a, SHAPE) == training_fingerprint(b, SHAPE)


def test_ratios_that_build_one_module_are_one_training() -> None:
    # Width 1/32: stages of 8, 8, 8, 16 channels. Ratios 16 and 32 both build one hidden channel
    # everywhere; 8 and 16 differ on the 16-channel stage.
    assert same(config(16), config(32))
    assert not same(config(8), config(16))
    assert not same(config(4), config(4, width=1 / 16))


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ({"kd_weight": 0.0, "temperature": 2.0}, {"kd_weight": 0.0, "temperature": 5.0}, True),
        ({"kd_weight": 0.0, "style": "sd", "kd_t2": True}, {"kd_weight": 0.0, "style": "byot"}, True),
        ({"kd_weight": 0.3, "temperature": 2.0}, {"kd_weight": 0.3, "temperature": 5.0}, False),
        ({"feature_weight": 0.0, "hint": "byot"}, {"feature_weight": 0.0, "hint": "adapter"}, True),
        ({"hint": "byot"}, {"hint": "adapter"}, False),
        ({"rskd_weight": 0.0, "rskd_layers": "all"}, {"rskd_weight": 0.0}, True),
        ({"rskd_weight": 0.5, "rskd_layers": "all"}, {"rskd_weight": 0.5}, False),
        (
            {"kd_weight": 0.0, "feature_weight": 0.0, "teacher": "ensemble"},
            {"kd_weight": 0.0, "feature_weight": 0.0},
            True,
        ),
    ],
)
def test_loss_leaves_count_only_where_their_term_acts(a: dict, b: dict, equal: bool) -> None:
    assert same(config(**a), config(**b)) is equal


def test_seed_training_and_deployment_are_part_of_it() -> None:
    base = config()
    assert not same(base, base.replace(seed=1))
    assert not same(base, base.replace(train=base.train.replace(epochs=base.train.epochs + 1)))
    assert not same(base, base.replace(deploy=base.deploy.replace(exit="2")))
    assert not same(
        base,
        base.replace(model=base.model.replace(backbone=base.model.backbone.replace(zero_init_last=False))),
    )
