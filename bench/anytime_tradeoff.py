"""Anytime inference against the deepest exit: accuracy, expected MACs and ONNX Runtime latency.

For each seed, trains one self-distilled network (by default ResNet width 0.25, depth 1, SD
branches after stages 1-3, trained as the shipped digits space trains) and then:

* calibrates per-exit thresholds on the validation split for each ``--drops`` target and each
  ``--budgets`` fraction of the deepest exit's deploy MACs;
* reports validation and test accuracy and expected MACs next to the deepest exit deployed alone,
  and the share of test images leaving at each exit;
* exports the ``--drops[0]`` anytime model to ONNX (uint8 NHWC in, batch 1), checks that ONNX
  Runtime takes PyTorch's exit decision on every test image, and times it per image against the
  deepest exit's static ONNX model with the same preprocessing (best of ``--repeats`` rounds,
  rounds interleaved, one thread).

Run:  .venv/bin/python bench/anytime_tradeoff.py [--seeds 0 1 2] [--epochs 8] [--plot anytime.png] [--smoke]
      .venv/bin/python bench/anytime_tradeoff.py --npz PATH   # an npz dataset instead of digits
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdsearch.anytime.model import AnytimeModel, anytime_cost, exit_statistics
from sdsearch.anytime.onnx import run_anytime_onnx, save_anytime_onnx
from sdsearch.anytime.policy import anytime_outcome, anytime_report, calibrate, exit_indices
from sdsearch.anytime.view import plot_anytime
from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    DataConfig,
    ModelConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.core.units import format_value
from sdsearch.data.datasets import load_dataset
from sdsearch.graphs.onnx import onnx_graphs
from sdsearch.graphs.runtime import cpu_deploy, onnx_session
from sdsearch.training.fit import build, fit


def _count(value: float) -> str:
    return format_value(value, "count")


def _config(args: argparse.Namespace, seed: int) -> TrialConfig:
    model = ModelConfig(backbone=BackboneConfig(arch=args.arch, width=args.width, depth=args.depth),
                        branches=BranchesConfig(placement=(1, 2, 3), style="sd"))  # fmt: skip
    data = DataConfig(dataset="npz", path=args.npz) if args.npz else DataConfig(dataset="digits")
    train = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.05)
    return TrialConfig(model=model, data=data, train=train, seed=seed)


def _static_onnx(net: nn.Module, exit: str, data: Any, path: Path) -> None:
    """``exit`` deployed alone, as the float32 graph ``sdsearch train`` writes as ``model.onnx``."""
    s = data.shape
    graph = onnx_graphs(cpu_deploy(net, exit), mean=data.mean, std=data.std,
                        input_shape=(s.in_chans, *s.input_size))["float32"]  # fmt: skip
    path.write_bytes(graph.SerializeToString())


def _per_image_seconds(path: Path, images: np.ndarray) -> float:
    session = onnx_session(path, threads=1)
    name = session.get_inputs()[0].name
    for image in images[:20]:  # warm-up
        session.run(None, {name: image[None]})
    start = time.perf_counter()
    for image in images:
        session.run(None, {name: image[None]})
    return (time.perf_counter() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--arch", default="resnet")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument(
        "--npz", default=None, help="an npz dataset (x_train uint8 NHWC, ...) instead of digits"
    )
    parser.add_argument("--drops", type=float, nargs="+", default=[0.005, 0.0, 0.01])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.7],
                        help="expected-MACs budgets as fractions of the deepest exit's deploy MACs")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", default=None, help="write the first seed's anytime plot here")
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings (what CI runs)")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.epochs, args.drops, args.budgets, args.repeats = [0], 1, [0.005], [0.5], 1
    torch.set_num_threads(1)

    for seed in args.seeds:
        cfg = _config(args, seed)
        data = load_dataset(cfg.data, seed=cfg.seed)
        s = data.shape
        net, loss = build(cfg, s)
        t0 = time.perf_counter()
        fit(net, loss, data, cfg.train, seed=cfg.seed, device="cpu")
        net.to("cpu", memory_format=torch.contiguous_format).eval()
        cost = anytime_cost(net, input_shape=(s.in_chans, *s.input_size))
        val = exit_statistics(net, data.x_val, data.y_val, mean=data.mean, std=data.std)
        test = exit_statistics(net, data.x_test, data.y_test, mean=data.mean, std=data.std)
        deepest = cost.deploy[-1]
        print(f"\nseed {seed}: trained in {time.perf_counter() - t0:.1f} s; {len(data.y_val)} val, "
              f"{len(data.y_test)} test images; exit deploy MACs "
              + ", ".join(f"{e} {_count(m)}" for e, m in zip(cost.exits, cost.deploy, strict=True))
              + f"; worst case (every exit runs) {_count(cost.worst_case)}")  # fmt: skip
        print("  static exits  val: " + ", ".join(f"{e} {100 * a:.2f}%" for e, a in val.exit_accuracy.items())
              + "   test: " + ", ".join(f"{e} {100 * a:.2f}%" for e, a in test.exit_accuracy.items()))  # fmt: skip
        targets = [{"accuracy_drop": d} for d in args.drops] + [
            {"expected_macs": f * deepest} for f in args.budgets
        ]
        first = None
        for target in targets:
            t1 = time.perf_counter()
            cal = calibrate(val, cost, **target)
            seconds = time.perf_counter() - t1
            out = anytime_outcome(test, cal.thresholds, cost)
            first = first or (cal, out)
            name = (f"drop {100 * target['accuracy_drop']:g} pt" if "accuracy_drop" in target
                    else f"macs <= {target['expected_macs'] / deepest:.2f}x")  # fmt: skip
            print(f"  {name:16s} {cal.method:8s} val {100 * cal.outcome.accuracy:.2f}% at "
                  f"{cal.outcome.expected_macs / deepest:.3f}x | test {100 * out.accuracy:.2f}% "
                  f"(deepest {100 * test.exit_accuracy['final']:.2f}%) at {out.expected_macs / deepest:.3f}x "
                  f"= {_count(out.expected_macs)} MACs; test shares "
                  + "/".join(f"{100 * v:.0f}" for v in out.exit_share) + f"%  [{1000 * seconds:.0f} ms]")  # fmt: skip
        cal, out = first
        model = AnytimeModel(net, cal.thresholds).eval()
        images = np.ascontiguousarray(data.x_test.transpose(0, 2, 3, 1))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "anytime.onnx"
            status = save_anytime_onnx(
                model, path, input_shape=(s.in_chans, *s.input_size), mean=data.mean, std=data.std, cost=cost
            )
            statics = {e: Path(tmp) / f"exit_{e}.onnx" for e in (net.exits[0], "final")}
            for e, p in statics.items():
                _static_onnx(net, e, data, p)
            _, exits = run_anytime_onnx(path, images)
            agree = (exits == exit_indices(test.confidence, model.thresholds.numpy())).mean()
            times: dict[str, list[float]] = {"anytime": [], **{e: [] for e in statics}}
            for _ in range(args.repeats):
                times["anytime"].append(_per_image_seconds(path, images))
                for e, p in statics.items():
                    times[e].append(_per_image_seconds(p, images))
        best = {k: 1e6 * min(v) for k, v in times.items()}
        print(f"  ONNX ({status}): exit decisions equal PyTorch's on {100 * agree:.2f}% of test images")
        print(f"  ORT per image, one thread: anytime {best['anytime']:.0f} us "
              f"({out.expected_macs / deepest:.2f}x the deepest exit's MACs), deepest exit alone "
              f"{best['final']:.0f} us, exit {net.exits[0]} alone {best[net.exits[0]]:.0f} us; "
              f"anytime / deepest = {best['anytime'] / best['final']:.2f}x")  # fmt: skip
        if args.plot and seed == args.seeds[0]:
            plot_anytime(anytime_report(cal, cost, test=out)).savefig(args.plot, dpi=150)
            print(f"  plot: {args.plot}")


if __name__ == "__main__":
    main()
