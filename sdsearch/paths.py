"""Where sdsearch writes what a user asked for: refuse folders and unwritable places in one line."""

from __future__ import annotations

import os
from pathlib import Path

from sdsearch.errors import ConfigError

__all__ = ["output_dir", "output_file"]


def output_file(path: str | os.PathLike[str], *, option: str, suffix: str | None = None) -> Path:
    """A file path we may write (its folder created), or ConfigError (exit 2) naming ``option``.

    ``suffix`` is added when the name has none (matplotlib would add ``.png`` silently otherwise).
    """
    p = Path(path)
    if suffix and not p.suffix:
        p = p.with_suffix(suffix)
    if p.is_dir():
        raise ConfigError(
            f"{option}: {p} is a folder; give a file name such as {p / ('out' + (suffix or ''))}"
        )
    _make_parent(p.parent, option)
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{option}: {p} is read-only; choose another file")
    return p


def output_dir(path: str | os.PathLike[str], *, option: str) -> Path:
    """A folder we may write into (created), or ConfigError (exit 2) naming ``option``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option}: {p} is a file; give a folder (it is created when missing)")
    _make_parent(p, option)
    return p


def _make_parent(folder: Path, option: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option}: cannot create {folder}/ ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{option}: {folder}/ is not writable; choose another place")
