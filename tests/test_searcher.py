"""SDOptunaSearch driven without Tune (as Ray's own searcher tests do): budget, NaN, missing, stop."""

from __future__ import annotations

import io
import math

import optuna
import pytest
from optuna.trial import TrialState

from sdsearch.core.config import TrialConfig
from sdsearch.core.metrics import directions
from sdsearch.search import result_keys as keys
from sdsearch.search.searcher import SDOptunaSearch, SpaceSampler, budget_violations, final_state
from sdsearch.space.space import parse_space
from sdsearch.store import attrs

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "name": "unit",
    "objectives": ["accuracy", "params", "macs"],
    "budget": {"macs": 1000},
    "train": {"epochs": 3},
    "space": {"backbone": {"width": {"choice": [0.25, 0.5, 1.0]}}, "branches": {"placement": [1, 2]}},
}


def fake_costs(config: TrialConfig) -> dict[str, dict[str, float]]:
    """Cost grows with width and exit depth: width 1.0 breaks the 1000-MAC budget."""
    w = config.model.backbone.width
    return {
        e: {
            "params": int(100 * w * (i + 1)),
            "macs": int(1000 * w * (i + 1) / 2),
            "peak_memory": int(400 * w * (i + 1)),
            "size": int(110 * w * (i + 1)),
        }
        for i, e in enumerate(config.model.exits)
    }


def make_searcher(
    budget=None, space=None, storage=None, cost_fn=fake_costs, max_rejections=500, fingerprint_fn=None,
    max_duplicates=100,
):  # fmt: skip
    spec = dict(SPACE) if space is None else space
    if budget is not None:
        spec["budget"] = budget
    sp = parse_space(spec)
    storage = storage or optuna.storages.InMemoryStorage()
    if isinstance(storage, str):
        storage = optuna.storages.RDBStorage(storage)
    study = optuna.create_study(
        directions=directions(sp.objectives), sampler=optuna.samplers.RandomSampler(seed=1), storage=storage
    )
    searcher = SDOptunaSearch(SpaceSampler(sp), study=study, storage=storage, objectives=sp.objectives,
                              budget=sp.budget, cost_fn=cost_fn, max_rejections=max_rejections,
                              fingerprint_fn=fingerprint_fn, max_duplicates=max_duplicates)  # fmt: skip
    return searcher, study


def trial_id(study, number):
    """The storage id of a trial, through the public storage API."""
    storage = study._storage  # the test owns the study; the searcher is handed its storage explicitly
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )


def result(acc=0.8, epoch=3, **extra):
    """A last result as the trainable reports it (the keys are result_keys', never spelled here)."""
    return {**keys.exit_metrics({"1": 0.5, "2": 0.6, "final": acc}, "final"), keys.EPOCH: epoch, **extra}


def test_budget_violations():
    assert budget_violations({"params": 10, "macs": 50}, {"macs": 40, "params": 20}) == {
        "macs": 10.0,
        "params": -10.0,
    }


def test_infeasible_configs_are_told_at_once_and_never_returned():
    searcher, study = make_searcher()
    suggested = [searcher.suggest(f"t{i}") for i in range(8)]
    for s in suggested:
        cfg = TrialConfig.from_dict(s["config"])
        assert fake_costs(cfg)["final"]["macs"] <= 1000
        assert s["costs"] == {
            "params": fake_costs(cfg)["final"]["params"],
            "macs": fake_costs(cfg)["final"]["macs"],
        }
    rejected = [t for t in study.trials if attrs.REJECTED in t.user_attrs]
    assert rejected, "width 1.0 should have been drawn and rejected"
    for t in rejected:  # COMPLETE with accuracy 0 and the real cost: every sampler reads constraints
        assert t.state == TrialState.COMPLETE and t.values[0] == 0.0
        assert t.values[2] == t.user_attrs[attrs.COST]["macs"]
        assert t.user_attrs[attrs.REJECTED] == attrs.REJECTED_BUDGET
        assert t.constraints["macs"] > 0
    assert searcher.n_rejected == len(rejected)
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert len(running) == 8 and all(t.constraints["macs"] <= 0 for t in running)


