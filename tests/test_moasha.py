"""MOASHA: the sorting maths against brute force, the rung rule, Ray's ASHA as the reference for the
single-objective variant, and one Tune run where MOASHA keeps the cheap trial that ASHA stops."""

from __future__ import annotations

import itertools
import math
import pickle
import random
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.search import Searcher

from sdsearch.core.errors import ConfigError
from sdsearch.core.pareto import crowding_distance, nondominated_sort, pareto_front
from sdsearch.search.moasha import (
    CANDIDATE_COSTS_KEY,
    CONTINUE,
    COSTS_KEY,
    STOP,
    AsyncSuccessiveHalving,
    MOASHAScheduler,
    ParetoRanking,
    ScalarRanking,
    cost_objectives,
    in_top_fraction,
    rank_order,
    rung_levels,
    trial_costs,
)

MIXED = {2: ("maximize", "minimize"), 3: ("minimize", "maximize", "minimize")}
ACC_PARAMS = ("maximize", "minimize")


# -- brute-force references ----------------------------------------------------------------------


def _loss(point, directions):
    return [-v if d == "maximize" else v for v, d in zip(point, directions)]


def _dominates(a, b, directions):
    la, lb = _loss(a, directions), _loss(b, directions)
    return all(x <= y for x, y in zip(la, lb)) and any(x < y for x, y in zip(la, lb))


def brute_fronts(points, directions):
    """Peel the Pareto set off again and again: O(n^3), obviously right."""
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [
            i for i in remaining if not any(_dominates(points[j], points[i], directions) for j in remaining)
        ]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def brute_crowding(points, directions):
    """Per point and objective, find the neighbours in (loss, index) order without sorting."""
    n = len(points)
    out = []
    for i in range(n):
        total = 0.0
        for j in range(len(directions)):
            keys = [(_loss(p, directions)[j], k) for k, p in enumerate(points)]
            lower = [key for key in keys if key < keys[i]]
            upper = [key for key in keys if key > keys[i]]
            if not lower or not upper:
                total = math.inf
                break
            span = max(keys)[0] - min(keys)[0]
            if span > 0:
                total += (min(upper)[0] - max(lower)[0]) / span
        out.append(total)
    return out


def random_points(rng, n, d, *, ties):
    if ties:  # a small grid makes equal values and duplicate points common
        return [tuple(float(rng.randint(0, 4)) for _ in range(d)) for _ in range(n)]
    return [tuple(rng.random() for _ in range(d)) for _ in range(n)]


# -- non-dominated sort --------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_nondominated_sort_matches_brute_force(d, ties):
    rng = random.Random(d * 10 + ties)
    for n in [0, 1, 2, 3, 5, 8, 13, 25, 40] * 4:
        points = random_points(rng, n, d, ties=ties)
        fronts = nondominated_sort(points, MIXED[d])
        assert fronts == brute_fronts(points, MIXED[d]), points
        if points:
            assert fronts[0] == pareto_front(points, MIXED[d])
        assert sorted(itertools.chain.from_iterable(fronts)) == list(range(n))


def test_nondominated_sort_hand_cases():
    # Both minimised: duplicates share a front; (2, 5) is dominated by (1, 5) and by (2, 4).
    assert nondominated_sort([(1, 5), (2, 4), (3, 3), (2, 5), (1, 5)], ["minimize"] * 2) == [
        [0, 1, 2, 4],
        [3],
    ]
    # Accuracy up, params down: the cheap inaccurate point is on the first front.
    points = [(0.9, 100), (0.8, 100), (0.5, 1), (0.5, 2), (0.1, 500)]
    assert nondominated_sort(points, ACC_PARAMS) == [[0, 2], [1, 3], [4]]
    # The same points with params maximised: a different order.
    assert nondominated_sort(points, ("maximize", "maximize")) == [[0, 4], [1], [3], [2]]
    assert nondominated_sort([], ACC_PARAMS) == []
    assert nondominated_sort([(math.inf, 1), (0.5, 1)], ACC_PARAMS) == [[0], [1]]


