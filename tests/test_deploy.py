"""Deployed graphs on real digits: ONNX fp32 equals PyTorch, int8 stays close, latency orders configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    DataConfig,
    ModelConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.cost.latency import measure_latency
from sdsearch.cost.trace import deploy_cost
from sdsearch.data.datasets import Dataset, load_dataset
from sdsearch.graphs import onnx as deploy_onnx
from sdsearch.graphs.onnx import calibration_images, export_onnx, onnx_graphs
from sdsearch.graphs.runtime import cpu_deploy, int8_accuracy, onnx_accuracy, onnx_session
from sdsearch.nn.network import SelfDistillNet
from sdsearch.training.fit import build, evaluate, fit

SMALL = TrialConfig(
    model=ModelConfig(
        backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(1, 3))
    ),
    train=TrainConfig(epochs=6, batch_size=64),
)


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, Dataset]:
    data = load_dataset(DataConfig(dataset="digits"), seed=0)
    net, loss = build(SMALL, data.shape)
    fit(net, loss, data, SMALL.train, seed=0)
    return net.eval(), data


@pytest.fixture(scope="module")
def graphs(trained) -> dict:
    net, data = trained
    return onnx_graphs(cpu_deploy(net, "final"), mean=data.mean, std=data.std, input_shape=(1, 8, 8),
                       calibration=calibration_images(data.x_train, seed=0))  # fmt: skip


def _normalised(x: np.ndarray, data: Dataset) -> torch.Tensor:
    """The training path's input, written out independently of sdsearch.graphs.onnx."""
    return (torch.from_numpy(x).float() / 255 - data.mean[0]) / data.std[0]