def test_complete_trial_stores_values_candidates_and_constraints():
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    searcher.on_trial_complete("a", result(0.9))
    t = study.trials[s["trial_number"]]
    cfg = TrialConfig.from_dict(s["config"])
    final = fake_costs(cfg)["final"]
    assert t.state == TrialState.COMPLETE
    assert t.values == [0.9, final["params"], final["macs"]]
    assert t.user_attrs[attrs.COST] == final
    assert t.user_attrs[attrs.DRIVER]["pid"] > 0
    assert [c["exit"] for c in t.user_attrs[attrs.CANDIDATES]] == ["1", "2", "final"]
    assert t.user_attrs[attrs.EPOCHS_DONE] == 3
    assert study.best_trials[0].number == t.number


@pytest.mark.parametrize(
    "res, reason",
    [
        (result(float("nan")), "accuracy nan"),
        (result(float("inf")), "accuracy inf"),
        ({"epoch": 3}, "no accuracy"),
        (None, "no accuracy"),
        (result(0.5, fail_reason="loss became nan at epoch 2, step 5"), "loss became nan"),
        (result(0.5, fail_reason="out of memory: CUDA"), "out of memory"),
    ],
)
def test_nan_missing_and_failures_end_fail_with_reason(res, reason):
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    searcher.on_trial_complete("a", res)
    t = study.trials[s["trial_number"]]
    assert t.state == TrialState.FAIL
    assert reason in t.user_attrs[attrs.FAIL_REASON]


def test_ray_error_without_result_is_fail():
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    searcher.on_trial_complete("a", None, error=True)
    assert study.trials[s["trial_number"]].state == TrialState.FAIL


def test_a_dead_worker_is_named_from_the_last_result(monkeypatch):
    """Tune reports a worker that died with no result: the reason names the node of the last one."""
    from sdsearch.search import searcher as searcher_module

    monkeypatch.setattr(searcher_module, "_node_alive", lambda node: False)
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    searcher.on_trial_result("a", result(epoch=1, **{"worker/node": "f00dcafe" * 7, "worker/host": "gpu-7"}))
    searcher.on_trial_complete("a", None, error=True)
    trial = study.trials[s["trial_number"]]
    assert trial.state == TrialState.FAIL and trial.user_attrs[attrs.EPOCHS_DONE] == 1
    assert trial.user_attrs[attrs.FAIL_REASON] == (
        "its Ray node gpu-7 (Ray node f00dcafef00d) was lost mid-trial (the node died or left the cluster)"
    )


def test_a_trial_ray_re_ran_records_the_lost_attempt(monkeypatch):
    """Epochs that start over mean Ray re-ran the trial after its worker died: the store says so."""
    from sdsearch.search import searcher as searcher_module

    monkeypatch.setattr(searcher_module, "_node_alive", lambda node: node != "lost")
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    for epoch in (1, 2):
        searcher.on_trial_result("a", result(epoch=epoch, worker={"node": "lost", "host": "w1"}))
    for epoch in (1, 2, 3):
        searcher.on_trial_result("a", result(epoch=epoch, worker={"node": "head", "host": "h"}))
    searcher.on_trial_complete("a", result(epoch=3, worker={"node": "head", "host": "h"}))
    trial = study.trials[s["trial_number"]]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs[attrs.WORKER]["node"] == "head"
    assert trial.user_attrs[attrs.RESTARTS] == [
        {"epoch": 2, "node": "lost", "host": "w1",
         "reason": "its Ray node w1 (Ray node lost) was lost mid-trial (the node died or left the cluster)"}
    ]  # fmt: skip


