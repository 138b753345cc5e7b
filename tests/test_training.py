"""train(): a tiny fixed config (digits, 2 epochs) end to end, and the files it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdsearch.artifacts import load_checkpoint, onnx_available
from sdsearch.config import BackboneConfig, BranchesConfig, ModelConfig, TrainConfig, TrialConfig
from sdsearch.data import load_dataset
from sdsearch.nn.network import SelfDistillNet
from sdsearch.space import load_trial_config
from sdsearch.training import TrainResult, train

TINY = TrialConfig(
    model=ModelConfig(
        backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(1, 3))
    ),
    train=TrainConfig(epochs=2, batch_size=64),
    deploy_exit="3",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(TINY, out=tmp_path_factory.mktemp("runs") / "tiny", progress=False)


def test_train_writes_every_artifact(run: TrainResult) -> None:
    files = {p.name for p in run.out.iterdir()}
    assert {"config.yaml", "metrics.json", "checkpoint.pt", "model.ts"} <= files
    assert ("model.onnx" in files) == onnx_available()
    metrics = json.loads((run.out / "metrics.json").read_text())
    assert metrics == run.metrics
    assert metrics["deploy_exit"] == "3" and metrics["epochs_done"] == 2 and metrics["device"] == "cpu"
    assert set(metrics["exits"]) == {"1", "3", "final"}
    for exit_metrics in metrics["exits"].values():
        assert 0.0 <= exit_metrics["val_accuracy"] <= 1.0 and 0.0 <= exit_metrics["test_accuracy"] <= 1.0
        assert exit_metrics["params"] > 0 and exit_metrics["flops"] == 2 * exit_metrics["macs"]
    assert metrics["test_accuracy"] == metrics["exits"]["3"]["test_accuracy"]
    assert metrics["val_accuracy"] == run.fit.val_accuracy["3"]
    assert metrics["input"]["input_shape"] == [1, 8, 8] and len(metrics["input"]["mean"]) == 1
    if not onnx_available():
        assert metrics["onnx"].startswith("skipped")


def test_config_yaml_reads_back_as_the_config_used(run: TrainResult) -> None:
    assert load_trial_config(run.out / "config.yaml") == TINY


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_the_deploy_module(run: TrainResult) -> None:
    ckpt = load_checkpoint(run.out / "checkpoint.pt")
    cfg = TrialConfig.from_dict(ckpt["config"])
    assert cfg == TINY
    net = SelfDistillNet(cfg.model, num_classes=10, in_chans=1, input_size=(8, 8))
    net.load_state_dict(ckpt["state_dict"])
    deploy = net.deploy("3").eval()
    scripted = torch.jit.load(str(run.out / "model.ts"))
    data = load_dataset(cfg.data, seed=cfg.seed)
    x = (torch.from_numpy(data.x_test[:50]).float() / 255 - ckpt["mean"][0]) / ckpt["std"][0]
    with torch.no_grad():
        want = deploy(x)
        torch.testing.assert_close(scripted(x), want, rtol=0, atol=1e-6)
        torch.testing.assert_close(net.eval()(x).logits["3"], want, rtol=0, atol=1e-6)
    # The deployed exit's test accuracy in metrics.json is this model's accuracy on the test split.
    xt = (torch.from_numpy(data.x_test).float() / 255 - ckpt["mean"][0]) / ckpt["std"][0]
    with torch.no_grad():
        acc = (scripted(xt).argmax(1) == torch.from_numpy(data.y_test)).float().mean().item()
    assert acc == pytest.approx(run.metrics["test_accuracy"], abs=1 / len(xt))


def test_train_from_yaml_with_epochs_override(run: TrainResult, tmp_path: Path) -> None:
    out = tmp_path / "again"
    result = train(run.out / "config.yaml", out=out, epochs=1, progress=True, threads=1)
    assert result.metrics["epochs"] == 1 and result.fit.epochs_done == 1 and result.metrics["threads"] == 1
    assert load_trial_config(out / "config.yaml").train.epochs == 1
