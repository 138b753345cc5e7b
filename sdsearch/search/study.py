"""The study's lifecycle across runs: its sampler, its driver lock, creating or resuming it, and the
trials a dead driver left RUNNING.

The storage is the only truth (docs/ARCHITECTURE.md): a resumed study is recognised by the hash of
its space; a changed space, or a study whose metrics were stored under older conventions
(:func:`sdsearch.core.metrics.conventions`), is refused with what changed unless ``fresh`` (the old
study is kept under a suffixed name); orphans are failed and re-run once with Optuna's public
``fail_stale_trials`` and ``RetryHeartbeatStaleTrialCallback``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from collections.abc import Iterator
from typing import Any

from sdsearch.core.errors import SpaceError, StudyError, StudyLockedError
from sdsearch.core.metrics import (
    changed_conventions,
    conventions,
    describe_changes,
    directions,
    stored_conventions,
)
from sdsearch.core.registry import SAMPLERS
from sdsearch.space.document import diff_documents
from sdsearch.space.space import Space
from sdsearch.store import attrs
from sdsearch.store.faults import disk_full_error
from sdsearch.store.storage import retry_interrupted
from sdsearch.store.urls import artifacts_folder, artifacts_root, mask_url, sqlite_path, study_artifacts

__all__ = ["find_orphans", "make_sampler", "prepare_study", "recover_orphans", "study_lock"]


# -- samplers ------------------------------------------------------------------------------------


def make_sampler(space: Space, *, seed: int) -> Any:
    """The space's Optuna sampler; a bad option combination is reported against ``sampler``."""
    import optuna

    sampler_class = getattr(optuna.samplers, SAMPLERS.get(space.sampler.type).cls)
    try:
        with warnings.catch_warnings():  # the YAML chose it; Optuna's "experimental" note is noise here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return sampler_class(seed=seed, **dict(space.sampler.options))
    except (TypeError, ValueError) as exc:
        raise SpaceError(
            space.source, "sampler", f"{space.sampler.type} rejected its options: {exc}"
        ) from None


# -- the study -----------------------------------------------------------------------------------


@contextlib.contextmanager
def study_lock(storage_url: str, study_name: str) -> Iterator[None]:
    """One driver per SQLite study file: an exclusive ``flock`` on ``<db>.lock`` holding our pid.

    Server databases need no lock: several drivers may share a study (heartbeats find dead ones).
    """
    path = sqlite_path(storage_url)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with _disk_full_names(storage_url):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StudyLockedError(
                f"study {study_name} in {path} is already running (pid {pid}); wait for it to finish or stop it"
            ) from None
        with _disk_full_names(storage_url):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def _disk_full_names(storage_url: str) -> Iterator[None]:
    """The lock file lives beside the store: a full disk there is the store's DiskFullError."""
    from sdsearch.core.files import is_disk_full

    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full_error(storage_url, "taking the study's lock") from None


def _free_name(existing: set[str], name: str) -> str:
    n = 1
    while f"{name}.{n}" in existing:
        n += 1
    return f"{name}.{n}"


def _rename_study(storage: Any, old: str, new: str) -> None:
    """Keep an old study under a new name: Optuna has no rename, so copy it, then delete the original
    (public ``copy_study`` / ``delete_study``; if the copy fails, the original is untouched)."""
    import optuna

    optuna.copy_study(from_study_name=old, from_storage=storage, to_storage=storage, to_study_name=new)
    optuna.delete_study(study_name=old, storage=storage)