def test_nan_and_bad_directions_are_refused():
    with pytest.raises(ValueError, match=r"point 1 is \[nan, 2.0\]"):
        nondominated_sort([(1, 1), (math.nan, 2)], ACC_PARAMS)
    with pytest.raises(ValueError, match="point 0"):
        crowding_distance([(math.nan, 1), (1, 2), (2, 3)], ACC_PARAMS)
    with pytest.raises(ConfigError, match="'max'"):
        nondominated_sort([(1, 1)], ["max", "minimize"])


# -- crowding distance ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_crowding_distance_matches_brute_force(d, ties):
    rng = random.Random(100 + d * 10 + ties)
    for n in [0, 1, 2, 3, 4, 7, 12, 30] * 4:
        points = random_points(rng, n, d, ties=ties)
        got = crowding_distance(points, MIXED[d])
        assert got == pytest.approx(brute_crowding(points, MIXED[d])), points


def test_crowding_distance_hand_cases():
    # Evenly spaced on a line: each inner point's neighbours are 2 apart in a range of 3, twice.
    line = [(0, 3), (1, 2), (2, 1), (3, 0)]
    assert crowding_distance(line, ["minimize"] * 2) == [
        math.inf,
        pytest.approx(4 / 3),
        pytest.approx(4 / 3),
        math.inf,
    ]
    # Point 1 sits close to both its neighbours; point 2 has a far one in each objective.
    assert crowding_distance([(0, 10), (1, 9), (1.1, 8.9), (10, 0)], ["minimize"] * 2)[1:3] == pytest.approx(
        [(1.1 - 0) / 10 + (10 - 8.9) / 10, (10 - 1) / 10 + (9 - 0) / 10]
    )
    # A constant objective adds nothing; the other still sets the boundary.
    assert crowding_distance([(0, 5), (1, 5), (2, 5)], ["minimize"] * 2) == [math.inf, 1.0, math.inf]
    assert crowding_distance([(0, 1), (1, 0)], ACC_PARAMS) == [math.inf, math.inf]
    assert crowding_distance([(0.5, 3)], ACC_PARAMS) == [math.inf]
    assert crowding_distance([], ACC_PARAMS) == []


# -- ranking -------------------------------------------------------------------------------------


def test_rank_order_is_front_then_crowding_then_arrival():
    points = [
        (0.70, 50),  # 0 front 0, inner: crowding 0.3/0.4 + 70/90
        (0.20, 90),  # 1 front 1 (of two points: both boundary)
        (0.90, 100),  # 2 front 0, boundary
        (0.50, 10),  # 3 front 0, boundary
        (0.80, 80),  # 4 front 0, inner: crowding 0.2/0.4 + 50/90
        (math.nan, 1),  # 5 NaN: last, however cheap
        (0.20, 90),  # 6 duplicate of 1: tied with it, so after it
    ]
    assert rank_order(points, ACC_PARAMS) == [2, 3, 0, 4, 1, 6, 5]


def test_ranked_keys_tie_exactly_when_points_tie():
    keys = ParetoRanking(ACC_PARAMS)([(0.9, 100), (0.5, 1), (0.9, 100)])
    assert keys[0] == keys[1]  # two boundaries of one front: a tie, not an order
    keys = ScalarRanking("maximize")([(0.5,), (0.7,), (0.5,), (math.nan,), (-math.inf,)])
    assert keys[0] == keys[2] and keys[1] < keys[0] < keys[4] < keys[3]
    assert ScalarRanking("minimize")([(1.0,), (2.0,)]) == [(0.0, 1.0), (0.0, 2.0)]


def test_in_top_fraction_counts_ties_with_the_better_rank():
    assert in_top_fraction([(1.0,)], 0, 2)  # a lone arrival continues
    assert not in_top_fraction([(0.0,), (1.0,)], 1, 2)  # rank 1 of 2: not in the top half
    assert in_top_fraction([(0.0,), (0.0,)], 1, 2)  # tied with the best
    assert in_top_fraction([(0.0,), (1.0,), (2.0,)], 1, 2)  # rank 1 < 3/2
    assert not in_top_fraction([(0.0,), (1.0,), (2.0,)], 1, 3)  # rank 1 < 3/3 fails


# -- the asynchronous successive-halving core ----------------------------------------------------


