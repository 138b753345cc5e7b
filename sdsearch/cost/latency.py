"""Latency of a deploy model: median batch-1 milliseconds in ONNX Runtime on this machine's CPU.

The search's ``latency`` metric is measured before a trial trains, on the network's random
initial weights: the graph sets the time, not the weights. The timed graph is the one ``sdsearch
train`` writes (:func:`sdsearch.graphs.onnx.onnx_graphs`, preprocessing included), and
``metrics.json`` times its files with :func:`onnx_latency`, the function :func:`measure_latency`
ends in.

*design*: ``dtype="int8"`` times the int8 graph itself, quantized with a few random calibration
images, not the float32 graph. On an x86 CPU with AVX-512 VNNI (ONNX Runtime 1.32, one thread),
the int8 graph took 0.7x to 3.5x the float32 time over 20 configs (``bench/deploy_latency.py``):
small graphs pay for Q/DQ pairs and layout transposes, large ones gain from int8 kernels. The
rankings mostly agree (Spearman 0.90-0.99 over runs), but a latency budget is in milliseconds,
which the float32 time misses by up to 3.5x. Quantizing adds 0.1-1 s to a call (ONNX Runtime
computes per-channel weight scales in Python); a float32 call takes 0.1-0.5 s for small configs.

The search measures each distinct model once per run (``sdsearch.cost.metrics.DeployMetrics``); this
module keeps no cache of its own.

Example:
    >>> measure_latency(net.deploy("final"), (3, 32, 32))   # doctest: +SKIP
    0.42
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sdsearch.core.config import LatencyConfig
from sdsearch.core.units import check_dtype

if TYPE_CHECKING:
    import onnx
    from torch import nn

__all__ = ["REPEATS", "WARMUP", "measure_latency", "onnx_latency"]

#: Default timed runs and discarded warm-up runs: those of ``deploy.latency``.
REPEATS, WARMUP = LatencyConfig().repeats, LatencyConfig().warmup
#: Calibration images for timing an int8 graph: ranges only have to be finite, not good.
_TIMING_CALIBRATION = 8
#: Stand-in normalisation for random-weight graphs (the constants do not change the time).
_MEAN, _STD = 0.5, 0.25


def onnx_latency(
    model: onnx.ModelProto | bytes | str | Path,
    *,
    threads: int = 1,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
) -> float:
    """Median wall time of one batch-1 run of a pixels-in ONNX graph, in milliseconds.

    The input is one random image of the graph's input shape and dtype. ``warmup`` runs are
    discarded (first-run allocations, caches), then ``repeats`` runs are timed one by one.

    Args:
        model: the graph, its bytes, or an ``.onnx`` file.
        threads: ONNX Runtime ``intra_op_num_threads`` (one inter-op thread).
        repeats, warmup: timed and discarded runs.
    """
    from sdsearch.graphs.runtime import onnx_session

    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, threads >= 1, got {repeats}, {warmup}, {threads}")
    session = onnx_session(model, threads=threads)
    (spec,) = session.get_inputs()
    shape = [1, *(d if isinstance(d, int) else 1 for d in spec.shape[1:])]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8) if "uint8" in spec.type else rng.random(shape, np.float32)
    feed = {spec.name: x}
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times[i] = time.perf_counter() - start
    return float(np.median(times)) * 1e3


def measure_latency(
    module: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    threads: int = 1,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
    dtype: str = "float32",
) -> float:
    """Median batch-1 latency (ms) of a deploy module's ONNX graph, exported in memory.

    Args:
        module: a deploy module (``net.deploy(exit)``) on the CPU, e.g. with random weights.
        input_shape: ``(C, H, W)``.
        threads, repeats, warmup: as :func:`onnx_latency`.
        dtype: ``float32`` times the float graph; ``int8`` the statically quantized one.

    Raises:
        ConfigError: (a ValueError) unknown ``dtype``. ValueError: bad counts.
    """
    check_dtype(dtype)
    from sdsearch.graphs.onnx import onnx_graphs

    c = input_shape[0]
    calibration = None
    if dtype == "int8":
        calibration = np.random.default_rng(0).integers(
            0, 256, (_TIMING_CALIBRATION, *input_shape), dtype=np.uint8
        )
    graphs = onnx_graphs(module, mean=[_MEAN] * c, std=[_STD] * c, input_shape=tuple(input_shape),
                         calibration=calibration)  # fmt: skip
    return onnx_latency(graphs[dtype], threads=threads, repeats=repeats, warmup=warmup)
