"""Reading stored studies: which study a command means, its frozen snapshot, its fronts, its reports.

The only part of ``results/`` that touches a storage. It never creates a database (``show`` and
``export`` may read while a driver writes), and everything it returns is frozen, so fronts and
reports are pure functions of it (:mod:`sdsearch.results.front`).

Example:
    >>> front = load_front("spaces/iot_budget.yaml", budget={"macs": "1M"})  # doctest: +SKIP
    >>> front.knee.trial, front.knee.exit, front.hypervolume  # doctest: +SKIP
    (12, 'final', 0.41)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdsearch.core.errors import ConfigError, StudyError, StudySelectionError
from sdsearch.core.metrics import METRICS, stored_conventions, stored_limits
from sdsearch.results.front import Front, StudyRecord, build_front
from sdsearch.space.load import load_space
from sdsearch.store import attrs
from sdsearch.store.storage import open_storage, study_names
from sdsearch.store.urls import artifacts_folder, mask_url, storage_url

__all__ = ["anytime_of", "list_studies", "load_front", "read_study", "resolve_study"]

_SPACE_SUFFIXES = (".yaml", ".yml")


def resolve_study(source: str, study_name: str | None = None) -> tuple[str, str, Any]:
    """``(storage_url, study_name, storage)`` for a space file or a storage (URL or ``.db`` path),
    the storage opened once (never created).

    A storage that holds exactly one study needs no ``study_name``.

    Raises:
        StudySelectionError: (key ``study_name``) no such study, or several and none named.
        StudyError: the storage holds no study yet.
        ConfigError: (key ``storage``) ``source`` is neither a space file nor a storage.
    """
    if source.endswith(_SPACE_SUFFIXES):
        space = load_space(source)
        return space.storage, study_name or space.name, open_storage(space.storage)
    url = storage_url(source)
    storage = open_storage(url)
    names = study_names(storage)
    if study_name is not None:
        if study_name not in names:
            raise StudySelectionError(
                f"{mask_url(url)} has no study {study_name!r} (studies: {', '.join(names) or 'none'})",
                key="study_name",
            )
        return url, study_name, storage
    if len(names) == 1:
        return url, names[0], storage
    if not names:
        raise StudyError(f"{mask_url(url)}: holds no study yet (run `sdsearch run SPACE` first)")
    raise StudySelectionError(
        f"{mask_url(url)} holds several studies ({', '.join(names)}); name one", key="study_name"
    )


def list_studies(source: str) -> list[dict[str, Any]]:
    """One row per study in a storage (or a space file's storage): name, counts by outcome, target, and
    the bytes of trained weights kept in its folder (``artifacts``)."""
    import optuna

    url = load_space(source).storage if source.endswith(_SPACE_SUFFIXES) else storage_url(source)
    storage = open_storage(url)
    rows = []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        row: dict[str, Any] = {"study": name, **attrs.count(trials)}
        row["target"] = study.user_attrs.get(attrs.TARGET, "")
        # Trained weights kept beside the study (attrs.CHECKPOINT), in bytes: what its folder holds.
        row["weights"] = sum(int((t.user_attrs.get(attrs.CHECKPOINT) or {}).get("bytes", 0)) for t in trials)
        row["artifacts"] = study.user_attrs.get(attrs.ARTIFACTS, "")
        rows.append(row)
    return rows


def read_study(source: str, *, study_name: str | None = None) -> StudyRecord:
    """Read a stored sdsearch study into a :class:`~sdsearch.results.front.StudyRecord` (never creates a database).

    Args:
        source: a space YAML path, a storage URL or a ``.db`` path.
        study_name: needed when the storage holds several.

    Raises:
        StudyError: missing or foreign storage, unknown study, or a study sdsearch did not create.
    """
    url, name, storage = resolve_study(source, study_name)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise StudyError(
            f"{mask_url(url)}: no study named {name!r}; list them with `sdsearch studies`"
        ) from None
    user_attrs = storage.get_study_user_attrs(study_id)
    objectives = user_attrs.get(attrs.OBJECTIVES)
    if not objectives or any(m not in METRICS for m in objectives):
        raise StudyError(
            f"{mask_url(url)}: study {name!r} was not created by sdsearch "
            f"(no valid {attrs.OBJECTIVES!r} study attr); only sdsearch studies can be shown or exported"
        )
    dtype = str(user_attrs.get(attrs.DTYPE, "int8"))
    return StudyRecord(
        study_name=name,
        storage=mask_url(url),
        objectives=tuple(objectives),
        budget=stored_limits(user_attrs.get(attrs.BUDGET) or {}),
        spec=dict(user_attrs.get(attrs.SPEC) or {}),
        trials=tuple(storage.get_all_trials(study_id, deepcopy=False)),
        dtype=dtype,
        conventions=stored_conventions(user_attrs.get(attrs.CONVENTIONS), dtype),
        artifacts=str(artifacts_folder(url, user_attrs[attrs.ARTIFACTS]))
        if attrs.ARTIFACTS in user_attrs
        else None,
    )


def load_front(
    source: str,
    *,
    study_name: str | None = None,
    candidates: bool = False,
    budget: Mapping[str, Any] | None = None,
) -> Front:
    """Read a study and compute its trials front and candidates front.

    Args:
        source: a space YAML path (its ``storage`` and ``name``), a storage URL or a ``.db`` path.
        study_name: the study, when the storage holds several.
        candidates: make :attr:`Front.front` the (trial, exit) candidates front.
        budget: tighter limits, e.g. ``{"macs": 1e6}`` or ``{"params": "20k"}``: what fits a
            smaller device than the one searched for.

    Returns:
        A :class:`~sdsearch.results.front.Front` snapshot.

    Raises:
        StudyError: (exit 1) the storage or study cannot be read, or nothing feasible exists yet.
        ConfigError: (exit 2) a bad ``budget``.

    Example:
        >>> front = load_front("studies/iot_budget.db", candidates=True)  # doctest: +SKIP
        >>> [(c.trial, c.exit) for c in front.front]  # doctest: +SKIP
        [(3, '2'), (7, 'final'), (12, 'final')]
    """
    return build_front(read_study(source, study_name=study_name), candidates=candidates, budget=budget)


def anytime_of(record: StudyRecord, number: int) -> dict[str, Any]:
    """The stored anytime report of trained trial ``number`` (what ``show --anytime`` draws).

    Raises:
        ConfigError: (exit 2, key ``anytime``) no such trial, or one without shallow exits or
            without a report.
    """
    trial = next((t for t in record.trials if t.number == number), None)
    if trial is None:
        raise ConfigError(f"study {record.study_name!r} has no trial {number}", key="anytime")
    report = trial.user_attrs.get(attrs.ANYTIME)
    if not report:
        raise ConfigError(
            f"trial {number} has no anytime report (only trained trials with shallow exits "
            "have one); pick a trial from `sdsearch show --candidates`",
            key="anytime",
        )
    return report