def test_a_storage_that_is_gone_stops_the_run_instead_of_failing_the_trial(monkeypatch):
    """Raised into Tune, an error in on_trial_complete would count as the trial's failure (and be
    re-run); the searcher keeps it for the runner, stops Tune, and leaves the trial in flight."""
    from sdsearch.core.errors import StorageUnavailableError

    searcher, study = make_searcher()
    s = searcher.suggest("a")
    gone = StorageUnavailableError("db: the study storage has been unreachable for 60 s")

    def unreachable(*args, **kwargs):
        raise gone

    monkeypatch.setattr(study._storage, "set_trial_user_attr", unreachable)
    assert not searcher.stopper().stop_all()
    searcher.on_trial_complete("a", result())
    assert searcher.fatal is gone and searcher.stopper().stop_all()
    assert [t.number for t in searcher.in_flight] == [s["trial_number"]]
    assert searcher.suggest("b") == "FINISHED"


def test_early_stop_is_pruned_with_epochs_done_and_partial_candidates():
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    searcher.on_trial_complete("a", result(0.7, epoch=1))
    t = study.trials[s["trial_number"]]
    assert t.state == TrialState.PRUNED
    assert t.user_attrs[attrs.EPOCHS_DONE] == 1
    assert attrs.REJECTED not in t.user_attrs
    assert {(c["exit"], c["partial"], c["epoch"]) for c in t.user_attrs[attrs.CANDIDATES]} == {
        ("1", True, 1),
        ("2", True, 1),
        ("final", True, 1),
    }
    # TPE ranks trials with a positive constraint as unpromising, however few complete trials exist
    assert t.constraints[attrs.STOPPED_EARLY_CONSTRAINT] == 1.0
    assert attrs.outcome(t) is attrs.Outcome.PRUNED and attrs.outcome(t).counts


def test_completion_is_told_once():
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    searcher.on_trial_complete("a", result(0.9))
    searcher.on_trial_complete("a", result(0.1))
    assert study.trials[s["trial_number"]].values[0] == 0.9


def test_infeasible_space_finishes_after_bounded_draws():
    searcher, study = make_searcher(budget={"macs": 1}, max_rejections=25)
    from ray.tune.search import Searcher

    assert searcher.suggest("a") == Searcher.FINISHED
    assert searcher.infeasible
    assert len(study.trials) == 25 and all(attrs.REJECTED in t.user_attrs for t in study.trials)
    assert study.best_trials == []  # infeasible: never on Optuna's own front either


def test_final_state_keeps_shallow_candidates_of_pruned_trials():
    cfg = TrialConfig.from_dict({"model": {"branches": {"placement": [1]}}, "train": {"epochs": 5}})
    costs = {"1": {"params": 1, "macs": 2}, "final": {"params": 3, "macs": 4}}
    out = final_state(
        {**keys.exit_metrics({"1": 0.4, "final": 0.5}, "final"), keys.EPOCH: 2},
        error=False,
        config=cfg,
        costs=costs,
        objectives=("accuracy", "macs"),
    )
    assert out.state == TrialState.PRUNED and len(out.candidates) == 2
    assert not math.isnan(out.candidates[0]["accuracy"])


def test_orphans_are_failed_and_requeued_once(tmp_path):
    from sdsearch.search.study import recover_orphans

    searcher, study = make_searcher(storage=f"sqlite:///{tmp_path}/o.db")
    storage = study._storage
    s = searcher.suggest("a")
    orphan = study.trials[s["trial_number"]]
    assert recover_orphans(study, storage, [orphan], "interrupted") == 1
    t = study.trials[orphan.number]
    assert t.state == TrialState.FAIL and t.user_attrs[attrs.INTERRUPTED]
    assert attrs.outcome(t) is attrs.Outcome.INTERRUPTED and not attrs.outcome(t).counts
    retry = searcher.suggest("b")
    assert retry["config"] == s["config"]
    # marked as Optuna's RetryHeartbeatStaleTrialCallback marks a retry
    assert study.trials[retry["trial_number"]].system_attrs["failed_trial"] == orphan.number
    # the retry is itself orphaned: failed, but not enqueued a second time
    assert recover_orphans(study, storage, [study.trials[retry["trial_number"]]], "interrupted") == 0


