"""The whole user workflow through the CLI: run -> show -> export -> train, plus cost and studies."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml

from sdsearch import __version__
from sdsearch.cli import main
from sdsearch.core.units import format_value

TINY_SPACE = """
name: tiny
storage: sqlite:///{tmp}/tiny.db
trials: 2
seed: 0
sampler: random
budget: {{params: 60k}}
resources: {{cpu: 1, concurrent: 2}}
data: {{dataset: digits}}
train: {{epochs: 3, batch_size: 64, lr: 0.1}}
space:
  backbone: {{arch: mobilenetv2, width: {{choice: [0.125, 0.25]}}, depth: 1}}
  branches: {{placement: [2, 3], style: sd}}
  fusion: {{type: {{choice: [none, residual]}}}}
"""


@pytest.mark.ray
def test_run_show_export_train_round_trip(tmp_path, capsys, ray_session):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE.format(tmp=tmp_path))
    assert main(["run", str(space)]) == 0
    assert "2/2 trained trials" in capsys.readouterr().out

    png, table = tmp_path / "front.png", tmp_path / "front.csv"
    assert main(["show", str(space), "--candidates", "--plot", str(png), "--csv", str(table)]) == 0
    assert png.stat().st_size > 10_000
    rows = list(csv.DictReader(table.open()))
    assert rows and {"trial", "exit", "accuracy", "params", "macs"} <= set(rows[0])
    capsys.readouterr()
    assert main(["show", str(space), "--json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front

    best = tmp_path / "best.yaml"
    assert main(["export", str(space), "--pick", "best", "-o", str(best)]) == 0
    doc = yaml.safe_load(best.read_text())
    searched_acc = doc["provenance"]["values"]["accuracy"]
    assert main(["validate", str(best)]) == 0

    out = tmp_path / "run"
    assert main(["train", str(best), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # same split, seed, epochs and (from provenance) CPU threads as the search trial: the same run
    assert doc["provenance"]["threads"] == 1 and metrics["threads"] == 1
    assert metrics["val_accuracy"] == pytest.approx(searched_acc, abs=1e-12)
    assert abs(metrics["test_accuracy"] - searched_acc) <= 0.08
    assert all((out / name).is_file() for name in ("model.onnx", "model.int8.onnx", "model.pt2"))

    # The trained model classifies a user's picture: a test digit written as a PNG.
    from PIL import Image

    from sdsearch.core.config import DataConfig
    from sdsearch.data.datasets import load_dataset

    digits = load_dataset(DataConfig(dataset="digits"), seed=0)
    Image.fromarray(digits.x_test[0, 0]).save(tmp_path / "digit.png")
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "digit.png"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["top"][0]["class"] in [str(i) for i in range(10)] and 0 < row["top"][0]["confidence"] <= 1

    # The trial's own weights, kept beside the study, deploy without training: the same validation accuracy.
    kept = tmp_path / "kept"
    assert main(["train", str(best), "--out", str(kept), "--from-study"]) == 0
    from_study = json.loads((kept / "metrics.json").read_text())
    assert from_study["from_study"]["val_accuracy"] == from_study["from_study"]["stored_val_accuracy"]
    assert from_study["val_accuracy"] == pytest.approx(searched_acc, abs=1e-12)

    capsys.readouterr()
    assert main(["studies", str(tmp_path / "tiny.db")]) == 0
    listing = capsys.readouterr().out
    assert "tiny" in listing and "KiB" in listing  # the kept weights, in bytes


def test_cost_json_for_a_fixed_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "space:\n  backbone: {arch: resnet, width: 1.0, depth: 2}\n  branches: {placement: [1, 2, 3]}\n"
    )
    assert main(["cost", str(cfg), "--input", "3x32x32", "--classes", "100", "--json", "--no-latency"]) == 0
    exits = json.loads(capsys.readouterr().out)["exits"]
    assert [e["exit"] for e in exits] == ["1", "2", "3", "final"]
    final = exits[-1]
    assert abs(final["params"] - 11.22e6) / 11.22e6 < 0.005
    assert abs(final["macs"] - 0.556e9) / 0.556e9 < 0.01
    assert final["flops"] == 2 * final["macs"]


def test_cost_shows_peak_memory_and_size_with_units(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {dataset: digits}\nspace:\n  backbone: {arch: mobilenetv2, width: 0.25, depth: 1}\n"
    )
    assert main(["cost", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["dtype"] == "int8" and doc["units"]["peak_memory"] == "bytes" and doc["units"]["latency"] == "ms"
    )
    final = doc["exits"][-1]
    assert all(e["latency"] > 0 for e in doc["exits"])  # every metric per exit, measured latency too
    assert doc["platform"] == "cortex-m"
    assert main(["cost", str(cfg), "--json", "--dtype", "float32", "--no-latency"]) == 0
    fp32 = json.loads(capsys.readouterr().out)["exits"][-1]
    # float32: the liveness count; stage 1's inverted residual at 8x8 holds the skip, the 6x
    # expansion and the depthwise output. int8: TFLite Micro's arena, structs included.
    assert fp32["peak_memory"] == 4 * (8 + 48 + 48) * 64 and fp32["size"] == 4 * fp32["params"]
    assert final["peak_memory"] > (8 + 48 + 48) * 64
    assert main(["cost", str(cfg), "--json", "--platform", "tflm-reference", "--no-latency"]) == 0
    reference = json.loads(capsys.readouterr().out)["exits"][-1]
    assert reference["peak_memory"] > final["peak_memory"]  # 8-byte pointers in its structs
    assert main(["cost", str(cfg), "--no-latency"]) == 0
    table = capsys.readouterr().out
    assert "peak memory (int8)" in table and "size (int8)" in table  # every cost names its dtype
    assert "KiB" in table and "TFLite Micro arena" in table  # and its unit and convention
    assert [format_value(n, "bytes") for n in (999, 1024, 11_249_632)] == ["999 B", "1 KiB", "10.7 MiB"]


def test_cost_tflm_without_the_mcu_extra_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    import sdsearch.cli

    monkeypatch.setattr(sdsearch.cli, "mcu_available", lambda: False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {dataset: digits}\nspace:\n  backbone: {arch: resnet, width: 0.25, depth: 1}\n")
    assert main(["cost", str(cfg), "--tflm", "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tflm" in err and "pip install 'sdsearch[mcu]'" in err


def test_cost_refuses_a_space_and_bad_shapes(capsys):
    assert main(["cost", "spaces/iot_budget.yaml"]) == 2
    assert "is still a distribution" in capsys.readouterr().err
    assert main(["cost", "spaces/cifar100_byot.yaml", "--input", "3x32"]) == 2
    assert "--input" in capsys.readouterr().err


def test_bad_arguments_are_exit_2(capsys):
    assert main(["run", "spaces/iot_budget.yaml", "--trials", "0"]) == 2
    assert main(["show", "spaces/iot_budget.yaml", "--budget", "latency=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("--trials:") and err[1].startswith("--budget:")


def test_console_script_smoke():
    out = subprocess.run(
        [sys.executable, "-m", "sdsearch", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"sdsearch {__version__}"
    bad = subprocess.run(
        [sys.executable, "-m", "sdsearch", "validate", "tests/bad_spaces/bad_fusion.yaml"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def _study_db(tmp_path, names=("a",)):
    import optuna

    url = f"sqlite:///{tmp_path}/s.db"
    for name in names:
        optuna.create_study(study_name=name, storage=url)
    return str(tmp_path / "s.db")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "{db}", "--study", "nope"], "no study 'nope'"),
        # a folder is no storage: the one storage rule (a URL, or a path ending in .db) names both forms
        (["show", "{tmp}"], "nor an SQLite file path ending in .db"),
    ],
)
def test_selecting_a_study_wrongly_is_bad_input(tmp_path, capsys, argv, message):
    db = _study_db(tmp_path)
    assert main([a.format(db=db, tmp=tmp_path) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_several_studies_need_study_name(tmp_path, capsys):
    assert main(["show", _study_db(tmp_path, names=("a", "b"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--study: ") and "holds several studies (a, b)" in err


def test_output_paths_that_are_folders_or_files_are_bad_input(tmp_path, capsys):
    from sdsearch.core.files import output_dir, output_file

    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match=r"^out: .* is a folder") as folder:
        output_file(tmp_path, key="out")
    with pytest.raises(Exception, match=r"^out: .* is a file") as file:
        output_dir(tmp_path / "file", key="out")
    assert folder.value.exit_code == file.value.exit_code == 2
    assert output_file(tmp_path / "plot", key="plot", suffix=".png").name == "plot.png"
    # The CLI names the flag that gave the path, the library the argument.
    assert main(["export", str(tmp_path / "none.yaml"), "-o", str(tmp_path)]) == 2
    assert "none.yaml" in capsys.readouterr().err  # the missing space is found first
    space = tmp_path / "s.yaml"
    space.write_text("name: s\nstorage: s.txt\n")
    assert main(["validate", str(space)]) == 2
    yaml_err = capsys.readouterr().err
    space.write_text("name: s\n")
    assert main(["run", str(space), "--storage", "s.txt"]) == 2
    flag_err = capsys.readouterr().err
    # One storage rule for the YAML and --storage, with one message naming both forms.
    assert yaml_err.split("storage: ", 1)[1] == flag_err.removeprefix("--storage: ")
    assert "a database URL" in flag_err and "ending in .db" in flag_err


def test_main_puts_the_callers_warning_display_back(tmp_path, capsys):
    """main() shows warnings as one line while it runs, and leaves a caller's display as it was."""
    import warnings

    before = warnings.showwarning
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndata: {dataset: digits}\nsampler: nsga2\nscheduler: {type: moasha}\n")
    assert main(["validate", str(path)]) == 0
    assert "warning: " in capsys.readouterr().err  # nsga2 with a scheduler warns, as one line
    assert warnings.showwarning is before


