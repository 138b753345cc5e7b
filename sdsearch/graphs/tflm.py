"""Running an int8 .tflite in TensorFlow Lite Micro: the arena it needs, and its predictions.

TFLite Micro's Python interpreter (the ``tflite-micro`` package) is TFLM's C++ runtime with its
reference kernels, built for x86-64: the kernels a microcontroller without CMSIS-NN runs, with a
64-bit host's struct sizes. What it measures is the ``tflm-reference`` target of
:mod:`sdsearch.cost.tflm`.

The arena: TFLM lays a model out in one byte array, the *head* holding the tensors and kernel scratch
buffers its memory planner overlaps by lifetime (``arena_planned_bytes``) and the *tail* what lives as
long as the interpreter (``arena_persistent_bytes``: tensor and node structs, kernel op data,
quantization parameters). ``arena_bytes`` is the smallest arena, in 16-byte steps, in which the model
allocates and runs one inference.

Example:
    >>> report = tflm_measure(model_bytes)                          # doctest: +SKIP
    >>> report.arena_bytes, report.ops["CONV_2D"]                   # doctest: +SKIP
    (15216, 11)
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from sdsearch.core.quiet import native_output_silenced

__all__ = [
    "ARENA_STEP",
    "CONVENTION",
    "FIGURES",
    "TensorSpec",
    "TflmReport",
    "tflite_io",
    "tflm_logits",
    "tflm_measure",
    "tflm_ops",
]

#: What a :class:`TflmReport` counts, in one line for captions and metrics.json.
CONVENTION = (
    "TFLite Micro's reference kernels on a 64-bit host, one image at a time; arena_bytes: the smallest arena "
    "(16-byte steps) that allocates the model and runs it, arena_planned_bytes: its tensors and scratch "
    "buffers overlapped by lifetime, arena_persistent_bytes: what lives as long as the interpreter; "
    "model_bytes: the .tflite (flash)"
)
#: Arena sizes are searched in steps of TFLM's buffer alignment (MicroArenaBufferAlignment(), 16 B),
#: the alignment of every buffer in its arena and of the model array TFLM reads.
ARENA_STEP = 16
#: The byte figures of a model in TFLite Micro (fields of :class:`TflmReport` and of the estimate of
#: sdsearch.cost.tflm), with their short labels for tables.
FIGURES = {
    "arena_bytes": "arena",
    "arena_planned_bytes": "planned",
    "arena_persistent_bytes": "persistent",
    "model_bytes": ".tflite",
}
_HEAD = re.compile(rb"Arena allocation head (\d+) bytes")
_TAIL = re.compile(rb"Arena allocation tail (\d+) bytes")
_TOTAL = re.compile(rb"Arena allocation total (\d+) bytes")


@dataclass(frozen=True)
class TflmReport:
    """What TFLite Micro needs for one model (module docstring: the arena's parts).

    Attributes:
        arena_bytes: the smallest arena (16-byte steps) in which it allocates and runs.
        arena_planned_bytes: the planned head: tensors and scratch buffers, overlapped by lifetime.
        arena_persistent_bytes: the tail: structs, op data and quantization data for the interpreter's life.
        model_bytes: bytes of the .tflite (what goes to flash).
        ops: operator name -> count, in the order the graph first uses them.
    """

    arena_bytes: int
    arena_planned_bytes: int
    arena_persistent_bytes: int
    model_bytes: int
    ops: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class TensorSpec:
    """A .tflite input's or output's shape, element type and (per-tensor) quantization."""

    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int


def tflite_io(model: bytes) -> tuple[TensorSpec, TensorSpec]:
    """The first input and first output of the .tflite's main subgraph, read from its flatbuffer."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(model, 0).subgraphs[0]
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def spec(index: int) -> TensorSpec:
        tensor = graph.tensors[index]
        q = tensor.quantization
        scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
        zero = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
        return TensorSpec(tuple(int(d) for d in tensor.shape), types[tensor.type], scale, zero)

    return spec(graph.inputs[0]), spec(graph.outputs[0])


def tflm_ops(model: bytes) -> dict[str, int]:
    """Operator name -> count of the .tflite's main subgraph, in first-use order."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(model, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in tree.operatorCodes]
    return dict(Counter(names[codes[op.opcodeIndex]] for op in tree.subgraphs[0].operators))


def _interpreter(model: bytes, arena: int):  # type: ignore[no-untyped-def]
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def _runs_here(model: bytes, arena: int) -> bool:
    try:
        interpreter = _interpreter(model, arena)
        detail = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
        interpreter.invoke()
    except RuntimeError:
        return False
    return True


def _runs(model: bytes, arena: int) -> bool:
    """Whether ``model`` allocates and runs one inference (zeros in) in an arena of ``arena`` bytes.

    *design*: each try runs in a forked child. In an arena a little too small, some of TFLM's kernels
    write through a failed allocation and the process dies of a segmentation fault (seen with narrow
    ResNets on 8x8 inputs), which must not take ``sdsearch train`` or ``cost --tflm`` with it: a
    child that dies did not run. A fork of a process that has the model in memory costs milliseconds.
    """
    if not hasattr(os, "fork"):
        return _runs_here(model, arena)
    pid = os.fork()
    if pid == 0:  # the child: answer through the exit status, never return into the caller's code
        try:
            code = 0 if _runs_here(model, arena) else 1
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def tflm_measure(model: bytes) -> TflmReport:
    """The arena ``model`` needs in TFLite Micro, planned and persistent parts, and its ops.

    The recording allocator's total in a large arena is the first guess; the answer is checked by
    running in it and in 16 bytes less, and found by bisection on the side the guess was off (small
    models need more while TFLM plans them than the planned layout itself).

    Raises:
        RuntimeError: the model does not run in TFLite Micro even in a 64 MiB arena (an op it lacks).
    """
    with native_output_silenced():
        big = max(64 * len(model), 1 << 20)
        if not _runs(model, big):
            big = 64 << 20
            if not _runs(model, big):
                raise RuntimeError("the model does not run in TFLite Micro (an op its kernels lack?)")
        head, tail, total = _allocations(model, big)
        if not _runs(model, total):  # planning needs more than the layout it plans
            arena = _bisect(model, total + ARENA_STEP, big)
        elif total > ARENA_STEP and _runs(model, total - ARENA_STEP):
            arena = _bisect(model, ARENA_STEP, total - ARENA_STEP)
        else:
            arena = total
    return TflmReport(arena, head, tail, len(model), tflm_ops(model))


def _bisect(model: bytes, low: int, high: int) -> int:
    """The smallest multiple of 16 in ``[low, high]`` in which ``model`` runs (it runs at ``high``)."""
    low, high = low // ARENA_STEP, high // ARENA_STEP
    while low < high:
        middle = (low + high) // 2
        if _runs(model, middle * ARENA_STEP):
            high = middle
        else:
            low = middle + 1
    return high * ARENA_STEP


def _allocations(model: bytes, arena: int) -> tuple[int, int, int]:
    """(head, tail, total) bytes as TFLM's recording allocator prints them after one inference."""
    interpreter = _interpreter(model, arena)
    detail = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
    interpreter.invoke()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)  # TFLM's MicroPrintf writes the report to standard error
        try:
            interpreter.print_allocations()
            _flush_c_stdio()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read()
    found = [p.search(text) for p in (_HEAD, _TAIL, _TOTAL)]
    if not all(found):
        raise RuntimeError("TFLite Micro's allocation report has an unexpected form")
    head, tail, total = (int(m.group(1)) for m in found)  # type: ignore[union-attr]
    return head, tail, total


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers before a redirected descriptor is restored."""
    import ctypes

    ctypes.CDLL(None).fflush(None)


def tflm_logits(model: bytes, pixels: np.ndarray, *, arena: int | None = None) -> np.ndarray:
    """Dequantized logits of uint8 images ``(N, C, H, W)`` through ``model`` in TFLite Micro, one at a time.

    Args:
        model: an int8 .tflite with int8 pixel input (:func:`sdsearch.graphs.tflite.int8_tflite`).
        pixels: uint8 NCHW images.
        arena: the arena size; default: generous (64x the model, at least 1 MiB).
    """
    with native_output_silenced():
        interpreter = _interpreter(model, arena or max(64 * len(model), 1 << 20))
    inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    scale, zero = _qparams(inp)
    out_scale, out_zero = _qparams(out)
    images = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
    logits = []
    for image in images:
        q = np.clip(np.round(image.astype(np.float32) / scale) + zero, -128, 127).astype(inp["dtype"])
        interpreter.set_input(q[None], 0)
        interpreter.invoke()
        logits.append((interpreter.get_output(0).astype(np.float32).reshape(-1) - out_zero) * out_scale)
    return np.stack(logits) if logits else np.zeros((0, 0), np.float32)


def _qparams(detail: dict) -> tuple[float, int]:  # type: ignore[type-arg]
    q = detail["quantization_parameters"]
    return float(q["scales"][0]), int(q["zero_points"][0])
