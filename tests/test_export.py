"""Exporting a candidate of a stored study as a trainer config (sdsearch.results.pick)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from _front_study import TIGHT, StudyBuilder, standard_study, storage_url

import sdsearch
from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    CBFEConfig,
    DataConfig,
    FusionConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.core.errors import ConfigError, SdsearchError, StudyError
from sdsearch.results.pick import export_config, parse_pick
from sdsearch.space.document import config_to_document
from sdsearch.space.load import load_trial_config
from sdsearch.space.space import parse_space
from sdsearch.store.urls import mask_url

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = storage_url(tmp_path_factory.mktemp("export"))
    standard_study(url)
    return url


def _stored_config(study_url: str, number: int) -> TrialConfig:
    trial = optuna.load_study(study_name="toy", storage=study_url).trials[number]
    return TrialConfig.from_dict(trial.user_attrs["config"])


def test_pick_trial_keeps_its_deployed_exit(study_url: str) -> None:
    doc = export_config(study_url, pick="trial:2")
    assert doc["deploy"]["exit"] == "final" and doc["deploy"]["dtype"] == "int8"
    assert doc["name"] == "toy-trial2"
    prov = doc["provenance"]
    assert (prov["study"], prov["trial"], prov["exit"], prov["pick"]) == ("toy", 2, "final", "trial:2")
    assert prov["values"] == {"accuracy": 0.85, "params": 20_000, "macs": 800_000}
    assert prov["storage"] == mask_url(study_url)
    assert prov["exported_at"].endswith("+00:00")


def test_pick_shallow_exit_and_write_a_trainer_config(study_url: str, tmp_path: Path) -> None:
    out = tmp_path / "configs" / "t3.yaml"
    doc = export_config(study_url, pick="trial:3:3", epochs=30, out=out)
    assert doc["deploy"]["exit"] == "3" and doc["name"] == "toy-trial3-exit3"
    assert doc["provenance"]["values"]["macs"] == 1_000_000
    text = out.read_text()
    assert text.startswith("# Trainer config exported by sdsearch") and "sdsearch train" in text
    assert yaml.safe_load(text) == doc
    # Every value is fixed: it loads as a trainer config, which is the stored config with the new exit.
    space = parse_space(doc, source=str(out))
    assert space.is_fixed and space.provenance["trial"] == 3
    expected = _stored_config(study_url, 3)
    expected = expected.replace(
        deploy=expected.deploy.replace(exit="3"), train=expected.train.replace(epochs=30)
    )
    assert load_trial_config(out) == expected


def test_knee_and_best(study_url: str) -> None:
    assert export_config(study_url, pick="best")["provenance"]["trial"] == 3  # highest accuracy
    best = export_config(study_url, pick="best", budget=TIGHT)
    assert best["provenance"]["trial"] == 0  # highest accuracy among feasible trials (trial 3 is over budget)
    knee = export_config(study_url)  # default pick: knee
    assert knee["provenance"]["pick"] == "knee"
    assert knee["provenance"]["trial"] == sdsearch.load_front(study_url).knee.trial
    tight = export_config(study_url, pick="best", budget={"macs": 1e6})
    assert tight["provenance"]["trial"] == 2
    shallow = export_config(study_url, pick="best", budget={"macs": 1e6}, candidates=True)
    assert (shallow["provenance"]["trial"], shallow["deploy"]["exit"]) == (3, "3")


def test_best_breaks_accuracy_ties_by_fewer_macs(tmp_path: Path) -> None:
    url = storage_url(tmp_path)
    b = StudyBuilder(url, "ties", objectives=("accuracy", "params"))
    b.trained((0.9, 10_000, 900_000))
    b.trained((0.9, 10_000, 500_000))
    doc = export_config(url, pick="best")
    assert doc["provenance"]["trial"] == 1


@pytest.mark.parametrize(
    ("pick", "match"),
    [
        ("trial:42", r"has no trial 42 \(trials 0-8\); list the front with `sdsearch show`"),
        ("trial:2:1", r"trial 2 has exits 2, final, not '1'; pick one of trial:2:2, trial:2:final"),
        ("trial:1", r"trial 1 was rejected \(budget\) and never trained"),
        ("trial:5", r"trial 5 is PRUNED, not a trained"),
        ("trial:4", r"trial 4 is FAIL, not a trained"),
        ("trial:7", r"trial 7 is RUNNING, not a trained"),
        ("top", r"'top' is not one of best, knee, trial:N, trial:N:EXIT or trial:N:EXIT@WIDTH"),
    ],
)
def test_bad_picks_say_how_to_fix_them(study_url: str, pick: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        export_config(study_url, pick=pick)
    assert isinstance(info.value, SdsearchError) and info.value.exit_code == 2


def test_over_budget_pick_by_name_warns_but_exports(study_url: str) -> None:
    with pytest.warns(UserWarning, match="exceeds the budget on macs"):
        doc = export_config(study_url, pick="trial:3", budget=TIGHT)
    assert doc["deploy"]["exit"] == "final"


@pytest.mark.parametrize("epochs", [0, 2.5, True])
def test_bad_epochs(study_url: str, epochs: object) -> None:
    with pytest.raises(ConfigError, match="epochs"):
        export_config(study_url, pick="trial:0", epochs=epochs)  # type: ignore[arg-type]


def test_no_feasible_trial_for_knee(tmp_path: Path) -> None:
    url = storage_url(tmp_path)
    StudyBuilder(url, "empty")
    with pytest.raises(StudyError, match=r"^empty: no feasible trial yet"):
        export_config(url)


def test_parse_pick() -> None:
    assert parse_pick("knee") == ("knee", None, None)
    assert parse_pick("trial:12") == ("trial", 12, None)
    assert parse_pick("trial:12:final") == ("trial", 12, "final")


def test_public_api_is_lazy_attribute() -> None:
    assert sdsearch.export_config is export_config


# -- the trainer-config document converts back to the same TrialConfig ----------------------------

CONFIGS = [
    TrialConfig(),
    TrialConfig(
        model=ModelConfig(
            backbone=BackboneConfig(arch="mobilenetv2", width=0.5, depth=1),
            branches=BranchesConfig(placement=(1, 3), style="lite"),
            cbfe=CBFEConfig(location="branch", ratio=8),
            fusion=FusionConfig(type="residual"),
        ),
        loss=LossConfig(teacher="fused", kd_weight=0.2, temperature=2.0, feature_weight=1e-3, style="sd"),
        data=DataConfig(dataset="digits", val_fraction=0.25),
        train=TrainConfig(epochs=3, lr=0.1234, schedule="step", milestones=(0.3, 0.6), amp=False),
        deploy_exit="3",
        seed=7,
    ),
    TrialConfig(
        model=ModelConfig(
            branches=BranchesConfig(placement=(2,)), cbfe=CBFEConfig(location="trunk", ratio=2)
        ),
        loss=LossConfig(teacher="ensemble"),
        train=TrainConfig(optimizer="adamw", weight_decay=0.05),
        deploy_exit="2",
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "mobilenet-fused", "shallow-deploy"])
def test_config_to_document_round_trip(config: TrialConfig, tmp_path: Path) -> None:
    doc = config_to_document(config, name="rt", provenance={"study": "s", "trial": 1})
    path = tmp_path / "rt.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_trial_config(path) == config


def test_a_duplicate_trial_points_to_its_twin(tmp_path: Path) -> None:
    url = storage_url(tmp_path)
    b = StudyBuilder(url, "twins", objectives=("accuracy", "params"))
    b.trained((0.9, 10_000, 900_000))
    study = optuna.load_study(study_name="twins", storage=url)
    first = study.trials[0]
    study.add_trial(  # as the searcher stores a duplicate of trial 0: its values, no candidates
        optuna.trial.create_trial(
            params=first.params, distributions=first.distributions, values=first.values,
            user_attrs={"config": first.user_attrs["config"], "duplicate_of": 0},
        )
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"trial 1 trained nothing: it is the same training as trial 0; pick trial:0"
    ):
        export_config(url, pick="trial:1")
    assert export_config(url, pick="best")["provenance"]["trial"] == 0  # never on a front


def test_knee_of_a_two_point_front_is_the_most_accurate_and_says_so(tmp_path: Path) -> None:
    """The case that made the rule: 76.4% and 88.5%; the cheaper end is no knee."""
    url = storage_url(tmp_path)
    b = StudyBuilder(url, "two", objectives=("accuracy", "params"))
    b.trained((0.764, 5_000, 146_000))
    b.trained((0.885, 9_000, 150_000))
    with pytest.warns(
        UserWarning,
        match=r"no knee: the front has 2 points, and a knee needs at least 3; the most accurate point stands in for it: trial 1",
    ):
        doc = export_config(url, pick="knee")
    assert doc["provenance"]["trial"] == 1
    front = sdsearch.load_front(url)
    assert front.knee.trial == 1 and front.knee_of_front.index is None