def test_costs_known_only_after_training_fall_back_to_their_worst_case():
    from sdsearch.core.metrics import metric_value

    assert metric_value({"macs": 5.0}, "expected_macs") == 5.0
    assert metric_value({"macs": 5.0, "expected_macs": 2.0}, "expected_macs") == 2.0
    assert metric_value({"accuracy": 0.9}, "anytime_accuracy") == 0.9
    assert metric_value({"macs": 5.0}, "flops") == 10.0


def test_resuming_a_study_of_older_conventions_is_refused_in_one_line(tmp_path, capsys):
    """An int8 study stored before its conventions were stamped: exit 1, one line naming --fresh."""
    from _front_study import drop_study_attr

    from sdsearch.search.study import prepare_study
    from sdsearch.space.load import load_space
    from sdsearch.store import attrs
    from sdsearch.store.storage import open_storage

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE.format(tmp=tmp_path))
    space = load_space(str(path))
    prepare_study(space, open_storage(space.storage, create=True))
    drop_study_attr(space.storage, space.name, attrs.CONVENTIONS)
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{path}: study tiny stores peak_memory, size")
    assert "(peak_memory: liveness -> tflm-arena:cortex-m; size: int8-weights -> tflite-bytes; loss: " in err
    assert "run with --fresh to start a new study (the old one is kept as tiny.1)" in err


