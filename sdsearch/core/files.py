"""Where sdsearch writes what a user asked for: refuse folders and unwritable places in one line,
and write whole files or none, saying "no space left" naming the file when its disk is full."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from sdsearch.core.errors import ConfigError, DiskFullError, causes

__all__ = ["is_disk_full", "output_dir", "output_file", "write_atomic"]

#: SQLite's result code for "database or disk is full" (``sqlite3.Error.sqlite_errorcode``).
_SQLITE_FULL = 13
#: PostgreSQL's SQLSTATE ``disk_full`` (``psycopg2.Error.pgcode``): the server's own disk.
_PG_DISK_FULL = "53100"


def output_file(path: str | os.PathLike[str], *, key: str, suffix: str | None = None) -> Path:
    """A file path we may write (its folder created), or ConfigError (exit 2) naming ``key``, the
    argument that gave the path (``plot``, ``csv``, ``out``).

    ``suffix`` is added when the name has none (matplotlib would add ``.png`` silently otherwise).
    """
    p = Path(path)
    if suffix and not p.suffix:
        p = p.with_suffix(suffix)
    if p.is_dir():
        raise ConfigError(
            f"{p} is a folder; give a file name such as {p / ('out' + (suffix or ''))}", key=key
        )
    _make_parent(p.parent, key)
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{p} is read-only; choose another file", key=key)
    return p


def output_dir(path: str | os.PathLike[str], *, key: str) -> Path:
    """A folder we may write into (created), or ConfigError (exit 2) naming ``key``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p} is a file; give a folder (it is created when missing)", key=key)
    _make_parent(p, key)
    return p


def _make_parent(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(
                str(folder), "cannot create it; free space there or write elsewhere"
            ) from None
        raise ConfigError(f"cannot create {folder}/ ({exc.strerror})", key=key) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{folder}/ is not writable; choose another place", key=key)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or anything that caused it, is a write that ran out of space.

    That is ``OSError`` ``ENOSPC`` / ``EDQUOT``, SQLite's "database or disk is full" (however
    SQLAlchemy and Optuna wrap it) and PostgreSQL's ``disk_full``.
    """
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(e):
            return True
        if getattr(e, "pgcode", None) == _PG_DISK_FULL:
            return True
    return False


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` whole or not at all.

    It goes to a hidden file beside ``path`` first and replaces ``path`` only when complete, so a
    disk that fills up leaves neither a truncated file nor a lost earlier one.

    Raises:
        DiskFullError: the disk holding ``path`` is full (named, with what was not written).

    Example:
        >>> write_atomic("runs/best/metrics.json", text)  # doctest: +SKIP
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise DiskFullError(
                str(path),
                f"the disk holding {path.parent}/ is full and nothing of {path.name} was written; "
                "free space there or write elsewhere, then run the command again",
            ) from None
        raise
    return path
