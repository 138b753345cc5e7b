"""Opening study storages safely: refusing foreign or corrupted files, never creating one to read it.

The Optuna storage is the only persistent truth of a study (docs/ARCHITECTURE.md), so this module never
creates a database when it only reads, never writes into a file that is not an Optuna store, and
never prints a password. The storages it opens are :class:`~sdsearch.store.rdb.SDRDBStorage`:
they ride out a database server that restarts and name a full disk. What names a storage is
:mod:`sdsearch.store.urls`' one rule.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdsearch.core.errors import StudyError, StudySelectionError
from sdsearch.store import attrs
from sdsearch.store.urls import mask_secrets, mask_url, sqlite_path, storage_url

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from sdsearch.store.rdb import SDRDBStorage

__all__ = ["open_storage", "retry_interrupted", "server_engine_kwargs", "study_names"]

#: libpq settings (psycopg2 and psycopg 3) that bound each attempt: a connect to a host that is down (no refusal,
#: no reply) fails in 10 s, and a query whose server vanished in about 25 s, instead of the kernel's
#: minutes, so the retry window means what it says.
_LIBPQ_TIMEOUTS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 3}  # fmt: skip

_SQLITE_MAGIC = b"SQLite format 3\x00"
_OPTUNA_TABLES = {"studies", "trials", "version_info"}


def server_engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for a database server: a restarted server leaves dead pooled
    connections, so each is tested before use; libpq connect and keepalive timeouts bound an attempt
    against a host that is down, except those the URL sets itself (``connect_args`` would win)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    with contextlib.suppress(ArgumentError):
        parsed = make_url(url)
        if parsed.get_driver_name() in ("psycopg2", "psycopg"):  # both pass libpq keywords through
            engine_kwargs["connect_args"] = {
                k: v for k, v in _LIBPQ_TIMEOUTS.items() if k not in parsed.query
            }
    return engine_kwargs


def _check_sqlite_file(path: Path, url: str, *, create: bool) -> None:
    """Refuse anything that is not (or cannot become) an Optuna SQLite store."""
    if not path.exists():
        if not create:
            raise StudyError(
                f"{url}: no study storage there yet (run `sdsearch run SPACE` first, or check the path)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(
                f"{url}: cannot create {path.parent}/ ({exc.strerror}); choose another storage"
            ) from None
        if not os.access(path.parent, os.W_OK):
            raise StudyError(
                f"{url}: {path.parent}/ is not writable; choose another storage or fix its permissions"
            )
        return
    if path.is_dir():
        raise StudySelectionError(f"{url}: {path} is a directory, not a database file")
    if path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        if f.read(16) != _SQLITE_MAGIC:
            raise StudyError(
                f"{url}: {path} is not an SQLite database; refusing to touch it (choose another storage)"
            )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise StudyError(f"{url}: {path} is corrupted or unreadable ({exc}); nothing was changed") from None
    if tables and not tables >= _OPTUNA_TABLES:
        raise StudyError(
            f"{url}: {path} is an SQLite database of something else (tables: {', '.join(sorted(tables)[:4])}); "
            "refusing to touch it (choose another storage)"
        )
    if create and not os.access(path, os.W_OK):
        raise StudyError(f"{url}: {path} is read-only; fix its permissions or choose another storage")


def open_storage(url: str, *, create: bool = False) -> SDRDBStorage:
    """Open an Optuna RDB storage with clear errors; with ``create=False`` nothing is ever created.

    SQLite stores get a long busy timeout (trials are told from one driver, but readers such as
    ``sdsearch show`` may look at the same time). Server databases get heartbeats so that several
    drivers can share a study and a dead driver's trials can be recognised as stale, and a server
    that goes away is retried for ``SDSEARCH_STORAGE_RETRY_SECONDS`` (default 60).

    Args:
        url: a storage by the rule of :func:`~sdsearch.store.urls.storage_url` (a URL, or a ``.db`` path).
        create: create the store (and its folder) when missing; False only ever reads.

    Raises:
        StudyError: the storage is missing (when reading), foreign, corrupted or not writable.
        DiskFullError: creating the store ran out of space.
        ConfigError: ``url`` names no storage, or ``SDSEARCH_STORAGE_RETRY_SECONDS`` is not a
            number of seconds.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from sdsearch.core.files import is_disk_full
    from sdsearch.store.faults import disk_full_error, retry_seconds
    from sdsearch.store.rdb import SDRDBStorage

    url = storage_url(url)
    path = sqlite_path(url)
    kwargs: dict[str, Any] = {}
    if path is not None:
        _check_sqlite_file(path, url, create=create)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    elif not url.startswith("sqlite"):
        kwargs.update(
            heartbeat_interval=30,
            grace_period=120,
            heartbeat_stale_trial_callback=_retry_once(),
            engine_kwargs=server_engine_kwargs(url),
            retry_seconds=retry_seconds(),
        )
    attempts = 1 if path is not None else 5
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return SDRDBStorage(url, **kwargs)
        except (SQLAlchemyError, RuntimeError, ValueError, ImportError, ModuleNotFoundError) as exc:
            if is_disk_full(exc):
                raise disk_full_error(url, "creating the study storage", kept=False) from None
            attempt += 1
            # Drivers opening an empty server database together race to create Optuna's schema.
            racing = isinstance(exc, SQLAlchemyError) and re.search(r"duplicate key|already exists", str(exc))
            if not racing or attempt >= attempts:
                reason = mask_secrets(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
                raise StudyError(f"{mask_url(url)}: cannot open the study storage ({reason})") from None
            time.sleep(0.2 * attempt)


def _retry_once() -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)


def retry_interrupted(study: optuna.Study, trial: FrozenTrial) -> int:
    """Queue one re-run of an interrupted (FAIL) trial with the same params, unless it is a re-run
    itself; Optuna's ``RetryHeartbeatStaleTrialCallback`` marks and bounds the retries. Returns 1
    if a re-run was queued. The re-run starts without the interruption's own marks, nor a duplicate's:
    whether it is one is decided again when it is asked for."""
    import copy

    dropped = (attrs.INTERRUPTED, attrs.FAIL_REASON, attrs.DUPLICATE_OF, attrs.FINGERPRINT)
    clean = copy.deepcopy(trial)
    clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in dropped}
    clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith("constraints")}
    before = len(study.get_trials(deepcopy=False))
    _retry_once()(study, clean)
    return len(study.get_trials(deepcopy=False)) - before


def study_names(storage: Any) -> list[str]:
    """The names of the studies an opened storage holds."""
    import optuna

    return [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]
