"""End-to-end search through Ray Tune with a stand-in fit (FakeFit): resume, budget, locks, GPUs."""

from __future__ import annotations

import optuna
import pytest
from _front_study import drop_study_attr
from optuna.trial import TrialState

from sdsearch.core.errors import InfeasibleSpaceError, StudyError, StudyLockedError
from sdsearch.core.metrics import LOSS_CHANGES
from sdsearch.search.runner import run
from sdsearch.search.study import prepare_study, study_lock
from sdsearch.search.testing import FakeFit
from sdsearch.space.space import parse_space
from sdsearch.store import attrs
from sdsearch.store.storage import open_storage

pytestmark = pytest.mark.ray


def make_space(tmp_path, **overrides):
    doc = {
        "name": "e2e",
        "storage": f"sqlite:///{tmp_path}/e2e.db",
        "trials": 4,
        "seed": 0,
        "sampler": "random",
        "budget": {"params": 60_000},
        "resources": {"cpu": 1, "concurrent": 2},
        "data": {"dataset": "digits"},
        "train": {"epochs": 2},
        "space": {
            "backbone": {"arch": "mobilenetv2", "width": {"choice": [0.125, 0.75, 1.0]}, "depth": 1},
            "branches": {"placement": {"subset": [1, 2]}},
            # Without it the space has 4 distinct configs in budget: a 6-trial study would run out.
            "train": {"lr": {"float": [0.01, 0.1], "log": True}},
        },
    }
    doc.update(overrides)
    return parse_space(doc, source=str(tmp_path / "e2e.yaml"))


def trials(space):
    return optuna.load_study(study_name=space.name, storage=space.storage).trials


def test_run_trains_target_rejects_over_budget_and_resumes(tmp_path, ray_session):
    space = make_space(tmp_path)
    summary = run(space, fit_fn=FakeFit(), progress=False)
    assert summary.trained == 4 and summary.counts["complete"] == 4
    all_trials = trials(space)
    rejected = [t for t in all_trials if attrs.REJECTED in t.user_attrs]
    trained = [t for t in all_trials if attrs.outcome(t) is attrs.Outcome.COMPLETE]
    assert rejected, "wide configs (over 60k params) must have been drawn and rejected"
    for t in rejected:  # never reached Ray: no worker, no epochs
        assert attrs.WORKER not in t.user_attrs and attrs.EPOCHS_DONE not in t.user_attrs
        assert t.user_attrs[attrs.COST]["params"] > 60_000
    for t in trained:
        assert t.user_attrs[attrs.WORKER]["pid"] > 0
        assert t.user_attrs[attrs.COST]["params"] <= 60_000
        assert {c["exit"] for c in t.user_attrs[attrs.CANDIDATES]} >= {"final"}

    again = run(space, fit_fn=FakeFit(), progress=False)
    assert again.added == 0 and len(trials(space)) == len(all_trials)

    more = run(space, n_trials=6, fit_fn=FakeFit(), progress=False)
    assert more.added == 2 and more.trained == 6


def test_changed_space_is_refused_then_fresh_keeps_the_old_study(tmp_path, ray_session):
    space = make_space(tmp_path, trials=1)
    run(space, fit_fn=FakeFit(), progress=False)
    changed = make_space(tmp_path, trials=1, train={"epochs": 3})
    with pytest.raises(StudyError, match=r"train\.epochs: 2 -> 3.*--fresh"):
        run(changed, fit_fn=FakeFit(), progress=False)
    run(changed, fresh=True, fit_fn=FakeFit(), progress=False)
    names = {s.study_name for s in optuna.get_all_study_summaries(space.storage)}
    assert names == {"e2e", "e2e.1"}
    old = optuna.load_study(study_name="e2e.1", storage=space.storage)
    assert (
        len([t for t in old.trials if t.state == TrialState.COMPLETE and attrs.REJECTED not in t.user_attrs])
        == 1
    )


def _prepare(space, **kwargs):
    return prepare_study(space, open_storage(space.storage, create=True), **kwargs)


