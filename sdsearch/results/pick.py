"""Pick a candidate of a stored study and write it as a trainer config for ``sdsearch train``.

A trainer config is a space with every value fixed (docs/ARCHITECTURE.md), so an export is the
chosen trial's stored ``TrialConfig`` with the chosen exit as ``deploy.exit``, plus a
``provenance`` section that says where it came from. Nothing is re-sampled: the stored config is the
truth, so the exported model is the one that was measured (up to training noise).

Picks:
    ``knee`` (default): the knee of the front (:attr:`sdsearch.results.front.Front.knee`).
    ``best``: highest accuracy on the front; ties go to fewer MACs.
    ``trial:N``: trial N with the exit it deployed during the search.
    ``trial:N:EXIT``: trial N deploying EXIT (``1``, ``2``, ``3`` or ``final``), e.g. a shallow exit
    that fits a smaller device.
    ``trial:N:EXIT@WIDTH``: an elastic trial's EXIT at WIDTH times its ``backbone.width``: the plain
    config of that network (``TrialConfig.at_width``), ``provenance.width`` naming the multiplier.
"""

from __future__ import annotations

import datetime
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sdsearch.core.config import TrialConfig
from sdsearch.core.errors import ConfigError, StudyError
from sdsearch.core.exits import FINAL, candidate_name, split_candidate
from sdsearch.core.files import output_file, write_atomic
from sdsearch.results.budget import effective_budget
from sdsearch.results.front import Candidate, StudyRecord, build_front, is_trained, trial_candidates
from sdsearch.results.read import read_study
from sdsearch.space.document import config_to_document
from sdsearch.store import attrs

__all__ = ["export_config", "parse_pick"]

_PICK = re.compile(r"^trial:(\d+)(?::([A-Za-z0-9]+(?:@[0-9.]+)?))?$")
_PICK_FORMS = (
    "best, knee, trial:N, trial:N:EXIT or trial:N:EXIT@WIDTH (e.g. trial:12, trial:12:2, trial:12:final@0.5)"
)


def parse_pick(pick: str) -> tuple[str, int | None, str | None]:
    """``"knee"`` -> ``("knee", None, None)``; ``"trial:12:2"`` -> ``("trial", 12, "2")``;
    ``"trial:12:final@0.5"`` -> ``("trial", 12, "final@0.5")`` (a width of an elastic trial).

    Raises:
        ConfigError: anything else, listing the accepted forms.
    """
    text = str(pick).strip()
    if text in ("best", "knee"):
        return text, None, None
    match = _PICK.match(text)
    if not match:
        raise ConfigError(f"{pick!r} is not one of {_PICK_FORMS}", key="pick")
    return "trial", int(match.group(1)), match.group(2)


