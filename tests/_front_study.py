"""Stored studies in sdsearch's format, built by hand (no training), for the front/report/export tests.

The layout of :func:`standard_study` is the reference the tests reason about (budget params 60k,
MACs 1.5M; objectives accuracy, params, macs):

=====  ==========  =============================  ===========================================
trial  state       deployed (acc, params, MACs)   other exits
=====  ==========  =============================  ===========================================
0      COMPLETE    final (.90, 40k, 1.2M)         1 (.60, 5k, .3M), 2 (.75, 15k, .6M)
1      rejected    (0, 100k, 3M), constraints > 0
2      COMPLETE    final (.85, 20k, .8M)          2 (.70, 8k, .4M)
3      COMPLETE    final (.93, 55k, 2M) over MACs 1 (.65, 6k, .35M), 3 (.88, 30k, 1.0M)
4      FAIL        fail_reason "nan loss"
5      PRUNED      epochs_done 2
6      COMPLETE    final (.80, 50k, 1.4M)         1 (.55, 6k, .35M)       (dominated)
7      RUNNING
8      COMPLETE    final (.70, 9k, .3M)           none
=====  ==========  =============================  ===========================================
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sdsearch.config import BackboneConfig, BranchesConfig, ModelConfig, TrialConfig
from sdsearch.search import attrs

OBJECTIVES = ("accuracy", "params", "macs")
BUDGET = {"params": 60_000.0, "macs": 1_500_000.0}


_TEMPLATE: list[Path] = []


def storage_url(directory: Path, name: str = "study.db") -> str:
    """A fresh SQLite storage in ``directory``, copied from an empty Optuna database made once.

    Creating Optuna's schema costs ~0.7 s per file; copying a template costs nothing.
    """
    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="sdsearch-front-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        url = f"sqlite:///{folder / 'template.db'}"
        optuna.create_study(storage=url, study_name="template")
        optuna.delete_study(storage=url, study_name="template")
        _TEMPLATE.append(folder / "template.db")
    path = Path(directory) / name
    shutil.copyfile(_TEMPLATE[0], path)
    return f"sqlite:///{path}"


def config(
    placement: tuple[int, ...] = (1, 2, 3), *, arch: str = "resnet", width: float = 0.25
) -> dict[str, Any]:
    """A stored CONFIG user attr (``TrialConfig.to_dict()``)."""
    model = ModelConfig(
        backbone=BackboneConfig(arch=arch, width=width, depth=1), branches=BranchesConfig(placement=placement)
    )
    return TrialConfig(model=model).to_dict()


def create_study(
    url: str,
    name: str = "toy",
    *,
    objectives: tuple[str, ...] = OBJECTIVES,
    budget: dict[str, float] | None = None,
) -> optuna.Study:
    """An empty study with the study attrs the searcher writes."""
    budget = dict(BUDGET) if budget is None else budget
    study = optuna.create_study(
        storage=url, study_name=name, directions=[attrs.DIRECTIONS[m] for m in objectives]
    )
    with warnings.catch_warnings():  # experimental in Optuna 5, but what the searcher calls
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    study.set_user_attr(attrs.OBJECTIVES, list(objectives))
    study.set_user_attr(attrs.BUDGET, budget)
    study.set_user_attr(attrs.SPEC, {"name": name, "objectives": list(objectives), "budget": budget})
    study.set_user_attr(attrs.SPEC_HASH, "0123456789abcdef")
    return study


def trained(
    study: optuna.Study,
    deployed: tuple[float, int, int],
    exits: dict[str, tuple[float, int, int]] | None = None,
    *,
    placement: tuple[int, ...] | None = None,
    arch: str = "resnet",
) -> None:
    """Add a trained COMPLETE trial: deployed exit ``final`` plus shallow ``exits``."""
    exits = dict(exits or {})
    placement = tuple(int(e) for e in exits) if placement is None else placement
    candidates = [_cand(name, *v) for name, v in {**exits, "final": deployed}.items()]
    objectives = study.user_attrs[attrs.OBJECTIVES]
    budget = study.user_attrs[attrs.BUDGET]
    cost = _cand("final", *deployed)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            values=[cost[m] for m in objectives],
            user_attrs={
                attrs.CONFIG: config(placement, arch=arch),
                attrs.COST: {m: cost[m] for m in attrs.COST_METRICS},
                attrs.CANDIDATES: candidates,
                attrs.EPOCHS_DONE: 4,
            },
            constraints={m: float(cost[m] - limit) for m, limit in budget.items()},
        )
    )


def rejected(study: optuna.Study, params: int, macs: int) -> None:
    """Add a budget-rejected config the way the searcher tells it: COMPLETE, accuracy 0, constraints > 0."""
    cost = _cand("final", 0.0, params, macs)
    budget = study.user_attrs[attrs.BUDGET]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            values=[cost[m] for m in study.user_attrs[attrs.OBJECTIVES]],
            user_attrs={
                attrs.CONFIG: config(),
                attrs.COST: {m: cost[m] for m in attrs.COST_METRICS},
                attrs.REJECTED: attrs.REJECTED_BUDGET,
            },
            constraints={m: float(cost[m] - limit) for m, limit in budget.items()},
        )
    )


def other(study: optuna.Study, state: TrialState, **user_attrs: Any) -> None:
    """Add a FAIL / PRUNED / RUNNING trial with the given user attrs."""
    study.add_trial(optuna.trial.create_trial(state=state, user_attrs={attrs.CONFIG: config(), **user_attrs}))


def standard_study(url: str, name: str = "toy") -> optuna.Study:
    """The study in the module docstring."""
    study = create_study(url, name)
    trained(study, (0.90, 40_000, 1_200_000), {"1": (0.60, 5_000, 300_000), "2": (0.75, 15_000, 600_000)})
    rejected(study, 100_000, 3_000_000)
    trained(study, (0.85, 20_000, 800_000), {"2": (0.70, 8_000, 400_000)})
    trained(
        study,
        (0.93, 55_000, 2_000_000),
        {"1": (0.65, 6_000, 350_000), "3": (0.88, 30_000, 1_000_000)},
        arch="mobilenetv2",
    )
    other(study, TrialState.FAIL, **{attrs.FAIL_REASON: "nan loss"})
    other(study, TrialState.PRUNED, **{attrs.EPOCHS_DONE: 2})
    trained(study, (0.80, 50_000, 1_400_000), {"1": (0.55, 6_000, 350_000)})
    other(study, TrialState.RUNNING)
    trained(study, (0.70, 9_000, 300_000), placement=())
    return study


def _cand(name: str, accuracy: float, params: int, macs: int) -> dict[str, Any]:
    return {"exit": name, "accuracy": accuracy, "params": params, "macs": macs, "flops": 2 * macs}
