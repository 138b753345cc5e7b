"""What the deployed-graph decisions rest on, measured side by side on random-weight deploy models.

For each of 10 configs per input shape: seconds per ONNX export with the TorchScript-based exporter
(what sdsearch uses) and with the torch.export-based one; seconds per ``measure_latency`` call,
float32 and int8; and the median batch-1 latency of the float32 and the int8 graph, with their
ratio and the Spearman rank correlation of the two latencies over the configs (how well the
float32 time stands in for the int8 one). Run:  .venv/bin/python bench/deploy_latency.py [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from sdsearch.core.config import BackboneConfig, BranchesConfig, ModelConfig
from sdsearch.cost.latency import measure_latency
from sdsearch.graphs.onnx import export_onnx
from sdsearch.nn.network import SelfDistillNet

SHAPES = (("digits 1x8x8", (1, 8, 8)), ("cifar 3x32x32", (3, 32, 32)))
CONFIGS = [(arch, width, depth) for arch in ("resnet", "mobilenetv2") for width in (0.25, 0.5, 1.0)
           for depth in (1, 2)][:10]  # fmt: skip


def dynamo_seconds(module: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, *shape),), None, dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    return time.perf_counter() - start


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings (what CI runs)")
    args = parser.parse_args()
    configs = CONFIGS[:1] if args.smoke else CONFIGS
    torch.set_num_threads(1)
    export_onnx(torch.nn.Identity(), torch.zeros(1, 1))  # pay the exporter's imports outside the timings
    for label, shape in SHAPES:
        rows = []
        for arch, width, depth in configs:
            cfg = ModelConfig(backbone=BackboneConfig(arch=arch, width=width, depth=depth),
                              branches=BranchesConfig(placement=(2,)))  # fmt: skip
            net = SelfDistillNet(cfg, num_classes=10, in_chans=shape[0], input_size=shape[1:]).eval()
            module = net.deploy("final")
            start = time.perf_counter()
            export_onnx(module, torch.zeros(1, *shape))
            ts = time.perf_counter() - start
            row = {
                "config": f"{arch} w{width} d{depth}",
                "torchscript_s": ts,
                "dynamo_s": dynamo_seconds(module, shape),
            }
            for dtype in ("float32", "int8"):
                start = time.perf_counter()
                row[dtype] = measure_latency(module, shape, dtype=dtype)
                row[f"{dtype}_call_s"] = time.perf_counter() - start
            rows.append(row)
            print(f"{label:14s} {row['config']:22s} export {ts:5.2f} s vs dynamo {row['dynamo_s']:5.2f} s; "
                  f"latency fp32 {row['float32']:7.3f} ms ({row['float32_call_s']:.2f} s/call), "
                  f"int8 {row['int8']:7.3f} ms ({row['int8_call_s']:.2f} s/call), "
                  f"int8/fp32 {row['int8'] / row['float32']:.2f}", flush=True)  # fmt: skip
        ratio = [r["dynamo_s"] / r["torchscript_s"] for r in rows]
        int8 = [r["int8"] / r["float32"] for r in rows]
        print(f"{label}: dynamo export / torchscript export: median {statistics.median(ratio):.1f}x; "
              f"int8 / fp32 latency {min(int8):.2f}-{max(int8):.2f}x; Spearman(fp32, int8) "
              f"{spearman([r['float32'] for r in rows], [r['int8'] for r in rows]):.2f}\n")  # fmt: skip


if __name__ == "__main__":
    main()
