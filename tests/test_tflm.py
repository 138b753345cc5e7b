"""The microcontroller path: `sdsearch train` writes an int8 .tflite that TFLite Micro runs like the
int8 ONNX graph, C++ sources that compile, and `deploy.runtime: tflm` is validated and scored.

One digits model is trained and converted once for the whole session (conversion takes seconds).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sdsearch.cli import main
from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    DeployConfig,
    ModelConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.core.platforms import MCU_INSTALL
from sdsearch.deploy.build import ARTIFACTS, TrainResult, train
from sdsearch.graphs.contract import DEPLOY_FILES, FIRMWARE_FILES, TFLITE_INPUT_LAYOUT
from sdsearch.space.document import config_to_document

DIGITS = TrialConfig(
    model=ModelConfig(backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(3,))),
    train=TrainConfig(epochs=6, batch_size=64),
)
MCU_FILES = {DEPLOY_FILES["tflite"], *FIRMWARE_FILES}
#: Ten class names that a naive C string would break: quotes, backslashes, trigraphs, UTF-8, controls.
AWKWARD = ['say "hi"', "back\\slash", "??=", "caf\u00e9", "tab\there", "new\nline", "", "*/", "0x41", "z"]


def _no_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the mcu extra were not installed: every check reads this one function."""
    monkeypatch.setattr(
        "sdsearch.core.platforms.missing_mcu_packages", lambda: ["litert_torch", "tflite_micro"]
    )


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    pytest.importorskip("litert_torch")
    pytest.importorskip("tflite_micro")
    return train(DIGITS, out=tmp_path_factory.mktemp("runs") / "digits", progress=False, threads=1)


def test_the_tflite_runs_in_tflm_like_float32_and_the_int8_onnx(run: TrainResult) -> None:
    from sdsearch.graphs.runtime import onnx_predictions, onnx_session
    from sdsearch.graphs.tflm import tflm_logits

    tflm, data = run.metrics["tflm"], _data()
    assert run.metrics["test_accuracy"] > 0.8  # a trained model, or the comparison says nothing
    assert abs(tflm["test_accuracy"] - run.metrics["test_accuracy"]) <= 0.02, tflm
    assert tflm["agreement_with_int8_onnx"] >= 0.95, tflm
    # The figures are those of the written files: the .tflite runs the test split in its measured arena.
    model = (run.out / DEPLOY_FILES["tflite"]).read_bytes()
    predicted = tflm_logits(model, data.x_test, arena=tflm["arena_bytes"]).argmax(1)
    assert tflm["test_accuracy"] == float(np.mean(predicted == data.y_test))
    onnx_int8 = onnx_predictions(onnx_session(run.out / DEPLOY_FILES["int8"]), data.x_test)
    assert tflm["agreement_with_int8_onnx"] == float(np.mean(predicted == onnx_int8))
    assert tflm["platform"] == "tflm-reference" and tflm["model_bytes"] == len(model)
    assert tflm["arena_planned_bytes"] + tflm["arena_persistent_bytes"] <= tflm["arena_bytes"]
    assert tflm["ops"]["CONV_2D"] >= 4 and tflm["test_images"] == len(data.y_test) == 360
    assert tflm["convert_seconds"] > 0 and tflm["seconds"] > 0
    # Every figure with its unit, as the rest of metrics.json.
    assert set(tflm["units"]) < set(tflm) and tflm["units"]["arena_bytes"] == "bytes"
    assert "16-byte" in tflm["convention"]


