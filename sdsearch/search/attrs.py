"""Names of everything sdsearch stores in an Optuna study, in one place.

Readers (front, report, export) and writers (searcher, runner) import these constants, so the
stored format has one definition. Values are JSON-serialisable (Optuna's RDB storage requires it).

Study user attrs:
    ``SPEC_HASH``: stable hash of the parts of the space file that define the study.
    ``SPEC``: ``{"document": the validated space document (storage masked), "study_spec":
    Space.study_spec(), "source": the file}``, so a study can be shown and exported
    without the YAML file and a changed space can name the keys that changed.
    ``OBJECTIVES``: list of objective names, e.g. ``["accuracy", "params", "macs"]``.
    ``BUDGET``: dict metric -> limit (numbers), e.g. ``{"params": 50000, "macs": 2000000}``.
    ``TARGET``: the number of trained trials the last ``sdsearch run`` aimed for.

Trial user attrs:
    ``CONFIG``: ``TrialConfig.to_dict()`` of the trial (set for every trial, rejected ones too).
    ``COST``: ``{"params": int, "macs": int, "flops": int}`` of the deployed exit.
    ``CANDIDATES``: list of ``{"exit": "1"|"2"|"3"|"final", "accuracy": float, "params": int,
    "macs": int, "flops": int}``, one per exit of a trained trial (best-epoch-free: last epoch).
    ``REJECTED``: reason a config was never trained, e.g. ``"budget"``; such trials never count.
    ``FAIL_REASON``: one line saying why a trial FAILed (NaN loss, exception, out of memory).
    ``EPOCHS_DONE``: epochs trained (PRUNED and FAIL trials may have fewer than configured).
    ``RETRY_OF``: number of the orphaned trial a re-enqueued trial repeats.
    ``INTERRUPTED``: true on a trial its driver left RUNNING (killed, Ctrl-C), told FAIL on the next
    run and re-enqueued once; such trials do not count toward ``trials``.
    ``WORKER``: ``{"node": ..., "pid": ..., "started": unix time, "finished": unix time}`` of the run.

Constraints are stored with ``Trial.set_constraint(metric, value - limit)`` (Optuna 5), one per
budget metric; ``FrozenTrial.constraints`` reads them back as a dict (all <= 0 means feasible).
"""

from __future__ import annotations

SPEC_HASH = "sdsearch:spec_hash"
SPEC = "sdsearch:spec"
OBJECTIVES = "sdsearch:objectives"
BUDGET = "sdsearch:budget"
TARGET = "sdsearch:target"

CONFIG = "config"
COST = "cost"
CANDIDATES = "candidates"
REJECTED = "rejected"
FAIL_REASON = "fail_reason"
EPOCHS_DONE = "epochs_done"
RETRY_OF = "retry_of"
INTERRUPTED = "interrupted"
WORKER = "worker"

REJECTED_BUDGET = "budget"
REJECTED_INVALID = "invalid"

#: Objective directions: accuracy is maximised, cost metrics minimised.
DIRECTIONS = {"accuracy": "maximize", "params": "minimize", "macs": "minimize", "flops": "minimize"}
COST_METRICS = ("params", "macs", "flops")
