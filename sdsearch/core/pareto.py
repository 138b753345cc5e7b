"""Pareto maths on plain points: the one home of dominance, fronts, hypervolume and knees.

Points are sequences of floats, with one ``"maximize"`` / ``"minimize"`` direction per column;
everything here turns them into losses to minimise through :func:`as_losses`, so every caller
validates directions the same way. Used by the fronts of a stored study
(:mod:`sdsearch.results.front`), the live view and MO-ASHA's rung ranking
(:mod:`sdsearch.search.moasha`). numpy only.

Example:
    >>> pareto_front([(0.9, 100), (0.8, 50), (0.7, 80)], ["maximize", "minimize"])
    [0, 1]
    >>> nondominated_sort([(0.9, 100), (0.8, 50), (0.7, 80)], ["maximize", "minimize"])
    [[0, 1], [2]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdsearch.core.errors import ConfigError

__all__ = [
    "DIRECTIONS",
    "KNEE_MARGIN",
    "Knee",
    "as_losses",
    "check_directions",
    "crowding_distance",
    "find_knee",
    "hypervolume",
    "nondominated_sort",
    "pareto_front",
]

#: What a direction may be (Optuna's words).
DIRECTIONS = ("maximize", "minimize")


def check_directions(directions: Sequence[str]) -> None:
    """Raise ConfigError (a ValueError) unless every direction is ``maximize`` or ``minimize``."""
    for direction in directions:
        if direction not in DIRECTIONS:
            raise ConfigError(f"a direction is 'maximize' or 'minimize', but got {direction!r}")


def as_losses(
    points: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str], *, allow_nan: bool = True
) -> np.ndarray:
    """Points as an (n, d) float array to minimise (maximised columns negated).

    Raises:
        ConfigError: a direction is not ``maximize`` or ``minimize``.
        ValueError: ``allow_nan`` is False and a point holds NaN (it makes dominance meaningless).
    """
    check_directions(directions)
    arr = np.array(points, dtype=float).reshape(-1, len(directions))
    if not allow_nan and np.isnan(arr).any():
        row = int(np.flatnonzero(np.isnan(arr).any(axis=1))[0])
        raise ValueError(f"points must not hold NaN, but point {row} is {arr[row].tolist()}")
    return arr * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices (ascending) of the non-dominated points.

    A point dominates another when it is at least as good in every objective and strictly better in
    one; equal points do not dominate each other, so duplicates are all kept (as
    ``Study.best_trials`` does). Sort-then-sweep: a dominator sorts lexicographically before what it
    dominates, and domination is transitive, so each point is checked only against the front found
    so far: O(n * |front| * d), which beats the O(n^2) pairwise test on real studies.

    Args:
        points: n points with one value per objective.
        directions: ``"maximize"`` or ``"minimize"`` per objective.

    Returns:
        Indices into ``points`` of the Pareto set.
    """
    arr = as_losses(points, directions)
    if arr.shape[0] == 0:
        return []
    order = np.lexsort(arr.T[::-1])
    kept: list[int] = []
    for i in order:
        p = arr[i]
        if not any(np.all(arr[k] <= p) and np.any(arr[k] < p) for k in kept):
            kept.append(int(i))
    return sorted(kept)


