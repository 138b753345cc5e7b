"""Elastic trials in the search: every (width, exit) a candidate with its own cost and budget check."""

from __future__ import annotations

import optuna
import pytest
import yaml

from sdsearch.core.config import BackboneConfig, ModelConfig, TrainConfig, TrialConfig
from sdsearch.core.exits import candidate_name, split_candidate
from sdsearch.cost.metrics import DeployMetrics
from sdsearch.data.datasets import DataShape
from sdsearch.search.searcher import deployed_candidate, final_state
from sdsearch.store import attrs

DIGITS = DataShape(1, 8, 8, 10)


def elastic_config(widths=(1.0, 0.5, 0.25), width=0.5, **deploy) -> TrialConfig:
    return TrialConfig(
        model=ModelConfig(backbone=BackboneConfig(arch="mobilenetv2", width=width, depth=1)),
        train=TrainConfig(epochs=2, elastic_widths=widths),
    )


def test_candidate_names_round_trip() -> None:
    assert candidate_name("final", 0.5) == "final@0.5" and candidate_name("2") == "2"
    assert candidate_name("final", 1.0) == "final@1"
    assert split_candidate("final@0.5") == ("final", 0.5) and split_candidate("3") == ("3", None)
    assert split_candidate(candidate_name("2", 0.1234567)) == ("2", 0.1234567)  # no digit lost
    with pytest.raises(ValueError, match="must be a number"):
        split_candidate("final@half")


def test_each_width_costs_what_its_plain_config_costs() -> None:
    cfg = elastic_config()
    costs = DeployMetrics(DIGITS)(cfg)
    assert list(costs) == [candidate_name(e, m) for m in (1.0, 0.5, 0.25) for e in cfg.model.exits]
    for m in (1.0, 0.5, 0.25):
        plain = DeployMetrics(DIGITS)(cfg.at_width(m))
        assert {e: costs[candidate_name(e, m)] for e in plain} == plain
    assert costs["final@0.25"]["params"] < costs["final@0.5"]["params"] < costs["final@1"]["params"]


def test_widths_that_build_one_network_are_one_candidate() -> None:
    # At width 1/32 channels round up to the 8-channel floor: 1/2 and 1/4 of it build the same network.
    cfg = elastic_config(widths=(1.0, 0.5, 0.25), width=0.03125)
    names = list(DeployMetrics(DIGITS)(cfg))
    assert len({split_candidate(n)[1] for n in names}) < 3


def test_the_deployed_candidate_is_the_widest_that_fits() -> None:
    cfg = elastic_config()
    costs = DeployMetrics(DIGITS)(cfg)
    between = (costs["final@0.5"]["params"] + costs["final@1"]["params"]) / 2
    assert deployed_candidate(cfg, costs, {}) == "final@1"
    assert deployed_candidate(cfg, costs, {"params": between}) == "final@0.5"
    assert deployed_candidate(cfg, costs, {"params": 1}) == "final@0.25"  # none fits: rejected on it
    plain = TrialConfig()
    assert deployed_candidate(plain, {"final": {"params": 9}}, {"params": 1}) == "final"


def test_final_state_stores_every_width_and_tells_the_deployed_ones_values() -> None:
    cfg = elastic_config()
    costs = DeployMetrics(DIGITS)(cfg)
    result = {"epoch": 2, "accuracy": 0.8} | {f"accuracy_{n}": 0.5 + 0.01 * i for i, n in enumerate(costs)}
    out = final_state(result, error=False, config=cfg, costs=costs, objectives=["accuracy", "params"],
                      deployed="final@0.5")  # fmt: skip
    assert len(out.candidates) == len(costs)
    chosen = next(c for c in out.candidates if c["exit"] == "final" and c["width"] == 0.5)
    assert out.values == [0.8, costs["final@0.5"]["params"]] and chosen["params"] == out.values[1]