def test_rung_levels():
    assert rung_levels(1, 3, 9) == [1, 3, 9]
    assert rung_levels(2, 2, 10) == [2, 4, 8]
    assert rung_levels(1, 3.0, 8) == [1, 3.0]
    assert rung_levels(4, 2, 4) == [4]


def asha(eta, *, grace=1, max_t=100):
    return AsyncSuccessiveHalving(
        grace_period=grace, reduction_factor=eta, max_t=max_t, ranking=ScalarRanking("maximize")
    )


@pytest.mark.parametrize(
    ("eta", "arrivals", "expected"),
    [
        # Continue iff fewer than n/eta of the n arrivals so far (itself included) are strictly better.
        (2, [0.5, 0.4, 0.6, 0.3, 0.55, 0.45, 0.7], "CSCSCSC"),
        (3, [0.5, 0.4, 0.6, 0.3, 0.55, 0.45, 0.7], "CSCSCSC"),
        (2, [0.5, 0.6, 0.55, 0.7, 0.65, 0.2, 0.8], "CCCCCSC"),
        (3, [0.5, 0.6, 0.55, 0.7, 0.65, 0.2, 0.8], "CCSCCSC"),  # 0.55: rank 1 of 3 is no top third
        # The first arrivals continue however bad they turn out to be; a tie shares the better rank.
        (2, [0.1, 0.2, 0.2, 0.9, 0.1], "CCCCS"),
    ],
)
def test_one_rung_in_arrival_order(eta, arrivals, expected):
    halving = asha(eta)
    decisions = "".join(halving.on_result(f"t{i}", 1, (v,))[0] for i, v in enumerate(arrivals))
    assert decisions == expected
    assert list(halving.recorded(1).values()) == [(v,) for v in arrivals]  # stopped ones stay recorded


def test_promotion_is_asynchronous_across_rungs():
    """eta 3, rungs 1, 3 (and 9 = max_t): each rung judges its own arrivals as they come."""
    halving = asha(3, max_t=9)
    events = [  # (trial, epoch, accuracy, decision)
        ("a", 1, 0.30, CONTINUE),  # first at rung 1
        ("b", 1, 0.50, CONTINUE),  # best so far
        ("a", 2, 0.35, CONTINUE),  # between rungs: no decision
        ("c", 1, 0.20, STOP),  # rank 2 of 3: 2 * 3 >= 3
        ("a", 3, 0.40, CONTINUE),  # first at rung 3: promoted, although b will beat it there
        ("b", 2, 0.60, CONTINUE),
        ("d", 1, 0.25, STOP),  # rank 2 of 4
        ("b", 3, 0.70, CONTINUE),  # best at rung 3
        ("e", 1, 0.55, CONTINUE),  # best at rung 1: promoted late, nothing waited for the rung to fill
        ("e", 2, 0.58, CONTINUE),
        ("e", 3, 0.52, STOP),  # rank 1 of 3 at rung 3: 1 * 3 >= 3
        ("a", 9, 0.50, STOP),  # max_t
    ]
    for trial, epoch, accuracy, decision in events:
        assert halving.on_result(trial, epoch, (accuracy,)) == decision, (trial, epoch)
    assert list(halving.recorded(1)) == ["a", "b", "c", "d", "e"]
    assert halving.recorded(3) == {"a": (0.40,), "b": (0.70,), "e": (0.52,)}
    assert halving.recorded(9) == {}  # a result at max_t stops and is not recorded


def test_a_trial_is_judged_once_per_rung_and_a_missing_point_waits():
    halving = asha(2)
    assert halving.on_result("a", 1, (0.9,)) == CONTINUE
    assert halving.on_result("b", 1, None) == CONTINUE  # metric missing: nothing recorded
    assert halving.recorded(1) == {"a": (0.9,)}
    assert halving.on_result("b", 1, (0.1,)) == STOP  # judged at its next result at the rung
    assert halving.on_result("b", 1, (0.99,)) == CONTINUE  # already judged there: no second verdict
    assert halving.recorded(1)["b"] == (0.1,)
    assert halving.on_result("c", 0.5, (0.0,)) == CONTINUE  # before the grace period


