"""Milliseconds per config of ``sdsearch.cost.trace.exit_costs``: params, MACs, peak memory and size of
every exit, cache cleared, over random configs of the shipped spaces.

Side by side in one run, for each of ``spaces/iot_budget.yaml`` (digits, 1x8x8) and
``spaces/cifar10_edge.yaml`` (CIFAR-10, 3x32x32), on the same configs (``Space.suggest`` under
Optuna's ``RandomSampler``, the searcher's sampling path, at the data shape the searcher costs):

(a) **sdsearch**: ``exit_costs(config, ...)`` with its cache cleared: building the network on the
    meta device and one traced forward per exit, which yields all four metrics.
(b) **FlopCounterMode**: params and MACs only, counted as ``exit_costs`` did before it traced
    memory: the same network, and per exit one forward under ``torch.utils.flop_counter``'s
    ``FlopCounterMode`` over sdsearch's shape rules (which now also cover convolution, mean and
    addmm, so (b) is faster than the old code was). Its params and MACs are checked against (a)'s.

Also: the first call in a fresh process (one-time imports) and a cache hit. The target is (a)
under 50 ms per config. Times are wall clock; (a)'s process CPU time is printed too, since on a
busy machine the wall clock also counts waiting for a core.

Run:  .venv/bin/python bench/cost_speed.py [--configs N] [--seed S] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import optuna
import torch
from torch.utils.flop_counter import FlopCounterMode

from sdsearch.core.config import ModelConfig
from sdsearch.cost import trace as cost
from sdsearch.data.datasets import describe
from sdsearch.nn.network import SelfDistillNet
from sdsearch.space.load import load_space

SPACES = ("iot_budget", "cifar10_edge")
ROOT = Path(__file__).resolve().parent.parent


def sample_configs(space_name: str, n: int, seed: int) -> tuple[list[ModelConfig], tuple[int, int, int], int]:
    """``n`` model configs the searcher could draw from a shipped space, and its data shape."""
    space = load_space(ROOT / "spaces" / f"{space_name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs: list[ModelConfig] = []
    while len(configs) < n:
        config = space.suggest(study.ask())
        if space.invalid_reason(config) is None:
            configs.append(config.model)
    shape = describe(space.data)
    return configs, (shape.in_chans, shape.height, shape.width), shape.num_classes


def flop_counter_costs(
    config: ModelConfig, shape: tuple[int, int, int], classes: int
) -> dict[str, tuple[int, int]]:
    """(params, MACs) per exit the way sdsearch counted them before peak memory: FlopCounterMode."""
    with cost.FastMetaMode():
        net = SelfDistillNet(
            config, num_classes=classes, in_chans=shape[0], input_size=shape[1:], device="meta"
        )
    net.eval()
    out = {}
    for e in net.exits:
        model = net.deploy(e, share_weights=True)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), cost.FastMetaMode(), counter:
            model(torch.empty((1, *shape), device="meta"))
        flops = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if op in cost._MACS)
        out[e] = (sum(p.numel() for p in model.parameters()), flops // 2)
    return out


def ms(values: list[float]) -> str:
    mean, median = statistics.mean(values), statistics.median(values)
    return f"{mean:.1f} ms/config (median {median:.1f}, max {max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=30, help="random configs per space (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings (what CI runs)")
    args = parser.parse_args()
    if args.smoke:
        args.configs = 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)

    start = time.perf_counter()
    cost.exit_costs(ModelConfig(), num_classes=10, in_chans=3, input_size=(32, 32))
    first = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    flop_counter_costs(ModelConfig(), (3, 32, 32), 10)
    print(
        f"first call in this process: sdsearch {first:.0f} ms, FlopCounterMode "
        f"{(time.perf_counter() - start) * 1e3:.0f} ms (it imports torch._dynamo); not in the means below"
    )
    for name in SPACES:
        configs, shape, classes = sample_configs(name, args.configs, args.seed)
        ours, ours_cpu, reference = [], [], []
        for config in configs:
            cost._exit_costs.cache_clear()
            start, start_cpu = time.perf_counter(), time.process_time()
            costs = cost.exit_costs(config, num_classes=classes, in_chans=shape[0], input_size=shape[1:])
            ours.append((time.perf_counter() - start) * 1e3)
            ours_cpu.append((time.process_time() - start_cpu) * 1e3)
            start = time.perf_counter()
            counted = flop_counter_costs(config, shape, classes)
            reference.append((time.perf_counter() - start) * 1e3)
            if counted != {e: (c.params, c.macs) for e, c in costs.items()}:
                raise SystemExit(f"params/MACs differ from FlopCounterMode for {config}")
        print(
            f"{name} ({'x'.join(map(str, shape))}, {len(configs)} configs): all four metrics {ms(ours)}, "
            f"CPU time {statistics.mean(ours_cpu):.1f} ms/config; "
            f"params + MACs under FlopCounterMode {ms(reference)}: "
            f"{statistics.mean(reference) / statistics.mean(ours):.1f}x; MACs identical"
        )
    cost.exit_costs(configs[0], num_classes=classes, in_chans=shape[0], input_size=shape[1:])
    start = time.perf_counter()
    for _ in range(1000):
        cost.exit_costs(configs[0], num_classes=classes, in_chans=shape[0], input_size=shape[1:])
    print(f"cache hit: {(time.perf_counter() - start):.3f} ms/call")


if __name__ == "__main__":
    main()