def export_config(
    source: str,
    *,
    study_name: str | None = None,
    pick: str = "knee",
    budget: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    out: str | Path | None = None,
    candidates: bool = False,
) -> dict[str, Any]:
    """Build (and optionally write) the trainer config of one candidate of a study.

    Args:
        source: a space YAML path, a storage URL or a ``.db`` path.
        study_name: the study, when the storage holds several.
        pick: ``knee``, ``best``, ``trial:N``, ``trial:N:EXIT`` or ``trial:N:EXIT@WIDTH`` (see the
            module docstring).
        budget: tighter limits for ``knee`` / ``best`` (e.g. ``{"macs": 1e6}``); a ``trial:`` pick
            outside it is exported with a warning, since it was asked for by name.
        epochs: override ``train.epochs``, e.g. to train the final model longer than the search did.
        out: write the document there as YAML (parent folders are created).
        candidates: pick ``knee`` / ``best`` from the (trial, exit) candidates front instead of the
            trials front, as ``sdsearch show --candidates`` shows it.

    Returns:
        The trainer-config document (``name``, ``seed``, ``data``, ``train``, ``space`` with every
        value fixed, ``deploy: {exit}``, ``provenance``).

    Raises:
        ConfigError: (exit 2) a bad pick, an unknown trial or exit, or bad ``epochs`` / ``budget``.
        StudyError: (exit 1) the study cannot be read, or has no feasible trial for knee / best.

    Example:
        >>> doc = export_config("spaces/iot_budget.yaml", pick="trial:7:2", out="t7.yaml")  # doctest: +SKIP
        >>> doc["deploy"], doc["provenance"]["trial"]  # doctest: +SKIP
        ({'exit': '2'}, 7)
    """
    kind, number, exit_name = parse_pick(pick)
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"must be an integer >= 1, got {epochs!r}", key="epochs")
    record = read_study(source, study_name=study_name)
    if number is not None:  # trial:N[:EXIT]
        chosen = _pick_trial(record, number, exit_name, budget)
    else:
        front = build_front(record, candidates=candidates, budget=budget)
        chosen = front.knee if kind == "knee" else front.best["accuracy"]
        if kind == "knee" and front.knee_note:
            warnings.warn(f"{front.knee_note}: trial {chosen.trial} exit {chosen.name}", stacklevel=2)

    try:
        stored = TrialConfig.from_dict(chosen.config)
        if chosen.width is not None:  # a width of an elastic trial: its plain network, trained alone
            stored = stored.at_width(chosen.width)
        config = stored.replace(deploy=stored.deploy.replace(exit=chosen.exit))
    except (KeyError, TypeError, ValueError) as exc:
        raise StudyError(
            f"{record.study_name}: trial {chosen.trial}: stored config cannot be read ({exc}); "
            "was the study written by another sdsearch version?"
        ) from None
    if epochs is not None:
        config = config.replace(train=config.train.replace(epochs=epochs))

    provenance = {
        "study": record.study_name,
        "trial": chosen.trial,
        "exit": chosen.exit,
        **({} if chosen.width is None else {"width": chosen.width}),
        "pick": str(pick),
        "storage": record.storage,
        "values": dict(chosen.metrics),
        # What the values were measured under: train refuses a config whose loss has changed since.
        "conventions": dict(record.conventions),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    worker = next((t.user_attrs.get(attrs.WORKER) for t in record.trials if t.number == chosen.trial), None)
    if isinstance(worker, dict) and worker.get("threads"):
        # CPU training is deterministic for a given thread count; train reuses it to reproduce the trial.
        provenance["threads"] = int(worker["threads"])
    suffix = "" if chosen.exit == FINAL else f"-exit{chosen.exit}"
    if chosen.width is not None:
        suffix += f"-width{chosen.width:g}"
    document = config_to_document(
        config, name=f"{record.study_name}-trial{chosen.trial}{suffix}", provenance=provenance
    )
    if out is not None:
        _write(document, Path(out))
    return document


def _pick_trial(
    record: StudyRecord, number: int, exit_name: str | None, budget: Mapping[str, Any] | None
) -> Candidate:
    """The candidate ``trial:N[:EXIT]`` names, or a ConfigError that says what can be picked."""
    trial = next((t for t in record.trials if t.number == number), None)
    show = "list the front with `sdsearch show` (add --candidates for every exit)"
    if trial is None:
        last = max((t.number for t in record.trials), default=-1)
        have = f"trials 0-{last}" if last >= 0 else "no trials"
        raise ConfigError(f"study {record.study_name!r} has no trial {number} ({have}); {show}", key="pick")
    if attrs.REJECTED in trial.user_attrs:
        reason = trial.user_attrs[attrs.REJECTED]
        raise ConfigError(f"trial {number} was rejected ({reason}) and never trained; {show}", key="pick")
    if attrs.DUPLICATE_OF in trial.user_attrs:
        twin = trial.user_attrs[attrs.DUPLICATE_OF]
        raise ConfigError(
            f"trial {number} trained nothing: it is the same training as trial {twin}; pick trial:{twin}",
            key="pick",
        )
    exits = trial_candidates(trial, record.objectives) if is_trained(trial) else None
    if not exits:
        raise ConfigError(
            f"trial {number} is {trial.state.name}, not a trained (COMPLETE) trial with a cost record; {show}",
            key="pick",
        )
    names = [c.name for c in exits]
    if exit_name is not None:
        try:  # final@1.0 names final@1
            exit_name = candidate_name(*split_candidate(exit_name))
        except ValueError as exc:
            raise ConfigError(str(exc), key="pick") from None
    if exit_name is not None and exit_name not in names:
        forms = ", ".join(f"trial:{number}:{n}" for n in names)
        what = "candidates" if any(c.width is not None for c in exits) else "exits"
        raise ConfigError(
            f"trial {number} has {what} {', '.join(names)}, not {exit_name!r}; pick one of {forms}",
            key="pick",
        )
    chosen = next(c for c in exits if (c.deployed if exit_name is None else c.name == exit_name))
    limits = effective_budget(record.budget, budget)
    over = [m for m, limit in limits.items() if chosen.value(m) > limit]
    if over:
        warnings.warn(
            f"trial {number} exit {chosen.name} exceeds the budget on {', '.join(over)}; "
            "exporting it as asked",
            stacklevel=3,
        )
    return chosen


def _write(document: Mapping[str, Any], path: Path) -> None:
    prov = document.get("provenance", {})
    header = (
        f"# Trainer config exported by sdsearch from study {prov.get('study')}, trial {prov.get('trial')}, "
        f"exit {prov.get('exit')}{_at_width(prov.get('width'))}.\n"
        f"# Train it with: sdsearch train {path}\n"
    )
    path = output_file(path, key="out")
    body = yaml.dump(dict(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    write_atomic(path, header + body)


def _at_width(width: float | None) -> str:
    return "" if width is None else f" at {width:g} x its width"


class _Dumper(yaml.SafeDumper):
    """Safe YAML with lists inline (``placement: [1, 3]``), as space files write them."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)
