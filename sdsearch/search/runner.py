"""``sdsearch run``: one fresh Ray Tune run per invocation over a stored Optuna study.

The study storage is the only truth (docs/ARCHITECTURE.md). Each invocation (the study's own steps
are :mod:`sdsearch.search.study`'s):

1. validates the space and opens (or creates) its study; a changed space is refused with the keys
   that changed, unless ``fresh`` (the old study is kept under a suffixed name);
2. takes the study's driver lock (SQLite: one driver per file);
3. tells trials left RUNNING by a dead driver FAIL (``interrupted``) and re-runs each once;
4. counts trained trials and runs only the missing ones through a new ``Tuner`` whose searcher
   (:class:`~sdsearch.search.searcher.SDOptunaSearch`) asks the stored study.

Who moves a trial out of RUNNING: the searcher (rejections in ``suggest``, results in
``on_trial_complete``) and this module (orphans at start; trials in flight at Ctrl-C or on error).
When the storage itself is gone or full at that point, the trials stay RUNNING and the next driver
moves them (its same-host check finds their driver dead at once; heartbeats find the others).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdsearch.core.errors import (
    DiskFullError,
    InfeasibleSpaceError,
    SdsearchError,
    SpaceError,
    StorageUnavailableError,
    causes,
)
from sdsearch.core.metrics import describe_limits, directions
from sdsearch.data.datasets import describe
from sdsearch.search import result_keys as keys
from sdsearch.search.study import find_orphans, prepare_study, recover_orphans, study_lock
from sdsearch.space.load import load_space
from sdsearch.space.space import Space
from sdsearch.store import attrs
from sdsearch.store.storage import open_storage
from sdsearch.store.urls import artifacts_folder, mask_url, sqlite_path, storage_url

__all__ = ["RunSummary", "max_epochs_of", "ray_session", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What one invocation did: counts after it, and what it added."""

    study_name: str
    storage: str
    target: int
    trained_before: int
    trained: int
    counts: Mapping[str, int]
    seconds: float
    #: The sampler proposed only configs the study had trained already: no untried one was left.
    exhausted: bool = False

    @property
    def added(self) -> int:
        return self.trained - self.trained_before


# -- Ray -----------------------------------------------------------------------------------------


def _quiet_ray_env() -> None:
    """Environment Ray reads at import/init: no auth token locally, no console chatter, no loggers."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # A worker that dies is retried or its trial told FAIL with the reason stored; Tune's traceback of
    # the lost actor on the console says nothing more.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")


@contextlib.contextmanager
def ray_session(address: str | None, *, object_store_bytes: int) -> Iterator[bool]:
    """Start (or join) Ray unless it already runs; yields whether this call started it."""
    _quiet_ray_env()
    import ray

    if ray.is_initialized():
        yield False
        return
    kwargs: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "include_dashboard": False,
    }
    if address:
        kwargs.pop("include_dashboard")
        ray.init(address=address, **kwargs)
    else:
        # Local workers are children of this driver: they inherit PYTHONPATH, so a user's backbone
        # module importable here (from the working directory, say) is importable there too.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            dict.fromkeys([*os.environ.get("PYTHONPATH", "").split(os.pathsep), os.getcwd()]).keys() - {""}
        )
        ray.init(object_store_memory=object_store_bytes, **kwargs)
    try:
        yield True
    finally:
        ray.shutdown()


def _check_resources(space: Space) -> None:
    import ray

    available = ray.cluster_resources()
    if space.resources.gpu > available.get("GPU", 0):
        raise SpaceError(
            space.source,
            "resources.gpu",
            f"each trial asks for {space.resources.gpu:g} GPU but the Ray cluster has "
            f"{available.get('GPU', 0):g}; set gpu: 0 to train on CPUs",
        )
    if space.resources.cpu > available.get("CPU", 0):
        raise SpaceError(
            space.source,
            "resources.cpu",
            f"each trial asks for {space.resources.cpu:g} CPUs but the Ray cluster has "
            f"{available.get('CPU', 0):g}; lower resources.cpu",
        )


def max_epochs_of(space: Space) -> int:
    """The most epochs any config of the space trains (the schedulers' ``max_t``)."""
    epochs = space.dims.get("train.epochs")
    if epochs is None:
        return space.train.epochs
    return int(
        {"fixed": epochs.value, "choice": max(epochs.choices or (0,)), "int": epochs.high}[epochs.kind]
    )


def _scheduler(space: Space) -> Any:
    """Stock ASHA on accuracy, or MO-ASHA on the study's objectives (None: train every trial)."""
    setting = space.scheduler
    if setting.type == "none":
        return None
    max_epochs = setting.max_epochs or max_epochs_of(space)
    # A trial that reaches its last epoch ends on its own: stopping it there would cut what follows
    # its last epoch (int8 scores, the anytime report, keeping its weights).
    stop_last_trials = max_epochs < max_epochs_of(space)
    if setting.type == "moasha":
        from sdsearch.search.moasha import MOASHAScheduler

        return MOASHAScheduler(
            objectives=list(space.objectives),
            directions=directions(space.objectives),
            grace_period=setting.grace_epochs,
            reduction_factor=setting.reduction_factor,
            max_t=max_epochs,
            time_attr=keys.TIME,
            stop_last_trials=stop_last_trials,
        )
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr=keys.TIME,
        metric=keys.ACCURACY,
        mode="max",
        max_t=max_epochs,
        grace_period=setting.grace_epochs,
        reduction_factor=setting.reduction_factor,
        stop_last_trials=stop_last_trials,
    )


