"""A study trial's trained weights, as the network an exported config deploys: no retraining.

Every trial that completes leaves its weights in its study's folder (``store.attrs.CHECKPOINT``). An
exported trainer config names its trial (``provenance``); :func:`trained_network` finds that trial's
checkpoint, rebuilds the trial's network (an elastic trial's whole :class:`ElasticNet`) and returns the
network of the exported candidate: the trial's own, or its slice at ``provenance.width``. What it
deploys is what the study measured: its validation accuracy on the trial's split is the stored one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdsearch.core.config import TrialConfig
from sdsearch.core.errors import ConfigError, StudyError
from sdsearch.core.exits import ANYTIME, FINAL, candidate_name
from sdsearch.data.datasets import DataShape
from sdsearch.results.read import read_study
from sdsearch.store import attrs

__all__ = ["TrainedTrial", "check_same_network", "trained_network", "trained_trial"]


@dataclass(frozen=True)
class TrainedTrial:
    """Where a candidate's weights are, and what the study measured for it.

    Attributes:
        study, trial: the study and trial number the weights come from.
        config: the trial's stored config (for an elastic trial, the elastic one).
        width: the candidate's multiplier of an elastic trial (None otherwise).
        exit: the exported exit.
        checkpoint: the trial's weights file.
        val_accuracy: the candidate's stored float32 validation accuracy (None where not stored).
        epochs_done: epochs the trial trained.
    """

    study: str
    trial: int
    config: TrialConfig
    width: float | None
    exit: str
    checkpoint: Path
    val_accuracy: float | None
    epochs_done: int


def trained_trial(provenance: Mapping[str, Any], *, storage: str | None = None) -> TrainedTrial:
    """The trained trial an exported config's ``provenance`` names.

    Args:
        provenance: the ``provenance`` block ``sdsearch export`` writes (study, storage, trial, exit,
            and width for an elastic trial's candidate).
        storage: the storage URL, when the stored one is masked (a password) or has moved.

    Raises:
        ConfigError: (exit 2, key ``provenance``) no study or trial named, or a masked storage and no
            ``storage`` given.
        StudyError: (exit 1) the study or trial cannot be read, or its weights were not kept.
    """
    study, number = provenance.get("study"), provenance.get("trial")
    url = storage or provenance.get("storage")
    if not study or not isinstance(number, int) or not url:
        raise ConfigError(
            "--from-study deploys a trial's trained weights: it needs a config written by `sdsearch export`, "
            "whose provenance names the study, its storage and the trial",
            key="provenance",
        )
    if "***" in str(url):
        raise ConfigError(
            f"the stored storage URL {url} hides its password; give the full URL with --storage",
            key="provenance",
        )
    record = read_study(str(url), study_name=str(study))
    trial = next((t for t in record.trials if t.number == number), None)
    if trial is None or attrs.CONFIG not in trial.user_attrs:
        raise StudyError(f"study {study} has no trial {number} with a stored config; export it again")
    retrain = "train the exported config from scratch (the same command without --from-study)"
    kept = trial.user_attrs.get(attrs.CHECKPOINT)
    if not kept or not record.artifacts:
        raise StudyError(f"trial {number} of study {study} kept no trained weights; {retrain}")
    checkpoint = Path(record.artifacts) / str(kept["file"])
    if not checkpoint.is_file():
        raise StudyError(f"{checkpoint}: trial {number}'s trained weights are missing; {retrain}")
    width = provenance.get("width")
    width = None if width is None else float(width)
    exit_name = str(provenance.get("exit"))
    # The float32 figure of the static exit: what evaluating the float32 network reproduces (an
    # int8-scored trial keeps it beside its int8 accuracy; an anytime one is scored on its final exit).
    name = candidate_name(FINAL if exit_name == ANYTIME else exit_name, width)
    stored = next(
        (
            c
            for c in trial.user_attrs.get(attrs.CANDIDATES) or []
            if candidate_name(str(c["exit"]), c.get("width")) == name
        ),
        {},
    )
    return TrainedTrial(
        study=str(study),
        trial=number,
        config=TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG]),
        width=width,
        exit=exit_name,
        checkpoint=checkpoint,
        val_accuracy=stored.get(attrs.FLOAT32_ACCURACY, stored.get("accuracy")),
        epochs_done=int(trial.user_attrs.get(attrs.EPOCHS_DONE, 0)),
    )


def check_same_network(config: TrialConfig, trained: TrainedTrial) -> None:
    """The exported config must still describe the trial's network, data and split (its seed): the
    weights fit nothing else. ``train`` and ``loss`` may differ (nothing is trained); ``deploy`` too.

    Raises:
        ConfigError: (key ``provenance``) the keys that differ.
    """
    want = trained.config if trained.width is None else trained.config.at_width(trained.width)
    changed = [
        key
        for section in ("model", "data", "seed")
        for key, value in _leaves(section, getattr(config, section)).items()
        if _leaves(section, getattr(want, section)).get(key) != value
    ]
    if changed:
        raise ConfigError(
            f"{', '.join(changed[:3])} differ from trial {trained.trial}'s; --from-study deploys the trial's "
            "own network: export it again, or train this config without --from-study",
            key="provenance",
        )


def _leaves(prefix: str, value: Any) -> dict[str, Any]:
    """Dotted keys of a record's values (``model.backbone.width``), for naming what differs."""
    data = value.to_dict() if hasattr(value, "to_dict") else value
    if not isinstance(data, dict):
        return {prefix: data}
    return {k: v for name, item in data.items() for k, v in _leaves(f"{prefix}.{name}", item).items()}


def trained_network(trained: TrainedTrial, shape: DataShape) -> Any:
    """The trial's network with its trained weights, at the candidate's width: a ``SelfDistillNet``.

    Raises:
        StudyError: the checkpoint does not hold the trial's network (another file, or another config).
    """
    from sdsearch.training.checkpoint import load_checkpoint
    from sdsearch.training.fit import build

    try:
        payload = load_checkpoint(trained.checkpoint)
    except (ValueError, RuntimeError, OSError) as exc:
        raise StudyError(
            f"{trained.checkpoint}: cannot be read as trial {trained.trial}'s weights ({exc})"
        ) from None
    if TrialConfig.from_dict(payload["config"]) != trained.config:
        raise StudyError(
            f"{trained.checkpoint}: holds another config than trial {trained.trial} of {trained.study}"
        )
    net, _ = build(trained.config, shape)
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:  # another data shape than the trial's (classes, channels)
        first = str(exc).splitlines()[0]
        raise StudyError(
            f"{trained.checkpoint}: does not fit trial {trained.trial}'s network here ({first})"
        ) from None
    return net.subnet(trained.width) if trained.config.elastic else net
