"""The microcontroller platforms an int8 deployment's memory figures are computed for (``deploy.platform``).

TFLite Micro's arena holds, beside the tensors, structs with pointers in them and the scratch buffers
its kernels ask for; both depend on where it runs. One model, so two platforms:

- ``cortex-m``: a 32-bit Arm Cortex-M with CMSIS-NN kernels, what an MCU project builds (the default:
  budgets and ``kTensorArenaSize`` use it).
- ``tflm-reference``: TFLite Micro's reference kernels on a 64-bit host, what the ``tflite-micro``
  package runs; sdsearch measures this one, so the estimate is validated against it.

Example:
    >>> PLATFORMS["cortex-m"].pointer_bytes
    4
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PLATFORM", "MEASURED_PLATFORM", "PLATFORMS", "Platform"]


@dataclass(frozen=True)
class Platform:
    """One target of the TFLite Micro estimate.

    Attributes:
        name: the ``deploy.platform`` value.
        pointer_bytes: ``sizeof(void*)``: sets the size of TFLM's persistent structs.
        cmsis_nn: whether kernels request CMSIS-NN's scratch buffers (im2col, depthwise, ...).
        description: one line, for help texts and captions.
    """

    name: str
    pointer_bytes: int
    cmsis_nn: bool
    description: str


PLATFORMS: dict[str, Platform] = {
    p.name: p
    for p in (
        Platform("cortex-m", 4, True, "32-bit Arm Cortex-M, TFLite Micro with CMSIS-NN kernels"),
        Platform("tflm-reference", 8, False, "TFLite Micro's reference kernels on a 64-bit host (what sdsearch measures)"),
    )
}
#: What budgets, ``kTensorArenaSize`` and the search use unless ``deploy.platform`` says otherwise.
DEFAULT_PLATFORM = "cortex-m"
#: The platform the ``tflite-micro`` package runs: measurements are of this one.
MEASURED_PLATFORM = "tflm-reference"