@pytest.mark.ray
def test_an_elastic_study_puts_only_fitting_widths_on_its_fronts(tmp_path, ray_session) -> None:
    from sdsearch.core.errors import ConfigError
    from sdsearch.results.front import build_front
    from sdsearch.results.pick import export_config
    from sdsearch.results.read import read_study
    from sdsearch.search.runner import run
    from sdsearch.search.testing import FakeFit
    from sdsearch.space.space import parse_space

    costs = DeployMetrics(DIGITS)(elastic_config())
    limit = int((costs["final@0.5"]["params"] + costs["final@1"]["params"]) / 2)  # width 1 never fits
    space = parse_space(
        {
            "name": "elastic",
            "storage": f"sqlite:///{tmp_path}/elastic.db",
            "trials": 3,
            "sampler": "random",
            "objectives": ["accuracy", "params"],
            "budget": {"params": limit},
            "resources": {"cpu": 1, "concurrent": 1},
            "data": {"dataset": "digits"},
            "train": {"epochs": 2, "elastic_widths": [1.0, 0.5, 0.25]},
            "space": {
                "backbone": {"arch": "mobilenetv2", "width": 0.5, "depth": 1},
                "branches": {"placement": [2]},
                "train": {"lr": {"float": [0.01, 0.1], "log": True}},
            },
        },
        source=str(tmp_path / "elastic.yaml"),
    )
    summary = run(space, fit_fn=FakeFit(), progress=False)
    assert summary.trained == 3
    for t in optuna.load_study(study_name="elastic", storage=space.storage).trials:
        assert t.user_attrs[attrs.DEPLOYED] == "final@0.5"
        assert len(t.user_attrs[attrs.CANDIDATES]) == 3 * 2  # widths x exits
        assert t.values[1] == t.user_attrs[attrs.COST]["params"] == costs["final@0.5"]["params"]
    front = build_front(read_study(space.storage, study_name="elastic"), candidates=True)
    assert front.candidates_front and all(c.params <= limit for c in front.candidates_front)
    assert all(c.name != "final@1" for c in front.candidates_front)  # over budget: stored, never on a front
    assert any(c.name == "final@1" for c in front.all_candidates)

    trial = front.trials_front[0].trial
    doc = export_config(space.storage, study_name="elastic", pick=f"trial:{trial}:2@0.25",
                        out=tmp_path / "t.yaml")  # fmt: skip
    assert doc["space"]["backbone"]["width"] == 0.125 and doc["deploy"]["exit"] == "2"
    assert doc["train"]["elastic_widths"] == []  # the plain network at that width, trained alone
    assert doc["provenance"]["width"] == 0.25
    assert "at 0.25 x its width" in (tmp_path / "t.yaml").read_text()
    assert yaml.safe_load((tmp_path / "t.yaml").read_text())["deploy"]["exit"] == "2"
    widest = export_config(space.storage, study_name="elastic", pick=f"trial:{trial}:final@1.0")  # = final@1
    assert widest["provenance"]["width"] == 1.0
    with pytest.raises(ConfigError, match=r"trial:\d+:final@0.5"):
        export_config(space.storage, study_name="elastic", pick=f"trial:{trial}:final@0.75")


def test_an_elastic_trial_reports_every_candidate_in_float32_then_int8() -> None:
    """The trainable's path: one training, every (width, exit) scored on the validation split, then
    each width's network scored as its int8 graph; no anytime report (one exit per candidate)."""
    from sdsearch.data.datasets import load_dataset
    from sdsearch.search.trainable import fit_config

    cfg = TrialConfig.from_dict({
        "model": {"backbone": {"arch": "mobilenetv2", "width": 0.25, "depth": 1}, "branches": {"placement": [2]}},
        "train": {"epochs": 1, "batch_size": 64, "elastic_widths": [1.0, 0.5]},
        "deploy": {"quantize": "int8"},
    })  # fmt: skip
    reports = []
    fit_config(cfg, load_dataset(cfg.data, seed=0), threads=1, report=reports.append)
    assert [r.precision for r in reports] == ["float32", "int8"]
    names = {"2@1", "final@1", "2@0.5", "final@0.5"}
    assert set(reports[0].val_accuracy) == set(reports[1].val_accuracy) == names
    assert reports[1].accuracy == reports[1].val_accuracy["final@1"]
    assert "inplace" in reports[0].loss_parts


def test_a_sub_network_trains_as_a_plain_config_of_its_width() -> None:
    """What `export --pick trial:N:EXIT@WIDTH` hands to `sdsearch train`: the config at that width,
    elastic training off, every other key as the trial had it."""
    cfg = elastic_config()
    half = cfg.at_width(0.5)
    assert half.model.backbone.width == 0.25 and not half.elastic
    assert half.replace(model=cfg.model, train=cfg.train) == cfg


