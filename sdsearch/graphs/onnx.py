"""ONNX graphs of an exit model, pixels in: float32, and statically quantized int8.

Every graph takes what a camera or an image file gives: uint8 pixels ``(N, H, W, C)``. The input
preprocessing of training (:mod:`sdsearch.graphs.preprocess`) is part of the graph, so nobody
needs the training split's statistics to use a model. They are also in the ONNX metadata
(:data:`~sdsearch.graphs.contract.METADATA_KEYS`, JSON values), with the class names, the exit and
the sdsearch version.

*design*: the int8 graph quantizes the network alone and prepends the float preprocessing
afterwards (``onnx.compose``), so quantization never touches the preprocessing: the first
QuantizeLinear sits where training fed normalised floats, in front of the first convolution.

*design*: int8 is ONNX Runtime's static post-training quantization (``quantize_static``): QDQ
format, per-channel symmetric int8 weights, int8 activations with min/max ranges from calibration
images of the training split. PyTorch's PT2E flow was the alternative; in torch 2.14 it lives in
torchao (another dependency) and lowers to Inductor or ExecuTorch, not to the ONNX Runtime graph
we ship, while the ONNX Runtime flow stays within 1 point of fp32 on digits.

Example:
    >>> graphs = onnx_graphs(net.deploy("final"), mean=data.mean, std=data.std,
    ...                      input_shape=(1, 8, 8), calibration=data.x_train[:256])   # doctest: +SKIP
    >>> session = onnx_session(graphs["int8"])                                       # doctest: +SKIP
    >>> session.run(None, {"pixels": np.zeros((1, 8, 8, 1), np.uint8)})[0].shape      # doctest: +SKIP
    (1, 10)
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sdsearch.graphs.contract import INPUT_NAME, METADATA_KEYS, OUTPUT_NAME
from sdsearch.graphs.preprocess import Preprocess, normalise

if TYPE_CHECKING:
    import onnx

__all__ = [
    "NETWORK_INPUT",
    "N_CALIBRATION",
    "OPSET",
    "calibration_images",
    "export_onnx",
    "onnx_graphs",
    "quantize_int8",
    "set_metadata",
    "with_preprocessing",
]

#: ONNX opset of every exported graph (ONNX Runtime 1.16+ runs it).
OPSET = 20
#: Calibration images for static int8 quantization, from the training split.
N_CALIBRATION = 256

#: Name of the network's own input inside a graph (normalised float NCHW).
NETWORK_INPUT = "input"
_NORMALISED = "normalised"


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    *,
    input_name: str = NETWORK_INPUT,
    output_name: str = OUTPUT_NAME,
) -> onnx.ModelProto:
    """The one ONNX export of sdsearch: ``module`` in eval mode, opset :data:`OPSET`, dynamic batch.

    *design*: the TorchScript-based exporter (``dynamo=False``), because it is what makes the
    search's latency metric affordable: 40-200 ms per deploy model here, against 1.6-3.7 s for the
    torch.export-based one (mostly its decompositions and op registry, paid on every call), with
    the same graph once ONNX Runtime has optimised it. torch marks it deprecated without a date.
    TODO: pass ``dynamo=True`` (same arguments, plus ``dynamic_shapes``) once torch removes the
    TorchScript exporter or the new one exports a small CNN in well under a second;
    ``tests/test_deploy.py`` checks that both give the same logits.

    Args:
        module: takes one tensor; it is put in eval mode and must be on the CPU.
        example: an input of the right shape and dtype (any batch size).
        input_name, output_name: graph input and output names; the batch dimension is ``batch``.
    """
    import onnx

    module.eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r"The feature will be removed")
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, input_names=[input_name], output_names=[output_name],
            opset_version=OPSET, dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        )  # fmt: skip
    return _undo_shared_initializers(onnx.load_from_string(buffer.getvalue()))


def _undo_shared_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every weight its own initializer again, in place.

    The exporter stores identical tensors once and feeds the copies through Identity nodes. At
    initialisation identical tensors are common (BatchNorm with zero gamma folds into all-zero
    convolutions), and ONNX Runtime then fuses none of those convolutions into int8 kernels,
    so a random-weight int8 graph would time differently from the trained one.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            copy = graph.initializer.add()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    return model


def with_preprocessing(
    network: onnx.ModelProto, mean: Sequence[float], std: Sequence[float]
) -> onnx.ModelProto:
    """``network`` (float NCHW input ``input``) behind :class:`Preprocess`: its input becomes uint8 ``pixels``."""
    import onnx.compose

    dims = network.graph.input[0].type.tensor_type.shape.dim
    c, h, w = (d.dim_value for d in dims[1:])
    if c != len(mean):
        raise ValueError(f"the network takes {c} channels but mean and std have {len(mean)}")
    pre = onnx.ModelProto()
    pre.CopyFrom(_preprocess_graph(tuple(mean), tuple(std), (c, h, w), network.ir_version))
    return onnx.compose.merge_models(
        pre, network, io_map=[(_NORMALISED, NETWORK_INPUT)], producer_name="sdsearch"
    )


@functools.lru_cache(maxsize=16)
def _preprocess_graph(
    mean: tuple[float, ...], std: tuple[float, ...], shape: tuple[int, int, int], ir_version: int
) -> onnx.ModelProto:
    """The preprocessing graph for one normalisation and input shape, exported once per process
    (a search times many graphs of the same input; re-exporting it was a third of their cost)."""
    import onnx.compose

    c, h, w = shape
    pre = export_onnx(Preprocess(mean, std), torch.zeros(1, h, w, c, dtype=torch.uint8),
                      input_name=INPUT_NAME, output_name=_NORMALISED)  # fmt: skip
    pre.ir_version = ir_version
    # Prefix the preprocessing's node and tensor names (not the graph input) so none can clash.
    return onnx.compose.add_prefix(pre, "preprocess/", rename_inputs=False, rename_outputs=False)


def onnx_graphs(
    module: nn.Module,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    input_shape: tuple[int, int, int],
    calibration: np.ndarray | None = None,
) -> dict[str, onnx.ModelProto]:
    """The deployed ONNX graphs of a deploy module, from one export: ``float32``, and ``int8`` when calibrated.

    Args:
        module: a deploy module (normalised float NCHW in, logits out), on the CPU.
        mean, std: per-channel statistics of the training split, in [0, 1] units.
        input_shape: ``(C, H, W)``.
        calibration: uint8 images ``(N, C, H, W)`` (see :func:`calibration_images`) for a static
            int8 quantization of the network; None for the float32 graph alone.

    Returns:
        ``{"float32": graph}`` and, with ``calibration``, ``"int8"``; both take uint8 ``pixels``
        ``(N, H, W, C)`` and return ``logits``. Metadata is left to :func:`set_metadata`.
    """
    c, h, w = input_shape
    network = export_onnx(module, torch.zeros(1, c, h, w))
    graphs = {"float32": with_preprocessing(network, mean, std)}
    if calibration is not None:
        graphs["int8"] = with_preprocessing(
            quantize_int8(network, normalise(calibration, mean, std)), mean, std
        )
    return graphs


def set_metadata(model: onnx.ModelProto, values: Mapping[str, Any]) -> onnx.ModelProto:
    """Replace ``model.metadata_props`` with ``values`` (keys from :data:`METADATA_KEYS`, JSON-encoded)."""
    unknown = sorted(set(values) - set(METADATA_KEYS))
    if unknown:
        raise ValueError(f"unknown metadata keys {unknown}; known: {', '.join(METADATA_KEYS)}")
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return model


# -- int8 ---------------------------------------------------------------------------------------------


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over float NCHW images, in batches."""

    def __init__(self, x: np.ndarray, batch_size: int = 64) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {NETWORK_INPUT: np.ascontiguousarray(x[i : i + batch_size])} for i in range(0, len(x), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(network: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    """Static int8 quantization: QDQ, per-channel symmetric int8 weights, int8 activations from min/max.

    Args:
        network: a float graph whose input is ``input`` (normalised float NCHW), as :func:`export_onnx` gives.
        calibration: normalised float images ``(N, C, H, W)``: the activation ranges come from them.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one image")
    with tempfile.TemporaryDirectory(prefix="sdsearch-int8-") as tmp, _quiet_quantizer():
        # From a file: handed a ModelProto, quantize_static moves its weights to external data in place.
        source, target = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(network, source)
        quantize_static(
            source, target, _Batches(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
        return onnx.load(target)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the quantizer's root-logger warnings while it runs.

    It advises ``quant_pre_process`` (whose Identity removal :func:`_undo_shared_initializers`
    already does; the exporter folds BatchNorm) and notes each weight it quantizes per tensor
    instead of per channel (a BatchNorm it could not fold); neither is for users to act on.
    """
    root = logging.getLogger()
    quiet = _FromPackage("onnxruntime" + os.sep + "quantization")
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


class _FromPackage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or self.fragment not in record.pathname


def calibration_images(x: np.ndarray, n: int = N_CALIBRATION, *, seed: int = 0) -> np.ndarray:
    """``n`` images of ``x`` drawn without replacement (seeded), in their original order; all when fewer."""
    if n >= len(x):
        return x
    index = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[index]