def nondominated_sort(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[int]]:
    """Non-dominated fronts, best first (NSGA-II's fast non-dominated sort).

    Front 0 is the Pareto set (:func:`pareto_front`); front k holds the points
    that only points of fronts 0..k-1 dominate. Equal points do not dominate each other, so
    duplicates share a front. O(n^2 d) time and O(n^2) memory, plenty for one rung.

    Args:
        points: n points with one value per objective; infinities are allowed, NaN is not.
        directions: ``"maximize"`` or ``"minimize"`` per objective.

    Returns:
        The fronts, each a list of indices into ``points`` in ascending order; every index appears once.

    Raises:
        ValueError: a NaN value (NaN is neither better nor worse; rank such points apart, as
            :class:`~sdsearch.search.moasha.ParetoRanking` does), or a bad direction.
    """
    loss = as_losses(points, directions, allow_nan=False)
    n = loss.shape[0]
    if n == 0:
        return []
    # dominates[i, j]: i is no worse than j everywhere and better somewhere.
    no_worse = np.ones((n, n), dtype=bool)
    better = np.zeros((n, n), dtype=bool)
    for column in loss.T:
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    dominates = no_worse & better
    n_dominators = dominates.sum(axis=0)
    fronts: list[list[int]] = []
    current = np.flatnonzero(n_dominators == 0)
    while current.size:
        fronts.append(current.tolist())
        n_dominators -= dominates[current].sum(axis=0)
        n_dominators[current] = -1  # placed; never picked again
        current = np.flatnonzero(n_dominators == 0)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """NSGA-II crowding distance of each point within the set (call it on one front).

    Per objective, the points are sorted by loss (ties by index); the two ends get infinity and each
    other point adds the gap between its neighbours divided by the objective's range. An objective
    whose range is zero or infinite adds nothing to the inner points. Sets of one or two points are
    all boundary.

    Args:
        points: n points with one value per objective; NaN is not allowed.
        directions: ``"maximize"`` or ``"minimize"`` per objective.

    Returns:
        One distance per point: larger means more isolated, so more worth keeping.

    Raises:
        ValueError: a NaN value or a bad direction.
    """
    loss = as_losses(points, directions, allow_nan=False)
    n = loss.shape[0]
    distance = np.zeros(n)
    if n <= 2:
        return [math.inf] * n
    for column in loss.T:
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        distance[order[0]] = distance[order[-1]] = math.inf
        span = ordered[-1] - ordered[0]
        if span > 0 and math.isfinite(span):
            distance[order[1:-1]] += (ordered[2:] - ordered[:-2]) / span
    return distance.tolist()