def test_nan_ranks_last_and_counts_as_an_arrival():
    halving = asha(2)
    assert halving.on_result("a", 1, (0.1,)) == CONTINUE
    assert halving.on_result("nan", 1, (math.nan,)) == STOP
    assert halving.on_result("b", 1, (0.05,)) == CONTINUE  # rank 1 of 3: the NaN is behind it


def test_pareto_ranking_keeps_the_cheap_trial_that_accuracy_alone_stops():
    arrivals = [("big", 0.90, 90_000), ("bigger", 0.85, 95_000), ("small", 0.60, 4_000)]
    scalar, pareto = (
        asha(2),
        AsyncSuccessiveHalving(
            grace_period=1, reduction_factor=2, max_t=100, ranking=ParetoRanking(ACC_PARAMS)
        ),
    )
    assert [scalar.on_result(t, 1, (acc,)) for t, acc, _ in arrivals] == [CONTINUE, STOP, STOP]
    assert [pareto.on_result(t, 1, (acc, p)) for t, acc, p in arrivals] == [CONTINUE, STOP, CONTINUE]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"grace_period": 0, "reduction_factor": 3, "max_t": 9},
        {"grace_period": 10, "reduction_factor": 3, "max_t": 9},
        {"grace_period": 1, "reduction_factor": 1, "max_t": 9},
    ],
)
def test_bad_rung_arguments_are_refused(kwargs):
    with pytest.raises(ConfigError, match="must hold, but got"):
        AsyncSuccessiveHalving(ranking=ScalarRanking(), **kwargs)


# -- agreement with Ray's ASHA -------------------------------------------------------------------


def ray_asha(eta):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    return AsyncHyperBandScheduler(metric="acc", mode="max", grace_period=1, reduction_factor=eta, max_t=100)


def ray_decide(scheduler, trial_id, value):
    trial = SimpleNamespace(trial_id=trial_id)
    scheduler.on_trial_add(None, trial)
    return scheduler.on_trial_result(None, trial, {"training_iteration": 1, "acc": value})


def interpolation_band(previous, eta):
    """[lo, hi): where Ray's interpolated cutoff lies. Outside it, 'x >= cutoff' and 'fewer than
    n/eta earlier values are strictly above x' are the same statement for eta >= 2."""
    if not previous:
        return None
    v = sorted(previous)
    h = (1 - 1 / eta) * (len(v) - 1)
    lo, hi = v[math.floor(h)], v[math.ceil(h)]
    return (lo, hi) if lo < hi else None


@pytest.mark.parametrize("eta", [2, 3, 4])
@pytest.mark.parametrize("ties", [False, True])
def test_scalar_variant_agrees_with_rays_asha(eta, ties):
    rng = random.Random(eta * 7 + ties)
    compared = 0
    for seq in range(20):
        ours, ray_scheduler = asha(eta), ray_asha(eta)
        previous = []
        for i in range(rng.randint(1, 40)):
            x = float(rng.randint(0, 5)) if ties else rng.random()
            mine = ours.on_result(i, 1, (x,))
            theirs = ray_decide(ray_scheduler, f"{seq}-{i}", x)
            band = interpolation_band(previous, eta)
            if band is None or not band[0] <= x < band[1]:
                assert mine == theirs, (eta, previous, x)
                compared += 1
            previous.append(x)
    assert compared > 200


def test_scalar_variant_differs_from_ray_only_inside_the_interpolation_band():
    """eta 2 after 0.4 and 0.6: Ray's cutoff is their mean, 0.5; a rank rule puts 0.45 second of three."""
    ours, ray_scheduler = asha(2), ray_asha(2)
    for i, x in enumerate([0.4, 0.6]):
        assert ours.on_result(i, 1, (x,)) == ray_decide(ray_scheduler, i, x)
    assert ray_decide(ray_scheduler, 2, 0.45) == STOP
    assert ours.on_result(2, 1, (0.45,)) == CONTINUE


# -- the Ray scheduler without Tune --------------------------------------------------------------


def fake_trial(trial_id, **costs):
    return SimpleNamespace(trial_id=trial_id, config={"config": {}, COSTS_KEY: costs})


def make_scheduler(**kwargs):
    kwargs = {"grace_period": 1, "reduction_factor": 2, "max_t": 4, **kwargs}
    return MOASHAScheduler(("accuracy", "params"), ACC_PARAMS, **kwargs)