def test_train_writes_the_tflite_and_says_how_it_is_fed(run: TrainResult) -> None:
    assert {p.name for p in run.out.iterdir()} == set(ARTIFACTS) >= MCU_FILES
    assert run.metrics == json.loads((run.out / "metrics.json").read_text())
    entry = run.metrics["files"][DEPLOY_FILES["tflite"]]
    assert (
        entry["precision"] == "int8" and entry["bytes"] == (run.out / DEPLOY_FILES["tflite"]).stat().st_size
    )
    assert entry["calibration_images"] == run.metrics["files"][DEPLOY_FILES["int8"]]["calibration_images"]
    assert entry["input"]["layout"] == TFLITE_INPUT_LAYOUT and entry["input"]["shape"] == [1, 8, 8, 1]
    assert entry["input"]["dtype"] == "int8" and entry["input"]["zero_point"] == -128
    # q = pixel - 128 exactly, whatever rounding the converter left in the stored scale.
    pixels = np.arange(256)
    assert np.array_equal(
        np.round(pixels / entry["input"]["scale"]) + entry["input"]["zero_point"], pixels - 128
    )
    assert entry["output"]["shape"] == [1, 10]
    header = (run.out / FIRMWARE_FILES[0]).read_text()
    arena = run.metrics["files"][FIRMWARE_FILES[0]]["tensor_arena_bytes"]
    # kTensorArenaSize is for deploy.platform (cortex-m by default): the estimate its budget was checked
    # against, with the arena measured on the reference kernels named beside it.
    from sdsearch.cost.trace import deploy_cost
    from sdsearch.space.load import load_trial_config

    config = load_trial_config(run.out / "config.yaml")
    assert config.deploy.platform == "cortex-m"
    estimate = deploy_cost(
        config.model, "final", num_classes=10, in_chans=1, input_size=(8, 8), platform="cortex-m"
    )
    assert f"constexpr int kTensorArenaSize = {arena};" in header and arena == estimate.peak_memory
    assert "estimate for cortex-m" in header and str(run.metrics["tflm"]["arena_bytes"]) in header
    assert "q = pixel - 128" in header and "normalisation is inside the graph" in header


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_the_cpp_sources_compile_and_hold_the_tflite(run: TrainResult, tmp_path: Path) -> None:
    from sdsearch.graphs.firmware import firmware_sources

    header, source = FIRMWARE_FILES
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", source, "-o", str(tmp_path / "m.o")],
                   cwd=run.out, check=True)  # fmt: skip
    # The same .tflite with awkward class names, linked into a program that prints what it holds.
    model = (run.out / DEPLOY_FILES["tflite"]).read_bytes()
    for name, text in firmware_sources(model, arena_bytes=1000, arena_source="a test", classes=AWKWARD,
                                       exit="final").items():  # fmt: skip
        (tmp_path / name).write_text(text)
    (tmp_path / "main.cc").write_text(_PRINTER)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "main.cc", source, "-o", "printer"], cwd=tmp_path,
                   check=True)  # fmt: skip
    out = subprocess.run([str(tmp_path / "printer")], capture_output=True, check=True).stdout
    numbers, names, array = out.split(b"\0", 2)
    arena, aligned, zero_point, n = map(int, numbers.split())
    assert (arena, aligned, zero_point, n) == (1008, 1, -128, 10)  # rounded up to 16 bytes; 16-byte aligned
    assert names.decode().split("\x01")[:-1] == AWKWARD
    assert array == model
    assert re.search(r"kInputScale = [0-9.e+-]+f;", (tmp_path / header).read_text())


_PRINTER = r"""#include <cstdint>
#include <cstdio>
#include "model_data.h"
using namespace sdsearch_model;
int main() {
  std::printf("%d %d %d %d", kTensorArenaSize, int(reinterpret_cast<std::uintptr_t>(kModelData) % 16 == 0),
              kInputZeroPoint, kNumClasses);
  std::fputc(0, stdout);
  for (const char* name : kClassNames) { std::fputs(name, stdout); std::fputc(1, stdout); }
  std::fputc(0, stdout);
  std::fwrite(kModelData, 1, kModelDataLen, stdout);
}
"""