def test_a_new_study_is_stamped_with_todays_conventions(tmp_path):
    study = _prepare(make_space(tmp_path, deploy={"platform": "tflm-reference"}))
    assert study.user_attrs[attrs.CONVENTIONS] == {
        "peak_memory": "tflm-arena:tflm-reference",
        "size": "tflite-bytes",
        "loss": "papers-1",
    }
    study = _prepare(make_space(tmp_path, name="f32", deploy={"dtype": "float32"}))
    assert study.user_attrs[attrs.CONVENTIONS] == {
        "peak_memory": "liveness",
        "size": "float32-params",
        "loss": "papers-1",
    }


def test_a_study_has_its_own_weights_folder_which_a_fresh_start_leaves_to_it(tmp_path):
    space = make_space(tmp_path)
    study = _prepare(space)
    assert study.user_attrs[attrs.ARTIFACTS] == "e2e.artifacts/e2e-1"  # beside the .db, relative to it
    drop_study_attr(space.storage, "e2e", attrs.ARTIFACTS)  # a study stored before weights were kept
    assert _prepare(space).user_attrs[attrs.ARTIFACTS] == "e2e.artifacts/e2e-1"
    fresh = _prepare(space, fresh=True)
    kept = optuna.load_study(study_name="e2e.1", storage=space.storage)
    assert kept.user_attrs[attrs.ARTIFACTS] == "e2e.artifacts/e2e-1"
    assert fresh.user_attrs[attrs.ARTIFACTS] not in ("e2e.artifacts/e2e-1", None)
    moved = make_space(tmp_path, artifacts=str(tmp_path / "elsewhere"))
    with pytest.warns(UserWarning, match="artifacts: study e2e keeps its weights in"):
        _prepare(moved)


def test_an_int8_study_of_older_conventions_is_refused_then_fresh_keeps_it(tmp_path):
    """A study stored before the stamp counted int8 peak memory by liveness and size as weights:
    resuming it would mix two meanings on one front."""
    space = make_space(tmp_path)
    _prepare(space).enqueue_trial({"backbone.width": 0.125})
    drop_study_attr(space.storage, space.name, attrs.CONVENTIONS)
    with pytest.raises(StudyError) as info:
        _prepare(space)
    assert str(info.value) == (
        f"{space.source}: study e2e stores peak_memory, size, loss under older conventions "
        "(peak_memory: liveness -> tflm-arena:cortex-m; size: int8-weights -> tflite-bytes; "
        f"loss: sdsearch-0.2 -> papers-1 ({LOSS_CHANGES})); "
        "run with --fresh to start a new study (the old one is kept as e2e.1)"
    )
    study = _prepare(space, fresh=True)
    assert study.user_attrs[attrs.CONVENTIONS]["size"] == "tflite-bytes" and not study.trials
    old = optuna.load_study(study_name="e2e.1", storage=space.storage)
    assert attrs.CONVENTIONS not in old.user_attrs and len(old.trials) == 1  # kept as it was


def test_a_float32_study_of_the_older_loss_is_refused_for_its_loss_only(tmp_path):
    """At float32 the stored costs still mean what they meant, but every accuracy was trained under
    the older loss: that alone is named."""
    space = make_space(tmp_path, deploy={"dtype": "float32"})
    _prepare(space).enqueue_trial({"backbone.width": 0.125})
    drop_study_attr(space.storage, space.name, attrs.CONVENTIONS)
    with pytest.raises(
        StudyError, match=r"e2e stores loss under older conventions \(loss: sdsearch-0.2 -> papers-1 "
    ):
        _prepare(space)


def test_a_new_convention_is_one_line_and_refuses_studies_stamped_before_it(tmp_path, monkeypatch):
    """A metric missing from a study's stamp was stored under its legacy convention."""
    from sdsearch.core import metrics
    from sdsearch.core.units import DTYPES

    space = make_space(tmp_path)
    _prepare(space)
    monkeypatch.setitem(metrics._VERSIONS, "latency", {d: ("ort", "ort-v2") for d in DTYPES})
    with pytest.raises(
        StudyError, match=r"e2e stores latency under older conventions \(latency: ort -> ort-v2\);"
    ):
        _prepare(space)


def test_second_driver_is_refused(tmp_path, ray_session):
    space = make_space(tmp_path)
    with (
        study_lock(space.storage, space.name),
        pytest.raises(StudyLockedError, match=r"already running \(pid \d+\)"),
    ):
        run(space, fit_fn=FakeFit(), progress=False)


