"""Everything sdsearch stores in an Optuna study, and the one classification of a stored trial.

Readers (front, report, export, ``studies``) and writers (searcher, runner) import these
constants, so the stored format has one definition, and they all ask :func:`outcome` what a trial
is, so a count or a front never re-derives it. Values are JSON-serialisable (Optuna's RDB storage
requires it).

Study user attrs:
    ``SPEC_HASH``: stable hash of the parts of the space file that define the study.
    ``SPEC``: ``{"document": the validated space document (storage masked), "study_spec":
    Space.study_spec(), "source": the file}``, so a study can be shown and exported
    without the YAML file and a changed space can name the keys that changed.
    ``OBJECTIVES``: list of objective names, e.g. ``["accuracy", "params", "macs"]``.
    ``BUDGET``: dict metric -> limit in stored units (counts, bytes, ms), e.g. ``{"macs": 2000000}``.
    ``TARGET``: the number of trained trials the last ``sdsearch run`` aimed for.
    ``DTYPE``: ``deploy.dtype`` of the study (what its byte metrics count).
    ``ARTIFACTS``: the study's own folder of files (absolute path; trained trials' weights), chosen when
    the study is created (``store.urls.artifacts_root``) and kept by a study renamed by ``--fresh``.
    ``CONVENTIONS``: ``{metric: convention id}`` of every stored metric whose meaning changed over
    time, e.g. ``{"peak_memory": "tflm-arena:cortex-m", "size": "tflite-bytes"}``
    (:func:`sdsearch.core.metrics.conventions`); a study without it, or without a metric in it,
    stored that metric under its legacy convention.

Trial user attrs:
    ``CONFIG``: ``TrialConfig.to_dict()`` of the trial (set for every trial, rejected ones too).
    ``COST``: ``{metric: value}`` of the deployed exit for every metric known before training
    (params, macs, peak_memory, size, and latency when the study measures it); MACs only, since
    FLOPs are a unit of display (2 x MACs).
    ``CANDIDATES``: list of ``{"exit": "1"|"2"|"3"|"final"|"anytime", "accuracy": float,
    <every COST metric>: value, ...}``, one per exit of a trained trial (last epoch); an elastic
    trial's have ``"width": multiplier`` too, one per (width, exit); an int8-scored trial's keep the
    float32 network's accuracy as ``FLOAT32_ACCURACY``. A PRUNED
    trial's candidates carry ``"partial": true`` and ``"epoch": n``: they were measured at the
    rung where a scheduler stopped it, and never join a front of full-budget points.
    ``DEPLOYED``: for an elastic trial, the candidate whose values Optuna was told, ``EXIT@multiplier``
    (the deployed exit at the widest width that fits the budget); ``COST`` is its cost.
    ``REJECTED``: reason a config was never trained, e.g. ``"budget"``; such trials never count.
    ``FAIL_REASON``: one line saying why a trial FAILed (NaN loss, exception, out of memory).
    ``EPOCHS_DONE``: epochs trained (PRUNED and FAIL trials may have fewer than configured).
    ``INTERRUPTED``: true on a trial its driver left RUNNING (killed, Ctrl-C, lost database),
    told FAIL later and re-run once; such trials do not count toward ``trials``.
    ``DRIVER``: ``{"host", "pid", "started"}`` of the driver that asked for the trial, so a later
    driver on the same host can tell at once that its owner is gone.
    ``WORKER``: ``{"node": ..., "pid": ..., "started": unix time, "finished": unix time}`` of the run.
    ``RESTARTS``: list of ``{"epoch": n, "node": ..., "host": ..., "reason": one line}``, one per
    attempt whose worker died (its Ray node lost, or killed for memory) after reporting epoch n;
    Ray re-ran the trial from the start (once at most), and the trial's state is the last attempt's.
    ``CHECKPOINT``: ``{"file": name in the study's ARTIFACTS folder, "bytes": n}`` of a COMPLETE trial's
    trained weights (``sdsearch.training.checkpoint``: format, config, state_dict), what ``sdsearch
    train --from-study`` deploys without retraining.
    ``FINGERPRINT``: hash of what the trial trains (network, loss, training; see
    ``sdsearch.training.identity``), set before it is trained.
    ``DUPLICATE_OF``: number of the trial that trained what this one would have: it was told that
    trial's result and never trained; it does not count toward ``trials`` nor stand on a front.
    ``ANYTIME``: for a trained trial with shallow exits, the accuracy / expected-MACs curve of early
    exiting on the validation split (see sdsearch.anytime).

Constraints are stored with ``Trial.set_constraint(metric, value - limit)`` (Optuna 5), one per
budget metric; ``FrozenTrial.constraints`` reads them back as a dict (all <= 0 means feasible).
A re-run of an interrupted trial is marked the way Optuna's ``RetryHeartbeatStaleTrialCallback``
marks it (system attr ``failed_trial``).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

SPEC_HASH = "sdsearch:spec_hash"
SPEC = "sdsearch:spec"
OBJECTIVES = "sdsearch:objectives"
BUDGET = "sdsearch:budget"
TARGET = "sdsearch:target"
DTYPE = "sdsearch:dtype"
CONVENTIONS = "sdsearch:conventions"
ARTIFACTS = "sdsearch:artifacts"

CONFIG = "config"
COST = "cost"
CANDIDATES = "candidates"
DEPLOYED = "deployed"
REJECTED = "rejected"
FAIL_REASON = "fail_reason"
EPOCHS_DONE = "epochs_done"
INTERRUPTED = "interrupted"
DRIVER = "driver"
WORKER = "worker"
ANYTIME = "anytime"
FINGERPRINT = "fingerprint"
CHECKPOINT = "checkpoint"
FLOAT32_ACCURACY = "float32_accuracy"
DUPLICATE_OF = "duplicate_of"
RESTARTS = "restarts"

REJECTED_BUDGET = "budget"
REJECTED_INVALID = "invalid"

#: Constraint set on a PRUNED trial: it stopped early, so samplers that read constraints (TPE)
#: rank it with the infeasible, unpromising trials, however few complete trials there are.
STOPPED_EARLY_CONSTRAINT = "stopped_early"


class Outcome(enum.Enum):
    """What a stored trial is, for every reader: counts, fronts, ``studies`` and the live view."""

    COMPLETE = "complete"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    PRUNED = "pruned"
    INTERRUPTED = "interrupted"
    RUNNING = "running"
    WAITING = "waiting"

    @property
    def counts(self) -> bool:
        """Counts toward ``trials``: it was trained (to the end, to a rung, or until it failed)."""
        return self in (Outcome.COMPLETE, Outcome.PRUNED, Outcome.FAILED)

    @property
    def on_front(self) -> bool:
        """Eligible for a front: trained to its full budget."""
        return self is Outcome.COMPLETE


def outcome(trial: FrozenTrial) -> Outcome:
    """The one classification of a stored trial."""
    from optuna.trial import TrialState

    if REJECTED in trial.user_attrs:
        return Outcome.REJECTED
    if DUPLICATE_OF in trial.user_attrs:
        return Outcome.DUPLICATE
    if trial.state == TrialState.FAIL and (
        trial.user_attrs.get(INTERRUPTED, False) or EPOCHS_DONE not in trial.user_attrs
    ):
        return Outcome.INTERRUPTED  # failed by a later driver (or by Optuna's stale-trial check)
    return {
        TrialState.COMPLETE: Outcome.COMPLETE,
        TrialState.FAIL: Outcome.FAILED,
        TrialState.PRUNED: Outcome.PRUNED,
        TrialState.RUNNING: Outcome.RUNNING,
        TrialState.WAITING: Outcome.WAITING,
    }[trial.state]


def count(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials per outcome (every :class:`Outcome` value) plus ``trained``: those that count."""
    counts: Counter[str] = Counter()
    for trial in trials:
        kind = outcome(trial)
        counts[kind.value] += 1
        counts["trained"] += kind.counts
    return {k: counts.get(k, 0) for k in (*(o.value for o in Outcome), "trained")}