def test_a_search_trial_scores_the_tflite_the_train_command_writes(
    run: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tflm_accuracy converts what `sdsearch train` converts (the same module and calibration images;
    the conversion itself is stubbed with the written file: seconds) and scores it on the validation split."""
    import torch

    from sdsearch.graphs.onnx import N_CALIBRATION, calibration_images
    from sdsearch.graphs.runtime import int8_accuracy, tflm_accuracy
    from sdsearch.graphs.tflm import tflm_logits
    from sdsearch.nn.network import SelfDistillNet
    from sdsearch.training.checkpoint import load_checkpoint

    data = _data()
    net = SelfDistillNet(DIGITS.model, num_classes=10, in_chans=1, input_size=(8, 8))
    net.load_state_dict(load_checkpoint(run.out / "checkpoint.pt")["state_dict"])
    net.eval()
    written = (run.out / DEPLOY_FILES["tflite"]).read_bytes()
    x = torch.randn(4, 1, 8, 8)

    def convert(module, *, mean, std, input_shape, calibration):
        assert np.array_equal(calibration, calibration_images(data.x_train, N_CALIBRATION, seed=DIGITS.seed))
        assert (list(mean), list(std), input_shape) == (list(data.mean), list(data.std), (1, 8, 8))
        with torch.no_grad():
            torch.testing.assert_close(module(x), net.deploy("final")(x))
        return written

    monkeypatch.setattr("sdsearch.graphs.tflite.int8_tflite", convert)
    tflm = tflm_accuracy(net, ["final"], data, seed=DIGITS.seed)
    assert tflm["final"] == float(np.mean(tflm_logits(written, data.x_val).argmax(1) == data.y_val))
    assert abs(tflm["final"] - int8_accuracy(net, ["final"], data, seed=DIGITS.seed)["final"]) <= 0.02


def test_a_trial_with_runtime_tflm_reports_the_tflm_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainable asks TFLite Micro, not ONNX Runtime, for the int8 accuracy (scorers stubbed: seconds)."""
    from sdsearch.data.datasets import load_dataset
    from sdsearch.search.trainable import fit_config

    def onnx_runtime(*args, **kwargs):
        raise AssertionError("runtime: tflm must not score with ONNX Runtime")

    monkeypatch.setattr("sdsearch.graphs.runtime.int8_accuracy", onnx_runtime)
    monkeypatch.setattr("sdsearch.graphs.runtime.tflm_accuracy",
                        lambda net, exits, data, seed: dict.fromkeys(exits, 0.25))  # fmt: skip
    cfg = DIGITS.replace(train=DIGITS.train.replace(epochs=1),
                         deploy=DeployConfig(quantize="int8", runtime="tflm"))  # fmt: skip
    reports = []
    fit_config(cfg, load_dataset(cfg.data, seed=0), threads=1, report=reports.append)
    int8 = [r for r in reports if r.precision == "int8"]
    assert int8 and int8[0].accuracy == 0.25 and int8[0].val_accuracy == {"3": 0.25, "final": 0.25}


# -- without the mcu extra ------------------------------------------------------------------------


def test_runtime_tflm_without_the_extra_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "mcu.yaml"
    space.write_text("name: mcu\ndata: {dataset: digits}\ndeploy: {quantize: int8, runtime: tflm}\n")
    assert main(["validate", str(space)]) == 0
    capsys.readouterr()
    _no_extra(monkeypatch)
    assert main(["validate", str(space)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{space}: deploy.runtime: tflm needs the mcu extra")
    assert err.rstrip().endswith(MCU_INSTALL)
    # The default runtime needs no extra.
    space.write_text("name: mcu\ndata: {dataset: digits}\ndeploy: {quantize: int8}\n")
    assert main(["validate", str(space)]) == 0


@pytest.mark.parametrize(
    "deploy, message",
    [
        ({"runtime": "tflm"}, "it needs quantize: int8"),
        ({"runtime": "tflm", "quantize": "int8", "exit": "anytime"}, "until a TFLite form exists"),
        ({"runtime": "tflm", "exit": "anytime"}, "until a TFLite form exists"),
    ],
)
def test_runtime_tflm_needs_int8_and_a_static_exit(deploy: dict, message: str) -> None:
    from sdsearch.core.errors import SpaceError
    from sdsearch.space.space import parse_space

    doc = {"data": {"dataset": "digits"}, "space": {"branches": {"placement": [1, 3]}}, "deploy": deploy}
    with pytest.raises(SpaceError, match=r"^s\.yaml: deploy\.runtime: ") as info:
        parse_space(doc, source="s.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_train_without_the_extra_writes_the_rest_and_says_how_to_get_the_tflite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_extra(monkeypatch)
    tiny = DIGITS.replace(train=DIGITS.train.replace(epochs=1))
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(config_to_document(tiny, name="tiny")))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and MCU_INSTALL in err[0], err
    assert {p.name for p in out.iterdir()} == set(ARTIFACTS) - MCU_FILES
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tflm"] is None and MCU_INSTALL in metrics["tflm_skipped"]
    assert not MCU_FILES & set(metrics["files"])


def _data():
    from sdsearch.data.datasets import load_dataset

    return load_dataset(DIGITS.data, seed=DIGITS.seed)
