"""train(): a tiny fixed config (digits, 2 epochs) end to end, and the files it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdsearch import __version__
from sdsearch.core.config import BackboneConfig, BranchesConfig, ModelConfig, TrainConfig, TrialConfig
from sdsearch.core.platforms import mcu_available
from sdsearch.data.datasets import load_dataset
from sdsearch.deploy.build import ARTIFACTS, TrainResult, train
from sdsearch.graphs.contract import METADATA_KEYS
from sdsearch.nn.network import SelfDistillNet
from sdsearch.space.load import load_trial_config
from sdsearch.training.checkpoint import load_checkpoint

TINY = TrialConfig(
    model=ModelConfig(
        backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(1, 3))
    ),
    train=TrainConfig(epochs=2, batch_size=64),
    deploy_exit="3",
)


def _without_mcu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No .tflite (seconds saved) where a test is about something else; tests/test_tflm.py checks it."""
    monkeypatch.setattr("sdsearch.core.platforms.missing_mcu_packages", lambda: ["tflite_micro"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(TINY, out=tmp_path_factory.mktemp("runs") / "tiny", progress=False)


def test_train_writes_every_artifact(run: TrainResult) -> None:
    files = {p.name for p in run.out.iterdir()}
    mcu = {"model.int8.tflite", "model_data.h", "model_data.cc"}  # with the mcu extra (tests/test_tflm.py)
    assert set(ARTIFACTS) == {"config.yaml", "metrics.json", "checkpoint.pt", "model.onnx", "model.int8.onnx",
                              "model.pt2", *mcu}  # fmt: skip
    assert files == (set(ARTIFACTS) if mcu_available() else set(ARTIFACTS) - mcu)
    metrics = json.loads((run.out / "metrics.json").read_text())
    assert metrics == run.metrics
    assert metrics["deploy_exit"] == "3" and metrics["epochs_done"] == 2 and metrics["device"] == "cpu"
    assert set(metrics["exits"]) == {"1", "3", "final"}
    for exit_metrics in metrics["exits"].values():
        assert 0.0 <= exit_metrics["val_accuracy"] <= 1.0 and 0.0 <= exit_metrics["test_accuracy"] <= 1.0
        assert exit_metrics["params"] > 0 and exit_metrics["macs"] > 0  # stored once, as MACs
        assert exit_metrics["peak_memory"] > 0 and exit_metrics["size"] > exit_metrics["params"]  # int8 bytes
    assert metrics["test_accuracy"] == metrics["exits"]["3"]["test_accuracy"]
    assert metrics["val_accuracy"] == run.fit.val_accuracy["3"]
    assert metrics["input"]["input_shape"] == [1, 8, 8] and len(metrics["input"]["mean"]) == 1


def test_metrics_report_each_deployed_file(run: TrainResult) -> None:
    files, n_test = run.metrics["files"], 360
    written = {p.name for p in run.out.iterdir()}
    assert set(files) == written - {"config.yaml", "metrics.json", "checkpoint.pt"}
    for name, entry in files.items():
        assert entry["bytes"] == (run.out / name).stat().st_size
    fp32, int8 = files["model.onnx"], files["model.int8.onnx"]
    assert (
        fp32["precision"] == "float32" and int8["precision"] == "int8" and int8["calibration_images"] == 256
    )
    # ONNX Runtime on raw pixels agrees with PyTorch's float32 evaluation, image for image (or one).
    assert fp32["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"], abs=1.01 / n_test)
    assert abs(int8["test_accuracy"] - fp32["test_accuracy"]) <= 0.05
    assert int8["bytes"] < 0.5 * fp32["bytes"]
    assert fp32["latency_ms"] > 0 and int8["latency_ms"] > 0
    assert run.metrics["latency"] == {"runtime": run.metrics["latency"]["runtime"], "threads": 1, "batch": 1,
                                      "warmup": 10, "repeats": 50, "statistic": "median"}  # fmt: skip


def test_onnx_metadata_says_how_the_model_is_fed(run: TrainResult) -> None:
    import onnx

    for name, precision in (("model.onnx", "float32"), ("model.int8.onnx", "int8")):
        model = onnx.load(run.out / name)
        meta = {p.key: json.loads(p.value) for p in model.metadata_props}
        assert tuple(meta) == METADATA_KEYS
        assert meta["mean"] == run.metrics["input"]["mean"] and meta["std"] == run.metrics["input"]["std"]
        assert meta["classes"] == [str(i) for i in range(10)] and meta["exit"] == "3"
        assert meta["precision"] == precision and meta["sdsearch_version"] == __version__
        assert meta["input_layout"].startswith("NHWC uint8")
        assert model.opset_import[0].version >= 17


def test_config_yaml_reads_back_as_the_config_used(run: TrainResult) -> None:
    assert load_trial_config(run.out / "config.yaml") == TINY


def test_pt2_on_raw_pixels_matches_the_deploy_module(run: TrainResult) -> None:
    ckpt = load_checkpoint(run.out / "checkpoint.pt")
    cfg = TrialConfig.from_dict(ckpt["config"])
    assert cfg == TINY
    net = SelfDistillNet(cfg.model, num_classes=10, in_chans=1, input_size=(8, 8))
    net.load_state_dict(ckpt["state_dict"])
    deploy = net.deploy("3").eval()
    exported = torch.export.load(run.out / "model.pt2").module()
    data = load_dataset(cfg.data, seed=cfg.seed)
    pixels = torch.from_numpy(data.x_test).permute(0, 2, 3, 1).contiguous()  # uint8 N, H, W, C
    x = (torch.from_numpy(data.x_test).float() / 255 - ckpt["mean"][0]) / ckpt["std"][0]
    with torch.no_grad():
        want = deploy(x)
        got = exported(pixels)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
        torch.testing.assert_close(exported(pixels[:1]), want[:1], rtol=0, atol=1e-4)  # dynamic batch
        torch.testing.assert_close(net.eval()(x).logits["3"], want, rtol=0, atol=1e-6)
    assert torch.equal(got.argmax(1), want.argmax(1))
    # The deployed exit's test accuracy in metrics.json is this model's accuracy on the test split.
    acc = (got.argmax(1) == torch.from_numpy(data.y_test)).float().mean().item()
    assert acc == pytest.approx(run.metrics["test_accuracy"], abs=1 / len(x))


def test_train_from_yaml_with_epochs_override(
    run: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_mcu(monkeypatch)
    out = tmp_path / "again"
    with pytest.warns(UserWarning, match=r"model\.int8\.tflite: not written"):
        result = train(run.out / "config.yaml", out=out, epochs=1, progress=True, threads=1)
    assert result.metrics["epochs"] == 1 and result.fit.epochs_done == 1 and result.metrics["threads"] == 1
    assert load_trial_config(out / "config.yaml").train.epochs == 1


def test_test_accuracy_is_float32_even_inside_autocast() -> None:
    """train() reports float32 accuracy whatever the training device and any enclosing autocast."""
    from types import SimpleNamespace

    import numpy as np

    from sdsearch.training.fit import evaluate

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.autocast: list[bool] = []

        def forward(self, x: torch.Tensor) -> SimpleNamespace:
            self.autocast.append(torch.is_autocast_enabled("cpu"))
            return SimpleNamespace(logits={"final": self.fc(x.flatten(1))})

    net = Recorder()
    x, y = np.zeros((3, 1, 2, 2), np.uint8), np.zeros(3, np.int64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        evaluate(net, x, y, mean=[0.5], std=[0.25])
        assert torch.is_autocast_enabled("cpu")  # the caller's region is restored
    assert net.autocast == [False]


def test_full_split_trains_on_validation_images_too() -> None:
    held = load_dataset(TINY.data, seed=0)
    full = load_dataset(TINY.data, seed=0, full=True)
    assert held.val_held_out and not full.val_held_out
    assert len(full.y_train) == len(held.y_train) + len(held.y_val)
    assert set(full.train_index) >= set(held.val_index)  # the validation images are trained on
    assert (full.val_index == held.val_index).all() and (full.x_test == held.x_test).all()
    assert full.mean != held.mean  # statistics of what is trained on


def test_train_full_from_the_cli_says_which_split(
    run: TrainResult, tmp_path: Path, capsys, monkeypatch
) -> None:
    from sdsearch.cli import main

    _without_mcu(monkeypatch)
    out = tmp_path / "final"
    config = run.out / "config.yaml"
    assert main(["train", str(config), "--full", "--epochs", "1", "--threads", "1", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.metrics["trained_on"] == "train" and run.metrics["train_images"] == 1149
    assert metrics["trained_on"] == "train+val" and metrics["train_images"] == 1149 + 288
    assert metrics["val_accuracy"] is None
    assert all(e["val_accuracy"] is None and 0 <= e["test_accuracy"] <= 1 for e in metrics["exits"].values())


def test_anytime_deployment_calibrates_exports_and_agrees_with_onnx_runtime(tmp_path: Path) -> None:
    from sdsearch.core.config import AnytimeTarget, DeployConfig

    cfg = TINY.replace(deploy=DeployConfig(exit="anytime", target=AnytimeTarget(accuracy_drop=0.02)))
    result = train(cfg, out=tmp_path / "anytime", progress=False)
    m = result.metrics
    assert (result.out / "model.anytime.onnx").is_file() and (result.out / "model.onnx").is_file()
    assert m["deploy_exit"] == "anytime" and set(m["anytime"]["thresholds"]) == {"1", "3"}
    anytime = m["anytime"]
    # The top line is the anytime model's test result, bounded by its worst case (every exit runs).
    assert m["test_accuracy"] == anytime["test"]["accuracy"] and m["expected_macs"] <= m["macs"]
    assert m["macs"] == anytime["macs"]["worst_case"]
    assert abs(sum(anytime["test"]["exit_share"].values()) - 1.0) < 1e-9
    assert anytime["onnx"]["status"] == "written" and anytime["onnx"]["exit_agreement"] == 1.0
    # No TFLite form of an anytime model yet: no .tflite, and metrics.json says why.
    assert m["tflm"] is None and "anytime" in m["tflm_skipped"]
    assert not (result.out / "model.int8.tflite").exists()
    assert (
        anytime["val"]["accuracy"] >= anytime["val"]["deepest_accuracy"] - 0.02
    )  # the target, on validation
