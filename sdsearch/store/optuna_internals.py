"""The private parts of Optuna that sdsearch relies on: one adapter, each use with its reason.

Optuna 5 offers no public way to do two things :class:`~sdsearch.store.rdb.SDRDBStorage` must do:

- name every storage method a study calls, heartbeats included: the heartbeat interface
  (``record_heartbeat``, ``_get_stale_trial_ids``, ...) is the private
  ``optuna.storages._heartbeat.BaseHeartbeat``, which ``RDBStorage`` implements;
- guard the calls Optuna's ``_CachedStorage`` (which every ``Study`` puts in front of an
  ``RDBStorage``) makes: it calls private ``RDBStorage`` methods instead of the public ones.

Written against Optuna 5.0-5.1 (the pin in pyproject.toml is ``>=5.0,<6``);
``tests/test_optuna_internals.py`` fails when an Optuna release moves either. TODO: drop this
module once Optuna exports ``BaseHeartbeat`` and ``_CachedStorage`` calls public methods only.
"""

from __future__ import annotations

from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat

__all__ = ["CACHED_STORAGE_BACKEND_CALLS", "BaseHeartbeat", "storage_methods"]

#: Private ``RDBStorage`` methods that ``optuna.storages._cached_storage._CachedStorage`` calls on
#: its backend (beside the public ones and the heartbeat's ``_get_stale_trial_ids``).
CACHED_STORAGE_BACKEND_CALLS = ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials")


def storage_methods() -> set[str]:
    """Names of every method a study may call on an ``RDBStorage``: those of ``BaseStorage`` and of
    the heartbeat interface, and the private ones ``_CachedStorage`` calls."""
    declared = {
        name for base in (BaseStorage, BaseHeartbeat) for name, v in vars(base).items() if callable(v)
    }
    return {
        name
        for name in declared | set(CACHED_STORAGE_BACKEND_CALLS)
        if not name.startswith("__") and hasattr(RDBStorage, name)
    }
