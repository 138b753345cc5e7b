"""The estimate of :mod:`sdsearch.cost.tflm` against TFLite Micro itself, for any config (``sdsearch cost --tflm``).

Each exit is converted to its int8 .tflite with random weights and measured in TFLite Micro's
interpreter, so anyone can check the estimate on their own config or backbone. The weights are random
but *non-degenerate*: an untrained block's last BatchNorm starts at zero gamma (``zero_init_last``),
folds into an all-zero conv, and the converter stores identical buffers once, so an untrained model's
file would be smaller than any trained one. Every BatchNorm gets a gamma in [0.5, 1.5] first.

Example:
    >>> checks = check_exits(config.model, DataShape(1, 8, 8, 10))   # doctest: +SKIP
    >>> checks["final"].ratio("arena_bytes")                          # doctest: +SKIP
    1.002
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sdsearch.core.config import ModelConfig
from sdsearch.core.platforms import MEASURED_PLATFORM
from sdsearch.cost.trace import exit_costs
from sdsearch.graphs.tflm import FIGURES

if TYPE_CHECKING:
    from sdsearch.cost.tflm import TflmEstimate
    from sdsearch.data.datasets import DataShape
    from sdsearch.graphs.tflm import TflmReport

__all__ = ["COMPARED", "TflmCheck", "check_exits", "non_degenerate"]

#: The figures compared, as named in both the estimate and the measurement.
COMPARED = tuple(FIGURES)
#: Calibration images (random pixels) per conversion: enough for the activation ranges to exist.
_N_CALIBRATION = 8


@dataclass(frozen=True)
class TflmCheck:
    """One exit: the estimate for the measured platform, what TFLite Micro measured, and the seconds it took."""

    estimate: TflmEstimate
    measured: TflmReport
    seconds: float

    def ratio(self, figure: str) -> float:
        """Estimate / measured of one of :data:`COMPARED`."""
        return getattr(self.estimate, figure) / getattr(self.measured, figure)


def non_degenerate(net: nn.Module, *, seed: int = 0) -> nn.Module:
    """``net`` with every BatchNorm's gamma drawn from [0.5, 1.5] and beta from [-0.1, 0.1], in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_((torch.rand(m.bias.shape, generator=generator) - 0.5) * 0.2)
    return net


def check_exits(
    config: ModelConfig, shape: DataShape, *, exits: Sequence[str] | None = None, seed: int = 0
) -> dict[str, TflmCheck]:
    """Estimate against measurement for each exit of ``config`` (default: every exit).

    Raises:
        ImportError: the ``mcu`` extra is not installed (the caller says how to get it).
    """
    import time

    from sdsearch.graphs.tflite import int8_tflite
    from sdsearch.graphs.tflm import tflm_measure
    from sdsearch.nn.network import SelfDistillNet

    c, h, w = shape.in_chans, shape.height, shape.width
    estimates = exit_costs(config, num_classes=shape.num_classes, in_chans=c, input_size=(h, w),
                           platform=MEASURED_PLATFORM)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = non_degenerate(
            SelfDistillNet(config, num_classes=shape.num_classes, in_chans=c, input_size=(h, w))
        )
    net.eval()
    pixels = np.random.default_rng(seed).integers(0, 256, (_N_CALIBRATION, c, h, w), dtype=np.uint8)
    checks = {}
    for name in exits or net.exits:
        start = time.perf_counter()
        model = int8_tflite(net.deploy(name), mean=[0.5] * c, std=[0.25] * c, input_shape=(c, h, w),
                            calibration=pixels)  # fmt: skip
        measured = tflm_measure(model)
        estimate = estimates[name].tflm
        assert estimate is not None  # int8 costs always carry it
        checks[name] = TflmCheck(estimate, measured, time.perf_counter() - start)
    return checks