def report(scheduler, trial, t, **metrics):
    return scheduler.on_trial_result(None, trial, {"training_iteration": t, **metrics})


def test_scheduler_reads_costs_from_the_config_and_accuracy_from_results():
    scheduler = make_scheduler()
    big, bigger, small = (
        fake_trial("big", params=90_000),
        fake_trial("bigger", params=95_000),
        fake_trial("small", params=4_000),
    )
    for trial in (big, bigger, small):
        scheduler.on_trial_add(None, trial)
    assert report(scheduler, big, 1, accuracy=0.90) == CONTINUE
    assert report(scheduler, bigger, 1, accuracy=np.float32(0.85)) == STOP
    assert report(scheduler, small, 1, accuracy=0.60) == CONTINUE
    assert scheduler.halving.recorded(1)["small"] == (0.60, 4_000.0)
    assert report(scheduler, big, 4, accuracy=0.95) == STOP  # max_t
    assert "num_stopped=2" in scheduler.debug_string()
    assert scheduler.metric == "accuracy"


def test_an_elastic_trial_goes_on_while_one_of_its_fitting_candidates_would():
    """Each fitting (width, exit) is a point at the rung with its own accuracy and cost: the wide
    network loses to "big" here, but its narrow width is a trade-off nothing dominates."""
    scheduler = make_scheduler()
    big = fake_trial("big", params=90_000)
    elastic = SimpleNamespace(trial_id="el", config={"config": {}, COSTS_KEY: {"params": 95_000},
        CANDIDATE_COSTS_KEY: {"final@1": {"params": 95_000}, "final@0.5": {"params": 30_000}}})  # fmt: skip
    assert report(scheduler, big, 1, accuracy=0.90) == CONTINUE
    got = report(
        scheduler, elastic, 1, accuracy=0.85, **{"accuracy_final@1": 0.85, "accuracy_final@0.5": 0.8}
    )
    assert got == CONTINUE
    assert scheduler.halving.recorded(1)[("el", "final@0.5")] == (0.8, 30_000.0)
    assert report(scheduler, fake_trial("small", params=20_000), 1, accuracy=0.85) == CONTINUE
    # Every candidate in the last front: the trial stops.
    worse = SimpleNamespace(trial_id="w", config={"config": {}, COSTS_KEY: {"params": 96_000},
        CANDIDATE_COSTS_KEY: {"final@1": {"params": 96_000}, "final@0.5": {"params": 31_000}}})  # fmt: skip
    assert (
        report(scheduler, worse, 1, **{"accuracy": 0.7, "accuracy_final@1": 0.7, "accuracy_final@0.5": 0.6})
        == STOP
    )


def test_scheduler_handles_missing_nan_and_failure_results():
    scheduler = make_scheduler()
    a, b, c = fake_trial("a", params=10), fake_trial("b", params=10), fake_trial("c", params=10)
    assert scheduler.on_trial_result(None, a, {"accuracy": 0.5}) == CONTINUE  # no time attr
    assert report(scheduler, a, 1) == CONTINUE  # no accuracy: nothing recorded
    assert report(scheduler, a, 1, accuracy=0.5, fail_reason="RuntimeError: boom") == CONTINUE
    assert scheduler.halving.recorded(1) == {}
    assert report(scheduler, a, 1, accuracy=0.5) == CONTINUE
    assert report(scheduler, b, 1, accuracy=math.nan) == STOP  # NaN ranks last
    # Not a number counts as NaN: tied with b, so only a is ahead of it.
    assert report(scheduler, c, 1, accuracy="n/a") == CONTINUE
    assert math.isnan(scheduler.halving.recorded(1)["c"][0])


def test_scheduler_refuses_a_config_without_costs():
    scheduler = make_scheduler()
    with pytest.raises(ConfigError, match=r"config\['costs'\] must hold params.*trial_costs"):
        scheduler.on_trial_add(None, SimpleNamespace(trial_id="x", config={"config": {}}))
    with pytest.raises(ConfigError, match=r"must hold params.*got \['macs'\]"):
        scheduler.on_trial_add(None, fake_trial("y", macs=5))
    # One objective: plain ASHA on accuracy, no costs needed.
    single = MOASHAScheduler(["accuracy"], ["maximize"], grace_period=1, reduction_factor=2, max_t=4)
    single.on_trial_add(None, SimpleNamespace(trial_id="z", config={}))


