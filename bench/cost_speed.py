"""Milliseconds per config of ``sdsearch.cost.exit_costs`` (every exit of a config, cache cleared).

Side by side in one run: with the shape rules that skip slow meta kernels (what sdsearch uses) and
without them (plain FlopCounterMode over meta tensors). Run:  .venv/bin/python bench/cost_speed.py
"""

from __future__ import annotations

import random
import statistics
import time

from sdsearch import cost
from sdsearch.config import (
    ARCHS,
    BRANCH_STYLES,
    CBFE_LOCATIONS,
    FUSION_TYPES,
    BackboneConfig,
    BranchesConfig,
    CBFEConfig,
    FusionConfig,
    ModelConfig,
)

N_CONFIGS = 20
SHAPES = (("cifar 3x32x32", 3, (32, 32), 100), ("digits 1x8x8", 1, (8, 8), 10))


def random_configs(n: int, seed: int = 0) -> list[ModelConfig]:
    rng = random.Random(seed)
    return [
        ModelConfig(
            backbone=BackboneConfig(
                arch=rng.choice(ARCHS), width=rng.choice([0.25, 0.5, 0.75, 1.0]), depth=rng.choice([1, 2])
            ),
            branches=BranchesConfig(
                placement=tuple(sorted(rng.sample([1, 2, 3], rng.randint(0, 3)))),
                style=rng.choice(BRANCH_STYLES),
            ),
            cbfe=CBFEConfig(location=rng.choice(CBFE_LOCATIONS), ratio=rng.choice([2, 4, 8, 16])),
            fusion=FusionConfig(type=rng.choice(FUSION_TYPES)),
        )
        for _ in range(n)
    ]


def ms_per_config(
    configs: list[ModelConfig], in_chans: int, size: tuple[int, int], classes: int
) -> list[float]:
    times = []
    for config in configs:
        cost._exit_costs.cache_clear()
        start = time.perf_counter()
        cost.exit_costs(config, num_classes=classes, in_chans=in_chans, input_size=size)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    configs = random_configs(N_CONFIGS)
    start = time.perf_counter()
    cost.exit_costs(ModelConfig(), num_classes=10, in_chans=3, input_size=(32, 32))
    print(f"first call in this process (imports torch._dynamo): {(time.perf_counter() - start) * 1e3:.0f} ms")
    rules = dict(cost._SHAPE_RULES)
    for name, in_chans, size, classes in SHAPES:
        fast = ms_per_config(configs, in_chans, size, classes)
        cost._SHAPE_RULES.clear()
        try:
            plain = ms_per_config(configs, in_chans, size, classes)
        finally:
            cost._SHAPE_RULES.update(rules)
        print(
            f"{name}: {statistics.mean(fast):.1f} ms/config (median {statistics.median(fast):.1f}, "
            f"max {max(fast):.1f}) vs plain FlopCounterMode {statistics.mean(plain):.1f} ms/config: "
            f"{statistics.mean(plain) / statistics.mean(fast):.1f}x faster"
        )
    cost.exit_costs(configs[0], num_classes=10, in_chans=3, input_size=(32, 32))
    start = time.perf_counter()
    for _ in range(1000):
        cost.exit_costs(configs[0], num_classes=10, in_chans=3, input_size=(32, 32))
    print(f"cache hit: {(time.perf_counter() - start):.3f} ms/call")


if __name__ == "__main__":
    main()