def test_heartbeats_keep_trials_in_flight_alive(tmp_path):
    """A trial waiting for resources reports nothing; the searcher's own beats keep it fresh."""
    import time

    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=1, grace_period=2
        )
    searcher, study = make_searcher(storage=storage)
    study_id = storage.get_study_id_from_name(study.study_name)  # private staleness query: test only
    with searcher.heartbeats():
        s = searcher.suggest("a")
        time.sleep(3.5)
        assert storage._get_stale_trial_ids(study_id) == []
    time.sleep(3.5)  # no driver beats any more: the trial is stale and another driver may retry it
    assert storage._get_stale_trial_ids(study_id) == [trial_id(study, s["trial_number"])]


def test_a_result_for_a_trial_failed_elsewhere_is_dropped():
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    study._storage.set_trial_state_values(trial_id(study, s["trial_number"]), TrialState.FAIL)
    searcher.on_trial_complete("a", result(0.9))  # must not raise UpdateFinishedTrialError
    assert study.trials[s["trial_number"]].state == TrialState.FAIL


def test_subset_under_its_min_is_rejected_as_invalid_with_a_constraint():
    space = {**SPACE, "budget": {}, "space": {"branches": {"placement": {"subset": [1, 2, 3], "min": 3}}}}
    searcher, study = make_searcher(space=space)
    s = searcher.suggest("a")
    assert TrialConfig.from_dict(s["config"]).model.branches.placement == (1, 2, 3)
    for t in study.trials:
        invalid = attrs.REJECTED in t.user_attrs
        assert t.constraints["valid"] == (1.0 if invalid else 0.0)
        if invalid:
            assert t.user_attrs[attrs.REJECTED] == attrs.REJECTED_INVALID
            assert "fewer than 3 exits" in t.user_attrs[attrs.FAIL_REASON]


def test_a_config_that_cannot_be_built_is_rejected_not_left_running():
    from sdsearch.core.errors import ConfigError

    def broken_costs(config):
        raise ConfigError("input 7x7 is smaller than 8x8")

    searcher, study = make_searcher(cost_fn=broken_costs, max_rejections=3)
    assert searcher.suggest("a") == "FINISHED"
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert "7x7" in study.trials[0].user_attrs[attrs.FAIL_REASON]


@pytest.mark.parametrize(
    "train, expected",
    [({"epochs": 4}, 4), ({"epochs": {"int": [2, 6]}}, 6), ({"epochs": {"choice": [3, 9, 5]}}, 9), ({}, 3)],
)
def test_asha_max_epochs_for_fixed_and_searched_epochs(train, expected):
    from sdsearch.search.runner import _scheduler, max_epochs_of

    space = parse_space({"train": {"epochs": 3}, "scheduler": {"type": "asha"}, "space": {"train": train}})
    assert max_epochs_of(space) == expected
    assert _scheduler(space)._max_t == expected


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "nsga3", "gp", "random", "qmc"])
def test_every_sampler_drives_a_constrained_multi_objective_study(sampler):
    from sdsearch.search.study import make_sampler

    options = {"population_size": 4} if sampler.startswith("nsga") else {}
    if sampler in ("tpe", "gp"):
        options = {"n_startup_trials": 2}
    sp = parse_space({**SPACE, "sampler": {"type": sampler, **options}})
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        directions=directions(sp.objectives), sampler=make_sampler(sp, seed=0), storage=storage
    )
    searcher = SDOptunaSearch(SpaceSampler(sp), study=study, storage=storage, objectives=sp.objectives,
                              budget=sp.budget, cost_fn=fake_costs)  # fmt: skip
    for i in range(6):
        s = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), result(0.5 + 0.05 * i))
        assert study.trials[s["trial_number"]].state == TrialState.COMPLETE
    assert study.best_trials