def hypervolume(
    points: Sequence[Sequence[float]],
    directions: Sequence[str],
    reference: Sequence[float],
    *,
    ideal: Sequence[float] | None = None,
) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    Points that are not strictly better than the reference in every objective add nothing. The
    computation is exact for any dimension (a 2-d sweep, and slicing along the last objective above
    that: O(n^2 log n) in 3-d), which is plenty for fronts of a few hundred points.

    Args:
        points: points in the objectives' own units.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        reference: the reference (worst acceptable) point, e.g. from :func:`~sdsearch.results.front.reference_point`.
        ideal: if given, the result is divided by the volume of the box between ``ideal`` and
            ``reference``, i.e. computed after normalising every objective to [0, 1]; the value is
            then the fraction of that box the front dominates, comparable across studies with the
            same budget.

    Returns:
        The (normalised, if ``ideal`` is given) hypervolume.
    """
    arr = as_losses(points, directions)
    ref = as_losses([reference], directions)[0]
    if arr.shape[0]:
        arr = arr[np.all(arr < ref, axis=1)]
    volume = _hv(arr[pareto_front(arr, ["minimize"] * len(ref))], ref) if arr.shape[0] else 0.0
    if ideal is None:
        return volume
    box = float(np.prod(np.abs(ref - as_losses([ideal], directions)[0])))
    if box <= 0:
        raise ValueError(f"ideal {list(ideal)} and reference {list(reference)} span no volume")
    return volume / box


#: How far (in objectives normalised to the front's span, each axis [0, 1]) a point must stand
#: beyond the line or plane through the front's extremes to be its knee.
KNEE_MARGIN = 0.05


@dataclass(frozen=True)
class Knee:
    """The knee of a front, or why it has none.

    Attributes:
        index: the knee's index into the points, or None.
        distance: how far the farthest point stands beyond the extremes' line or plane (0 for none).
        reason: why there is no knee (None when there is one), in words for a message.
    """

    index: int | None
    distance: float
    reason: str | None = None


def find_knee(
    points: Sequence[Sequence[float]],
    directions: Sequence[str],
    *,
    log: Sequence[bool] | None = None,
    margin: float = KNEE_MARGIN,
) -> Knee:
    """The knee of a front: the point farthest beyond the line (plane) through the front's extremes.

    Method (Das, "On characterizing the knee of the Pareto curve", 1999; Branke et al., PPSN 2004):
    each objective becomes a loss, optionally on a log10 scale (costs spanning decades compare by
    ratio, as on the log-x plots), min-max normalised over the front; objectives constant over the
    front are dropped. The extremes are, per objective, the point best in it; the knee is the point
    farthest from the line (2 objectives) or plane through them, on the side of the ideal point,
    provided it stands out by at least ``margin``. Where one point is best in several objectives
    (params and MACs often go together) the extremes span less than a plane, and the distance is
    to what they span: the line through two extremes in 3 objectives.

    There is no knee with fewer than 3 points (two points are both extremes) or when no point stands
    out (a straight front: every compromise is as good as another).

    Args:
        points: the front.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        log: per objective, whether to compare on a log10 scale (positive values only).
        margin: the least distance that makes a knee.
    """
    raw = np.array(points, dtype=float).reshape(-1, len(directions))
    n = raw.shape[0]
    if n < 3:
        return Knee(None, 0.0, f"the front has {n} point{'s' if n != 1 else ''}, and a knee needs at least 3")
    for j, use_log in enumerate(log or ()):
        if use_log:
            raw[:, j] = np.log10(np.maximum(raw[:, j], 1e-12))
    arr = as_losses(raw, directions)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    varying = hi > lo
    norm = (arr[:, varying] - lo[varying]) / (hi - lo)[varying]
    d = norm.shape[1]
    if d < 2:
        return Knee(None, 0.0, "the front varies in one objective only")
    anchors = np.unique(norm[[int(np.lexsort((norm.sum(axis=1), norm[:, j]))[0]) for j in range(d)]], axis=0)
    if len(anchors) == 1:
        return Knee(None, 0.0, "one point is best in every objective")
    distance = _beyond(norm, anchors)
    best = int(np.argmax(distance))  # ties go to the earlier point
    shape = "line" if len(anchors) == 2 else "plane"
    if distance[best] < margin:
        return Knee(
            None,
            max(float(distance[best]), 0.0),
            f"no point stands out from the {shape} through the front's extremes by {margin:g} "
            f"(the farthest by {max(float(distance[best]), 0.0):.3f}, in objectives normalised to the front)",
        )
    return Knee(best, float(distance[best]))


def _beyond(points: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """How far each point stands from the affine hull of ``anchors`` towards the ideal point (the
    origin of the normalised losses): the component of its offset from the hull along the
    direction from the hull to the ideal, so a point off to the side of a line in 3 objectives
    counts only by what it gains towards the ideal. For a full hyperplane it is the signed distance."""
    origin = anchors[0]
    basis = (anchors[1:] - origin).T  # d x (k - 1)
    projector = basis @ np.linalg.pinv(basis)

    def off_hull(x: np.ndarray) -> np.ndarray:
        rel = x - origin
        return rel - rel @ projector.T

    ideal_side = off_hull(np.zeros(points.shape[1]))
    length = np.linalg.norm(ideal_side)
    if length == 0:  # the hull holds the ideal point: no side is better
        return np.zeros(len(points))
    return off_hull(points) @ ideal_side / length


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimisation points, all strictly below ``ref``, by slicing the last axis."""
    n, d = points.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(ref[0] - points[:, 0].min())
    if d == 2:
        volume, best_y = 0.0, ref[1]
        for x, y in points[np.lexsort((points[:, 1], points[:, 0]))]:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    ordered = points[np.argsort(points[:, -1], kind="stable")]
    volume = 0.0
    for i in range(n):
        depth = (ordered[i + 1, -1] if i + 1 < n else ref[-1]) - ordered[i, -1]
        if depth > 0:
            slab = ordered[: i + 1, :-1]
            volume += _hv(slab[pareto_front(slab, ["minimize"] * (d - 1))], ref[:-1]) * depth
    return float(volume)
