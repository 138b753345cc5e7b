"""Tables, CSV / JSON and plots of a front (sdsearch.results.report)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from _front_study import StudyBuilder, drop_study_attr, memory_study, standard_study, storage_url
from rich.console import Console

from sdsearch.results import plot
from sdsearch.results.front import Front
from sdsearch.results.plot import front_figure, plot_front
from sdsearch.results.read import load_front
from sdsearch.results.report import (
    columns,
    config_table,
    front_json,
    front_records,
    front_report,
    read_csv,
    write_csv,
    write_json,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = storage_url(tmp_path_factory.mktemp("report"))
    standard_study(url)
    return url


@pytest.fixture(scope="module", params=[False, True], ids=["trials", "candidates"])
def front(request: pytest.FixtureRequest, study_url: str) -> Front:
    return load_front(study_url, candidates=request.param)


def test_records_have_the_key_choices(front: Front) -> None:
    records = front_records(front)
    assert len(records) == len(front.front)
    assert all(list(r) == list(columns(front)) for r in records)
    assert sum(r["knee"] for r in records) == 1
    by_id = {(r["trial"], r["exit"]): r for r in records}
    r = by_id[(0, "final")]
    assert (r["accuracy"], r["params"], r["macs"]) == (0.90, 40_000, 1_200_000)
    assert (r["backbone.arch"], r["backbone.width"], r["backbone.depth"], r["branches.placement"]) == (
        "resnet",
        0.25,
        1,
        "1,2",
    )
    assert (r["branches.style"], r["cbfe.location"], r["fusion.type"], r["loss.teacher"]) == (
        "sd",
        "none",
        "none",
        "deepest",
    )
    assert r["cbfe.ratio"] is None  # CBFE is off: the stored default ratio means nothing
    # Every searchable leaf is a column, searched or not (issue: a searched weight decay was missing).
    assert r["train.weight_decay"] == 5.0e-4 and r["backbone.last_channel"] is None


def test_csv_round_trip(front: Front, tmp_path: Path) -> None:
    path = write_csv(front, tmp_path / "out" / "front.csv")
    assert read_csv(path) == front_records(front)


def test_json_round_trip(front: Front, tmp_path: Path) -> None:
    path = write_json(front, tmp_path / "front.json")
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(front_json(front)))
    assert isinstance(data, list) and all("config" in d for d in data)
    assert {(d["trial"], d["exit"]) for d in data} == {(c.trial, c.exit) for c in front.front}


def test_report_renders_table_counts_and_best(front: Front) -> None:
    console = Console(record=True, width=220, color_system=None)
    console.print(front_report(front))
    text = console.export_text()
    assert "MACs" in text and "FLOPs" in text  # the label says which one is shown
    assert "5 complete (5 feasible), 1 rejected, 1 failed, 1 pruned, 1 running" in text
    assert "knee" in text and "best accuracy: trial 3 exit final: 93.00%" in text
    assert "budget params <= 60k, macs <= 2M" in text
    for searched in ("backbone.arch", "branches.placement"):  # the leaves the study searched
        assert searched in text
    assert "stopped early" in text  # the pruned trial's partial candidates, apart from the front


def test_numbers_are_never_cut_and_configs_go_one_column_per_trial(front: Front) -> None:
    """On an 80-column terminal every figure is printed whole; the config table has a column per
    trial on the front (not per candidate) and a row per searched key."""
    console = Console(record=True, width=80, color_system=None)
    console.print(front_report(front))
    text = console.export_text()
    assert "…" not in text
    for c in front.front:
        assert f"{100 * c.accuracy:.2f}%" in text
    table = config_table(front)
    trials = {c.trial for c in front.front}
    assert [col.header for col in table.columns[1:]] == [
        f"trial {t}" for t in dict.fromkeys(c.trial for c in front.front)
    ]
    assert len(table.columns) == 1 + len(trials)
    keys = list(table.columns[0].cells)
    assert "backbone.arch" in keys and "train.weight_decay" not in keys  # searched keys only
    placement = keys.index("branches.placement")
    by_trial = {record["trial"]: record for record in front_records(front)}
    for col, t in zip(table.columns[1:], dict.fromkeys(c.trial for c in front.front), strict=True):
        assert list(col.cells)[placement] == (by_trial[t]["branches.placement"] or "(none)")


def test_config_values_are_short_and_say_when_a_key_does_not_apply():
    from sdsearch.results.report import _format_value

    assert _format_value(0.03125) == "0.03125" and _format_value(0.015762437178) == "0.01576"
    assert _format_value(None) == "-" and _format_value("") == "(none)" and _format_value(3) == "3"


def _drawn(ax, label: str) -> int:
    """Points an axes draws under a legend label (its filled and hollow markers together)."""
    return sum(
        len(c.get_offsets())
        for c in ax.collections
        if c.get_label() in (label, f"{label}: better on another cost")
    )


def test_plot_draws_each_front_per_cost_with_its_budget(front: Front) -> None:
    """What is drawn, read back from matplotlib's objects: one panel per cost objective with its axis
    label, every member of both fronts in every panel, the stopped trial's exits as crosses, one knee
    and the budget limit as a dashed vertical line at the limit."""
    fig = front_figure(front)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["accuracy vs params", "accuracy vs MACs"]
    assert panels[0].get_ylabel() == "validation accuracy (%)"
    assert panels[0].get_xlabel().startswith("params, log scale")
    assert "torch FLOPs = 2 × MACs" in panels[1].get_xlabel()
    assert len(front.trials_front) == 4  # trials 0, 2, 3, 8 of the standard study (6 is dominated)
    for ax, limit in zip(panels, (60_000, 2_000_000), strict=True):
        assert ax.get_xscale() == "log"
        assert _drawn(ax, plot.TRIALS_LABEL) == len(front.trials_front)
        assert _drawn(ax, plot.CANDIDATES_LABEL) == len(front.candidates_front)
        assert _drawn(ax, "stopped early (partial, at its rung)") == len(front.partial) == 2
        knees = [c for c in ax.collections if c.get_label().startswith("knee ")]
        assert len(knees) == 1 and len(knees[0].get_offsets()) == 1
        (budget,) = [line for line in ax.get_lines() if line.get_label() == plot.BUDGET_LABEL]
        assert list(budget.get_xdata()) == [limit, limit] and budget.get_linestyle() == "--"


def test_plot_writes_a_png(front: Front, tmp_path: Path) -> None:
    path = plot_front(front, tmp_path / "plots" / "front.png", dpi=60)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_with_flops_budget_and_single_point(tmp_path: Path) -> None:
    url = storage_url(tmp_path)
    StudyBuilder(url, "one", objectives=("accuracy", "flops"), budget={"flops": 4e6}).trained(
        (0.8, 10_000, 1_000_000)
    )
    one = load_front(url)
    (ax,) = [ax for ax in front_figure(one).axes if ax.get_title()]
    assert ax.get_title() == "accuracy vs FLOPs" and _drawn(ax, plot.TRIALS_LABEL) == 1
    (budget,) = [line for line in ax.get_lines() if line.get_label() == plot.BUDGET_LABEL]
    assert list(budget.get_xdata()) == [4e6, 4e6]  # the FLOPs limit, on the FLOPs axis
    path = plot_front(one, tmp_path / "one.png", dpi=60)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_figures_of_older_conventions_are_labelled_with_them_everywhere(tmp_path: Path) -> None:
    """An int8 study stored before its conventions were stamped counted peak memory by liveness and
    size as weights: every heading, caption and axis says so; today's study says nothing extra."""
    from sdsearch.store import attrs

    url = storage_url(tmp_path)
    memory_study(url)
    today = load_front(url)
    assert today.heading("peak_memory") == "peak memory (int8)" and today.heading("size") == "size (int8)"
    assert "for cortex-m" in today.describe("peak_memory") and "older" not in today.describe("size")

    drop_study_attr(url, "mem", attrs.CONVENTIONS)
    front = load_front(url)
    assert front.conventions == {"peak_memory": "liveness", "size": "int8-weights", "loss": "sdsearch-0.2"}
    console = Console(record=True, width=220, color_system=None)
    console.print(front_report(front))
    text = console.export_text()
    assert "peak memory (int8, liveness)" in text and "size (int8, int8-weights)" in text
    words = " ".join(text.split())  # the caption wraps at the table's width
    assert "(an older convention: studies started now count tflite-bytes)" in words
    fig = front_figure(front)
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert labels[0].startswith("peak memory (int8, liveness)") and labels[1].startswith(
        "size (int8, int8-weights)"
    )
    assert fig.axes[0].get_title() == "accuracy vs peak memory (int8, liveness)"