def test_scheduler_refuses_bad_objectives():
    with pytest.raises(ConfigError, match="one direction per objective"):
        MOASHAScheduler(["accuracy", "params"], ["maximize"])
    with pytest.raises(ConfigError, match="all costs"):
        MOASHAScheduler(["params", "macs"], ["minimize", "minimize"])
    with pytest.raises(ConfigError, match="'up'"):
        MOASHAScheduler(["accuracy"], ["up"])


def test_scheduler_pickles_with_its_rungs(tmp_path):
    scheduler = make_scheduler()
    report(scheduler, fake_trial("a", params=10), 1, accuracy=0.5)
    clone = pickle.loads(pickle.dumps(scheduler))
    assert clone.halving.recorded(1) == {"a": (0.5, 10.0)}
    assert report(clone, fake_trial("b", params=20), 1, accuracy=0.4) == STOP
    scheduler.save(str(tmp_path / "s.pkl"))
    restored = make_scheduler()
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored.halving.recorded(1) == {"a": (0.5, 10.0)}


def test_trial_costs_holds_every_cost_objective():
    cost = {"params": 4_000, "macs": 90_000, "peak_memory": 2048}  # stored metrics: MACs, never FLOPs
    assert trial_costs(cost, ["accuracy", "params", "flops"]) == {"params": 4000.0, "flops": 180000.0}
    assert trial_costs(cost, ["accuracy", "peak_memory"]) == {"peak_memory": 2048.0}
    assert cost_objectives(["accuracy", "macs", "expected_macs"]) == ("macs",)  # known only after training


# -- end to end through Tune ---------------------------------------------------------------------

# Three configs in this order: two accurate, expensive models, then a cheap, less accurate one.
CASES = [
    {"name": "big", "ceiling": 0.90, COSTS_KEY: {"params": 90_000.0}},
    {"name": "bigger", "ceiling": 0.85, COSTS_KEY: {"params": 95_000.0}},
    {"name": "small", "ceiling": 0.60, COSTS_KEY: {"params": 4_000.0}},
]
EPOCHS = 4


def curve_trainable(config):
    """Accuracy ceiling * e / (e + 1) at epoch e: a known curve, no training."""
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        tune.report({"accuracy": config["ceiling"] * epoch / (epoch + 1), "epoch": epoch})


class FixedConfigs(Searcher):
    """Hands out configs in order, then FINISHED: the same trials in the same order for each scheduler."""

    def __init__(self, configs):
        super().__init__(metric="accuracy", mode="max")
        self._configs = list(configs)

    def suggest(self, trial_id):
        return dict(self._configs.pop(0)) if self._configs else Searcher.FINISHED

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def epochs_per_case(scheduler, tmp_path):
    from ray import cloudpickle, tune

    # Workers cannot import a test module by name: ship the trainable by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    tuner = tune.Tuner(
        curve_trainable,
        tune_config=tune.TuneConfig(
            search_alg=FixedConfigs(CASES),
            scheduler=scheduler,
            num_samples=len(CASES),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    return {r.config["name"]: r.metrics["epoch"] for r in grid}


@pytest.mark.ray
def test_moasha_keeps_the_cheap_trial_that_asha_stops(tmp_path, ray_session):
    from ray.tune.schedulers import ASHAScheduler

    rungs = {"grace_period": 1, "reduction_factor": 2, "max_t": EPOCHS}
    asha_epochs = epochs_per_case(
        ASHAScheduler(time_attr="training_iteration", metric="accuracy", mode="max", **rungs),
        tmp_path / "asha",
    )
    moasha_epochs = epochs_per_case(
        MOASHAScheduler(("accuracy", "params"), ACC_PARAMS, **rungs), tmp_path / "moasha"
    )
    assert asha_epochs == {"big": EPOCHS, "bigger": 1, "small": 1}
    assert moasha_epochs == {"big": EPOCHS, "bigger": 1, "small": EPOCHS}