# -- run -----------------------------------------------------------------------------------------


def run(
    space: Space | str | os.PathLike[str],
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    fresh: bool = False,
    address: str | None = None,
    seed: int | None = None,
    fit_fn: Callable[..., Any] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run (or resume) the search a space describes until ``n_trials`` trials are trained.

    Example:
        >>> summary = run("spaces/iot_budget.yaml")            # doctest: +SKIP
        >>> summary.trained, summary.target                   # doctest: +SKIP
        (12, 12)

    Args:
        space: a :class:`Space` or the path of its YAML file.
        n_trials: trained trials to reach (default: the space's ``trials``); raising it extends a study.
        storage: override the space's storage URL.
        fresh: start a new study; an existing one is kept under a suffixed name.
        address: join a running Ray cluster (``auto`` or ``ray://host:port``).
        seed: override the space's seed.
        fit_fn: replace the training inside each trial (tests and benchmarks use a cheap stand-in,
            ``sdsearch.search.testing.FakeFit``); must be picklable.
        progress: draw the live view.

    Raises:
        SpaceError: bad input (exit 2). StudyError: changed space or older metric conventions,
        locked or foreign storage, infeasible budget (exit 1).
    """
    space = space if isinstance(space, Space) else load_space(space)
    if storage is not None:
        space = dataclasses.replace(space, storage=storage_url(storage, study_name=space.name))
    if seed is not None:
        space = dataclasses.replace(space, seed=seed)
    target = n_trials or space.n_trials
    started = time.time()
    dataset = _load(space)  # a missing or unlearnable dataset is reported before a study is created
    db = open_storage(space.storage, create=True)
    with study_lock(space.storage, space.name):
        study = prepare_study(space, db, fresh=fresh)
        shared = sqlite_path(space.storage) is None
        recover_orphans(
            study,
            db,
            find_orphans(study, db, shared=shared),
            "interrupted: its driver stopped before the trial ended",
        )
        study.set_user_attr(attrs.TARGET, target)
        before = attrs.count(study.get_trials(deepcopy=False))
        missing = target - before["trained"]
        exhausted = False
        if missing > 0:
            exhausted = _search(
                space,
                study,
                db,
                dataset,
                missing=missing,
                done_before=before["trained"],
                target=target,
                address=address,
                fit_fn=fit_fn,
                progress=progress,
            )
        after = attrs.count(study.get_trials(deepcopy=False))
    return RunSummary(
        exhausted=exhausted,
        study_name=space.name,
        storage=mask_url(space.storage),
        target=target,
        trained_before=before["trained"],
        trained=after["trained"],
        counts=after,
        seconds=time.time() - started,
    )


def _load(space: Space) -> Any:
    """The study's dataset without its test split (trials never see it: only `sdsearch train` does)."""
    from sdsearch.data.datasets import load_dataset

    shape = describe(space.data)
    if min(shape.height, shape.width) < 8:
        raise SpaceError(
            space.source, "data", f"images are {shape.height}x{shape.width}; the networks need at least 8x8"
        )
    loaded = load_dataset(space.data, seed=space.seed)
    return dataclasses.replace(loaded, x_test=loaded.x_test[:0], y_test=loaded.y_test[:0])


def _retire(study: Any, storage: Any, searcher: Any) -> None:
    recover_orphans(study, storage, searcher.in_flight, "interrupted: the run stopped before the trial ended")


def _uses_latency(space: Space) -> bool:
    return "latency" in space.objectives or "latency" in space.budget


def _search(
    space: Space,
    study: Any,
    storage: Any,
    dataset: Any,
    *,
    missing: int,
    done_before: int,
    target: int,
    address: str | None,
    fit_fn: Callable[..., Any] | None,
    progress: bool,
) -> bool:
    """Train ``missing`` trials through one fresh Tuner; in-flight trials are retired on any exit.

    Returns whether the space ran out of untried configurations first.
    """
    from sdsearch.core.config import TrialConfig
    from sdsearch.cost.metrics import DeployMetrics
    from sdsearch.search import searcher as searching
    from sdsearch.search.searcher import SDOptunaSearch, SpaceSampler
    from sdsearch.training.identity import training_fingerprint

    cost_fn = DeployMetrics(dataset.shape, latency=_uses_latency(space))
    for trial in study.get_trials(deepcopy=False):  # latencies measured by earlier runs of the study
        if trial.user_attrs.get(attrs.CANDIDATES) and trial.user_attrs.get(attrs.CONFIG):
            cost_fn.remember(
                TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG]), trial.user_attrs[attrs.CANDIDATES]
            )
    searcher = SDOptunaSearch(
        SpaceSampler(space),
        study=study,
        storage=storage,
        objectives=space.objectives,
        budget=space.budget,
        cost_fn=cost_fn,
        max_rejections=searching.MAX_CONSECUTIVE_REJECTIONS,
        fingerprint_fn=functools.partial(training_fingerprint, shape=dataset.shape),
        checkpoints=artifacts_folder(space.storage, study.user_attrs[attrs.ARTIFACTS])
        if attrs.ARTIFACTS in study.user_attrs
        else None,
    )
    store_bytes = max(256 * 2**20, 3 * dataset.nbytes)
    with ray_session(address, object_store_bytes=store_bytes), searcher.heartbeats():
        _check_resources(space)
        try:
            _fit(
                space,
                searcher,
                dataset,
                missing=missing,
                done_before=done_before,
                target=target,
                fit_fn=fit_fn,
                progress=progress,
            )
            if searcher.fatal is not None:
                raise searcher.fatal
        except BaseException:
            # A storage that is gone (or full) fails this too: the first error says more, and the
            # trials left RUNNING are failed and re-run by the next driver (see _orphans).
            with contextlib.suppress(StorageUnavailableError, DiskFullError):
                _retire(study, storage, searcher)
            raise
        _retire(study, storage, searcher)
    if searcher.infeasible:
        raise InfeasibleSpaceError(
            f"{space.source}: budget: {searcher.consecutive_rejections} configs in a row broke the budget "
            f"({describe_limits(space.budget)}); raise the budget or offer smaller widths, depths or fewer exits"
        )
    return searcher.exhausted


def _fit(
    space: Space,
    searcher: Any,
    dataset: Any,
    *,
    missing: int,
    done_before: int,
    target: int,
    fit_fn: Callable[..., Any] | None,
    progress: bool,
) -> None:
    from ray import tune
    from ray.tune.error import TuneError

    from sdsearch.search.progress import LiveView
    from sdsearch.search.trainable import train_trial

    resources = {"cpu": space.resources.cpu, "gpu": space.resources.gpu}
    fn = tune.with_resources(tune.with_parameters(train_trial, dataset=dataset, fit_fn=fit_fn), resources)
    view = LiveView(
        searcher,
        target=target,
        done_before=done_before,
        title=space.name,
        objectives=space.objectives,
    )
    scratch = tempfile.mkdtemp(prefix="sdsearch-ray-")
    tuner = tune.Tuner(
        fn,
        param_space={"threads": max(1, int(space.resources.cpu))},
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(space),
            num_samples=missing,
            max_concurrent_trials=space.resources.concurrent or 0,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{space.name}-{int(time.time())}-{os.getpid()}",
            storage_path=scratch,
            verbose=0,
            callbacks=[view] if progress else [],
            log_to_file=False,
            stop=searcher.stopper(),  # a storage that is gone or full ends the run
            # A worker that dies (its node lost, killed for memory) is not the config's fault: Ray
            # re-runs its trial once, from the start; the searcher records the lost attempt.
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    ctx = view if progress else contextlib.nullcontext()
    try:
        with ctx:
            tuner.fit()
    except TuneError as exc:
        ours = _our_error(exc)
        if ours is None:
            raise
        raise ours from None  # the searcher's own one-line error, not Tune's traceback text
    finally:  # Tune's scratch holds a pickled storage URL (with any password): never leave it behind
        _rmtree(Path(scratch))


def _our_error(exc: BaseException) -> SdsearchError | None:
    """The SdsearchError (e.g. a lost or full storage) behind the TuneError that Tune raises when a
    searcher or callback fails (it wraps the traceback as text; the original is its context)."""
    return next((e for e in causes(exc) if isinstance(e, SdsearchError)), None)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