def _pixels(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def test_onnx_on_raw_pixels_equals_the_pytorch_deploy_model(trained, graphs) -> None:
    net, data = trained
    with torch.no_grad():
        want = net.deploy("final").eval()(_normalised(data.x_test, data)).numpy()
    session = onnx_session(graphs["float32"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    assert session.get_inputs()[0].shape[1:] == [8, 8, 1]
    got = session.run(None, {"pixels": _pixels(data.x_test)})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # Raw uint8 pixels give the class of the normalised path, image for image.
    assert (got.argmax(1) == want.argmax(1)).all()
    # Dynamic batch: one image alone gives its row of the batch.
    np.testing.assert_allclose(
        session.run(None, {"pixels": _pixels(data.x_test[:1])})[0], want[:1], atol=1e-4
    )


def test_int8_test_accuracy_is_within_3_points_of_fp32(trained, graphs) -> None:
    net, data = trained
    fp32 = evaluate(net, data.x_test, data.y_test, mean=data.mean, std=data.std)["final"]
    assert fp32 > 0.8  # a trained model, or the comparison says nothing
    int8 = onnx_accuracy(onnx_session(graphs["int8"]), data.x_test, data.y_test)
    assert abs(int8 - fp32) <= 0.03, (int8, fp32)
    assert len(graphs["int8"].SerializeToString()) < 0.5 * len(graphs["float32"].SerializeToString())


def test_int8_quantizes_the_network_and_not_the_preprocessing(graphs) -> None:
    graph = graphs["int8"].graph
    pre = [n for n in graph.node if n.name.startswith("preprocess/")]
    assert {n.op_type for n in pre} >= {"Transpose", "Cast"}
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in pre)
    consumers = [n for n in graph.node if "pixels" in n.input]
    assert consumers and all(n.name.startswith("preprocess/") for n in consumers)
    # Quantization starts where training fed normalised floats, and covers the weights.
    (first,) = [n for n in graph.node if "normalised" in n.input]
    assert first.op_type == "QuantizeLinear"
    assert sum(t.data_type == 3 for t in graph.initializer) >= 3  # int8 conv and linear weights


def test_int8_accuracy_reports_every_exit_close_to_fp32(trained) -> None:
    net, data = trained
    fp32 = evaluate(net, data.x_val, data.y_val, mean=data.mean, std=data.std)
    int8 = int8_accuracy(net, net.exits, data, n_calibration=128, seed=1)
    assert set(int8) == set(net.exits) == {"1", "3", "final"}
    for name in net.exits:
        assert abs(int8[name] - fp32[name]) <= 0.03, (name, int8[name], fp32[name])


def test_calibration_images_are_a_seeded_subset(trained) -> None:
    _, data = trained
    a, b = calibration_images(data.x_train, 50, seed=3), calibration_images(data.x_train, 50, seed=3)
    assert a.shape == (50, 1, 8, 8) and np.array_equal(a, b)
    assert not np.array_equal(a, calibration_images(data.x_train, 50, seed=4))
    assert len(calibration_images(data.x_train, 10**6, seed=0)) == len(data.x_train)


def test_export_keeps_one_initializer_per_weight_at_init() -> None:
    # Zero-gamma BatchNorm folds into all-zero convolutions, which the exporter would share
    # through Identity nodes; ONNX Runtime then fuses none of them into int8 kernels.
    net = SelfDistillNet(SMALL.model, num_classes=10, in_chans=1, input_size=(8, 8)).eval()
    graph = export_onnx(net.deploy("final"), torch.zeros(1, 1, 8, 8)).graph
    initializers = {t.name for t in graph.initializer}
    assert not any(n.op_type == "Identity" for n in graph.node)
    assert all(n.input[1] in initializers for n in graph.node if n.op_type == "Conv")


def test_the_dynamo_exporter_gives_the_same_model(trained) -> None:
    """Guards the TODO in export_onnx: switching exporters must not change the deployed model."""
    import warnings

    net, data = trained
    module = cpu_deploy(net, "3")
    ours = onnx_session(export_onnx(module, torch.zeros(1, 1, 8, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (torch.zeros(2, 1, 8, 8),), None, dynamo=True, verbose=False,
                                    input_names=["input"], opset_version=deploy_onnx.OPSET,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    theirs = onnx_session(program.model_proto)
    x = _normalised(data.x_test[:64], data).numpy()
    np.testing.assert_allclose(ours.run(None, {"input": x})[0], theirs.run(None, {"input": x})[0], atol=1e-4)


# -- latency ------------------------------------------------------------------------------------------


def _deploy_module(width: float, in_chans: int = 3, size: int = 32) -> torch.nn.Module:
    cfg = ModelConfig(backbone=BackboneConfig(width=width, depth=1), branches=BranchesConfig(placement=(2,)))
    return (
        SelfDistillNet(cfg, num_classes=10, in_chans=in_chans, input_size=(size, size)).eval().deploy("final")
    )


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_latency_is_positive(dtype: str) -> None:
    ms = measure_latency(_deploy_module(0.25, 1, 8), (1, 8, 8), repeats=5, warmup=1, dtype=dtype)
    assert 0 < ms < 1000


def test_four_times_the_macs_measures_slower() -> None:
    small, big = (
        deploy_cost(ModelConfig(backbone=BackboneConfig(width=w, depth=1), branches=BranchesConfig(placement=(2,))),
                    "final", num_classes=10, in_chans=3, input_size=(32, 32)).macs
        for w in (0.25, 0.5)
    )  # fmt: skip
    assert big / small > 3.5
    fast = measure_latency(_deploy_module(0.25), (3, 32, 32), repeats=30)
    slow = measure_latency(_deploy_module(0.5), (3, 32, 32), repeats=30)
    assert slow > fast, (slow, fast)


def test_latency_is_measured_once_per_distinct_model_in_a_study(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdsearch.cost import latency
    from sdsearch.cost.metrics import DeployMetrics
    from sdsearch.data.datasets import DataShape

    calls = []
    real = latency.measure_latency

    def counted(*args, **kwargs):
        calls.append(kwargs["dtype"])
        return real(*args, **{**kwargs, "repeats": 2, "warmup": 0})

    monkeypatch.setattr(latency, "measure_latency", counted)
    metrics = DeployMetrics(DataShape(1, 8, 8, 10), latency=True)
    cfg = TrialConfig(model=ModelConfig(backbone=BackboneConfig(arch="mobilenetv2", width=0.25, depth=1)))
    first = metrics(cfg)
    assert len(calls) == 4 and all(first[e]["latency"] > 0 for e in cfg.model.exits)
    assert metrics(cfg) == first and len(calls) == 4  # the same model again: not measured again
    again = DeployMetrics(DataShape(1, 8, 8, 10), latency=True)
    again.remember(cfg, [{"exit": e, "latency": first[e]["latency"]} for e in cfg.model.exits])
    assert again(cfg) == first and len(calls) == 4  # a resumed study reuses what its trials stored
    with pytest.raises(ValueError, match="dtype"):
        real(torch.nn.Identity(), (1, 8, 8), dtype="float16")
