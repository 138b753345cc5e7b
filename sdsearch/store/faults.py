"""What a lost or full study storage means to a driver: how long an outage is ridden out, and the
one-line error that names a store whose disk filled up. Optuna-free, so the runner and the study
lifecycle can name a store's faults without loading the storage itself.
"""

from __future__ import annotations

import os

from sdsearch.core.errors import ConfigError, DiskFullError
from sdsearch.store.urls import mask_url, sqlite_path

__all__ = ["DEFAULT_RETRY_SECONDS", "RETRY_SECONDS_ENV", "disk_full_error", "retry_seconds"]

#: How long a driver keeps retrying a database server it lost, in seconds (an environment variable).
RETRY_SECONDS_ENV = "SDSEARCH_STORAGE_RETRY_SECONDS"
#: *design*: a minute covers a server restart or a fail-over, and stays well inside the heartbeat
#: grace period (120 s) minus one interval (30 s), so other drivers never take the trials of a
#: driver that is waiting for the server for those of a dead one.
DEFAULT_RETRY_SECONDS = 60.0


def retry_seconds() -> float:
    """How long to ride out a lost database server: ``SDSEARCH_STORAGE_RETRY_SECONDS``, default 60.

    Raises:
        ConfigError: the variable is not a number of seconds >= 0.
    """
    text = os.environ.get(RETRY_SECONDS_ENV)
    if text is None:
        return DEFAULT_RETRY_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{RETRY_SECONDS_ENV}: must be a number of seconds >= 0, got {text!r}")
    return seconds


def disk_full_error(url: str, doing: str, *, kept: bool = True) -> DiskFullError:
    """The DiskFullError of a store: its file for SQLite, its masked URL for a server.

    ``kept``: the store already holds the study (say that its trials are safe); False while creating it.
    """
    safe = "the trials it holds are kept: " if kept else ""
    then = "run the same command to resume (trials in flight are re-run)" if kept else "run the command again"
    path = sqlite_path(url)
    if path is None:
        return DiskFullError(
            mask_url(url),
            f"the database server ran out of space while {doing}; {safe}free space on the server and {then}",
        )
    return DiskFullError(
        str(path),
        f"the disk holding {path.parent}/ filled up while {doing}; {safe}free space there and {then}",
    )