def test_ctrl_c_inside_on_trial_complete_leaves_nothing_running():
    from sdsearch.search.study import recover_orphans

    searcher, study = make_searcher()
    searcher.suggest("a")
    real_tell = study.tell

    def interrupted_tell(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C between taking the result and telling it

    searcher._study.tell = interrupted_tell
    with pytest.raises(KeyboardInterrupt):
        searcher.on_trial_complete("a", result())
    searcher._study.tell = real_tell
    recover_orphans(study, study._storage, searcher.in_flight, "interrupted")
    assert TrialState.RUNNING not in [t.state for t in study.trials]


def test_ctrl_c_inside_suggest_leaves_nothing_running():
    from sdsearch.search.study import recover_orphans

    searcher, study = make_searcher()

    def interrupted_costs(config):
        raise KeyboardInterrupt  # Ctrl-C while the asked config is being costed

    searcher._cost_fn = interrupted_costs
    with pytest.raises(KeyboardInterrupt):
        searcher.suggest("a")
    recover_orphans(study, study._storage, searcher.in_flight, "interrupted")
    assert TrialState.RUNNING not in [t.state for t in study.trials]


def test_live_view_reads_the_accuracy_objective_wherever_it_stands():
    from types import SimpleNamespace

    from rich.console import Console

    from sdsearch.search.progress import LiveView

    done = [(0, SimpleNamespace(state=TrialState.COMPLETE, values=[48_000.0, 0.91])),
            (1, SimpleNamespace(state=TrialState.COMPLETE, values=[12_000.0, 0.85]))]  # fmt: skip
    fake = SimpleNamespace(completed=done, n_rejected=0, n_duplicates=0)
    view = LiveView(fake, target=4, done_before=0, title="t", objectives=("params", "accuracy"),
                    console=Console(file=io.StringIO()))  # fmt: skip
    stats = view.stats()
    assert stats["best"] == 0.91  # not 48000 params
    assert stats["front"] == 2


def test_quantized_trial_reports_int8_accuracy_last():
    from sdsearch.data.datasets import load_dataset
    from sdsearch.search.trainable import fit_config

    cfg = TrialConfig.from_dict({
        "model": {"backbone": {"arch": "mobilenetv2", "width": 0.125, "depth": 1}, "branches": {"placement": [2]}},
        "train": {"epochs": 1, "batch_size": 64},
        "deploy": {"quantize": "int8"},
    })  # fmt: skip
    data = load_dataset(cfg.data, seed=0)
    reports = []
    fit_config(cfg, data, threads=1, report=reports.append)
    # the epoch's float32 report, the int8 graphs' on the same epoch, then that one with the anytime report
    assert [r.precision for r in reports] == ["float32", "int8", "int8"]
    int8 = reports[1]
    assert int8.epoch == reports[0].epoch == 1 and set(int8.val_accuracy) == {"2", "final"}
    assert int8.accuracy == int8.val_accuracy["final"]
    assert reports[2].val_accuracy == int8.val_accuracy and attrs.ANYTIME in reports[2].extra


def test_quantized_anytime_trial_scores_its_static_exit_in_int8_then_the_anytime_model():
    """deploy.exit: anytime with quantize: int8: the int8 report stands on the final exit (no static
    graph is called 'anytime'), and the anytime report that follows carries the trial's accuracy."""
    from sdsearch.data.datasets import load_dataset
    from sdsearch.search.trainable import fit_config

    cfg = TrialConfig.from_dict({
        "model": {"backbone": {"arch": "mobilenetv2", "width": 0.125, "depth": 1}, "branches": {"placement": [2]}},
        "train": {"epochs": 1, "batch_size": 64},
        "deploy": {"quantize": "int8", "exit": "anytime"},
    })  # fmt: skip
    reports = []
    fit_config(cfg, load_dataset(cfg.data, seed=0), threads=1, report=reports.append)
    assert [r.precision for r in reports] == ["float32", "int8", "int8"]
    assert reports[1].accuracy == reports[1].val_accuracy["final"]
    assert reports[2].accuracy == reports[2].val_accuracy["anytime"] and attrs.ANYTIME in reports[2].extra


def test_reports_repeating_the_last_epoch_are_one_attempt_and_a_new_start_is_another():
    """The int8, anytime and failure reports follow the last epoch on the same epoch: not a re-run.
    A report from a worker that started later is one, whatever its epoch."""
    searcher, study = make_searcher()
    s = searcher.suggest("a")
    first, second = (
        {"node": "n1", "host": "w1", "started": 100.0},
        {"node": "n2", "host": "w2", "started": 200.0},
    )
    for epoch in (1, 2, 2, 2):
        searcher.on_trial_result("a", result(epoch=epoch, worker=first))
    searcher.on_trial_complete("a", result(epoch=2, worker=first))
    assert attrs.RESTARTS not in study.trials[s["trial_number"]].user_attrs

    s = searcher.suggest("b")
    searcher.on_trial_result("b", result(epoch=1, worker=first))
    searcher.on_trial_result("b", result(epoch=1, worker=second))  # re-run, lost at its first epoch
    searcher.on_trial_result("b", result(epoch=2, worker=second))
    searcher.on_trial_complete("b", result(epoch=2, worker=second))
    restarts = study.trials[s["trial_number"]].user_attrs[attrs.RESTARTS]
    assert [(r["epoch"], r["node"]) for r in restarts] == [(1, "n1")]


def test_after_a_fatal_storage_error_results_and_completions_are_not_told(monkeypatch):
    """Once the run is stopping, Tune hands in the trials it cut short: telling them would store
    partial trials as trained; they stay in flight for the next driver to re-run."""
    from sdsearch.core.errors import StorageUnavailableError

    searcher, study = make_searcher()
    a, b = searcher.suggest("a"), searcher.suggest("b")
    searcher.fatal = StorageUnavailableError("db: the study storage has been unreachable for 60 s")
    searcher.on_trial_result("b", result(epoch=1))
    searcher.on_trial_complete("b", result(epoch=1))
    assert study.trials[b["trial_number"]].state == TrialState.RUNNING
    assert sorted(t.number for t in searcher.in_flight) == sorted([a["trial_number"], b["trial_number"]])


# --- duplicates: one training per distinct network, loss and training --------------------------------


def by_width(config: TrialConfig) -> str:
    """A stand-in fingerprint: widths 0.25 and 0.5 train the same thing, 1.0 another."""
    return "narrow" if config.model.backbone.width < 1.0 else "wide"


DUP_SPACE = {**SPACE, "budget": {}}


def test_a_config_that_trains_what_a_trained_trial_trained_is_told_its_result_and_never_trained():
    searcher, study = make_searcher(space=DUP_SPACE, fingerprint_fn=by_width)
    first = searcher.suggest("a")
    searcher.on_trial_complete("a", result(0.9))
    second = searcher.suggest("b")  # every narrow config asked meanwhile was settled inside suggest
    assert by_width(TrialConfig.from_dict(second["config"])) != by_width(
        TrialConfig.from_dict(first["config"])
    )
    duplicates = [t for t in study.trials if attrs.DUPLICATE_OF in t.user_attrs]
    assert duplicates and searcher.n_duplicates == len(duplicates)
    original = study.trials[first["trial_number"]]
    for t in duplicates:
        assert t.user_attrs[attrs.DUPLICATE_OF] == original.number
        assert t.state == TrialState.COMPLETE and t.values == original.values  # the sampler learns from it
        assert attrs.outcome(t) is attrs.Outcome.DUPLICATE and not attrs.outcome(t).counts
        assert not attrs.outcome(t).on_front and attrs.CANDIDATES not in t.user_attrs
    counts = attrs.count(study.trials)
    assert counts["trained"] == 1 and counts["duplicate"] == len(duplicates)


def test_a_duplicate_of_a_trial_still_training_waits_for_its_result():
    searcher, study = make_searcher(space=DUP_SPACE, fingerprint_fn=by_width)
    asked = [searcher.suggest("a"), searcher.suggest("b")]  # one narrow, one wide: the rest wait
    assert {by_width(TrialConfig.from_dict(s["config"])) for s in asked} == {"narrow", "wide"}
    waiting = [t for t in study.trials if attrs.DUPLICATE_OF in t.user_attrs]
    assert waiting and all(t.state == TrialState.RUNNING for t in waiting)
    assert {t.number for t in searcher.in_flight} >= {t.number for t in waiting}  # failed if the driver stops
    searcher.on_trial_complete("a", result(0.7))
    searcher.on_trial_complete("b", {**result(0.1), keys.ACCURACY: float("nan")})  # b fails
    by_original = {s["trial_number"]: study.trials[s["trial_number"]] for s in asked}
    for t in (study.trials[t.number] for t in waiting):
        original = by_original[t.user_attrs[attrs.DUPLICATE_OF]]
        assert t.state == original.state and t.values == original.values
        if original.state == TrialState.FAIL:
            assert f"trial {original.number}" in t.user_attrs[attrs.FAIL_REASON]
    assert not searcher.in_flight


def test_a_space_of_duplicates_only_ends_the_search():
    searcher, study = make_searcher(space=DUP_SPACE, fingerprint_fn=lambda c: "same", max_duplicates=5)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result(0.9))
    assert searcher.suggest("b") == SDOptunaSearch.FINISHED
    assert searcher.exhausted and searcher.n_duplicates == 5
    assert attrs.count(study.trials)["trained"] == 1