def test_train_refuses_an_elastic_config_in_one_line(tmp_path) -> None:
    import subprocess
    import sys

    path = tmp_path / "elastic.yaml"
    path.write_text(
        "name: t\ndata: {dataset: digits}\ntrain: {epochs: 1, elastic_widths: [1.0, 0.5]}\n"
        "space: {backbone: {width: 0.25, depth: 1}}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "sdsearch", "train", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and not (tmp_path / "o").exists()
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{path}: train.elastic_widths:") and "trial:N:EXIT@WIDTH" in line


@pytest.mark.ray
def test_a_width_of_a_trained_trial_deploys_from_the_study_with_its_stored_accuracy(
    tmp_path, ray_session
) -> None:
    """One real elastic trial on digits leaves its weights beside the study; `train --from-study`
    slices the exported width out of them and scores exactly the validation accuracy the study stored."""
    import json
    import shutil

    from sdsearch.core.errors import StudyError
    from sdsearch.deploy.build import train
    from sdsearch.results.pick import export_config
    from sdsearch.search.runner import run
    from sdsearch.space.space import parse_space

    space = parse_space(
        {
            "name": "el",
            "storage": f"sqlite:///{tmp_path}/el.db",
            "trials": 1,
            "objectives": ["accuracy", "params"],
            "resources": {"cpu": 1, "concurrent": 1},
            "data": {"dataset": "digits"},
            "train": {"epochs": 2, "batch_size": 64, "elastic_widths": [1.0, 0.5]},
            "space": {
                "backbone": {"arch": "resnet", "width": 0.25, "depth": 1},
                "branches": {"placement": [2]},
            },
        },
        source=str(tmp_path / "el.yaml"),
    )
    run(space, progress=False)
    study = optuna.load_study(study_name="el", storage=space.storage)
    (trial,) = study.trials
    kept = trial.user_attrs[attrs.CHECKPOINT]
    folder = tmp_path / study.user_attrs[attrs.ARTIFACTS]
    assert (
        folder.parent == tmp_path / "el.artifacts" and (folder / kept["file"]).stat().st_size == kept["bytes"]
    )

    export_config(space.storage, pick="trial:0:2@0.5", out=tmp_path / "half.yaml")
    result = train(tmp_path / "half.yaml", out=tmp_path / "half", from_study=True, progress=False)
    metrics = json.loads((tmp_path / "half" / "metrics.json").read_text())
    assert metrics["from_study"]["val_accuracy"] == metrics["from_study"]["stored_val_accuracy"]
    assert metrics["from_study"]["width"] == 0.5 and metrics["deploy_exit"] == "2"
    assert metrics["params"] == DeployMetrics(DIGITS)(elastic_half(trial))["2"]["params"]
    assert (result.out / "model.onnx").is_file()

    shutil.rmtree(folder)
    with pytest.raises(StudyError, match="without --from-study"):
        train(tmp_path / "half.yaml", out=tmp_path / "again", from_study=True, progress=False)


def elastic_half(trial) -> TrialConfig:
    return TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG]).at_width(0.5)


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--epochs", "3"], "--from-study: deploys the trial as it was trained"),
        ([], "provenance: --from-study deploys a trial's trained weights: it needs a config written by"),
    ],
)
def test_from_study_mistakes_are_one_line(tmp_path, extra, expect) -> None:
    import subprocess
    import sys

    path = tmp_path / "plain.yaml"
    path.write_text("name: t\ndata: {dataset: digits}\nspace: {backbone: {width: 0.25, depth: 1}}\n")
    cmd = [
        sys.executable,
        "-m",
        "sdsearch",
        "train",
        str(path),
        "--from-study",
        "--out",
        str(tmp_path / "o"),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and not (tmp_path / "o").exists()
    (line,) = proc.stderr.strip().splitlines()
    assert expect in line


def test_a_subset_of_widths_under_its_min_is_invalid() -> None:
    from optuna.trial import FixedTrial

    from sdsearch.space.space import parse_space

    space = parse_space({"name": "t", "data": {"dataset": "digits"},
                         "space": {"train": {"elastic_widths": {"subset": [1.0, 0.5, 0.25], "min": 2}}}},
                        source="t.yaml")  # fmt: skip
    params = {f"train.elastic_widths.{w}": w == 1.0 for w in (0.25, 0.5, 1.0)}
    cfg = space.suggest(FixedTrial(params))
    assert cfg.train.elastic_widths == (1.0,)
    assert space.can_be_invalid and "fewer than 2 items" in space.invalid_reason(cfg)


def test_two_elastic_configs_that_differ_only_at_the_base_width_are_two_trainings() -> None:
    """Channel rounding can make two base widths one network while their half widths differ."""
    from sdsearch.training.identity import training_fingerprint

    a, b = (elastic_config(widths=(1.0, 0.5), width=w) for w in (0.64, 0.66))
    costs_a, costs_b = DeployMetrics(DIGITS)(a), DeployMetrics(DIGITS)(b)
    assert costs_a["final@0.5"]["params"] != costs_b["final@0.5"]["params"]
    assert training_fingerprint(a, DIGITS) != training_fingerprint(b, DIGITS)
    merged = elastic_config(widths=(1.0, 0.99), width=0.03125)  # 0.99 of 8 channels is 8 channels
    assert training_fingerprint(merged, DIGITS) == training_fingerprint(
        elastic_config(widths=(1.0,), width=0.03125), DIGITS
    )
