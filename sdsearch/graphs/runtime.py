"""Running deployed graphs: ONNX Runtime sessions, accuracy on a split, and every exit's int8 accuracy,
in ONNX Runtime or, as the .tflite, in TensorFlow Lite Micro."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sdsearch.graphs.contract import INPUT_NAME
from sdsearch.graphs.onnx import N_CALIBRATION, calibration_images, onnx_graphs

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from sdsearch.data.datasets import Dataset

__all__ = [
    "cpu_deploy",
    "int8_accuracy",
    "onnx_accuracy",
    "onnx_predictions",
    "onnx_session",
    "tflm_accuracy",
]


def onnx_session(
    model: onnx.ModelProto | bytes | str | Path, *, threads: int = 1
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread, full graph optimisation.

    Raises:
        onnxruntime's errors (``InvalidProtobuf``, ``Fail``, ...) when ``model`` is not a valid graph.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: ORT warns about unused initializers nobody can act on
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, opts,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def onnx_accuracy(
    session: onnxruntime.InferenceSession, x: np.ndarray, y: np.ndarray, *, batch_size: int = 512
) -> float:
    """Top-1 accuracy of a pixels-in session on uint8 NCHW images ``x`` (a dataset split) with labels ``y``."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty split")
    return float(np.mean(onnx_predictions(session, x, batch_size=batch_size) == y))


def onnx_predictions(
    session: onnxruntime.InferenceSession, x: np.ndarray, *, batch_size: int = 512
) -> np.ndarray:
    """The class a pixels-in session gives each uint8 NCHW image of ``x``."""
    classes = []
    for i in range(0, len(x), batch_size):
        pixels = np.ascontiguousarray(x[i : i + batch_size].transpose(0, 2, 3, 1))
        classes.append(session.run(None, {INPUT_NAME: pixels})[0].argmax(1))
    return np.concatenate(classes) if classes else np.zeros(0, np.int64)


def cpu_deploy(net: nn.Module, exit: str) -> nn.Module:
    """``net.deploy(exit)`` as exports need it: a copy on the CPU, float32, contiguous, eval mode."""
    return net.deploy(exit).to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()


def int8_accuracy(
    net: nn.Module,
    exits: Sequence[str],
    data: Dataset,
    *,
    n_calibration: int = N_CALIBRATION,
    seed: int = 0,
) -> dict[str, float]:
    """Validation accuracy of each exit's static int8 ONNX graph, as ``sdsearch train`` would write it.

    For each exit: export the deploy model with its preprocessing, quantize it calibrated on
    ``n_calibration`` images of ``data.x_train``, and run ``data.x_val`` through ONNX Runtime.

    Args:
        net: a trained ``SelfDistillNet`` on any device; it is not changed.
        exits: the exits to measure, e.g. ``net.exits``.
        data: the dataset ``net`` was trained on.
        n_calibration: calibration images, drawn without replacement (all when there are fewer).
        seed: picks the calibration images.

    Returns:
        Exit name -> top-1 validation accuracy of its int8 graph.

    Example:
        >>> int8_accuracy(net, net.exits, data, seed=trial_seed)   # doctest: +SKIP
        {'1': 0.91, 'final': 0.97}
    """
    calibration, input_shape = _int8_inputs(data, n_calibration, seed)
    accuracy = {}
    for name in exits:
        graphs = onnx_graphs(cpu_deploy(net, name), mean=data.mean, std=data.std, input_shape=input_shape,
                             calibration=calibration)  # fmt: skip
        accuracy[name] = onnx_accuracy(onnx_session(graphs["int8"]), data.x_val, data.y_val)
    return accuracy


def tflm_accuracy(
    net: nn.Module,
    exits: Sequence[str],
    data: Dataset,
    *,
    n_calibration: int = N_CALIBRATION,
    seed: int = 0,
) -> dict[str, float]:
    """Validation accuracy of each exit's int8 .tflite in TensorFlow Lite Micro (``deploy.runtime: tflm``).

    The .tflite is the one ``sdsearch train`` writes (calibrated on the same training images as
    :func:`int8_accuracy`), run one image at a time by TFLite Micro's reference kernels: the
    accuracy of the file a microcontroller runs. Needs the ``mcu`` extra; arguments, returns and
    example as :func:`int8_accuracy`.
    """
    from sdsearch.graphs.tflite import int8_tflite
    from sdsearch.graphs.tflm import tflm_logits

    if len(data.x_val) == 0:
        raise ValueError("cannot evaluate on an empty split")
    calibration, input_shape = _int8_inputs(data, n_calibration, seed)
    accuracy = {}
    for name in exits:
        model = int8_tflite(cpu_deploy(net, name), mean=data.mean, std=data.std, input_shape=input_shape,
                            calibration=calibration)  # fmt: skip
        accuracy[name] = float(np.mean(tflm_logits(model, data.x_val).argmax(1) == data.y_val))
    return accuracy


def _int8_inputs(data: Dataset, n_calibration: int, seed: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The calibration images and the ``(C, H, W)`` input shape every int8 graph of ``data`` is made with."""
    shape = data.shape
    return calibration_images(data.x_train, n_calibration, seed=seed), (
        shape.in_chans,
        shape.height,
        shape.width,
    )
