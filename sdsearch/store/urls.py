"""Storage URLs: the one rule for what names a study storage, and masking the secrets in one.

A storage is either a database URL with a scheme (``sqlite:///studies/x.db``,
``postgresql+psycopg2://user@host/db``) or the path of an SQLite file ending in ``.db`` (or
``.sqlite``, ``.sqlite3``), which becomes ``sqlite:///PATH``. The same rule reads ``storage:`` in a
space file, ``--storage`` and the STORAGE argument of ``show``, ``export`` and ``studies``, so no
spelling works in one place and fails in another. Torch-, Ray- and Optuna-free.

Example:
    >>> storage_url("studies/x.db"), storage_url(None, study_name="mcu")
    ('sqlite:///studies/x.db', 'sqlite:///studies/mcu.db')
    >>> mask_url("postgresql://me:secret@db/sdsearch")
    'postgresql://me:***@db/sdsearch'
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sdsearch.core.errors import ConfigError

__all__ = [
    "SQLITE_SUFFIXES",
    "artifacts_folder",
    "artifacts_root",
    "default_storage",
    "mask_secrets",
    "mask_url",
    "sqlite_path",
    "storage_url",
    "study_artifacts",
]

#: File endings read as SQLite stores when a storage is given as a path.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def default_storage(study_name: str) -> str:
    """Where a space without ``storage:`` keeps its study: ``sqlite:///studies/<name>.db``."""
    return f"sqlite:///studies/{study_name}.db"


def storage_url(value: str | None, *, study_name: str | None = None) -> str:
    """The storage URL that ``value`` names, by the one rule of this module.

    Args:
        value: a database URL with a scheme, a path ending in ``.db`` (``.sqlite``, ``.sqlite3``),
            or None for the default of ``study_name``.
        study_name: the study whose default storage None stands for.

    Raises:
        ConfigError: (key ``storage``) anything else; the message names both accepted forms.
    """
    if value is None:
        if study_name is None:
            raise ConfigError(
                "a storage is required (a database URL, or a path ending in .db)", key="storage"
            )
        return default_storage(study_name)
    text = str(value).strip()
    if _SCHEME.match(text):
        return text
    if text.endswith(SQLITE_SUFFIXES) and not text.endswith("/"):
        return f"sqlite:///{text}"
    example = default_storage(study_name or "NAME")
    raise ConfigError(
        f"{value!r} is neither a database URL (e.g. {example} or postgresql+psycopg2://user@host/db) "
        f"nor an SQLite file path ending in .db (e.g. {example.removeprefix('sqlite:///')})",
        key="storage",
    )


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def artifacts_root(url: str, configured: str | None = None) -> Path:
    """Where a storage's studies keep their files (trained trials' weights): ``configured`` (the space's
    ``artifacts:``), else beside an SQLite file (``studies/x.db`` -> ``studies/x.artifacts``), else
    ``artifacts`` in the working directory. A study on a Ray cluster needs a folder every node writes."""
    if configured is not None:
        return Path(configured)
    path = sqlite_path(url)
    return path.with_suffix(".artifacts") if path is not None else Path("artifacts")


def study_artifacts(url: str, configured: str | None, folder: str) -> str:
    """What a new study stores as its folder (``store.attrs.ARTIFACTS``): ``folder`` under
    :func:`artifacts_root`, relative to an SQLite file's folder when inside it (a .db moved with its
    folder keeps its files), else absolute."""
    path = artifacts_root(url, configured).resolve() / folder
    db = sqlite_path(url)
    if db is not None and path.is_relative_to(db.resolve().parent):
        return str(path.relative_to(db.resolve().parent))
    return str(path)


def artifacts_folder(url: str, stored: str) -> Path:
    """The folder a study's stored ``ARTIFACTS`` names (see :func:`study_artifacts`)."""
    path, db = Path(stored), sqlite_path(url)
    return path if path.is_absolute() or db is None else db.parent / path


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def mask_secrets(text: str) -> str:
    """Hide anything that looks like a password inside a URL embedded in ``text`` (a driver's error)."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)
