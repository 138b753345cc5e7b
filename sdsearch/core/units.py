"""Units are data: numbers are stored once (counts, bytes, milliseconds, fractions) and read or shown
with their unit at the edges.

- ``count``: params, MACs (``50k``, ``2M``, ``1.5G``; a bare number is a count). k = 10³, M = 10⁶.
- ``bytes``: peak memory and model size. A unit is required, because a bare number is ambiguous:
  ``512B``, ``256kB`` / ``1MB`` (decimal, 10³ / 10⁶) or ``64KiB`` / ``1MiB`` (binary, 2¹⁰ / 2²⁰).
  ``KB`` is refused: people mean either.
- ``ms``: latency; a unit is required (``5ms``, ``500us``, ``0.2s``).
- ``fraction``: accuracies in [0, 1]; ``0.5%`` reads as 0.005.

Example:
    >>> parse("64KiB", "bytes"), parse("2M", "count"), parse("500us", "ms")
    (65536.0, 2000000.0, 0.5)
    >>> format_value(65536, "bytes"), format_value(2_000_000, "count"), format_value(0.5, "ms")
    ('64 KiB', '2M', '0.5 ms')
"""

from __future__ import annotations

import math
import re
from typing import Literal

from sdsearch.core.errors import ConfigError

__all__ = ["DTYPES", "DTYPE_BYTES", "UNITS", "Unit", "check_dtype", "format_value", "parse", "unit_help"]

#: Bytes per element of each deployment dtype (``deploy.dtype``): activations, and the weights of a
#: float deployment (an int8 deployment also stores per-channel scales and biases; sdsearch.cost.trace
#: says how). The one table of dtypes.
DTYPE_BYTES: dict[str, int] = {"int8": 1, "float32": 4}
DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)


def check_dtype(dtype: str) -> None:
    """Raise ConfigError (key ``dtype``, a ValueError) unless ``dtype`` is one of :data:`DTYPES`."""
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"{dtype!r} is not one of {', '.join(DTYPES)}", key="dtype")


Unit = Literal["count", "bytes", "ms", "fraction"]
UNITS: tuple[Unit, ...] = ("count", "bytes", "ms", "fraction")

_NUMBER = r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_VALUE = re.compile(rf"^\s*{_NUMBER}\s*([A-Za-z%]*)\s*$")
_SCALES: dict[Unit, dict[str, float]] = {
    "count": {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12},
    "bytes": {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30},
    "ms": {"us": 1e-3, "µs": 1e-3, "ms": 1, "s": 1e3},
    "fraction": {"": 1, "%": 1e-2},
}
_EXAMPLES: dict[Unit, str] = {
    "count": "50k, 2M or 1.5G",
    "bytes": "64KiB, 256kB or 1MB",
    "ms": "5ms or 500us",
    "fraction": "0.005 or 0.5%",
}


def unit_help(unit: Unit) -> str:
    """What a value of ``unit`` looks like, for messages."""
    return f"e.g. {_EXAMPLES[unit]}"


def parse(value: object, unit: Unit) -> float:
    """A number, or a string with one of ``unit``'s suffixes, as a float in the stored unit.

    Raises:
        ValueError: not a number, an unknown or missing suffix, or not finite; the message says
            what is allowed.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a value such as {_EXAMPLES[unit]}, got {value!r}")
    if isinstance(value, (int, float)):
        if unit in ("bytes", "ms"):
            what = "a size in bytes" if unit == "bytes" else "a time"
            suffixes = ", ".join(s for s in _SCALES[unit] if s != "µs")
            raise ValueError(f"{what} needs a unit ({suffixes}), {unit_help(unit)}; got {value!r}")
        number = float(value)
    elif isinstance(value, str) and (match := _VALUE.match(value)):
        suffix = match.group(2)
        scales = _SCALES[unit]
        if suffix not in scales:
            hint = " ('KB' is ambiguous: write kB for 1000 bytes or KiB for 1024)" if suffix == "KB" else ""
            allowed = ", ".join(s or "no suffix" for s in scales if s != "µs")
            raise ValueError(f"unknown unit {suffix!r} in {value!r}{hint} (use {allowed}; {unit_help(unit)})")
        if unit in ("bytes", "ms") and not suffix:
            return parse(float(match.group(1)), unit)  # the same "needs a unit" message
        number = float(match.group(1)) * scales[suffix]
    else:
        raise ValueError(f"expected a value such as {_EXAMPLES[unit]}, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite value, got {value!r}")
    return number


def format_value(value: float, unit: Unit, precision: int = 3) -> str:
    """``1234567`` (count) -> ``1.23M``; bytes in KiB/MiB; ms with its unit; fractions as %."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if unit == "fraction":
        return f"{100 * value:.2f}%"
    if unit == "ms":
        return f"{value:.{precision}g} ms"
    if unit == "bytes":
        for suffix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= scale:
                return f"{value / scale:.{precision}g} {suffix}"
        return f"{value:.0f} B"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{precision}g}{suffix}"
    return f"{value:.{precision}g}"
