"""Pareto fronts, hypervolume and knee of stored studies (sdsearch.results.front)."""

from __future__ import annotations

import itertools
import random

import optuna
import pytest
from _front_study import TIGHT, StudyBuilder, standard_study, storage_url

import sdsearch
from sdsearch.core.errors import ConfigError, StudyError
from sdsearch.core.pareto import find_knee, hypervolume, pareto_front
from sdsearch.results.front import Candidate, build_front, reference_point
from sdsearch.results.read import load_front, read_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

DIRECTION_SETS = [
    ("maximize", "minimize"),
    ("minimize", "minimize"),
    ("maximize", "minimize", "minimize"),
    ("minimize", "maximize", "minimize"),
]


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = storage_url(tmp_path_factory.mktemp("front"))
    standard_study(url)
    return url


# -- generic maths against brute force ------------------------------------------------------------


def _random_points(seed: int, n: int, d: int) -> list[list[float]]:
    rng = random.Random(seed)
    # Few distinct values, so ties and exact duplicates occur.
    return [[float(rng.randint(0, 8)) for _ in range(d)] for _ in range(n)]


def _brute_front(points: list[list[float]], directions: tuple[str, ...]) -> list[int]:
    sign = [-1.0 if d == "maximize" else 1.0 for d in directions]
    loss = [[s * v for s, v in zip(sign, p, strict=True)] for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [i for i, p in enumerate(loss) if not any(dominates(q, p) for q in loss)]


def _brute_hypervolume(
    points: list[list[float]], directions: tuple[str, ...], reference: list[float]
) -> float:
    """Sum of the grid cells (cut at every coordinate) whose lower corner some point dominates."""
    sign = [-1.0 if d == "maximize" else 1.0 for d in directions]
    loss = [[s * v for s, v in zip(sign, p, strict=True)] for p in points]
    ref = [s * r for s, r in zip(sign, reference, strict=True)]
    axes = [sorted({p[j] for p in loss if p[j] < ref[j]} | {ref[j]}) for j in range(len(ref))]
    volume = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        corner = [axes[j][k] for j, k in enumerate(cell)]
        if any(all(p[j] <= corner[j] for j in range(len(ref))) for p in loss):
            size = 1.0
            for j, k in enumerate(cell):
                size *= axes[j][k + 1] - axes[j][k]
            volume += size
    return volume


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("directions", DIRECTION_SETS)
def test_pareto_front_matches_brute_force(seed: int, directions: tuple[str, ...]) -> None:
    points = _random_points(seed, 40, len(directions))
    assert pareto_front(points, directions) == _brute_front(points, directions)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("directions", DIRECTION_SETS)
def test_hypervolume_matches_brute_force(seed: int, directions: tuple[str, ...]) -> None:
    points = _random_points(100 + seed, 14, len(directions))
    # A reference some points do not beat in every objective: they must add nothing.
    reference = [-1.0 if d == "maximize" else 7.0 for d in directions]
    expected = _brute_hypervolume(points, directions, reference)
    assert hypervolume(points, directions, reference) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_hypervolume_normalised_to_the_ideal_reference_box() -> None:
    directions = ("maximize", "minimize")
    assert hypervolume([[1.0, 0.0]], directions, [0.0, 10.0], ideal=[1.0, 0.0]) == pytest.approx(1.0)
    assert hypervolume([[0.5, 5.0]], directions, [0.0, 10.0], ideal=[1.0, 0.0]) == pytest.approx(0.25)
    assert hypervolume([], directions, [0.0, 10.0], ideal=[1.0, 0.0]) == 0.0
    assert hypervolume([[0.9, 12.0]], directions, [0.0, 10.0]) == 0.0  # over the reference cost


def test_pareto_front_empty_and_duplicates() -> None:
    assert pareto_front([], ("maximize", "minimize")) == []
    assert pareto_front([[1, 2], [1, 2], [0, 3]], ("maximize", "minimize")) == [0, 1]


def test_the_knee_is_the_point_farthest_beyond_the_extremes_line_and_ignores_units() -> None:
    directions = ("maximize", "minimize")
    l_shape = [[0.50, 1.0], [0.89, 2.0], [0.90, 10.0], [0.91, 100.0]]
    assert find_knee(l_shape, directions).index == 1
    scaled = [[a * 100, c * 1e6] for a, c in l_shape]  # percent and raw MACs: same knee
    assert find_knee(scaled, directions).index == 1
    # By hand: normalised (1, 0), (0.0488, 0.0101), ...; the line through the extremes is x + y = 1.
    assert find_knee(l_shape, directions).distance == pytest.approx((1 - 0.02 / 0.41 - 1 / 99) / 2**0.5)


def test_the_knee_compares_costs_by_ratio_on_a_log_scale() -> None:
    directions = ("maximize", "minimize")
    decades = [[0.50, 1e3], [0.85, 1e4], [0.90, 1e5], [0.92, 1e6]]
    assert find_knee(decades, directions).index == 2  # linear: 1e5 still looks cheap next to 1e6
    assert find_knee(decades, directions, log=[False, True]).index == 1


@pytest.mark.parametrize("front", [[[0.7, 5.0]], [[0.764, 146e3], [0.885, 150e3]]], ids=["one", "two"])
def test_fewer_than_three_points_have_no_knee(front) -> None:
    knee = find_knee(front, ("maximize", "minimize"))
    assert knee.index is None and f"the front has {len(front)} point" in knee.reason


def test_a_straight_front_has_no_knee_and_a_bulge_under_the_margin_is_none() -> None:
    directions = ("maximize", "minimize")
    straight = [[0.5, 1.0], [0.7, 2.0], [0.9, 3.0]]
    knee = find_knee(straight, directions)
    assert knee.index is None and "no point stands out from the line" in knee.reason
    slight = [[0.5, 1.0], [0.72, 2.0], [0.9, 3.0]]  # 0.05 above the line in accuracy: 0.035 from it
    assert find_knee(slight, directions).index is None
    assert find_knee(slight, directions, margin=0.03).index == 1
    clear = [[0.5, 1.0], [0.85, 2.0], [0.9, 3.0]]
    assert find_knee(clear, directions).index == 1


def test_three_objective_knee_uses_the_plane_through_the_extremes() -> None:
    directions = ("maximize", "minimize", "minimize")
    # Extremes at the normalised corners (0,1,1), (1,0,1), (1,1,0): the plane x + y + z = 2.
    front = [[1.0, 10.0, 10.0], [0.0, 0.0, 10.0], [0.0, 10.0, 0.0], [0.8, 3.0, 3.0]]
    knee = find_knee(front, directions)
    assert knee.index == 3 and knee.distance == pytest.approx((2 - 0.2 - 0.3 - 0.3) / 3**0.5)
    # Params and MACs best in one point: the extremes span a line, and the distance is to it.
    correlated = [[0.7, 9e3, 3e5], [0.85, 2e4, 8e5], [0.9, 4e4, 1.2e6], [0.93, 5.5e4, 2e6]]
    knee = find_knee(correlated, directions, log=[False, True, True])
    assert knee.index == 1 and knee.distance == pytest.approx(0.1413, abs=0.001)  # worked by hand
    # Only the part of a point's offset that points towards the ideal counts: index 2 stands far off
    # the extremes' line but mostly sideways; index 3 bulges towards the ideal.
    lateral = [[1, 1, 1], [0, 0, 0], [0.55, 0.2, 0.8], [0.8, 0.3, 0.3]]
    assert find_knee(lateral, directions).index == 3
    rng = random.Random(3)
    points = [[rng.random(), rng.random() * 1e5, rng.random() * 1e6] for _ in range(60)]
    front = [points[i] for i in pareto_front(points, directions)]
    knee = find_knee(front, directions, log=[False, True, True])
    assert knee.index is None or 0 <= knee.index < len(front)


def test_reference_point_uses_budget_else_worst_observed() -> None:
    pts = [
        Candidate(0, "final", {"accuracy": 0.9, "params": 1000, "macs": 20_000}),
        Candidate(1, "final", {"accuracy": 0.8, "params": 3000, "macs": 10_000}),
    ]
    objectives = ("accuracy", "params", "macs", "flops")
    assert reference_point(objectives, pts, {"macs": 50_000.0}) == pytest.approx(
        (0.0, 3300.0, 50_000.0, 100_000.0)
    )
    assert reference_point(("accuracy", "params"), [], {}) == (0.0, 1.0)


# -- stored studies --------------------------------------------------------------------------------


def _ids(candidates: tuple[Candidate, ...]) -> list[tuple[int, str]]:
    return sorted((c.trial, c.exit) for c in candidates)


def test_trials_front_and_counts(study_url: str) -> None:
    assert [c.trial for c in load_front(study_url).front] == [8, 2, 0, 3]  # cheapest first
    front = load_front(study_url, budget=TIGHT)
    assert front.study_name == "toy"
    assert front.objectives == ("accuracy", "params", "macs")
    # Rejected, failed, pruned, running, infeasible (3) and dominated (6) trials are not on it.
    assert [(c.trial, c.exit) for c in front.front] == [(8, "final"), (2, "final"), (0, "final")]
    assert all(c.deployed for c in front.front)
    c = front.counts
    assert (c.complete, c.feasible, c.rejected, c.failed, c.pruned, c.running) == (5, 4, 1, 1, 1, 1)
    assert [p.trial for p in front.trials] == [0, 2, 3, 6, 8]  # every trained trial, for the plot
    assert front.best["accuracy"].trial == 0
    assert front.best["params"].trial == front.best["macs"].trial == 8
    assert front.knee in front.front
    assert 0.0 < front.hypervolume < 1.0
    assert front.reference == (0.0, 60_000.0, 1_500_000.0)
    assert front.front[0].config["model"]["branches"]["placement"] == []
    # The pruned trial's exits are kept apart, marked partial with their rung epoch.
    assert [(p.trial, p.exit, p.partial, p.epoch) for p in front.partial] == [
        (5, "1", True, 2),
        (5, "final", True, 2),
    ]


def test_trials_front_agrees_with_optuna_best_trials(study_url: str) -> None:
    study = optuna.load_study(study_name="toy", storage=study_url)
    assert {c.trial for c in load_front(study_url).front} == {t.number for t in study.best_trials}


def test_candidate_front_includes_feasible_shallow_exit_of_infeasible_trial(study_url: str) -> None:
    front = load_front(study_url, candidates=True, budget=TIGHT)
    assert front.front is front.candidates_front
    expected = [(0, "1"), (0, "2"), (0, "final"), (2, "2"), (2, "final"), (3, "1"), (3, "3"), (8, "final")]
    assert _ids(front.front) == expected
    assert (3, "final") not in _ids(front.front)  # over the MACs budget itself
    shallow = next(c for c in front.front if (c.trial, c.exit) == (3, "3"))
    assert not shallow.deployed and shallow.label == "#3(3)"
    assert shallow.config["model"]["backbone"]["arch"] == "mobilenetv2"
    assert len(front.all_candidates) == 11
    # The candidates front dominates at least as much as the trials front.
    assert front.hypervolume >= load_front(study_url, budget=TIGHT).hypervolume


def test_tighter_budget_selects_before_the_front(study_url: str) -> None:
    front = load_front(study_url, budget={"macs": 1e6})
    assert front.budget == {"params": 60_000.0, "macs": 1_000_000.0}
    assert [c.trial for c in front.front] == [8, 2]
    assert all(c.macs <= 1e6 for c in front.front)
    assert front.reference[2] == 1e6
    cand = load_front(study_url, candidates=True, budget={"macs": "1M", "params": "10k"})
    assert _ids(cand.front) == [(0, "1"), (2, "2"), (3, "1"), (8, "final")]
    # A looser limit cannot loosen the study budget: over-budget configs were never trained.
    assert load_front(study_url, budget={"macs": 9e9}).budget["macs"] == 2_000_000.0
    # A FLOPs limit is a MACs limit at half the number.
    assert load_front(study_url, budget={"flops": "2M"}).budget["macs"] == 1_000_000.0


@pytest.mark.parametrize(
    ("budget", "match"),
    [
        ({"energy": 3}, "unknown metric 'energy'"),
        ({"macs": "2X"}, "unknown unit 'X'"),
        ({"latency": 3}, "needs a unit"),
        ({"peak_memory": "64KB"}, "ambiguous"),
        ({"macs": -1}, "positive"),
    ],
)
def test_bad_budget_is_a_config_error(study_url: str, budget: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_front(study_url, budget=budget)
    assert info.value.exit_code == 2


def test_budget_with_nothing_inside_is_a_study_error(study_url: str) -> None:
    with pytest.raises(StudyError, match=r"^toy: no feasible trial yet within .*macs <= 1k"):
        load_front(study_url, budget={"macs": 1000})


def test_zero_feasible_trials_is_a_study_error(tmp_path) -> None:
    url = storage_url(tmp_path)
    b = StudyBuilder(url, "nothing_fits")
    b.rejected(100_000, 3_000_000)
    b.failed("nan loss")
    with pytest.raises(StudyError, match=r"^nothing_fits: no feasible trial yet") as info:
        load_front(url)
    assert info.value.exit_code == 1
    assert "1 rejected" in str(info.value) and "1 failed" in str(info.value)


def test_shallow_exit_rescues_candidates_view_only(tmp_path) -> None:
    url = storage_url(tmp_path)
    StudyBuilder(url, "shallow").trained((0.9, 50_000, 1_900_000), {"2": (0.7, 20_000, 900_000)})
    with pytest.raises(StudyError, match="no feasible trial yet"):  # the deployed exit breaks 1M MACs
        load_front(url, budget={"macs": "1M"})
    assert _ids(load_front(url, candidates=True, budget={"macs": "1M"}).front) == [(0, "2")]


def test_study_not_written_by_sdsearch(tmp_path) -> None:
    url = storage_url(tmp_path)
    optuna.create_study(storage=url, study_name="foreign")
    with pytest.raises(StudyError, match="not created by sdsearch"):
        load_front(url)


def test_no_budget_reference_and_flops_objective(tmp_path) -> None:
    url = storage_url(tmp_path)
    b = StudyBuilder(url, "nb", objectives=("accuracy", "flops"), budget={})
    b.trained((0.8, 10_000, 500_000))
    b.trained((0.9, 20_000, 1_000_000))
    front = load_front(url, study_name="nb")
    assert front.objectives == ("accuracy", "flops")
    assert front.reference == (0.0, pytest.approx(1.1 * 2_000_000))
    assert [c.value("flops") for c in front.front] == [1_000_000, 2_000_000]
    assert [c.macs for c in front.front] == [500_000, 1_000_000]  # stored once, as MACs


def test_build_front_is_pure_over_a_snapshot(study_url: str) -> None:
    record = read_study(study_url)
    assert record.budget == {"params": 60_000.0, "macs": 2_000_000.0}
    assert build_front(record).trials_front == load_front(study_url).trials_front


def test_public_api_is_lazy_attribute(study_url: str) -> None:
    assert sdsearch.load_front is load_front
