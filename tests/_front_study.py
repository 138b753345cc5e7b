"""Stored studies in sdsearch's format, built through the real runner and searcher (no training).

``prepare_study`` writes the study attrs and :class:`SDOptunaSearch` asks, rejects and tells, so the
front, report and export tests read exactly what a run stores and fail when that format changes.
Only the cost of a config comes from a plan (:class:`PlannedCosts`) instead of the meta-device count,
and accuracies from a hand-written result instead of training.

The layout of :func:`standard_study` is the reference the tests reason about (budget params 60k,
MACs 2M; objectives accuracy, params, macs). ``TIGHT`` (MACs 1.5M) makes trial 3 over budget:

=====  ==========  =============================  ===========================================
trial  state       deployed (acc, params, MACs)   other exits
=====  ==========  =============================  ===========================================
0      COMPLETE    final (.90, 40k, 1.2M)         1 (.60, 5k, .3M), 2 (.75, 15k, .6M)
1      rejected    (0, 100k, 3M), constraints > 0
2      COMPLETE    final (.85, 20k, .8M)          2 (.70, 8k, .4M)
3      COMPLETE    final (.93, 55k, 2M)           1 (.65, 6k, .35M), 3 (.88, 30k, 1.0M)  (mobilenetv2)
4      FAIL        fail_reason "nan loss"
5      PRUNED      epochs_done 2 of 4             1 (.50, 5k, .3M) partial
6      COMPLETE    final (.80, 50k, 1.4M)         1 (.55, 6k, .35M)       (dominated)
7      RUNNING
8      COMPLETE    final (.70, 9k, .3M)           none
=====  ==========  =============================  ===========================================
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sqlite3
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import optuna

from sdsearch.core.config import TrialConfig
from sdsearch.core.exits import FINAL
from sdsearch.search import result_keys as keys
from sdsearch.search.searcher import SDOptunaSearch, SpaceSampler
from sdsearch.search.study import prepare_study
from sdsearch.space.space import parse_space
from sdsearch.store.storage import open_storage

OBJECTIVES = ("accuracy", "params", "macs")
BUDGET = {"params": 60_000.0, "macs": 2_000_000.0}
#: A tighter show-time budget under which trial 3 of the standard study is over budget.
TIGHT = {"macs": 1_500_000.0}
EPOCHS = 4

_TEMPLATE: list[Path] = []

Exit = tuple[float, ...]  # accuracy, params, MACs (and the builder's further costs, in its order)


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


class PlannedCosts:
    """A picklable cost function that answers each asked config with the next planned costs."""

    def __init__(self) -> None:
        self.plan: deque[dict[str, dict[str, float]]] = deque()

    def __call__(self, config: TrialConfig) -> dict[str, dict[str, float]]:
        return self.plan.popleft()


class StudyBuilder:
    """Adds trials to a stored study the way ``sdsearch run`` does, one planned outcome at a time."""

    def __init__(
        self,
        url: str,
        name: str = "toy",
        *,
        objectives: tuple[str, ...] = OBJECTIVES,
        budget: dict[str, float] | None = None,
        costs: tuple[str, ...] = ("params", "macs"),
        deploy: dict[str, Any] | None = None,
    ) -> None:
        """``costs`` names the costs of each planned exit (params and MACs first: every candidate
        has them); ``deploy`` is the space's ``deploy:``."""
        document = {
            "name": name,
            "storage": url,
            "objectives": list(objectives),
            "budget": {k: _limit(k, v) for k, v in (dict(BUDGET) if budget is None else budget).items()},
            "train": {"epochs": EPOCHS},
            "deploy": dict(deploy or {}),
            "sampler": "random",
            "space": {
                "backbone": {"arch": {"choice": ["resnet", "mobilenetv2"]}, "width": 0.25, "depth": 1},
                "branches": {"placement": {"subset": [1, 2, 3]}},
            },
        }
        self.space = parse_space(document, source="study.yaml")
        self.storage = open_storage(url, create=True)
        self.study = prepare_study(self.space, self.storage)
        self.costs = PlannedCosts()
        self.cost_names = costs
        self.searcher = self._searcher()
        self._n = 0

    def _searcher(self, max_rejections: int = 500) -> SDOptunaSearch:
        s = self.space
        return SDOptunaSearch(SpaceSampler(s), study=self.study, storage=self.storage, objectives=s.objectives,
                              budget=s.budget, cost_fn=self.costs, max_rejections=max_rejections)  # fmt: skip

    def _ask(self, exits: dict[str, Exit], arch: str, searcher: SDOptunaSearch | None = None) -> Any:
        shallow = {int(e) for e in exits if e != "final"}
        params = {"backbone.arch": arch, **{f"branches.placement.{i}": i in shallow for i in (1, 2, 3)}}
        self.study.enqueue_trial(params)
        self.costs.plan.append({e: dict(zip(self.cost_names, c)) for e, (_, *c) in exits.items()})
        self._n += 1
        return (searcher or self.searcher).suggest(str(self._n))

    def trained(
        self,
        deployed: Exit,
        exits: dict[str, Exit] | None = None,
        *,
        arch: str = "resnet",
        extra: dict[str, Any] | None = None,
    ) -> None:
        """A trained COMPLETE trial: deployed exit ``final`` plus shallow ``exits``; ``extra`` joins
        its last result (e.g. the anytime report the trainable sends)."""
        planned = {**(exits or {}), "final": deployed}
        self._ask(planned, arch)
        self.searcher.on_trial_complete(str(self._n), {**_result(planned, EPOCHS), **(extra or {})})

    def rejected(self, params: int, macs: int) -> None:
        """A config over the budget: the searcher tells it at once (COMPLETE, accuracy 0, constraints > 0)."""
        once = self._searcher(max_rejections=1)
        assert self._ask({"final": (0.0, params, macs)}, "resnet", searcher=once) == "FINISHED"

    def failed(self, reason: str) -> None:
        self._ask({"final": (0.0, 10_000, 100_000)}, "resnet")
        self.searcher.on_trial_complete(str(self._n), {"epoch": 2, "fail_reason": reason})

    def pruned(self, epochs_done: int, exits: dict[str, Exit]) -> None:
        """A trial a scheduler stopped after ``epochs_done`` epochs: PRUNED, partial candidates."""
        self._ask(exits, "resnet")
        self.searcher.on_trial_complete(str(self._n), _result(exits, epochs_done))

    def running(self) -> None:
        self._ask({"final": (0.0, 10_000, 100_000)}, "resnet")


