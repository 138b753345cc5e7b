"""Space files: the shipped spaces validate, every malformed file fails with its key path, sampling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sdsearch.cli import main
from sdsearch.core.config import DeployConfig, TrialConfig
from sdsearch.core.errors import SpaceError
from sdsearch.space.document import config_to_document, diff_documents
from sdsearch.space.load import load_space, load_trial_config
from sdsearch.space.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "spaces").glob("*.yaml"))
BAD = sorted((Path(__file__).parent / "bad_spaces").glob("*.yaml"))


def _expected_key(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), path
    return first.split(":", 1)[1].strip()


def test_corpus_is_large_enough():
    assert len(BAD) >= 40


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_validate(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_malformed_file_names_its_key(path, capsys):
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    key = _expected_key(path)
    prefix = f"{path}: {key}: " if key else f"{path}: "
    assert lines[0].startswith(prefix), f"{lines[0]!r} does not start with {prefix!r}"
    assert "Traceback" not in err


def test_did_you_mean_on_unknown_key(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nspace:\n  fusion: {typ: residual}\n")
    with pytest.raises(SpaceError, match=r"did you mean type\?"):
        load_space(f)


def test_missing_file_is_exit_2(capsys):
    assert main(["validate", "nope/missing.yaml"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_defaults_fill_every_optional_key():
    space = parse_space({"name": "x"})
    assert space.is_fixed
    assert space.storage == "sqlite:///studies/x.db"
    assert space.objectives == ("accuracy", "params", "macs")
    assert space.fixed_config() == TrialConfig()


def test_space_train_overrides_train():
    space = parse_space({"train": {"lr": 0.1, "epochs": 3}, "space": {"train": {"lr": 0.5}}})
    cfg = space.fixed_config()
    assert cfg.train.lr == 0.5 and cfg.train.epochs == 3


def test_sizes_and_budget():
    # FLOPs are a unit of input: a FLOPs limit is stored as the MACs limit it means (the tighter wins)
    space = parse_space({"budget": {"params": "50k", "macs": "1.5G", "flops": 2e6}})
    assert space.budget == {"params": 50_000, "macs": 1e6}
    space = parse_space({"budget": {"peak_memory": "64KiB", "size": "256kB", "latency": "500us"}})
    assert space.budget == {"peak_memory": 65536, "size": 256_000, "latency": 0.5}


def _study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))


def test_conditional_keys_are_sampled_only_where_they_apply():
    space = load_space(ROOT / "spaces" / "iot_budget.yaml")
    study = _study()
    for _ in range(60):
        trial = study.ask()
        cfg = space.suggest(trial)
        assert ("cbfe.ratio" in trial.params) == (cfg.model.cbfe.location != "none")
        if cfg.model.fusion.type == "none":
            assert cfg.loss.teacher != "fused"
            assert "loss.teacher" not in trial.params
        study.tell(trial, 0.0)


def test_fixed_teacher_fused_restricts_fusion():
    space = parse_space(
        {"space": {"fusion": {"type": {"choice": ["none", "residual"]}}, "loss": {"teacher": "fused"}}}
    )
    study = _study()
    for _ in range(10):
        trial = study.ask()
        assert space.suggest(trial).model.fusion.type == "residual"
        study.tell(trial, 0.0)


def test_enqueued_params_are_reproduced():
    space = load_space(ROOT / "spaces" / "iot_budget.yaml")
    study = _study()
    first = study.ask()
    cfg = space.suggest(first)
    study.tell(first, 0.0)
    study.enqueue_trial(first.params)
    again = study.ask()
    assert space.suggest(again) == cfg


def test_spec_hash_ignores_run_settings_but_not_the_space(tmp_path):
    base = {"name": "h", "trials": 5, "space": {"backbone": {"width": {"choice": [0.25, 0.5]}}}}
    h = parse_space(base).spec_hash()
    assert (
        parse_space({**base, "trials": 50, "resources": {"cpu": 2}, "storage": "sqlite:///o.db"}).spec_hash()
        == h
    )
    changed = parse_space({**base, "space": {"backbone": {"width": {"choice": [0.25, 1.0]}}}})
    assert changed.spec_hash() != h
    diff = diff_documents(parse_space(base).study_spec(), changed.study_spec())
    assert any(line.startswith("space.backbone.width") for line in diff)


def test_trainer_config_round_trip(tmp_path):
    import yaml

    cfg = TrialConfig(deploy=DeployConfig(exit="2", dtype="float32"))
    doc = config_to_document(cfg, name="best", provenance={"study": "s", "trial": 3})
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_trial_config(path) == cfg


def test_distribution_left_is_refused_for_training(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("space:\n  backbone: {width: {choice: [0.5, 1.0]}}\n")
    with pytest.raises(SpaceError, match=r"space\.backbone\.width: is still a distribution"):
        load_trial_config(path)


def test_space_module_imports_no_heavy_library():
    code = "import sys, sdsearch.space.space, sdsearch.cli; print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_byot_reproduction_is_a_trainer_config():
    """Every value fixed, and the BYOT ResNet-18 CIFAR-100 setting the file's comments source."""
    cfg = load_trial_config(ROOT / "spaces" / "byot_resnet18_cifar100.yaml")
    model, loss, train = cfg.model, cfg.loss, cfg.train
    assert (model.backbone.arch, model.backbone.width, model.backbone.depth) == ("resnet", 1.0, 2)
    assert not model.backbone.zero_init_last
    assert model.branches.placement == (1, 2, 3) and model.branches.style == "lite"
    assert model.fusion.type == "none" and model.cbfe.location == "none"
    assert (loss.teacher, loss.style, loss.kd_weight, loss.temperature, loss.feature_weight) == (
        "deepest", "byot", 0.3, 3.0, 0.03
    )  # fmt: skip
    assert (train.epochs, train.batch_size, train.lr, train.momentum, train.weight_decay) == (
        200,
        128,
        0.1,
        0.9,
        5e-4,
    )
    # The SD code divides the rate by 10 at epochs E//3, 2E//3 and E-10.
    assert train.schedule == "step" and [round(m * train.epochs) for m in train.milestones] == [66, 133, 190]
    assert cfg.data.dataset == "cifar100" and cfg.data.download


def test_early_stopping_under_a_complete_only_sampler_warns():
    with pytest.warns(UserWarning, match="nsga2 breeds only from COMPLETE trials"):
        parse_space({"sampler": "nsga2", "scheduler": {"type": "moasha"}})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_space({"sampler": "tpe", "scheduler": {"type": "moasha"}})  # tpe learns from pruned trials


@pytest.mark.parametrize("name", ["iot_budget", "mcu_sram"])
def test_cpu_spaces_budget_admits_most_configs_and_binds(name):
    """The CPU spaces' own budgets: most sampled configs train, and the limit still rejects some."""
    from sdsearch.cost.metrics import DeployMetrics
    from sdsearch.data.datasets import describe
    from sdsearch.search.searcher import budget_violations

    space = load_space(ROOT / "spaces" / f"{name}.yaml")
    metrics = DeployMetrics(describe(space.data))
    study = _study()
    admitted = 0
    n = 40
    for _ in range(n):
        trial = study.ask()
        cfg = space.suggest(trial)
        deployed = metrics(cfg)[cfg.deploy_exit]
        admitted += all(v <= 0 for v in budget_violations(deployed, space.budget).values())
        study.tell(trial, 0.0)
    assert n // 2 <= admitted < n
