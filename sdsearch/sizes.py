"""Human-friendly sizes (``50k``, ``2M``, ``1.5G``) for budgets, in both directions, and byte units.

Prefixes are decimal everywhere (k = 10^3, M = 10^6, G = 10^9), for counts and bytes alike, so a
budget of ``256k`` bytes reads back as ``256 kB``. A 256 KiB part is a budget of 262144 (or 262k).
"""

from __future__ import annotations

import re

__all__ = ["DTYPES", "DTYPE_BYTES", "SUFFIXES", "format_bytes", "format_size", "parse_size"]

#: Bytes per element of each deployment dtype: activations, and weights of float deployments (an
#: int8 deployment also stores per-channel scales and biases; sdsearch.cost says how). The one
#: table of dtypes: ``sdsearch.cost`` re-exports it, and floor-1 modules can read it without torch.
DTYPE_BYTES: dict[str, int] = {"int8": 1, "float32": 4}
DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)

SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> float:
    """``"1.5M"`` -> 1500000.0; numbers pass through. Raises ValueError with the allowed suffixes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 50k, 2M or 1.5G, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match and match.group(2) in SUFFIXES:
            return float(match.group(1)) * SUFFIXES[match.group(2)]
        if match:
            raise ValueError(
                f"unknown size suffix {match.group(2)!r} in {value!r} (use k, M or G, e.g. 50k, 2M, 1.5G)"
            )
    raise ValueError(f"expected a size such as 50k, 2M or 1.5G, got {value!r}")


def format_size(value: float, precision: int = 3) -> str:
    """1234567 -> ``"1.23M"``; the inverse of :func:`parse_size` up to rounding."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{precision}g}{suffix}"
    return f"{value:.{precision}g}"


def format_bytes(value: float, precision: int = 3) -> str:
    """Bytes with decimal prefixes: 999 -> ``"999 B"``, 106496 -> ``"106 kB"``, 11249632 -> ``"11.2 MB"``."""
    for suffix, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{precision}g} {suffix}"
    return f"{value:.{precision}g} B"
