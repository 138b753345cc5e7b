"""The int8 .tflite of an exit model, for TensorFlow Lite Micro: raw pixels in, full-integer int8 inside.

Converted with litert-torch (Google's maintained PyTorch -> LiteRT path) from a PT2E-quantized
torch.export graph: per-channel symmetric int8 weights, int8 activations calibrated on training images
(litert-torch's own PT2E quantizer config, the one its tests convert ResNets with).

*design*: the input is **int8 pixels, ``q = pixel - 128``** (scale 1, zero point -128: every value
0-255 exactly). The graph is exported taking float pixels NHWC (0-255), with the preprocessing of
training (``(x / 255 - mean) / std``) inside it, and the input's observer fixed to that range, so the
converter folds the normalisation into a quantized MUL and ADD behind an int8 input. A uint8 input
would need a CAST or QUANTIZE from uint8, and TFLite Micro's CAST has no uint8 kernel: such a graph
allocates and then fails on its first invoke.

*design*: tensor names are dropped from the file and its buffers re-aligned to 16 bytes with TFLite
Micro's own flatbuffer aligner. The converter names each tensor after the module path that made it
(about 300 bytes a tensor, 5% of a 350 kB model and most of a tiny one); a microcontroller never reads
them, and without them the file's size is a function of the network alone, which is what
:mod:`sdsearch.cost.tflm` estimates.

Example:
    >>> data = int8_tflite(net.deploy("final"), mean=d.mean, std=d.std, input_shape=(1, 8, 8),
    ...                    calibration=d.x_train[:256])                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sdsearch.core.quiet import native_output_silenced
from sdsearch.graphs.contract import INPUT_SCALE, INPUT_ZERO_POINT
from sdsearch.graphs.preprocess import PixelModel

__all__ = ["int8_tflite", "strip_names"]


def int8_tflite(
    module: nn.Module,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    input_shape: tuple[int, int, int],
    calibration: np.ndarray,
) -> bytes:
    """The full-integer int8 .tflite of a deploy module, int8 pixels ``(1, H, W, C)`` in, int8 logits out.

    Args:
        module: a deploy module (normalised float NCHW in, logits out), on the CPU, float32.
        mean, std: the training split's per-channel statistics, in [0, 1] units.
        input_shape: ``(C, H, W)``.
        calibration: uint8 images ``(N, C, H, W)`` of the training split; activation ranges come from them.

    Returns:
        The .tflite flatbuffer, tensor names dropped, buffers 16-byte aligned.
    """
    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one image")
    with _quiet_converter():
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import FixedQParamsObserver, quantize_pt2e

        c, h, w = input_shape
        model = PixelModel(module, mean, std).eval()  # float pixels go through its .float() unchanged
        example = (torch.zeros(1, h, w, c),)
        with torch.no_grad():
            # strict: TorchDynamo records each node's source function, which the quantizer's
            # annotators match on; non-strict export leaves it out and every residual ADD stays float.
            graph = torch.export.export(model, example, strict=True).module()
            affine = _lone_batch_norms_as_affine(model, graph)
            if affine is not None:
                model, graph = affine, torch.export.export(affine, example, strict=True).module()
            quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
                pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
            )
            graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
            _fix_input_range(graph, FixedQParamsObserver)
            pixels = torch.from_numpy(np.ascontiguousarray(calibration.transpose(0, 2, 3, 1))).float()
            for image in pixels:  # the exported graph is specialised to batch 1
                graph(image[None])
            graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
        converted = litert_torch.convert(graph, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
        return strip_names(converted.model_content())


class _ChannelAffine(nn.Module):
    """An eval-mode BatchNorm as what it computes: ``x * scale + shift``, per channel."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean * scale
        if bn.weight is not None:
            scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return x * self.scale.view(shape) + self.shift.view(shape)


def _lone_batch_norms_as_affine(model: nn.Module, graph: torch.fx.GraphModule) -> nn.Module | None:
    """A copy of ``model`` whose BatchNorms that follow no conv are their multiply-add; None if it has none.

    The quantizer folds a BatchNorm into the conv before it. Any other one stays a float
    subtraction in the .tflite (a DEQUANTIZE/QUANTIZE pair around it), and makes ``convert_pt2e``
    try 96 conv-BatchNorm patterns, a torch.export each (about 40 CPU seconds), to fold none. As a
    multiply-add it is quantized like any other.
    """
    convs = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default}
    lone = set()
    for node in graph.graph.nodes:
        if node.target != torch.ops.aten.batch_norm.default or getattr(node.args[0], "target", None) in convs:
            continue
        mean = node.args[3]
        path = str(getattr(mean, "target", "")).rpartition(".")[0]
        bn = model.get_submodule(path) if path else None
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_var is not None:
            lone.add(path)
    if not lone:
        return None
    model = copy.deepcopy(model)
    for path in lone:
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, _ChannelAffine(model.get_submodule(path)))
    return model


def _fix_input_range(graph: torch.fx.GraphModule, observer: type) -> None:
    """Pin the input's quantization to 0-255 pixels (scale 1, zero point -128) instead of calibrating it."""
    fixed = observer(
        scale=INPUT_SCALE, zero_point=INPUT_ZERO_POINT, dtype=torch.int8,
        qscheme=torch.per_tensor_affine, quant_min=-128, quant_max=127,
    )  # fmt: skip
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    observed = [u for p in placeholders for u in p.users if u.op == "call_module"]
    if len(observed) != 1:
        raise RuntimeError(f"expected one observer on the graph input, found {len(observed)}")
    setattr(graph, str(observed[0].target), fixed)


def strip_names(model: bytes) -> bytes:
    """``model`` with every tensor name emptied and its buffers re-aligned (16 bytes), as TFLite Micro reads it."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    tree = schema.ModelT.InitFromPackedBuf(model, 0)
    for graph in tree.subgraphs:
        for tensor in graph.tensors:
            tensor.name = b""
    builder = flatbuffers.Builder(len(model))
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    with tempfile.TemporaryDirectory(prefix="sdsearch-tflite-") as tmp:
        source, target = Path(tmp) / "packed.tflite", Path(tmp) / "aligned.tflite"
        source.write_bytes(builder.Output())
        tflite_flatbuffer_align_wrapper.align_tflite_model(str(source), str(target))
        return target.read_bytes()


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """The converter's progress lines, absl/TF logging and warnings are not for sdsearch's users."""
    previous = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), native_output_silenced():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        if previous is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = previous
