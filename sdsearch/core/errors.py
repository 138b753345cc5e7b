"""User-facing errors.

Every error a user can cause derives from :class:`SdsearchError`; the CLI prints its message as one
line and exits with its ``exit_code`` (2 for bad input, 1 for a state that stops the work).
Messages follow one rule: *where* (file and key path), *what is wrong*, *what is allowed or how to fix it*.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "ConfigError",
    "DataError",
    "DiskFullError",
    "InfeasibleSpaceError",
    "SdsearchError",
    "SpaceError",
    "StorageUnavailableError",
    "StudyError",
    "StudyLockedError",
    "StudySelectionError",
    "causes",
]


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything behind it, each once: its ``__cause__`` and ``__context__`` and, inside
    SQLAlchemy's wrappers, the driver's own error (``.orig``). Libraries (Optuna, Tune, SQLAlchemy)
    wrap the error that explains a failure; this is the one walk every check of it takes."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]


class SdsearchError(Exception):
    """Root of every error sdsearch raises on purpose; ``exit_code`` is what the CLI returns.

    Args:
        message: what is wrong and how to fix it.
        key: the argument at fault, as the Python API names it (``budget``, ``pick``, ``storage``,
            ``study_name``); the message then starts with ``key: ``, and the CLI shows the flag that
            sets it instead (``--budget: ...``), so library messages never name a flag.
    """

    exit_code: int = 2

    def __init__(self, message: str = "", *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class SpaceError(SdsearchError, ValueError):
    """A YAML space or trainer config is invalid.

    Args:
        source: the file (or ``"<string>"``) the key came from.
        key: dotted key path, e.g. ``space.fusion.type``; empty for whole-document problems.
        message: what is wrong and what is allowed.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)
        self.source = source
        self.key = key
        self.message = message


class ConfigError(SdsearchError, ValueError):
    """A programmatic config (not from a file) is invalid, or a function got a bad argument."""


class DataError(SdsearchError):
    """A dataset cannot be found or read; the message says how to get it."""


class StudyError(SdsearchError):
    """A study cannot be created, resumed or read (changed space, foreign storage, no trials)."""

    exit_code = 1


class StudySelectionError(StudyError):
    """A storage or study name given on the command line does not name one study (bad input)."""

    exit_code = 2


class StudyLockedError(StudyError):
    """Another driver holds the study (one driver per SQLite study)."""


class InfeasibleSpaceError(StudyError):
    """Sampling kept drawing configs that break the budget; the space probably has no feasible config."""


class StorageUnavailableError(StudyError):
    """The study's database server stayed unreachable longer than the driver waits for it."""


class DiskFullError(SdsearchError):
    """A write ran out of space (``ENOSPC``): the store's disk, an output folder, or the database
    server's own disk. Not bad input, so exit 1.

    Args:
        path: what was being written (a file, a folder, or a masked storage URL).
        message: what was lost and kept, and how to go on.
    """

    exit_code = 1

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: no space left on device; {message}")
        self.path = path
        self.message = message
