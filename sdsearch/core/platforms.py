"""The microcontroller platforms an int8 deployment's memory figures are computed for (``deploy.platform``).

TFLite Micro's arena holds, beside the tensors, structs with pointers in them and the scratch buffers
its kernels ask for; both depend on where it runs. One model, so two platforms:

- ``cortex-m``: a 32-bit Arm Cortex-M with CMSIS-NN kernels, what an MCU project builds (the default:
  budgets and ``kTensorArenaSize`` use it).
- ``tflm-reference``: TFLite Micro's reference kernels on a 64-bit host, what the ``tflite-micro``
  package runs; sdsearch measures this one, so the estimate is validated against it.

Converting to .tflite and running TFLite Micro need the ``mcu`` extra; whether it is here is found
without importing it, so space validation can refuse ``deploy.runtime: tflm`` early and cheaply.

Example:
    >>> PLATFORMS["cortex-m"].pointer_bytes
    4
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from sdsearch.core.errors import ConfigError

__all__ = [
    "DEFAULT_PLATFORM",
    "MCU_INSTALL",
    "MEASURED_PLATFORM",
    "PLATFORMS",
    "Platform",
    "check_platform",
    "mcu_available",
    "missing_mcu_packages",
]


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
        Platform(
            "tflm-reference",
            8,
            False,
            "TFLite Micro's reference kernels on a 64-bit host (what sdsearch measures)",
        ),
    )
}
#: What budgets, ``kTensorArenaSize`` and the search use unless ``deploy.platform`` says otherwise.
DEFAULT_PLATFORM = "cortex-m"
#: The platform the ``tflite-micro`` package runs: measurements are of this one.
MEASURED_PLATFORM = "tflm-reference"

#: How to get the converter and TFLite Micro's interpreter (pinned in pyproject.toml's ``mcu`` extra).
MCU_INSTALL = "pip install 'sdsearch[mcu]'"
_MCU_MODULES = ("litert_torch", "tflite_micro")


def missing_mcu_packages() -> list[str]:
    """The ``mcu`` extra's modules that cannot be imported here (found without importing them)."""
    return [m for m in _MCU_MODULES if importlib.util.find_spec(m) is None]


def mcu_available() -> bool:
    """Whether .tflite conversion and TFLite Micro can run here."""
    return not missing_mcu_packages()


def check_platform(name: str) -> None:
    """Raise ConfigError (key ``platform``, a ValueError) unless ``name`` is one of :data:`PLATFORMS`."""
    if name not in PLATFORMS:
        raise ConfigError(f"{name!r} is not one of {', '.join(PLATFORMS)}", key="platform")
