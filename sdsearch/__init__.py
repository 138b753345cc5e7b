"""sdsearch: search self-distilled lightweight CNNs for edge budgets.

The public API is imported lazily so that ``import sdsearch`` (and ``sdsearch --help``) stays fast:
torch, ray and optuna load only when a function that needs them is called.

Example:
    >>> import sdsearch
    >>> space = sdsearch.load_space("spaces/iot_budget.yaml")
    >>> sdsearch.run("spaces/iot_budget.yaml")                        # doctest: +SKIP
    >>> sdsearch.export_config("spaces/iot_budget.yaml", out="best.yaml")  # doctest: +SKIP
    >>> sdsearch.train("best.yaml", out="runs/best")                  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_space": "sdsearch.space.load",
    "load_trial_config": "sdsearch.space.load",
    "TrialConfig": "sdsearch.core.config",
    "run": "sdsearch.search.runner",
    "load_front": "sdsearch.results.read",
    "export_config": "sdsearch.results.pick",
    "train": "sdsearch.deploy.build",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdsearch' has no attribute {name!r}")