def test_a_failed_original_is_not_copied_its_config_trains_again():
    """A failure may be the machine's: the next proposal of the same training gets its own run."""
    searcher, study = make_searcher(space=DUP_SPACE, fingerprint_fn=lambda c: "same")
    searcher.suggest("a")
    searcher.on_trial_complete("a", {**result(0.1), keys.ACCURACY: float("nan")})  # a fails
    again = searcher.suggest("b")
    assert again != SDOptunaSearch.FINISHED and searcher.n_duplicates == 0
    assert attrs.DUPLICATE_OF not in study.trials[again["trial_number"]].user_attrs


def test_duplicates_waiting_on_a_trial_finished_elsewhere_are_failed_not_left_running():
    searcher, study = make_searcher(space=DUP_SPACE, fingerprint_fn=lambda c: "same", max_duplicates=3)
    first = searcher.suggest("a")
    assert searcher.suggest("b") == SDOptunaSearch.FINISHED  # three waiters, then exhausted
    study.tell(first["trial_number"], state=TrialState.FAIL)  # as another driver's stale check would
    searcher.on_trial_complete("a", result(0.9))
    waiters = [t for t in study.trials if attrs.DUPLICATE_OF in t.user_attrs]
    assert len(waiters) == 3 and all(t.state == TrialState.FAIL for t in waiters)
    assert all("finished by another driver" in t.user_attrs[attrs.FAIL_REASON] for t in waiters)
    assert not searcher.in_flight


def test_a_retried_duplicate_is_judged_again_not_kept_a_duplicate(tmp_path):
    from sdsearch.store.storage import retry_interrupted

    searcher, study = make_searcher(space=DUP_SPACE, fingerprint_fn=lambda c: "same", max_duplicates=1)
    searcher.suggest("a")
    searcher.suggest("b")  # one waiter
    waiter = next(t for t in study.trials if attrs.DUPLICATE_OF in t.user_attrs)
    study.tell(waiter.number, state=TrialState.FAIL)  # the driver stopped: retired as interrupted
    assert retry_interrupted(study, study.trials[waiter.number]) == 1
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING
    assert attrs.DUPLICATE_OF not in retry.user_attrs and attrs.FINGERPRINT not in retry.user_attrs


def test_a_fit_fn_written_before_weights_were_kept_is_called_without_checkpoint():
    from sdsearch.search.testing import FakeFit
    from sdsearch.search.trainable import _keeps, fit_config

    def old(cfg, dataset, *, threads, report):  # no checkpoint argument
        return None

    assert not _keeps(old) and _keeps(fit_config) and _keeps(FakeFit()) and _keeps(lambda *a, **k: None)
