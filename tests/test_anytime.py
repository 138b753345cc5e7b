"""Anytime inference: policy, costs, calibration, the model, its ONNX export and the report (CPU, digits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdsearch.anytime.model import AnytimeModel, anytime_cost, exit_statistics
from sdsearch.anytime.policy import (
    AnytimeCost,
    ExitStats,
    anytime_outcome,
    anytime_report,
    calibrate,
    exit_indices,
    sweep,
)
from sdsearch.anytime.view import anytime_table, plot_anytime
from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    CBFEConfig,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)
from sdsearch.core.errors import ConfigError
from sdsearch.cost.trace import exit_costs
from sdsearch.cost.worst_case import every_exit_cost
from sdsearch.data.datasets import Dataset, load_dataset
from sdsearch.graphs.preprocess import normalise
from sdsearch.nn.losses import SelfDistillLoss
from sdsearch.nn.network import SelfDistillNet
from sdsearch.training.fit import evaluate, fit

TINY = ModelConfig(backbone=BackboneConfig(width=0.25, depth=1))
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataConfig(dataset="digits"), seed=0)


@pytest.fixture(scope="module")
def net(digits: Dataset) -> SelfDistillNet:
    """TINY (exits 1, 2, 3, final) trained as the shipped digits space trains (8 epochs, ~3 s): the
    final exit is the most accurate on validation, so an accuracy floor binds."""
    torch.manual_seed(0)
    net = SelfDistillNet(TINY, num_classes=10, in_chans=1, input_size=(8, 8))
    fit(
        net,
        SelfDistillLoss(LossConfig(), net),
        digits,
        TrainConfig(epochs=8, batch_size=64, lr=0.05),
        seed=0,
        device="cpu",  # the checks below run on CPU tensors, on every machine
    )
    # fit leaves the net channels-last; deployment and the checks below use the default format.
    return net.to(memory_format=torch.contiguous_format).eval()


@pytest.fixture(scope="module")
def cost(net: SelfDistillNet) -> AnytimeCost:
    return anytime_cost(net, input_shape=SHAPE)


@pytest.fixture(scope="module")
def val(net: SelfDistillNet, digits: Dataset) -> ExitStats:
    return exit_statistics(net, digits.x_val, digits.y_val, mean=digits.mean, std=digits.std)


@pytest.fixture(scope="module")
def test_stats(net: SelfDistillNet, digits: Dataset) -> ExitStats:
    return exit_statistics(net, digits.x_test, digits.y_test, mean=digits.mean, std=digits.std)


def _normalised(digits: Dataset, x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(normalise(x, digits.mean, digits.std))


def _spread(confidence: np.ndarray) -> list[float]:
    """Thresholds that send about half of the images still in flight out at each shallow exit, each
    halfway between two observed confidences (so no image sits on a threshold)."""
    alive = np.ones(len(confidence), dtype=bool)
    out = []
    for k in range(confidence.shape[1] - 1):
        values = np.unique(confidence[alive, k])
        j = len(values) // 2
        t = float(np.float32((float(values[j - 1]) + float(values[j])) / 2))
        out.append(t)
        alive &= ~(confidence[:, k] > t)
    return out


# -- costs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        TINY,
        TINY.replace(branches=BranchesConfig(placement=(1, 3), style="lite")),
        TINY.replace(branches=BranchesConfig(placement=(2,)), cbfe=CBFEConfig(location="trunk", ratio=4)),
        ModelConfig(
            backbone=BackboneConfig(arch="mobilenetv2", width=0.25, depth=1),
            cbfe=CBFEConfig(location="branch", ratio=2),
        ),
        TINY.replace(branches=BranchesConfig(placement=())),
    ],
    ids=["resnet-sd", "resnet-lite-1-3", "resnet-2-trunk-cbfe", "mobilenetv2-branch-cbfe", "final-only"],
)
def test_cost_pieces_add_up_to_every_exits_deploy_cost(model: ModelConfig) -> None:
    meta = SelfDistillNet(model, num_classes=10, in_chans=3, input_size=(16, 16), device="meta")
    cost = anytime_cost(meta, input_shape=(3, 16, 16))
    static = exit_costs(model, num_classes=10, in_chans=3, input_size=(16, 16))
    assert cost.exits == model.exits
    assert cost.deploy == tuple(static[e].macs for e in model.exits)
    assert all(t > 0 for t in cost.trunk) and all(b > 0 for b in cost.branch)
    # Leaving at exit k pays the trunk to its stage and the branch + head of exits 0..k.
    assert cost.leave == tuple(cost.deploy[k] + sum(cost.branch[:k]) for k in range(len(cost.exits)))
    assert cost.worst_case == static["final"].macs + sum(cost.branch[:-1])
    anytime = AnytimeModel(meta, [0.5] * (len(model.exits) - 1), share_weights=True)
    assert cost.params == sum(p.numel() for p in anytime.parameters())
    # The model with every exit running, as a budget sees it: the same MACs and parameters.
    worst = every_exit_cost(model, num_classes=10, in_chans=3, input_size=(16, 16))
    assert (worst.macs, worst.params) == (cost.worst_case, cost.params)


def test_a_trained_network_costs_what_its_config_costs(net: SelfDistillNet, cost: AnytimeCost) -> None:
    meta = SelfDistillNet(TINY, num_classes=10, in_chans=1, input_size=(8, 8), device="meta")
    assert cost == anytime_cost(meta, input_shape=(1, 8, 8))
    assert all(p.device.type == "cpu" for p in net.parameters())  # counting never moved the weights


# -- statistics and the policy ---------------------------------------------------------------------


def test_statistics_are_the_networks_own_exits(net: SelfDistillNet, digits: Dataset, val: ExitStats) -> None:
    assert val.exit_accuracy == evaluate(net, digits.x_val, digits.y_val, mean=digits.mean, std=digits.std)
    with torch.no_grad():
        logits = net(_normalised(digits, digits.x_val)).logits
    expected = np.stack([torch.softmax(z, 1).amax(1).numpy() for z in logits.values()], axis=1)
    np.testing.assert_allclose(val.confidence, expected, rtol=0, atol=1e-6)
    assert val.confidence.dtype == np.float32 and val.n_images == len(digits.y_val)
    assert not net.training  # the pass restores the mode


def test_thresholds_of_one_give_the_deepest_exit_and_every_exit_running(
    digits: Dataset, cost: AnytimeCost, val: ExitStats, test_stats: ExitStats
) -> None:
    static = exit_costs(TINY, num_classes=10, in_chans=1, input_size=(8, 8))
    # The MACs of "never stop early": the final exit's deploy model plus the branch + head of
    # every shallow exit, all of which ran and were not confident.
    worst = static["final"].macs + sum(cost.branch[:-1])
    for stats in (val, test_stats):
        out = anytime_outcome(stats, [1.0, 1.0, 1.0], cost)
        assert out.accuracy == stats.exit_accuracy["final"]
        assert out.expected_macs == worst == cost.worst_case
        assert out.exit_share == (0.0, 0.0, 0.0, 1.0)
    # Thresholds keyed by exit name are put in depth order (distinct values, so an order mix-up shows).
    by_name = anytime_outcome(test_stats, {"3": 0.9, "1": 0.5, "2": 0.7}, cost)
    assert by_name == anytime_outcome(test_stats, [0.5, 0.7, 0.9], cost)
    assert by_name != anytime_outcome(test_stats, [0.9, 0.5, 0.7], cost)


def test_thresholds_of_zero_give_exit_one(cost: AnytimeCost, val: ExitStats, test_stats: ExitStats) -> None:
    static = exit_costs(TINY, num_classes=10, in_chans=1, input_size=(8, 8))
    for stats in (val, test_stats):
        out = anytime_outcome(stats, [0.0, 0.0, 0.0], cost)
        assert out.accuracy == stats.exit_accuracy["1"]
        assert out.expected_macs == static["1"].macs  # exactly exit 1's deploy model
        assert out.exit_share == (1.0, 0.0, 0.0, 0.0)


def _synthetic(n: int = 400, seed: int = 0) -> ExitStats:
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.1, 1.0, (n, 4)).astype(np.float32)
    conf[rng.random((n, 4)) < 0.1] = 1.0  # saturated softmax, as real networks give
    return ExitStats(exits=("1", "2", "3", "final"), confidence=conf, correct=rng.random((n, 4)) < conf)


def test_expected_macs_is_monotone_in_the_thresholds(cost: AnytimeCost, val: ExitStats) -> None:
    rng = np.random.default_rng(0)
    for stats in (val, _synthetic()):
        for _ in range(300):
            low = rng.uniform(0, 1, 3)
            if rng.random() < 0.3:  # thresholds on observed confidences (ties), and the ends
                low = rng.choice(np.concatenate([stats.confidence[:, :-1].ravel(), [0.0, 1.0]]), 3)
            high = np.minimum(low + rng.uniform(0, 1, 3) * (rng.random(3) < 0.7), 1.0)
            a, b = anytime_outcome(stats, low, cost), anytime_outcome(stats, high, cost)
            assert a.expected_macs <= b.expected_macs, (low, high)
            assert cost.leave[0] <= a.expected_macs <= cost.worst_case


def test_an_exit_is_left_only_when_confidence_is_strictly_greater() -> None:
    conf = np.array([[0.5, 0.9], [0.6, 0.9], [1.0, 0.9]], dtype=np.float32)
    assert exit_indices(conf, [0.5]).tolist() == [1, 0, 0]  # 0.5 > 0.5 is false
    assert exit_indices(conf, [1.0]).tolist() == [1, 1, 1]  # even a saturated 1.0 does not leave
    assert exit_indices(conf, [0.0]).tolist() == [0, 0, 0]
    below = float(np.nextafter(np.float32(0.5), np.float32(0)))
    assert exit_indices(conf, [below]).tolist() == [0, 0, 0]


# -- calibration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("drop", [0.0, 0.005, 0.02, 0.1])
def test_calibration_meets_an_accuracy_drop_on_validation(
    drop: float, cost: AnytimeCost, val: ExitStats
) -> None:
    cal = calibrate(val, cost, accuracy_drop=drop)
    assert cal.met and cal.target == {"accuracy_drop": drop}
    assert cal.deepest_accuracy == val.exit_accuracy["final"]
    assert cal.outcome.accuracy >= val.exit_accuracy["final"] - drop - 1e-12
    assert cal.outcome == anytime_outcome(val, cal.thresholds, cost)  # the record is what the policy does
    # Never worse than the best single shared threshold meeting the same target.
    shared = [p for p in sweep(val, cost) if p.accuracy >= val.exit_accuracy["final"] - drop - 1e-12]
    assert cal.outcome.expected_macs <= min(p.expected_macs for p in shared)
    assert cost.leave[0] <= cal.outcome.expected_macs <= cost.worst_case


def _deeper_is_better(n: int = 1000, seed: int = 0) -> tuple[ExitStats, AnytimeCost]:
    """Exits that get better with depth, confident where they are right (more or less)."""
    rng = np.random.default_rng(seed)
    skill = np.array([0.70, 0.80, 0.88, 0.95])
    correct = rng.random((n, 4)) < skill
    conf = np.clip(np.where(correct, rng.beta(5, 1, (n, 4)), rng.beta(2, 2, (n, 4))), 0.1, 1.0).astype(
        np.float32
    )
    stats = ExitStats(exits=("1", "2", "3", "final"), confidence=conf, correct=correct)
    return stats, AnytimeCost(exits=stats.exits, trunk=(400, 300, 300, 300), branch=(60, 50, 40, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_meets_binding_targets(seed: int) -> None:
    stats, cost = _deeper_is_better(seed=seed)
    deepest = stats.exit_accuracy["final"]
    points = sweep(stats, cost)
    for drop in (0.0, 0.01, 0.03, 0.1):
        cal = calibrate(stats, cost, accuracy_drop=drop)
        assert cal.outcome.accuracy >= deepest - drop - 1e-12
        assert cal.outcome == anytime_outcome(stats, cal.thresholds, cost)
        assert cal.outcome.expected_macs <= min(
            p.expected_macs for p in points if p.accuracy >= deepest - drop - 1e-12
        )
        if drop >= 0.01:
            assert cal.outcome.expected_macs < 0.9 * cost.worst_case  # confident exits do save
    for budget in np.linspace(cost.leave[0], cost.worst_case, 6):
        cal = calibrate(stats, cost, expected_macs=budget)
        assert cal.met and cal.outcome.expected_macs <= budget
        assert cal.outcome.accuracy >= max(p.accuracy for p in points if p.expected_macs <= budget)


def test_calibration_meets_an_expected_macs_budget_on_validation(cost: AnytimeCost, val: ExitStats) -> None:
    points = sweep(val, cost)
    for fraction in (0.0, 0.1, 0.3, 0.6, 1.0):
        budget = cost.leave[0] + fraction * (cost.worst_case - cost.leave[0])
        cal = calibrate(val, cost, expected_macs=budget)
        assert cal.met
        assert cal.outcome.expected_macs <= budget
        assert cal.outcome == anytime_outcome(val, cal.thresholds, cost)
        assert cal.outcome.accuracy >= max(p.accuracy for p in points if p.expected_macs <= budget)
    at_worst = calibrate(val, cost, expected_macs=cost.worst_case)
    assert at_worst.outcome.accuracy >= max(val.exit_accuracy["final"], max(p.accuracy for p in points))
    # Below exit 1's own cost, which every image pays, nothing fits: the cheapest policy, not met.
    cheap = calibrate(val, cost, expected_macs=cost.leave[0] - 1)
    assert not cheap.met and cheap.thresholds == {"1": 0.0, "2": 0.0, "3": 0.0}
    assert cheap.outcome.expected_macs == cost.leave[0]


def test_per_exit_thresholds_beat_one_shared_threshold_where_exits_differ() -> None:
    """Exit 1 is right when its confidence is 0.9 and wrong at 0.8; exit 2 is right at 0.7 and wrong at
    0.6. Per-exit thresholds send the easy half out at exit 1 and a quarter at exit 2 with no loss;
    a shared threshold must stay above 0.8 for exit 1, which keeps everyone past exit 2."""
    n = 400
    conf = np.full((n, 3), 0.99, dtype=np.float32)
    correct = np.ones((n, 3), dtype=bool)
    easy, medium, hard = slice(0, 200), slice(200, 300), slice(300, 400)
    conf[easy, 0], conf[medium, 0], conf[hard, 0] = 0.9, 0.8, 0.8
    correct[medium, 0] = correct[hard, 0] = False
    conf[:, 1] = 0.6
    conf[medium, 1] = 0.7
    correct[hard, 1] = False
    stats = ExitStats(exits=("1", "2", "final"), confidence=conf, correct=correct)
    cost = AnytimeCost(exits=("1", "2", "final"), trunk=(100, 100, 100), branch=(10, 10, 1))
    cal = calibrate(stats, cost, accuracy_drop=0.0)
    assert cal.method == "per_exit" and cal.outcome.accuracy == 1.0
    assert cal.outcome.exit_share == (0.5, 0.25, 0.25)
    assert 0.8 <= cal.thresholds["1"] < 0.9 and 0.6 <= cal.thresholds["2"] < 0.7
    assert cal.outcome.expected_macs == 0.5 * 110 + 0.25 * 220 + 0.25 * 321
    best_shared = min((p for p in cal.sweep if p.accuracy == 1.0), key=lambda p: p.expected_macs)
    assert best_shared.exit_share == (0.5, 0.0, 0.5)


def test_bad_targets_and_thresholds_are_refused(cost: AnytimeCost, val: ExitStats) -> None:
    for kwargs in ({}, {"accuracy_drop": 0.01, "expected_macs": 1e6}, {"accuracy_drop": 1.5},
                   {"accuracy_drop": -0.1}, {"expected_macs": 0}, {"expected_macs": float("nan")}):  # fmt: skip
        with pytest.raises(ConfigError, match=r"deploy\.target"):
            calibrate(val, cost, **kwargs)
    for thresholds in ([0.5, 0.5], [0.5, 0.5, 1.5], {"1": 0.5, "2": 0.5, "final": 0.5}):
        with pytest.raises(ConfigError, match="anytime thresholds"):
            anytime_outcome(val, thresholds, cost)


# -- the model -------------------------------------------------------------------------------------------


def test_anytime_model_equals_the_policy(
    net: SelfDistillNet, digits: Dataset, cost: AnytimeCost, test_stats: ExitStats
) -> None:
    thresholds = _spread(test_stats.confidence)
    expected = exit_indices(test_stats.confidence, thresholds)
    assert set(np.bincount(expected, minlength=4).nonzero()[0]) == {0, 1, 2, 3}  # every exit used
    model = AnytimeModel(net, thresholds).eval()
    x = _normalised(digits, digits.x_test)
    with torch.no_grad():
        logits, index = model(x)
        again = model(x)
        one_by_one = [model(x[i : i + 1]) for i in range(0, len(x), 7)]
        every_exit = net(x).logits
    assert index.dtype == torch.int64 and index.numpy().tolist() == expected.tolist()
    assert torch.equal(again[0], logits) and torch.equal(again[1], index)  # deterministic
    for k, (z, i) in zip(range(0, len(x), 7), one_by_one, strict=True):
        assert int(i) == int(index[k])
        torch.testing.assert_close(z[0], logits[k], rtol=0, atol=1e-5)
    chosen = torch.stack([every_exit[model.exits[int(i)]][n] for n, i in enumerate(index)])
    torch.testing.assert_close(logits, chosen, rtol=0, atol=1e-5)  # the logits of the exit it left at
    accuracy = (logits.argmax(1).numpy() == digits.y_test).mean()
    assert accuracy == anytime_outcome(test_stats, thresholds, cost).accuracy
    assert model.thresholds.dtype == torch.float32 and model.thresholds.tolist() == thresholds


def test_anytime_model_leaves_only_when_confidence_is_strictly_greater(
    net: SelfDistillNet, digits: Dataset
) -> None:
    x = _normalised(digits, digits.x_test[:1])
    model = AnytimeModel(net, [0.0, 0.0, 0.0]).eval()
    with torch.no_grad():
        conf = float(torch.softmax(model.forward_exits(x)[0], 1).amax())
        model.thresholds[0] = conf  # exactly the sample's confidence: it goes on, to exit 2
        assert int(model(x)[1]) == 1
        model.thresholds[0] = float(np.nextafter(np.float32(conf), np.float32(0)))
        assert int(model(x)[1]) == 0
        model.thresholds[:] = 1.0  # never early, even for a saturated softmax
        assert int(model(x)[1]) == 3


def test_anytime_model_copies_unless_told_to_share(net: SelfDistillNet) -> None:
    copied, shared = AnytimeModel(net, [0.5] * 3), AnytimeModel(net, [0.5] * 3, share_weights=True)
    assert copied.heads[0].head.fc.weight is not net.heads["1"].fc.weight
    assert shared.heads[0].head.fc.weight is net.heads["1"].fc.weight
    assert [n for n, _ in shared.named_children()] == ["trunk", "heads"]
    assert list(shared.trunk[0]._modules) == ["stem", "stage1"] and list(shared.trunk[3]._modules) == [
        "stage4"
    ]
    assert list(shared.heads[0]._modules) == ["branch", "head"] and list(shared.heads[3]._modules) == ["head"]


def test_a_network_without_shallow_exits_is_its_final_exit(digits: Dataset) -> None:
    torch.manual_seed(0)
    model_cfg = TINY.replace(branches=BranchesConfig(placement=()))
    net = SelfDistillNet(model_cfg, num_classes=10, in_chans=1, input_size=(8, 8)).eval()
    stats = exit_statistics(net, digits.x_val, digits.y_val, mean=digits.mean, std=digits.std)
    cost = anytime_cost(net, input_shape=SHAPE)
    cal = calibrate(stats, cost, accuracy_drop=0.005)
    assert cal.thresholds == {} and cal.outcome.accuracy == stats.exit_accuracy["final"]
    assert cal.outcome.expected_macs == cost.deploy[-1] == cost.worst_case
    with torch.no_grad():
        _, index = AnytimeModel(net, {}).eval()(_normalised(digits, digits.x_val))
    assert index.unique().tolist() == [0]


# -- ONNX -------------------------------------------------------------------------------------------------


def _count_ops(graph, op: str) -> int:
    n = 0
    for node in graph.node:
        n += node.op_type == op
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                n += _count_ops(attr.g, op)
    return n


def test_onnx_exit_decisions_equal_pytorch_on_every_test_image(
    net: SelfDistillNet, digits: Dataset, cost: AnytimeCost, test_stats: ExitStats, tmp_path: Path
) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from sdsearch.anytime.onnx import read_anytime_metadata, run_anytime_onnx, save_anytime_onnx

    thresholds = _spread(test_stats.confidence)
    model = AnytimeModel(net, thresholds).eval()
    path = tmp_path / "anytime.onnx"
    status = save_anytime_onnx(model, path, input_shape=SHAPE, mean=digits.mean, std=digits.std, cost=cost)
    assert status == "written"
    images = np.ascontiguousarray(digits.x_test.transpose(0, 2, 3, 1))  # uint8 NHWC, as a camera gives
    logits, exits = run_anytime_onnx(path, images)
    with torch.no_grad():
        ref_logits, ref_exits = model(_normalised(digits, digits.x_test))
    assert exits.tolist() == ref_exits.tolist()  # every test image, every decision
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=0, atol=1e-4)
    assert set(exits.tolist()) == {0, 1, 2, 3}

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert _count_ops(proto.graph, "If") == 3  # one decision per shallow exit, nested
    # Weights live in the branch that runs them (so ONNX Runtime optimises those convs too).
    main_reads = {name for node in proto.graph.node for name in node.input}
    assert all(init.name in main_reads for init in proto.graph.initializer)
    assert not any("stage4" in init.name for init in proto.graph.initializer)
    [inp] = proto.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 8, 8, 1]
    meta = read_anytime_metadata(path)
    assert meta["exit"] == "anytime" and meta["anytime_exits"] == ["1", "2", "3", "final"]
    assert meta["anytime_thresholds"] == dict(zip(["1", "2", "3"], thresholds, strict=True))
    assert meta["anytime_exit_macs"]["leave"] == dict(zip(cost.exits, cost.leave, strict=True))
    assert meta["anytime_exit_macs"]["worst_case"] == cost.worst_case
    assert meta["mean"] == list(digits.mean) and meta["std"] == list(digits.std)
    assert meta["input_layout"].startswith("NHWC uint8")
    [session_input] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    assert session_input.name == "pixels" and session_input.shape == [1, 8, 8, 1]


# -- report and plot ------------------------------------------------------------------------------------


def test_report_and_plot(cost: AnytimeCost, val: ExitStats, test_stats: ExitStats, tmp_path: Path) -> None:
    from rich.console import Console

    cal = calibrate(val, cost, accuracy_drop=0.005)
    test = anytime_outcome(test_stats, cal.thresholds, cost)
    report = json.loads(json.dumps(anytime_report(cal, cost, test=test)))  # survives metrics.json
    assert report["format"] == "sdsearch-anytime/1" and report["exits"] == ["1", "2", "3", "final"]
    assert report["thresholds"] == cal.thresholds and report["target"] == {"accuracy_drop": 0.005}
    assert (
        report["test"]["accuracy"] == test.accuracy and report["test"]["expected_macs"] == test.expected_macs
    )
    assert sum(report["test"]["exit_share"].values()) == pytest.approx(1.0)
    assert report["val"]["deepest_accuracy"] == val.exit_accuracy["final"]
    assert report["macs"]["worst_case"] == cost.worst_case and len(report["sweep"]) == len(cal.sweep)

    fig = plot_anytime(report)
    (ax,) = fig.axes
    assert "MACs" in ax.get_xlabel() and "multiply-accumulates" in ax.get_xlabel()
    assert "accuracy (%)" in ax.get_ylabel()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("static exits" in s for s in labels) and any("chosen" in s for s in labels)
    assert any("swept" in s for s in labels) and any("test split" in s for s in labels)
    points = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert len(points["static exits: deploy model alone (validation)"]) == len(report["exits"])
    assert len(points["same thresholds, test split"]) == 1
    (curve,) = [line for line in ax.get_lines() if line.get_label().startswith("one shared threshold")]
    assert len(curve.get_xdata()) == len(report["sweep"])
    lines = {line.get_label(): line for line in ax.get_lines()}
    (worst,) = [line for label, line in lines.items() if label.startswith("worst case")]
    assert list(worst.get_xdata()) == [cost.worst_case] * 2  # vertical, at every exit's MACs
    (floor,) = [line for label, line in lines.items() if label.startswith("target")]
    assert list(floor.get_ydata()) == [100 * (report["val"]["deepest_accuracy"] - 0.005)] * 2  # horizontal
    fig.savefig(tmp_path / "anytime.png", dpi=60)
    assert (tmp_path / "anytime.png").stat().st_size > 1000
    budget = plot_anytime(anytime_report(calibrate(val, cost, expected_macs=cost.deploy[-1]), cost))
    (limit,) = [line for line in budget.axes[0].get_lines() if line.get_label().startswith("target")]
    assert list(limit.get_xdata()) == [cost.deploy[-1]] * 2  # a MACs budget is a vertical line

    console = Console(record=True, width=160)
    console.print(anytime_table(report))
    text = console.export_text()
    assert "final" in text and "expected" in text and "test share" in text


def test_show_anytime_prints_draws_and_refuses_what_has_no_report(
    cost: AnytimeCost, val: ExitStats, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sdsearch show --anytime N` on a study whose trial stored the report the trainable sends: the
    JSON is that report, the table and PNG come out; a missing trial or report is one line, exit 2."""
    from _front_study import StudyBuilder, storage_url

    from sdsearch.cli import main
    from sdsearch.store import attrs

    report = anytime_report(calibrate(val, cost, accuracy_drop=0.005), cost)
    url = storage_url(tmp_path)
    study = StudyBuilder(url)
    study.trained(
        (0.9, 40_000, 1_200_000), {"1": (0.6, 5_000, 300_000)}, extra={attrs.ANYTIME: json.dumps(report)}
    )
    study.trained((0.8, 20_000, 800_000))  # no shallow exit: no report
    capsys.readouterr()

    assert main(["show", url, "--anytime", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    png = tmp_path / "out" / "anytime.png"
    assert main(["show", url, "--anytime", "0", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "test share" not in text and "final" in text and f"plot written to {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for number, why in ((7, "has no trial 7"), (1, "trial 1 has no anytime report")):
        assert main(["show", url, "--anytime", str(number)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
