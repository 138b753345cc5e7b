"""The anytime policy on recorded exit statistics: outcomes, the threshold sweep and calibration.

Everything here is numpy on per-image records (no torch), so a policy is evaluated for hundreds of
threshold vectors in milliseconds and the stored report of a trial can be read without a network.

Policy (BranchyNet, Teerapittayanon et al., ICPR 2016, https://arxiv.org/abs/1709.01686): evaluate
the exits in depth order and leave at the first shallow exit ``e`` whose confidence (max softmax
probability) is *strictly* greater than its threshold ``t_e``, else at the final exit. Strict, so
``t = 1.0`` never leaves early and ``t = 0.0`` always leaves at the first exit. Thresholds are
float32 numbers, the dtype the comparison has in PyTorch and ONNX Runtime; every function here
rounds them to float32 first, so all three runtimes take the same decisions on the same numbers.

Cost of one image (MACs, the convention of :mod:`sdsearch.cost.trace`): the trunk up to the stage of the
exit it leaves at, plus the branch and head of *every* exit evaluated on the way, since the shallow
exits that were not confident enough ran too. So leaving at exit ``k`` costs
``sum(trunk[:k+1]) + sum(branch[:k+1])`` (:attr:`AnytimeCost.leave`), and the worst case, every
image reaching the final exit, is the final exit's deploy MACs plus every shallow branch + head
(:attr:`AnytimeCost.worst_case`). Budgets on a device that must never miss a deadline use that
worst case; ``expected_macs`` is the mean over images.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdsearch.core.errors import ConfigError

__all__ = [
    "ANYTIME_FORMAT",
    "TARGET_KEYS",
    "AnytimeCost",
    "AnytimeOutcome",
    "Calibration",
    "ExitStats",
    "anytime_outcome",
    "anytime_report",
    "calibrate",
    "exit_indices",
    "sweep",
]

#: Version tag of :func:`anytime_report` dicts (metrics.json ``anytime``, the trial's stored report).
ANYTIME_FORMAT = "sdsearch-anytime/1"
#: The calibration targets, as the YAML ``deploy.target`` spells them.
TARGET_KEYS = ("accuracy_drop", "expected_macs")
#: Candidate thresholds per shallow exit in :func:`calibrate` (quantiles of its confidences).
N_CANDIDATES = 64
#: Shared thresholds in :func:`sweep`: a uniform grid plus quantiles of the pooled shallow confidences.
N_SWEEP_GRID, N_SWEEP_QUANTILES = 51, 100


@dataclass(frozen=True, eq=False)
class ExitStats:
    """Per-image confidence and correctness of every exit, from one evaluation pass.

    Attributes:
        exits: exit names in depth order, ``"final"`` last.
        confidence: float32 ``(N, E)``, max softmax probability of each exit's logits.
        correct: bool ``(N, E)``, whether each exit's argmax is the label.
    """

    exits: tuple[str, ...]
    confidence: np.ndarray
    correct: np.ndarray

    def __post_init__(self) -> None:
        n_exits = len(self.exits)
        if self.confidence.ndim != 2 or self.confidence.shape[1] != n_exits:
            raise ValueError(f"confidence must be (N, {n_exits}), got {self.confidence.shape}")
        if self.correct.shape != self.confidence.shape:
            raise ValueError(
                f"correct must be {self.confidence.shape} like confidence, got {self.correct.shape}"
            )
        if len(self.confidence) == 0:
            raise ValueError("exit statistics need at least one image")
        object.__setattr__(self, "confidence", np.asarray(self.confidence, dtype=np.float32))
        object.__setattr__(self, "correct", np.asarray(self.correct, dtype=bool))

    @property
    def n_images(self) -> int:
        return len(self.confidence)

    @property
    def exit_accuracy(self) -> dict[str, float]:
        """Top-1 accuracy of each exit on its own (the static deploy models)."""
        return {e: float(a) for e, a in zip(self.exits, self.correct.mean(axis=0), strict=True)}


@dataclass(frozen=True)
class AnytimeCost:
    """Per-exit MACs of an anytime model, in the convention of :mod:`sdsearch.cost.trace` (conv + linear).

    Attributes:
        exits: exit names in depth order, ``"final"`` last.
        trunk: MACs of the trunk segment that runs just before exit ``k``: the stem and stages up to
            the first exit's stage for ``k = 0``, then the stages after the previous exit's stage up to this
            one's. ``sum(trunk)`` is the whole trunk.
        branch: MACs of exit ``k``'s branch and head (only the head for ``"final"``).
        params: parameters of everything the anytime model holds (trunk, every branch and head).
    """

    exits: tuple[str, ...]
    trunk: tuple[int, ...]
    branch: tuple[int, ...]
    params: int = 0

    def __post_init__(self) -> None:
        if not (len(self.exits) == len(self.trunk) == len(self.branch)) or not self.exits:
            raise ValueError(f"one trunk and one branch count per exit, got {self}")

    @property
    def deploy(self) -> tuple[int, ...]:
        """MACs of each exit's static deploy model: its trunk and its own branch + head only."""
        trunk = np.cumsum(self.trunk)
        return tuple(int(t + b) for t, b in zip(trunk, self.branch, strict=True))

    @property
    def leave(self) -> tuple[int, ...]:
        """MACs of an image that leaves at exit ``k``: trunk to its stage, branch + head of exits 0..k."""
        return tuple(int(v) for v in np.cumsum(self.trunk) + np.cumsum(self.branch))

    @property
    def worst_case(self) -> int:
        """Every exit runs: the final exit's deploy MACs plus every shallow branch + head."""
        return self.leave[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trunk": dict(zip(self.exits, self.trunk, strict=True)),
            "branch": dict(zip(self.exits, self.branch, strict=True)),
            "leave": dict(zip(self.exits, self.leave, strict=True)),
            "deploy": dict(zip(self.exits, self.deploy, strict=True)),
            "worst_case": self.worst_case,
            "params": self.params,
        }


