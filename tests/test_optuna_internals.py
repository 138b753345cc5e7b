"""The private Optuna parts behind sdsearch.store.optuna_internals are still where, and what, they were.

An Optuna release inside the pinned range that moves the heartbeat interface, or makes its cached
storage call another private ``RDBStorage`` method, fails here, not as an unguarded storage call on a
database that restarts.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import optuna
import pytest
import tomllib
from optuna.storages import RDBStorage
from packaging.specifiers import SpecifierSet

from sdsearch.store import optuna_internals
from sdsearch.store.rdb import GUARDED, SDRDBStorage

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _pinned_range() -> SpecifierSet:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    (spec,) = [d for d in dependencies if re.match(r"optuna\b", d)]
    return SpecifierSet(spec.removeprefix("optuna"))


def test_the_installed_optuna_is_in_the_pinned_range() -> None:
    assert optuna.__version__ in _pinned_range(), f"optuna {optuna.__version__} is outside {_pinned_range()}"
    assert "6" not in _pinned_range(), "a new major version: re-check every private use, then widen the pin"


def test_the_heartbeat_interface_is_still_optunas_private_base_heartbeat() -> None:
    from optuna.storages._heartbeat import BaseHeartbeat

    assert optuna_internals.BaseHeartbeat is BaseHeartbeat
    assert issubclass(RDBStorage, BaseHeartbeat)
    for name in ("record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval"):
        assert callable(getattr(BaseHeartbeat, name, None)), name


def test_the_cached_storage_calls_exactly_the_private_methods_we_guard() -> None:
    """Every ``self._backend._x(...)`` call of Optuna's ``_CachedStorage`` is a method the adapter
    names (or the heartbeat's own), so SDRDBStorage guards every call a study makes."""
    from optuna.storages._cached_storage import _CachedStorage

    called = set(re.findall(r"self\._backend\.(_\w+)\(", inspect.getsource(_CachedStorage)))
    heartbeat = {
        n for n in vars(optuna_internals.BaseHeartbeat) if n.startswith("_") and not n.startswith("__")
    }
    assert called - heartbeat == set(optuna_internals.CACHED_STORAGE_BACKEND_CALLS)


@pytest.mark.parametrize("name", sorted(optuna_internals.CACHED_STORAGE_BACKEND_CALLS))
def test_each_private_method_exists_and_is_guarded(name: str) -> None:
    assert callable(getattr(RDBStorage, name, None)), f"RDBStorage.{name} is gone"
    assert name in GUARDED and getattr(SDRDBStorage, name) is not getattr(RDBStorage, name)
