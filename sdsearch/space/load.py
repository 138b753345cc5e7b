"""Reading space files: strict YAML (safe, one declaration per key) into a validated Space.

``load_space`` serves ``run``, ``validate``, ``show`` and ``export`` (a space file) and
``train`` and ``cost`` (a trainer config: a space with every value fixed, :func:`load_trial_config`).
Every failure is a :class:`~sdsearch.core.errors.SpaceError` naming the file and the line or key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from sdsearch.core.config import TrialConfig
from sdsearch.core.errors import SpaceError
from sdsearch.space.space import Space, parse_space

__all__ = ["load_space", "load_trial_config"]


def load_space(path: str | os.PathLike[str]) -> Space:
    """Read and validate a space (or trainer config) YAML file.

    Example:
        >>> space = load_space("spaces/iot_budget.yaml")
        >>> space.name
        'iot_budget'

    Raises:
        SpaceError: the file is missing, not YAML, or breaks a rule; the message names the key.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(
            source, "", "no such file (check the path; shipped spaces live in spaces/)"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise SpaceError(source, "", f"cannot read the file ({type(exc).__name__})") from None
    return parse_space(_parse_yaml(text, source), source=source, default_name=Path(path).stem)


def load_trial_config(path: str | os.PathLike[str]) -> TrialConfig:
    """Read a trainer config (a space with every value fixed) into a :class:`TrialConfig`."""
    return load_space(path).fixed_config()


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain safe_load silently keeps the last one)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (each key may appear once)", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark else ""
        kind = "YAML" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise SpaceError(source, line, f"{kind}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpaceError(source, "", f"YAML syntax error: {exc}") from None