@dataclass(frozen=True)
class AnytimeOutcome:
    """What a threshold vector does on a set of images.

    Attributes:
        exits: exit names in depth order.
        thresholds: one float32 threshold per shallow exit (``exits[:-1]``).
        accuracy: top-1 accuracy of the exit each image left at.
        expected_macs: mean MACs per image (see the module docstring for what one image costs).
        exit_share: share of images leaving at each exit (sums to 1).
        n_images: how many images.
    """

    exits: tuple[str, ...]
    thresholds: tuple[float, ...]
    accuracy: float
    expected_macs: float
    exit_share: tuple[float, ...]
    n_images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": dict(zip(self.exits[:-1], self.thresholds, strict=True)),
            "accuracy": self.accuracy,
            "expected_macs": self.expected_macs,
            "exit_share": dict(zip(self.exits, self.exit_share, strict=True)),
            "images": self.n_images,
        }


@dataclass(frozen=True)
class Calibration:
    """Thresholds chosen on the validation split for a target, and the numbers behind the choice.

    Attributes:
        target: ``{"accuracy_drop": d}`` or ``{"expected_macs": m}``.
        method: ``"per_exit"`` (the greedy search of :func:`calibrate`) or ``"shared"`` (one
            threshold for every exit, from :func:`sweep`, where that did better).
        met: whether the target holds on the validation split (an ``expected_macs`` below what
            the first exit alone costs cannot be met; the cheapest policy is returned then).
        outcome: the chosen thresholds on the validation split.
        deepest_accuracy: the final exit's validation accuracy (what ``accuracy_drop`` is relative to).
        exit_accuracy: each exit's validation accuracy on its own.
        sweep: the shared-threshold sweep on the validation split, cheapest first.
    """

    target: dict[str, float]
    method: str
    met: bool
    outcome: AnytimeOutcome
    deepest_accuracy: float
    exit_accuracy: dict[str, float]
    sweep: tuple[AnytimeOutcome, ...] = field(repr=False)

    @property
    def thresholds(self) -> dict[str, float]:
        """Threshold per shallow exit name: what :class:`~sdsearch.anytime.model.AnytimeModel` takes."""
        return dict(zip(self.outcome.exits[:-1], self.outcome.thresholds, strict=True))


# --------------------------------------------------------------------------------------------------
# The policy.


