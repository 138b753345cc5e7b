"""The keys of a Ray result: what a trial reports, and what the searcher and MO-ASHA read from it.

The contract between the trainable (which never imports Optuna) and the searcher (which never
touches tensors). Keys are flat: Ray nests a key that contains ``/``, and flattens nested dicts.

Example:
    >>> exit_metrics({"2": 0.81, "final": 0.9}, "final")
    {'accuracy_2': 0.81, 'accuracy_final': 0.9, 'accuracy': 0.9}
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ACCURACY",
    "ANYTIME",
    "CHECKPOINT",
    "DEPLOYED",
    "EPOCH",
    "FAIL_REASON",
    "FLOAT32_PREFIX",
    "TIME",
    "WORKER",
    "exit_key",
    "exit_metrics",
]

#: The deployed exit's validation accuracy: the metric Tune and ASHA watch.
ACCURACY = "accuracy"
#: Epochs done so far.
EPOCH = "epoch"
#: Ray's own progress counter (one per report), what the schedulers' rungs count.
TIME = "training_iteration"
#: Set when training raised: why, in one line (the result repeats the last epoch's accuracies).
FAIL_REASON = "fail_reason"
#: Where the trial ran: ``{"node", "host", "pid", "threads", "started", "finished"}``.
WORKER = "worker"
#: The anytime report of a network with shallow exits, as JSON text (it nests several levels).
ANYTIME = "anytime"
#: In the config the searcher hands a trial: the candidate whose accuracy is :data:`ACCURACY` (its
#: deployed exit; for an elastic trial, that exit at the widest width that fits the budget, ``final@0.5``).
DEPLOYED = "deployed"
#: In the config the searcher hands a trial: the file its trained weights go to when it completes.
CHECKPOINT = "checkpoint"
#: Prefix of the float32 accuracies kept beside an int8-scored last report (``float32_accuracy_2``).
FLOAT32_PREFIX = "float32_"


def exit_key(exit_name: str) -> str:
    """The key of one exit's validation accuracy: ``accuracy_<exit>``."""
    return f"{ACCURACY}_{exit_name}"


def exit_metrics(val_accuracy: Mapping[str, float], deploy_exit: str) -> dict[str, float]:
    """Flat results of every exit's accuracy (:func:`exit_key`) plus :data:`ACCURACY`, the deployed exit's."""
    metrics = {exit_key(name): float(acc) for name, acc in val_accuracy.items()}
    metrics[ACCURACY] = float(val_accuracy[deploy_exit])
    return metrics
