"""Anytime inference: the policy and its calibration on synthetic exit statistics."""

from __future__ import annotations

import numpy as np
import pytest

from sdsearch.anytime import (
    AnytimeCost,
    ExitStats,
    anytime_outcome,
    calibrate,
    exit_indices,
    sweep,
)


def test_an_exit_is_left_only_when_confidence_is_strictly_greater() -> None:
    conf = np.array([[0.5, 0.9], [0.6, 0.9], [1.0, 0.9]], dtype=np.float32)
    assert exit_indices(conf, [0.5]).tolist() == [1, 0, 0]  # 0.5 > 0.5 is false
    assert exit_indices(conf, [1.0]).tolist() == [1, 1, 1]  # even a saturated 1.0 does not leave
    assert exit_indices(conf, [0.0]).tolist() == [0, 0, 0]
    below = float(np.nextafter(np.float32(0.5), np.float32(0)))
    assert exit_indices(conf, [below]).tolist() == [0, 0, 0]


def _deeper_is_better(n: int = 1000, seed: int = 0) -> tuple[ExitStats, AnytimeCost]:
    """Exits that get better with depth, confident where they are right (more or less)."""
    rng = np.random.default_rng(seed)
    skill = np.array([0.70, 0.80, 0.88, 0.95])
    correct = rng.random((n, 4)) < skill
    conf = np.clip(np.where(correct, rng.beta(5, 1, (n, 4)), rng.beta(2, 2, (n, 4))), 0.1, 1.0).astype(
        np.float32
    )
    stats = ExitStats(exits=("1", "2", "3", "final"), confidence=conf, correct=correct)
    return stats, AnytimeCost(exits=stats.exits, trunk=(400, 300, 300, 300), branch=(60, 50, 40, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_meets_binding_targets(seed: int) -> None:
    stats, cost = _deeper_is_better(seed=seed)
    deepest = stats.exit_accuracy["final"]
    points = sweep(stats, cost)
    for drop in (0.0, 0.01, 0.03, 0.1):
        cal = calibrate(stats, cost, accuracy_drop=drop)
        assert cal.outcome.accuracy >= deepest - drop - 1e-12
        assert cal.outcome == anytime_outcome(stats, cal.thresholds, cost)
        assert cal.outcome.expected_macs <= min(
            p.expected_macs for p in points if p.accuracy >= deepest - drop - 1e-12
        )
        if drop >= 0.01:
            assert cal.outcome.expected_macs < 0.9 * cost.worst_case  # confident exits do save
    for budget in np.linspace(cost.leave[0], cost.worst_case, 6):
        cal = calibrate(stats, cost, expected_macs=budget)
        assert cal.met and cal.outcome.expected_macs <= budget
        assert cal.outcome.accuracy >= max(p.accuracy for p in points if p.expected_macs <= budget)


def test_per_exit_thresholds_beat_one_shared_threshold_where_exits_differ() -> None:
    """Exit 1 is right when its confidence is 0.9 and wrong at 0.8; exit 2 is right at 0.7 and wrong at
    0.6. Per-exit thresholds send the easy half out at exit 1 and a quarter at exit 2 with no loss;
    a shared threshold must stay above 0.8 for exit 1, which keeps everyone past exit 2."""
    n = 400
    conf = np.full((n, 3), 0.99, dtype=np.float32)
    correct = np.ones((n, 3), dtype=bool)
    easy, medium, hard = slice(0, 200), slice(200, 300), slice(300, 400)
    conf[easy, 0], conf[medium, 0], conf[hard, 0] = 0.9, 0.8, 0.8
    correct[medium, 0] = correct[hard, 0] = False
    conf[:, 1] = 0.6
    conf[medium, 1] = 0.7
    correct[hard, 1] = False
    stats = ExitStats(exits=("1", "2", "final"), confidence=conf, correct=correct)
    cost = AnytimeCost(exits=("1", "2", "final"), trunk=(100, 100, 100), branch=(10, 10, 1))
    cal = calibrate(stats, cost, accuracy_drop=0.0)
    assert cal.method == "per_exit" and cal.outcome.accuracy == 1.0
    assert cal.outcome.exit_share == (0.5, 0.25, 0.25)
    assert 0.8 <= cal.thresholds["1"] < 0.9 and 0.6 <= cal.thresholds["2"] < 0.7
    assert cal.outcome.expected_macs == 0.5 * 110 + 0.25 * 220 + 0.25 * 321
    best_shared = min((p for p in cal.sweep if p.accuracy == 1.0), key=lambda p: p.expected_macs)
    assert best_shared.exit_share == (0.5, 0.0, 0.5)