def prepare_study(space: Space, storage: Any, *, fresh: bool = False) -> Any:
    """Create or load the space's study, refusing a changed space unless ``fresh``.

    Returns an ``optuna.Study`` whose sampler is seeded from (seed, number of trials so far), so a
    resumed run does not replay the first run's random draws.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    spec_hash = space.spec_hash()
    if space.name in names:
        existing = optuna.load_study(study_name=space.name, storage=storage)
        stored = existing.user_attrs.get(attrs.SPEC_HASH)
        # Another driver may have created the study a moment ago and not yet written its attributes.
        adopting = (
            stored is None
            and not existing.user_attrs
            and not existing.get_trials(deepcopy=False)
            and [d.name.lower() for d in existing.directions] == directions(space.objectives)
        )
        if adopting:
            stored = spec_hash
        if stored is None and not fresh:
            raise StudyError(
                f"study {space.name} in {mask_url(space.storage)} was not created by sdsearch; "
                "choose another name or storage, or pass --fresh to start anew (the old one is kept)"
            )
        if stored != spec_hash and not fresh:
            old = existing.user_attrs.get(attrs.SPEC, {})
            changes = diff_documents(old.get("study_spec", {}), space.study_spec()) or ["(unknown)"]
            shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
            raise StudyError(
                f"{space.source}: the space changed since study {space.name} started ({shown}); "
                f"run with --fresh to start a new study (the old one is kept as {_free_name(names, space.name)})"
            )
        if not adopting and not fresh:
            _refuse_older_conventions(space, existing.user_attrs, _free_name(names, space.name))
        if fresh:
            _rename_study(storage, space.name, _free_name(names, space.name))
    n_before = 0 if fresh or space.name not in names else len(existing.trials)
    study = optuna.create_study(
        storage=storage,
        study_name=space.name,
        directions=directions(space.objectives),
        sampler=make_sampler(space, seed=space.seed * 1_000_003 + n_before),
        load_if_exists=True,
    )
    if study.user_attrs.get(attrs.SPEC_HASH) != spec_hash:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(space.objectives))
        study.set_user_attr(attrs.SPEC_HASH, spec_hash)
        study.set_user_attr(
            attrs.SPEC,
            {
                "document": {**space.document, "storage": mask_url(space.storage)},
                "study_spec": space.study_spec(),
                "source": space.source,
            },
        )
        study.set_user_attr(attrs.OBJECTIVES, list(space.objectives))
        study.set_user_attr(attrs.BUDGET, dict(space.budget))
        study.set_user_attr(attrs.DTYPE, space.deploy.dtype)
    if attrs.ARTIFACTS not in study.user_attrs:  # its own folder: a study renamed by --fresh keeps its files
        folder = f"{space.name}-{storage.get_study_id_from_name(space.name)}"  # every driver names it alike
        study.set_user_attr(attrs.ARTIFACTS, study_artifacts(space.storage, space.artifacts, folder))
    else:
        _note_moved_artifacts(space, study.user_attrs[attrs.ARTIFACTS])
    current = _conventions(space)
    if study.user_attrs.get(attrs.CONVENTIONS) != current:  # new, adopted, or legacy with today's meaning
        study.set_user_attr(attrs.CONVENTIONS, current)
    return study


def _note_moved_artifacts(space: Space, stored: str) -> None:
    """``artifacts:`` changed since the study began: its weights stay where they are, and say so."""
    if space.artifacts is None:
        return
    folder = artifacts_folder(space.storage, stored).resolve()
    if folder.parent != artifacts_root(space.storage, space.artifacts).resolve():
        warnings.warn(
            f"{space.source}: artifacts: study {space.name} keeps its weights in {folder}, chosen when it began; "
            "the new folder applies to studies started with --fresh",
            UserWarning,
            stacklevel=3,
        )


def _conventions(space: Space) -> dict[str, str]:
    """What the space's stored metrics count today (its dtype and platform)."""
    return conventions(space.deploy.dtype, space.deploy.platform)


def _refuse_older_conventions(space: Space, user_attrs: dict[str, Any], kept_as: str) -> None:
    """A study whose metrics were stored under other conventions is not resumed: its front would mix
    two meanings of one figure."""
    stored = stored_conventions(user_attrs.get(attrs.CONVENTIONS), space.deploy.dtype)
    changes = changed_conventions(stored, _conventions(space))
    if changes:
        raise StudyError(
            f"{space.source}: study {space.name} stores {', '.join(changes)} under older conventions "
            f"({describe_changes(changes)}); run with --fresh to start a new study (the old one is kept as {kept_as})"
        )


def recover_orphans(study: Any, storage: Any, trials: list[Any], reason: str) -> int:
    """Tell RUNNING ``trials`` FAIL (``interrupted``) and re-run each once with the same params.

    The re-run is queued by Optuna's ``RetryHeartbeatStaleTrialCallback(max_retry=1)``, the public
    way stale trials are retried, so a config that kills its driver cannot loop forever. Returns the
    number re-queued.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    requeued = 0
    for handle in trials:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, handle.number)
        trial = storage.get_trial(trial_id)  # the stored state, whatever handle we were given
        if trial.state != TrialState.RUNNING:
            continue
        try:  # a finished trial takes no attrs, so say why first
            storage.set_trial_user_attr(trial_id, attrs.INTERRUPTED, True)
            storage.set_trial_user_attr(trial_id, attrs.FAIL_REASON, reason)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # another driver finished it a moment ago
            continue
        requeued += retry_interrupted(study, storage.get_trial(trial_id))
    return requeued


def find_orphans(study: Any, storage: Any, *, shared: bool) -> list[Any]:
    """RUNNING trials no live driver owns: all of them under the SQLite lock; on a shared server
    study, those Optuna finds stale and those whose driver on this host is gone."""
    import optuna
    from optuna.trial import TrialState

    if shared:
        with warnings.catch_warnings():  # heartbeats are experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # fails them and queues their retries
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return running if not shared else [t for t in running if _driver_gone(t)]


def _driver_gone(trial: Any) -> bool:
    """Whether the driver that asked for ``trial`` ran on this host and no longer runs."""
    import socket

    from sdsearch.search.searcher import process_start_time

    driver = trial.user_attrs.get(attrs.DRIVER) or {}
    if driver.get("host") != socket.gethostname() or not driver.get("pid"):
        return False  # another host's driver: only its heartbeats can tell
    pid = int(driver["pid"])
    if pid == os.getpid():
        return False
    started = process_start_time(pid)
    return started is None or (driver.get("started") is not None and started != driver["started"])