def exit_indices(confidence: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """Index of the exit each image leaves at: the first shallow exit with confidence > threshold.

    Args:
        confidence: ``(N, E)`` max softmax probabilities, exits in depth order.
        thresholds: ``E - 1`` thresholds, one per shallow exit (rounded to float32).

    Returns:
        int64 ``(N,)`` in ``0 .. E-1``; ``E - 1`` (the final exit) where no shallow exit was confident.
    """
    conf = np.asarray(confidence, dtype=np.float32)
    t = _thresholds(thresholds, conf.shape[1])
    stop = np.ones(conf.shape, dtype=bool)
    stop[:, :-1] = conf[:, :-1] > t
    return stop.argmax(axis=1).astype(np.int64)  # argmax of booleans is the first True


def anytime_outcome(
    stats: ExitStats, thresholds: Sequence[float] | Mapping[str, float], macs: AnytimeCost
) -> AnytimeOutcome:
    """Accuracy, expected MACs and exit shares of ``thresholds`` on ``stats``' images.

    Args:
        stats: per-image confidence and correctness of every exit.
        thresholds: one per shallow exit, in depth order or keyed by exit name.
        macs: the per-exit costs of the same network.

    Example:
        >>> out = anytime_outcome(stats, {"1": 0.9, "2": 0.8, "3": 0.9}, cost)  # doctest: +SKIP
        >>> out.accuracy, out.expected_macs, out.exit_share                    # doctest: +SKIP
        (0.964, 131072.5, (0.62, 0.21, 0.1, 0.07))
    """
    _check_same_exits(stats, macs)
    t = _thresholds(_ordered(thresholds, stats.exits), len(stats.exits))
    return _outcome(stats, t, np.asarray(macs.leave, dtype=np.int64), exit_indices(stats.confidence, t))


def _outcome(stats: ExitStats, t: np.ndarray, leave: np.ndarray, ex: np.ndarray) -> AnytimeOutcome:
    n = stats.n_images
    counts = np.bincount(ex, minlength=len(stats.exits))
    correct = int(stats.correct[np.arange(n), ex].sum())
    # Integer total first: with every image at one exit the mean is that exit's MACs exactly.
    total = int(counts @ leave)
    return AnytimeOutcome(
        exits=stats.exits,
        thresholds=tuple(float(v) for v in t),
        accuracy=correct / n,
        expected_macs=total / n,
        exit_share=tuple(float(c) / n for c in counts),
        n_images=n,
    )


# --------------------------------------------------------------------------------------------------
# Sweep and calibration.


def sweep(stats: ExitStats, macs: AnytimeCost) -> tuple[AnytimeOutcome, ...]:
    """One shared threshold for every shallow exit, over a grid: accuracy against expected MACs.

    The grid is ``linspace(0, 1, 51)`` plus 100 quantile midpoints of the pooled shallow
    confidences (most confidences sit near 1, where a uniform grid is too coarse). It runs from
    the first exit alone (``t = 0``) to every exit running (``t = 1``).

    Returns:
        One outcome per distinct threshold, cheapest first (ties: more accurate first).
    """
    _check_same_exits(stats, macs)
    leave = np.asarray(macs.leave, dtype=np.int64)
    n_exits = len(stats.exits)
    grid = np.linspace(0.0, 1.0, N_SWEEP_GRID)
    if n_exits > 1:
        grid = np.concatenate(
            [grid, _quantile_midpoints(stats.confidence[:, :-1].ravel(), N_SWEEP_QUANTILES)]
        )
    points = []
    for t in np.unique(grid.astype(np.float32)):
        vector = np.full(n_exits - 1, t, dtype=np.float32)
        points.append(_outcome(stats, vector, leave, exit_indices(stats.confidence, vector)))
    return tuple(sorted(points, key=lambda p: (p.expected_macs, -p.accuracy, p.thresholds)))


def calibrate(
    stats: ExitStats,
    macs: AnytimeCost,
    *,
    accuracy_drop: float | None = None,
    expected_macs: float | None = None,
    n_candidates: int = N_CANDIDATES,
) -> Calibration:
    """Choose a threshold per shallow exit on validation statistics for one target.

    Targets (exactly one):
        * ``accuracy_drop=d``: the fewest expected MACs whose accuracy is at least the final exit's
          accuracy minus ``d``. Always met: thresholds of 1.0 give the final exit's accuracy.
        * ``expected_macs=m``: the best accuracy with expected MACs <= ``m``. Met when ``m`` is at
          least the first exit's deploy MACs (thresholds of 0.0).

    Method (*design*): greedy coordinate moves, the marginal-rate rule of the knapsack greedy.
    Candidates per shallow exit are ``n_candidates`` midpoints between consecutive distinct
    confidences of that exit, taken at evenly spaced quantiles, plus 0 and 1: between two observed
    confidences every threshold gives the same validation outcome, and the midpoint has the most
    margin on both sides, which is what unseen images and another runtime's rounding need. The search
    starts at every threshold 1.0, where every image reaches every exit so every threshold has an
    effect. A move lowers one threshold to a lower candidate, which moves images to a shallower exit
    and never raises expected MACs (leaving earlier is cheaper). Each step takes the move with the
    best MAC saving per correct image lost; moves that lose nothing come first, the biggest saving
    first. For ``accuracy_drop`` only moves that keep the accuracy constraint are allowed, and the
    search stops when none saves MACs. For ``expected_macs`` the path continues down to the cheapest
    policy and the answer is the most accurate point seen, path points or single moves, within the
    budget. Ties go to the smaller loss, then the shallower exit, then the higher threshold (the
    smaller move), so the search is deterministic. Every move of one exit is evaluated at once from the exit's confidence order
    (sorted once): cumulative sums over the images give the outcome of every candidate, so a step
    costs O(exits² × images + exits × candidates), and there are at most exits × candidates steps.
    Last, the best shared threshold of :func:`sweep` that meets the target is taken instead where it
    does better, so the per-exit result is never worse than the one-threshold policy.

    Args:
        stats: per-image statistics on the validation split.
        macs: the per-exit costs of the same network.
        accuracy_drop: allowed drop below the final exit's accuracy, in [0, 1) (0.005 = 0.5 points).
        expected_macs: the mean MACs per image allowed.
        n_candidates: candidate thresholds per shallow exit.

    Returns:
        The chosen thresholds, their validation outcome, the sweep and the reference accuracies.

    Raises:
        ConfigError: not exactly one target, or a target outside its range.

    Example:
        >>> cal = calibrate(val_stats, cost, accuracy_drop=0.005)       # doctest: +SKIP
        >>> cal.thresholds, cal.outcome.expected_macs / cost.deploy[-1]  # doctest: +SKIP
        ({'1': 0.9921875, '2': 0.96875, '3': 0.99609375}, 0.41)
    """
    target = _target(accuracy_drop=accuracy_drop, expected_macs=expected_macs)
    if n_candidates < 2:
        raise ConfigError(f"n_candidates must be at least 2, but got {n_candidates}")
    _check_same_exits(stats, macs)
    n, n_exits = stats.n_images, len(stats.exits)
    leave = np.asarray(macs.leave, dtype=np.int64)
    final_correct = int(stats.correct[:, -1].sum())
    deepest = final_correct / n
    points = sweep(stats, macs)
    if accuracy_drop is not None:
        # In correct images: accuracy >= deepest - d  <=>  correct >= final_correct - d * n.
        min_correct = final_correct - int(np.floor(accuracy_drop * n + 1e-9))
        chosen = _descend(stats, leave, n_candidates, min_correct=min_correct)
        shared = [p for p in points if round(p.accuracy * n) >= min_correct]  # never empty: t = 1
        better = min(shared, key=lambda p: (p.expected_macs, -p.accuracy))
        use_shared = (better.expected_macs, -better.accuracy) < (chosen.expected_macs, -chosen.accuracy)
        met = True
    else:
        budget = float(target["expected_macs"]) * n  # total MACs over the split, against integer totals
        chosen = _descend(stats, leave, n_candidates, max_total=budget)
        shared = [p for p in points if round(p.expected_macs * n) <= budget]
        met = round(chosen.expected_macs * n) <= budget
        if not met:  # below the first exit's own cost, which every image pays: the cheapest policy, all zeros
            t0 = np.zeros(n_exits - 1, dtype=np.float32)
            chosen = _outcome(stats, t0, leave, exit_indices(stats.confidence, t0))
        better = max(shared, key=lambda p: (p.accuracy, -p.expected_macs)) if shared else chosen
        use_shared = (better.accuracy, -better.expected_macs) > (chosen.accuracy, -chosen.expected_macs)
    return Calibration(
        target=target,
        method="shared" if use_shared else "per_exit",
        met=met,
        outcome=better if use_shared else chosen,
        deepest_accuracy=deepest,
        exit_accuracy=stats.exit_accuracy,
        sweep=points,
    )


def _descend(
    stats: ExitStats,
    leave: np.ndarray,
    n_candidates: int,
    *,
    min_correct: int | None = None,
    max_total: float | None = None,
) -> AnytimeOutcome:
    """The greedy search of :func:`calibrate`: with ``min_correct`` (accuracy_drop) or ``max_total``."""
    conf, correct = stats.confidence, stats.correct.astype(np.int64)
    n, n_exits = conf.shape
    rows = np.arange(n)
    shallow = range(n_exits - 1)
    cands = [_candidates(conf[:, i], n_candidates) for i in shallow]
    orders = [np.argsort(conf[:, i], kind="stable") for i in shallow]
    # Images with confidence <= candidate c do not leave at i: the first cuts[i][c] in that order.
    cuts = [np.searchsorted(conf[orders[i], i], cands[i], side="right") for i in shallow]
    pos = [len(c) - 1 for c in cands]  # every threshold at 1.0
    best: tuple[tuple[int, int], np.ndarray] | None = None  # within max_total: ((correct, -total), t)

    def consider(n_correct: int, total: int, t: np.ndarray) -> None:
        nonlocal best
        if max_total is not None and total <= max_total and (best is None or (n_correct, -total) > best[0]):
            best = ((n_correct, -total), t)

    while True:
        t = np.array([cands[i][pos[i]] for i in shallow], dtype=np.float32)
        stop = np.ones((n, n_exits), dtype=bool)
        stop[:, :-1] = conf[:, :-1] > t
        ex = stop.argmax(axis=1)
        cur_correct, cur_total = int(correct[rows, ex].sum()), int(leave[ex].sum())
        consider(cur_correct, cur_total, t)
        moves = []  # (rank key, exit, candidate position)
        for i in shallow:
            if pos[i] == 0:
                continue
            reach = ex >= i  # not left before exit i
            after = i + 1 + stop[:, i + 1 :].argmax(axis=1)  # where an image goes if it passes exit i
            order, cut = orders[i], cuts[i][: pos[i]]  # lower candidates only
            n_correct = _split_sums(
                np.where(reach, correct[:, i], correct[rows, ex])[order],
                np.where(reach, correct[rows, after], correct[rows, ex])[order],
                cut,
            )
            total = _split_sums(
                np.where(reach, leave[i], leave[ex])[order],
                np.where(reach, leave[after], leave[ex])[order],
                cut,
            )
            saving, loss = cur_total - total, cur_correct - n_correct
            ok = saving > 0
            if min_correct is not None:
                ok &= n_correct >= min_correct
            if max_total is not None and np.any(ok & (total <= max_total)):
                fits = np.flatnonzero(ok & (total <= max_total))
                c = fits[np.lexsort((-total[fits], n_correct[fits]))[-1]]
                consider(int(n_correct[c]), int(total[c]), _with(t, i, cands[i][c]))
            if not ok.any():
                continue
            # Losing nothing ranks first (largest saving first); then saving per correct image lost.
            # Ties: the smaller loss, then the higher threshold (the smaller move), then the shallower exit.
            free = loss <= 0
            rate = np.where(free, saving, saving / np.maximum(loss, 1)).astype(np.float64)
            idx = np.flatnonzero(ok)
            c = idx[np.lexsort((idx, -loss[idx], rate[idx], free[idx]))[-1]]
            moves.append(((bool(free[c]), float(rate[c]), -int(loss[c]), -i), i, int(c)))
        if not moves:
            break
        _, i, c = max(moves)
        pos[i] = c
    if min_correct is not None or best is None:
        final = np.array([cands[i][pos[i]] for i in shallow], dtype=np.float32)
    else:
        final = best[1]
    return _outcome(stats, final, leave, exit_indices(conf, final))


def _with(t: np.ndarray, i: int, value: float) -> np.ndarray:
    out = t.copy()
    out[i] = value
    return out


def _split_sums(leaves: np.ndarray, stays: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """For each cut k: ``sum(stays[:k]) + sum(leaves[k:])``, all cuts at once (integer sums)."""
    head = np.concatenate([[0], np.cumsum(stays)])
    tail = np.concatenate([[0], np.cumsum(leaves)])
    return head[cut] + (tail[-1] - tail[cut])


def _candidates(values: np.ndarray, n: int) -> np.ndarray:
    """0, 1 and ``n - 2`` quantile midpoints of ``values`` as float32, ascending and distinct."""
    return np.unique(np.concatenate([[0.0, 1.0], _quantile_midpoints(values, n - 2)]).astype(np.float32))


def _quantile_midpoints(values: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` midpoints between consecutive distinct values, at evenly spaced ranks."""
    u = np.unique(np.asarray(values, dtype=np.float32)).astype(np.float64)
    mids = (u[:-1] + u[1:]) / 2.0
    if len(mids) > n:
        mids = mids[np.unique(np.round(np.linspace(0, len(mids) - 1, n)).astype(np.int64))]
    return mids


# --------------------------------------------------------------------------------------------------
# The report.


def anytime_report(
    calibration: Calibration, macs: AnytimeCost, *, test: AnytimeOutcome | None = None
) -> dict[str, Any]:
    """The JSON-ready record of an anytime deployment: metrics.json ``anytime``, a trial's stored report.

    Keys: ``format``, ``exits``, ``thresholds`` (per shallow exit), ``target``, ``method``, ``met``,
    ``macs`` (:meth:`AnytimeCost.to_dict`: per exit ``trunk``, ``branch``, ``leave``, ``deploy``,
    then ``worst_case`` and ``params``), ``val`` (the calibration outcome plus ``deepest_accuracy``
    and ``exit_accuracy``), ``test`` (the same thresholds on the test split, or None) and ``sweep``
    (``[threshold, accuracy, expected_macs]`` per shared threshold on the validation split,
    cheapest first). :func:`~sdsearch.anytime.view.plot_anytime` draws it.
    """
    out = calibration.outcome
    if tuple(out.exits) != tuple(macs.exits):
        raise ValueError(f"calibration exits {out.exits} differ from the cost's {macs.exits}")
    report = {
        "format": ANYTIME_FORMAT,
        "exits": list(out.exits),
        "thresholds": calibration.thresholds,
        "target": dict(calibration.target),
        "method": calibration.method,
        "met": calibration.met,
        "macs": macs.to_dict(),
        "val": out.to_dict()
        | {
            "deepest_accuracy": calibration.deepest_accuracy,
            "exit_accuracy": dict(calibration.exit_accuracy),
        },
        "test": None if test is None else test.to_dict(),
        "sweep": [
            [p.thresholds[0] if p.thresholds else 1.0, p.accuracy, p.expected_macs] for p in calibration.sweep
        ],
    }
    json.dumps(report)  # fail here, not in the caller's writer, if something is not plain data
    return report


# --------------------------------------------------------------------------------------------------
# Checks.


def _target(*, accuracy_drop: float | None, expected_macs: float | None) -> dict[str, float]:
    given = {
        k: v for k, v in (("accuracy_drop", accuracy_drop), ("expected_macs", expected_macs)) if v is not None
    }
    if len(given) != 1:
        raise ConfigError(
            f"deploy.target: give exactly one of {', '.join(TARGET_KEYS)}, but got {sorted(given) or 'none'}"
        )
    ((key, value),) = given.items()
    value = float(value)
    if key == "accuracy_drop" and not 0.0 <= value < 1.0:
        raise ConfigError(
            f"deploy.target.accuracy_drop: must be in [0, 1) (0.005 = 0.5 points), but got {value}"
        )
    if key == "expected_macs" and not (np.isfinite(value) and value > 0):
        raise ConfigError(f"deploy.target.expected_macs: must be a positive number of MACs, but got {value}")
    return {key: value}


def _thresholds(thresholds: Sequence[float] | np.ndarray, n_exits: int) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.shape != (n_exits - 1,):
        raise ConfigError(f"anytime thresholds: need one per shallow exit ({n_exits - 1}), but got {len(t)}")
    if not np.all((t >= 0.0) & (t <= 1.0)):
        raise ConfigError(f"anytime thresholds: each must be in [0, 1], but got {t.tolist()}")
    return t.astype(np.float32)


def _ordered(thresholds: Sequence[float] | Mapping[str, float], exits: Sequence[str]) -> list[float]:
    if not isinstance(thresholds, Mapping):
        return list(thresholds)
    shallow = list(exits[:-1])
    if set(thresholds) != set(shallow):
        raise ConfigError(
            f"anytime thresholds: need exactly the shallow exits {', '.join(shallow) or '(none)'}, "
            f"but got {', '.join(map(str, thresholds)) or '(none)'}"
        )
    return [thresholds[e] for e in shallow]


def _check_same_exits(stats: ExitStats, macs: AnytimeCost) -> None:
    if tuple(stats.exits) != tuple(macs.exits):
        raise ValueError(f"statistics are for exits {stats.exits} but costs for {macs.exits}")