def drop_study_attr(url: str, study: str, key: str) -> None:
    """Remove a study user attr, so the study reads as one stored before sdsearch wrote it (Optuna
    has no public way to delete one)."""
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
        db.execute(
            "DELETE FROM study_user_attributes WHERE key = ? "
            "AND study_id = (SELECT study_id FROM studies WHERE study_name = ?)",
            (key, study),
        )


def _limit(metric: str, value: float) -> Any:
    from sdsearch.core.metrics import METRICS

    return (
        f"{value}B"
        if METRICS.get(metric).unit == "bytes"
        else f"{value}ms"
        if METRICS.get(metric).unit == "ms"
        else value
    )


def _result(exits: dict[str, Exit], epoch: int) -> dict[str, Any]:
    accuracies = {e: acc for e, (acc, *_) in exits.items()}
    return {**keys.exit_metrics(accuracies, FINAL), keys.EPOCH: epoch}


def standard_study(url: str, name: str = "toy") -> StudyBuilder:
    """The study in the module docstring."""
    b = StudyBuilder(url, name)
    b.trained((0.90, 40_000, 1_200_000), {"1": (0.60, 5_000, 300_000), "2": (0.75, 15_000, 600_000)})
    b.rejected(100_000, 3_000_000)
    b.trained((0.85, 20_000, 800_000), {"2": (0.70, 8_000, 400_000)})
    b.trained(
        (0.93, 55_000, 2_000_000),
        {"1": (0.65, 6_000, 350_000), "3": (0.88, 30_000, 1_000_000)},
        arch="mobilenetv2",
    )
    b.failed("nan loss")
    b.pruned(2, {"1": (0.50, 5_000, 300_000), "final": (0.60, 30_000, 900_000)})
    b.trained((0.80, 50_000, 1_400_000), {"1": (0.55, 6_000, 350_000)})
    b.running()
    b.trained((0.70, 9_000, 300_000))
    return b


def memory_study(url: str, name: str = "mem") -> StudyBuilder:
    """Two trained trials of an int8 study that optimises peak memory and size (no budget)."""
    costs = ("params", "macs", "peak_memory", "size")
    b = StudyBuilder(url, name, objectives=("accuracy", "peak_memory", "size"), budget={}, costs=costs)
    b.trained((0.8, 5_000, 300_000, 4_096, 20_000))
    b.trained((0.9, 10_000, 600_000, 8_192, 40_000))
    return b
