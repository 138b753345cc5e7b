"""The study storage sdsearch opens: Optuna's ``RDBStorage`` that survives a lost database.

Without it, a database server that restarts while trials are in flight ends the driver with
Optuna's ``StorageInternalError`` ("... invalid data in the commit, e.g. exceeding max length"),
whatever the data, and a full disk ends it with a traceback-shaped line. :class:`SDRDBStorage`
retries the first and names the second. It stays an ``RDBStorage``, so ``optuna.create_study``
still puts its cache in front of it and heartbeats still work.

Imported by :func:`sdsearch.store.storage.open_storage` only, so modules that only name a storage
or its faults (``validate``, the runner's module) import no Optuna. The Optuna internals it needs
come through :mod:`sdsearch.store.optuna_internals`; the retry window and the full-disk error it
raises are :mod:`sdsearch.store.faults`'.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from optuna.storages import RDBStorage

from sdsearch.core.errors import StorageUnavailableError, causes
from sdsearch.core.files import is_disk_full
from sdsearch.store.faults import RETRY_SECONDS_ENV, disk_full_error
from sdsearch.store.optuna_internals import storage_methods
from sdsearch.store.urls import mask_secrets, mask_url

__all__ = ["GUARDED", "SDRDBStorage", "lost_connection"]

logger = logging.getLogger(__name__)


#: Backoff between attempts: 0.5 s, doubling, at most this (a server that is back is seen within it).
MAX_BACKOFF_SECONDS = 8.0

_calls = threading.local()  # .depth > 0 inside a guarded call: nested storage calls pass through


class SDRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` that rides out a restarting database server and names a full disk.

    Every storage method (those of ``BaseStorage`` and ``BaseHeartbeat``, and the private ones
    Optuna's cache calls) goes through one guard:

    - a lost connection (:func:`lost_connection`) is retried with exponential backoff while the
      outage is younger than ``retry_seconds``. The window belongs to the outage, not to the call:
      every thread (the Tune loop, the heartbeat thread, the runner's exit path) gives up at the
      same moment, after which each call tries once and raises
      :class:`~sdsearch.core.errors.StorageUnavailableError`. One warning says the storage was lost,
      one that it is back. ``retry_seconds=0`` (SQLite files) never retries.
    - a full disk (the store's, or the server's) raises :class:`~sdsearch.core.errors.DiskFullError`
      naming the store, at once.

    A write that committed just before its connection broke is retried too. For every write but
    one that is harmless; setting a trial's final state would then be refused (the trial is
    finished), so a retry that finds the trial finished in the state it was setting counts as done.

    Args:
        url: the database URL (passwords are masked in every message).
        retry_seconds: how long an outage is ridden out; 0 never retries.
        **kwargs: passed on to ``RDBStorage``.
    """

    def __init__(self, url: str, *, retry_seconds: float = 0.0, **kwargs: Any) -> None:
        self.retry_seconds = float(retry_seconds)
        self._lost_at: float | None = None  # monotonic time the current outage began
        super().__init__(url, **kwargs)

    def _guard(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        method = getattr(RDBStorage, name)  # at call time, so a test can stand a failing one in
        attempt = 0
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if is_disk_full(exc):
                    raise disk_full_error(self.url, "writing the study") from None
                if attempt and name == "set_trial_state_values" and self._committed(exc, args, kwargs):
                    result = True
                elif self.retry_seconds > 0 and lost_connection(exc):
                    self._wait(exc, attempt)
                    attempt += 1
                    continue
                else:
                    raise
            if self._lost_at is not None:
                logger.warning(
                    "%s: the study storage is back after %.0f s",
                    mask_url(self.url),
                    time.monotonic() - self._lost_at,
                )
                self._lost_at = None
            return result

    def _wait(self, exc: BaseException, attempt: int) -> None:
        """Sleep before the next attempt, or raise StorageUnavailableError once the outage is too old."""
        now = time.monotonic()
        lost_at = self._lost_at
        if lost_at is None:
            lost_at = self._lost_at = now
            logger.warning(
                "%s: lost the study storage (%s); retrying for up to %.0f s",
                mask_url(self.url),
                _reason(exc),
                self.retry_seconds,
            )
        left = lost_at + self.retry_seconds - now
        if left <= 0:
            raise StorageUnavailableError(
                f"{mask_url(self.url)}: the study storage has been unreachable for {now - lost_at:.0f} s "
                f"({_reason(exc)}); the trials it holds are kept and the ones in flight will be re-run: "
                f"run the same command to resume once it is back (set {RETRY_SECONDS_ENV} to wait longer)"
            ) from None
        time.sleep(min(0.5 * 2**attempt, MAX_BACKOFF_SECONDS, left))

    def _committed(self, exc: BaseException, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Whether a retried ``set_trial_state_values`` was refused because its first attempt committed."""
        from optuna.exceptions import UpdateFinishedTrialError

        if not isinstance(exc, UpdateFinishedTrialError):
            return False
        trial_id = kwargs.get("trial_id", args[0] if args else None)
        state = kwargs.get("state", args[1] if len(args) > 1 else None)
        return trial_id is not None and RDBStorage.get_trial(self, trial_id).state == state


def _guarded(name: str) -> Callable[..., Any]:
    """``RDBStorage.<name>`` through :meth:`SDRDBStorage._guard`."""

    @functools.wraps(getattr(RDBStorage, name))
    def method(self: SDRDBStorage, *args: Any, **kwargs: Any) -> Any:
        if getattr(_calls, "depth", 0):  # called by another storage method, which guards it
            return getattr(RDBStorage, name)(self, *args, **kwargs)
        _calls.depth = 1
        try:
            return self._guard(name, args, kwargs)
        finally:
            _calls.depth = 0

    return method


#: Storage methods that need no database (settings, session bookkeeping).
_OFFLINE = {"remove_session", "check_trial_is_updatable", "get_heartbeat_interval",
            "get_heartbeat_stale_trial_callback", "get_failed_trial_callback"}  # fmt: skip

#: Every storage method a study calls that reaches the database (the private ones Optuna's cache
#: calls included: unguarded, asks and reads would fail).
GUARDED = tuple(sorted(storage_methods() - _OFFLINE))
for _name in GUARDED:
    setattr(SDRDBStorage, _name, _guarded(_name))


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc``, or what caused it, says the database connection was lost (not the data bad).

    SQLAlchemy's ``OperationalError`` and ``InterfaceError`` (refused, reset, "server closed the
    connection", "terminating connection due to administrator command"), any ``DBAPIError`` that
    invalidated its connection, and Optuna's ``StorageInternalError`` raised from one of those.
    """
    from sqlalchemy import exc as sa

    for e in causes(exc):
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (sa.OperationalError, sa.InterfaceError)):
            return True
    return False


def _reason(exc: BaseException) -> str:
    """The database driver's own first line, masked (Optuna's commit message blames the data)."""
    from sqlalchemy import exc as sa

    for e in causes(exc):
        if isinstance(e, sa.DBAPIError) and e.orig is not None:
            exc = e.orig
            break
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return mask_secrets(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
