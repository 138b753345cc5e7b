"""Trainer-config documents and study specs as plain data: writing a config as a document, reading
a leaf back from a stored config, and naming the keys two specs differ in.

A trainer config is a space with every value fixed (docs/ARCHITECTURE.md), so
``config_to_document`` writes the same schema a space file uses, and ``load_trial_config`` reads it
back unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sdsearch.core.config import SPACE_SECTIONS, Leaf, TrialConfig

__all__ = ["config_to_document", "diff_documents", "leaf_value", "plain"]


def plain(value: Any) -> Any:
    """Nested mappings and sequences as JSON-friendly dicts and lists (keys as text), for hashing and YAML."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def config_to_document(
    config: TrialConfig, *, name: str, provenance: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A trainer-config document (same schema as a space, every value fixed) for ``config``.

    ``load_trial_config`` on the written YAML gives back ``config``.
    """
    tree = config.to_dict()
    space: dict[str, Any] = {}
    for section, path in SPACE_SECTIONS.items():
        node: Any = tree
        for part in path:
            node = node[part]
        if section != "train":
            space[section] = node
    doc: dict[str, Any] = {
        "name": name,
        "seed": config.seed,
        "data": {k: v for k, v in tree["data"].items() if v is not None},
        "train": tree["train"],
        "space": space,
        "deploy": {k: v for k, v in tree["deploy"].items() if v is not None},
    }
    if provenance:
        doc["provenance"] = plain(dict(provenance))
    return doc


def leaf_value(config: TrialConfig | Mapping[str, Any], leaf: Leaf) -> Any:
    """The value of a searchable leaf in a config (or in its stored dict); None when absent."""
    node: Any = config.to_dict() if isinstance(config, TrialConfig) else config
    for part in SPACE_SECTIONS[leaf.section]:
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node.get(leaf.name) if isinstance(node, Mapping) else None


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Key paths whose values differ between two study specs, as ``key: old -> new`` lines."""
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes.extend(diff_documents(a, b, f"{path}."))
        elif plain(a) != plain(b):
            changes.append(f"{path}: {_short(a)} -> {_short(b)}")
    return changes


def _short(value: Any) -> str:
    text = json.dumps(plain(value)) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
