"""sdsearch's TFLite Micro estimate against TFLite Micro itself, model by model, in one run.

For a seeded sample of deploy models over both built-in backbones (widths 1/32-1, depth 1-3, every
exit, no CBFE / CBFE on the trunk / on the branches, both branch styles) and four inputs (1x8x8,
1x28x28, 3x32x32, 3x96x96), each model is

(a) **estimated**: ``exit_costs(...)`` on the meta device, the ``tflm-reference`` platform (what the
    ``tflite-micro`` package runs: reference kernels, 64-bit structs), in milliseconds, and
(b) **measured**: converted to its int8 .tflite (litert-torch, random non-degenerate weights) and run
    in TFLite Micro's interpreter: the smallest arena in 16-byte steps, its planned and persistent
    parts, the file's bytes.

It prints estimate / measured per model and per figure, then the median, min and max ratios and how
many models fall within +-10% (the goal) and +-5% (the stretch). Needs the ``mcu`` extra. The same
check for one config: ``sdsearch cost CONFIG --tflm``.

Run:  .venv/bin/python bench/tflm_agreement.py [--models N] [--seed S] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from sdsearch.core.config import BackboneConfig, BranchesConfig, CBFEConfig, ModelConfig
from sdsearch.core.platforms import MCU_INSTALL, mcu_available
from sdsearch.cost.tflm_check import COMPARED, check_exits
from sdsearch.data.datasets import DataShape
from sdsearch.graphs.tflm import FIGURES

INPUTS = ((1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 96, 96))
WIDTHS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def sample(n: int, seed: int) -> list[tuple[ModelConfig, tuple[int, int, int], str]]:
    """``n`` (config, input shape, exit) drawn with ``seed``; 3x96x96 inputs keep widths <= 1/2."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        shape = rng.choice(INPUTS)
        width = rng.choice([w for w in WIDTHS if shape[1] < 96 or w <= 0.5])
        location = rng.choice(["none", "trunk", "branch"])
        config = ModelConfig(
            backbone=BackboneConfig(
                arch=rng.choice(["resnet", "mobilenetv2"]), width=width, depth=rng.randint(1, 3)
            ),
            branches=BranchesConfig(placement=(1, 2, 3), style=rng.choice(["lite", "sd"])),
            cbfe=CBFEConfig(location=location, ratio=rng.choice([2, 4, 8]))
            if location != "none"
            else CBFEConfig(),
        )
        out.append((config, shape, rng.choice(config.exits)))
    return out


def describe_model(config: ModelConfig, shape: tuple[int, int, int], exit_name: str) -> str:
    b = config.backbone
    return (f"{b.arch[:6]} w{b.width:<7.4g} d{b.depth} cbfe {config.cbfe.location:6} "
            f"{config.branches.style:4} exit {exit_name:5} {'x'.join(map(str, shape))}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="two small models on 1x8x8 (CI)")
    parser.add_argument("--json", help="also write every model's figures to this file")
    args = parser.parse_args()
    if not mcu_available():
        print(f"bench/tflm_agreement.py needs the mcu extra: {MCU_INSTALL}", file=sys.stderr)
        return 1
    models = sample(args.models, args.seed)
    if args.smoke:
        models = [
            (ModelConfig(backbone=BackboneConfig(arch=arch, width=0.25, depth=1)), (1, 8, 8), "final")
            for arch in ("resnet", "mobilenetv2")
        ]
    print(f"{'model':52} " + " ".join(f"{FIGURES[f]:>22}" for f in COMPARED) + "   est ms  conv+run s")
    ratios: dict[str, list[float]] = {f: [] for f in COMPARED}
    rows = []
    for config, shape, exit_name in models:
        start = time.perf_counter()
        check = check_exits(config, DataShape(*shape, 10), exits=[exit_name])[exit_name]
        cells = []
        for f in COMPARED:
            r = check.ratio(f)
            ratios[f].append(r)
            cells.append(f"{getattr(check.estimate, f):>9} / {getattr(check.measured, f):>9} {r:5.3f}")
        estimate_ms = _estimate_ms(config, shape)
        print(f"{describe_model(config, shape, exit_name):52} " + " ".join(cells) + f"  {estimate_ms:7.1f}  {check.seconds:9.1f}",
              flush=True)  # fmt: skip
        rows.append({"config": config.to_dict(), "input": shape, "exit": exit_name,
                     "estimate": {f: getattr(check.estimate, f) for f in COMPARED},
                     "measured": {f: getattr(check.measured, f) for f in COMPARED},
                     "ops": check.measured.ops, "seconds": check.seconds, "estimate_ms": estimate_ms,
                     "elapsed": time.perf_counter() - start})  # fmt: skip
    print(f"\nestimate / measured over {len(rows)} models (tflm-reference):")
    for f in COMPARED:
        values = ratios[f]
        within = sum(abs(r - 1) <= 0.10 for r in values)
        stretch = sum(abs(r - 1) <= 0.05 for r in values)
        print(f"  {FIGURES[f]:8} median {statistics.median(values):.3f}  min {min(values):.3f}  max {max(values):.3f}"
              f"  within 10%: {within}/{len(values)}  within 5%: {stretch}/{len(values)}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    ok = all(abs(r - 1) <= 0.10 for f in ("arena_bytes", "model_bytes") for r in ratios[f])
    print("goal (arena and .tflite within 10% for every model):", "met" if ok else "NOT met")
    return 0 if ok or not args.smoke else 1


def _estimate_ms(config: ModelConfig, shape: tuple[int, int, int]) -> float:
    """Milliseconds of the estimate for every exit of the config, cache cleared (what the searcher pays)."""
    from sdsearch.cost.trace import _exit_costs, exit_costs

    _exit_costs.cache_clear()
    start = time.perf_counter()
    exit_costs(config, num_classes=10, in_chans=shape[0], input_size=shape[1:], platform="tflm-reference")
    return 1000 * (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