def test_show_labels_figures_of_older_conventions_with_them(tmp_path, capsys):
    from _front_study import drop_study_attr, memory_study, storage_url

    from sdsearch.store import attrs

    url = storage_url(tmp_path)
    memory_study(url)
    assert main(["show", url]) == 0
    today = capsys.readouterr().out
    assert "peak memory (int8)" in today and "liveness" not in today and "older" not in today

    drop_study_attr(url, "mem", attrs.CONVENTIONS)
    assert main(["show", url]) == 0
    old = capsys.readouterr().out
    assert "peak memory (int8, liveness)" in old and "size (int8, int8-weights)" in old
    assert "an older convention: studies started now count tflm-arena" in old


class _ShortBranch(torch.nn.Module):
    """A registered branch style that keeps its stage's map size: it never reaches the deepest map."""

    def __init__(self, in_chs, in_size, out_chs, out_size, *, cbfe_ratio=None, device=None, dtype=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chs, out_chs, 1, device=device, dtype=dtype)

    def forward(self, x):
        return self.conv(x)


TRAINER_CONFIG = """
name: fixed
data: {{dataset: digits}}
train: {{epochs: 1, batch_size: 64}}
space:
  backbone: {{width: 0.125, depth: 1}}
  branches: {{placement: [2], style: {style}}}
  loss: {{hint: byot}}
"""


def test_byot_hint_on_a_branch_that_misses_the_deepest_map_is_bad_input(tmp_path, capsys):
    from sdsearch.core.registry import BRANCH_STYLES

    path = tmp_path / "fixed.yaml"
    path.write_text(TRAINER_CONFIG.format(style="short"))
    BRANCH_STYLES.register("short", _ShortBranch)
    try:
        assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    finally:
        BRANCH_STYLES.unregister("short")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{path}: loss.hint: 'byot' compares each branch's map with the deepest map")
    assert "use hint: adapter" in err and not (tmp_path / "out").exists()


def test_an_exported_config_of_the_older_loss_is_refused_naming_what_changed(tmp_path, capsys):
    from sdsearch.core.metrics import LOSS_CHANGES

    path = tmp_path / "old.yaml"
    exported = TRAINER_CONFIG.format(style="sd") + "provenance: {study: s, trial: 3, exit: final}\n"
    path.write_text(exported)  # exported before the loss convention was stamped
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"{path}: provenance: exported from study s trained under "
    )
    assert f"sdsearch-0.2 loss, and the loss has changed since ({LOSS_CHANGES})" in err
    assert "--fresh" in err and not (tmp_path / "out").exists()
