"""Human-friendly sizes (``50k``, ``2M``, ``1.5G``) for budgets, in both directions."""

from __future__ import annotations

import re

__all__ = ["SUFFIXES", "format_size", "parse_size"]

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