def test_infeasible_budget_ends_with_a_clear_error(tmp_path, ray_session, monkeypatch):
    from sdsearch.search import searcher

    monkeypatch.setattr(searcher, "MAX_CONSECUTIVE_REJECTIONS", 40)  # the rule, not 500 SQLite tells
    space = make_space(tmp_path, budget={"params": 10})
    with pytest.raises(InfeasibleSpaceError, match="40 configs in a row broke the budget"):
        run(space, fit_fn=FakeFit(), progress=False)


def test_failures_end_fail_with_reason_and_the_study_finishes(tmp_path, ray_session):
    lrs = [0.01, 0.02, 0.03, 0.05]
    space = make_space(
        tmp_path,
        trials=4,
        sampler="random",
        space={
            "backbone": {"arch": "mobilenetv2", "width": 0.125, "depth": 1},
            "train": {"lr": {"choice": lrs}},
        },
    )
    # A random sampler may draw an lr twice and another never: enqueue each lr once instead (the
    # runner's own mechanism for retries), so every failure kind is certainly exercised.
    study = prepare_study(space, open_storage(space.storage, create=True))
    for lr in lrs:
        study.enqueue_trial({"train.lr": lr})
    fit = FakeFit(failures={0.01: "raise", 0.02: "nan", 0.03: "oom"})
    summary = run(space, fit_fn=fit, progress=False)
    done = trials(space)
    assert sorted(t.params["train.lr"] for t in done) == lrs, "each lr must be trained exactly once"
    by_lr = {t.params["train.lr"]: t for t in done}
    expected = {
        0.01: "RuntimeError: simulated bug",
        0.02: "loss became nan at epoch 2",
        0.03: "out of memory: ",  # classified as OOM, not just the exception's own text
    }
    for lr, prefix in expected.items():
        assert by_lr[lr].state == TrialState.FAIL, lr
        assert by_lr[lr].user_attrs[attrs.FAIL_REASON].startswith(prefix), (lr, by_lr[lr].user_attrs)
    assert by_lr[0.05].state == TrialState.COMPLETE
    assert attrs.FAIL_REASON not in by_lr[0.05].user_attrs
    assert summary.counts["failed"] == 3 and summary.counts["complete"] == 1


def test_fractional_gpus_run_two_trials_at_once(tmp_path, ray_session):
    """Two trials asking for half of the one (fake) GPU each must run at the same time."""
    space = make_space(tmp_path, trials=2, budget={}, resources={"cpu": 1, "gpu": 0.5})
    meet = tmp_path / "meet"
    meet.mkdir()
    run(space, fit_fn=FakeFit(rendezvous=str(meet)), progress=False)
    assert sum(t.state == TrialState.COMPLETE for t in trials(space)) == 2
    assert len(list(meet.glob("met-*"))) == 2, "the two half-GPU trials never ran at the same time"


def test_whole_gpu_trials_never_overlap(tmp_path, ray_session):
    """The control for the test above: with one (fake) GPU each, the rendezvous is never met."""
    space = make_space(tmp_path, trials=2, budget={}, resources={"cpu": 1, "gpu": 1})
    meet = tmp_path / "meet"
    meet.mkdir()
    run(space, fit_fn=FakeFit(rendezvous=str(meet), rendezvous_timeout=3.0), progress=False)
    assert sum(t.state == TrialState.COMPLETE for t in trials(space)) == 2
    assert not list(meet.glob("met-*"))


def test_a_peak_memory_budget_rejects_configs_before_training(tmp_path, ray_session):
    """Wide MobileNetV2s need over 32 KiB of TFLite Micro arena at 8x8: told at once, never on a worker."""
    space = make_space(
        tmp_path, trials=3, budget={"peak_memory": "32KiB"}, objectives=["accuracy", "peak_memory"]
    )
    summary = run(space, fit_fn=FakeFit(), progress=False)
    assert summary.trained == summary.counts["complete"] == 3
    all_trials = trials(space)
    rejected = [t for t in all_trials if attrs.REJECTED in t.user_attrs]
    assert rejected, "widths 0.75 and 1.0 must have been drawn and rejected"
    for t in rejected:  # never reached Ray: no worker, no epochs, and the constraint says by how much
        assert attrs.WORKER not in t.user_attrs and attrs.EPOCHS_DONE not in t.user_attrs
        assert t.user_attrs[attrs.COST]["peak_memory"] > 32 * 1024
        assert t.constraints["peak_memory"] == t.user_attrs[attrs.COST]["peak_memory"] - 32 * 1024
    for t in all_trials:
        if attrs.outcome(t) is attrs.Outcome.COMPLETE:
            assert t.values[1] == t.user_attrs[attrs.COST]["peak_memory"] <= 32 * 1024
            assert all("peak_memory" in c and "size" in c for c in t.user_attrs[attrs.CANDIDATES])


def test_moasha_through_the_runner_prunes_with_partial_candidates(tmp_path, ray_session):
    space = make_space(
        tmp_path,
        trials=6,
        budget={},
        objectives=["accuracy", "params"],
        train={"epochs": 4},
        scheduler={"type": "moasha", "grace_epochs": 1, "reduction_factor": 2},
        resources={"cpu": 1, "concurrent": 1},
        space={  # lr 0.2 is worse than 0.05 at the same width and cost: dominated at every rung
            # (8 distinct configs: a config is trained once, so 6 trials need more than 4)
            "backbone": {"arch": "mobilenetv2", "width": {"choice": [0.125, 1.0]}, "depth": {"int": [1, 2]}},
            "train": {"lr": {"choice": [0.05, 0.2]}},
        },
    )
    summary = run(space, fit_fn=FakeFit(), progress=False)
    assert summary.trained == 6  # pruned trials count: they were trained, to a rung
    stopped = [t for t in trials(space) if attrs.outcome(t) is attrs.Outcome.PRUNED]
    assert stopped, "with eta 2 some trials rank in the bottom half of a rung"
    for t in stopped:
        assert t.user_attrs[attrs.EPOCHS_DONE] < 4
        assert all(
            c["partial"] and c["epoch"] == t.user_attrs[attrs.EPOCHS_DONE]
            for c in t.user_attrs[attrs.CANDIDATES]
        )
    assert summary.counts["complete"] + summary.counts["pruned"] == 6
    # A trial that reaches its last epoch is not stopped there: it ends on its own and keeps its weights.
    for t in trials(space):
        assert (attrs.CHECKPOINT in t.user_attrs) == (attrs.outcome(t) is attrs.Outcome.COMPLETE), t.number


def test_a_config_is_trained_once_however_often_it_is_sampled(tmp_path, ray_session):
    """Four distinct configs fit the budget: a 6-trial study trains each once, tells every repeat its
    twin's result, and stops when the sampler proposes nothing new."""
    space = make_space(tmp_path, trials=6)
    space = parse_space(
        {**space.document, "space": {k: v for k, v in space.document["space"].items() if k != "train"}},
        source=space.source,
    )
    summary = run(space, fit_fn=FakeFit(), progress=False)
    assert summary.exhausted and summary.trained == 4 and summary.counts["duplicate"] >= 100
    trained = [t for t in trials(space) if attrs.outcome(t).counts]
    fingerprints = [t.user_attrs[attrs.FINGERPRINT] for t in trained]
    assert len(set(fingerprints)) == 4 and all(t.user_attrs[attrs.WORKER]["pid"] > 0 for t in trained)
    by_number = {t.number: t for t in trained}
    for t in trials(space):
        if attrs.DUPLICATE_OF in t.user_attrs:
            original = by_number[t.user_attrs[attrs.DUPLICATE_OF]]
            assert t.user_attrs[attrs.FINGERPRINT] == original.user_attrs[attrs.FINGERPRINT]
            assert t.values == original.values and attrs.WORKER not in t.user_attrs


def test_the_same_seed_with_one_trial_at_a_time_gives_the_same_trials(tmp_path, ray_session):
    """Real training, twice, on one machine: the same parameters and the same values, trial by trial
    (with concurrency, which trial the sampler sees first varies, and so does the rest)."""
    studies = []
    for run_id in ("a", "b"):
        space = make_space(
            tmp_path, name=f"same_{run_id}", storage=f"sqlite:///{tmp_path}/{run_id}.db", trials=3,
            sampler={"type": "tpe", "n_startup_trials": 2}, resources={"cpu": 1, "concurrent": 1},
            train={"epochs": 2, "batch_size": 64},
        )  # fmt: skip
        run(space, progress=False)
        studies.append([(t.params, t.values) for t in trials(space)])
    assert studies[0] == studies[1] and len(studies[0]) >= 3
