"""TFLite Micro's arena and the .tflite's bytes of a deploy model, estimated from its meta-device trace.

What an int8 deployment's ``peak_memory`` and ``size`` are (the ``deploy.dtype: int8`` convention): the
RAM TensorFlow Lite Micro needs to run the model's .tflite (:mod:`sdsearch.graphs.tflite`), and that
file's bytes in flash. Both are computed before training, in a few milliseconds per exit, by replaying
what the converter and the runtime do:

1. **Lowering** (:func:`lower`): the traced aten ops become the TFLite ops litert-torch emits for them:
   the input's int8 pixels, a MUL and an ADD (the normalisation folded into the graph); CONV_2D, or
   DEPTHWISE_CONV_2D for grouped and one-channel convs, preceded by a PAD where PyTorch's symmetric
   padding is not TFLite's SAME; BatchNorm folded and ReLU/ReLU6 fused as in :mod:`sdsearch.cost.trace`;
   ADD, MUL, LOGISTIC, RESIZE_BILINEAR, AVERAGE_POOL_2D, CONCATENATION; a spatial mean as a TRANSPOSE
   (a RESHAPE when the map is 1x1) and a MEAN (a SUM); a linear layer as FULLY_CONNECTED.
2. **The planned arena** (the *head*): every non-constant tensor and every kernel scratch buffer, sized
   up to TFLM's 16-byte alignment, live from the op that writes it to the last op that reads it (the
   graph input from before the first op, the output to after the last), placed by TFLM's
   ``GreedyMemoryPlanner``: largest first (equal sizes last-added first), each at the lowest offset
   whose gap between the buffers live at the same time fits it. The reference kernels ask for scratch
   only in MEAN and SUM (an int32 accumulator per output element, and two index arrays:
   ``reduce_common.cc``); CMSIS-NN's convolutions ask for their im2col and depthwise buffers
   (:func:`_cmsis_conv_scratch`).
3. **The persistent part** (the *tail*): a ``TfLiteEvalTensor`` per tensor, a ``NodeAndRegistration``
   per op, each kernel's op data with its per-channel output multipliers and shifts (two int32 arrays
   of the output channels, each allocation 16-byte aligned), the input and output ``TfLiteTensor``
   structs with their quantization, and the interpreter's fixed structs (:class:`_Persistent`). The
   arena is the larger of head + tail and the moment TFLM plans the head (:func:`_planning`), which
   is what sets it for small models.
4. **The file**: the constant buffers (int8 weights, int32 biases, shape and index operands), each
   16-byte aligned by the aligner every sdsearch .tflite passes through, plus the flatbuffer tables of
   tensors, quantization parameters (a float32 scale and an int64 zero point per channel), operators
   and the model header (:data:`_FILE`).

The struct and table sizes are TFLite Micro's and the flatbuffer schema's; the few that are not
documented were fitted once to measurements (``bench/tflm_agreement.py`` prints the agreement: all 48
models of its set within 5% on the ``tflm-reference`` platform, the head exact). ``cortex-m`` differs
in pointer size (4 bytes: the structs shrink) and in CMSIS-NN's scratch buffers.

Example:
    >>> from sdsearch.core.config import ModelConfig
    >>> from sdsearch.cost.trace import exit_costs
    >>> costs = exit_costs(ModelConfig(), num_classes=10, in_chans=1, input_size=(8, 8))   # doctest: +SKIP
    >>> costs["final"].tflm.arena_bytes, costs["final"].peak_memory                       # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from sdsearch.core.platforms import PLATFORMS, Platform
from sdsearch.graphs.tflm import ARENA_STEP

__all__ = ["TflmEstimate", "TflmGraph", "estimate", "lower"]

_aten = torch.ops.aten


def _align(n: int) -> int:
    """``n`` rounded up to TFLM's alignment of every arena buffer and tail allocation."""
    return -(-n // ARENA_STEP) * ARENA_STEP


@dataclass(frozen=True)
class TflmEstimate:
    """The estimated TFLite Micro figures of one deploy model on one platform, in bytes.

    Attributes:
        arena_bytes: planned + persistent: the smallest arena TFLM runs the model in.
        arena_planned_bytes: the head: tensors and scratch buffers overlapped by lifetime.
        arena_persistent_bytes: the tail: structs, op data and quantization data.
        model_bytes: the .tflite file (flash).
        ops: TFLite operator name -> count.
    """

    arena_bytes: int
    arena_planned_bytes: int
    arena_persistent_bytes: int
    model_bytes: int
    ops: dict[str, int]


class _Const(NamedTuple):
    """A constant operand: equal ``(name, key)`` pairs are one buffer (the converter stores equal operands
    once; weights and biases are keyed by their op, so never shared)."""

    name: str
    key: Any
    bytes: int
    channels: int = 0  # per-channel quantized (weights and biases of convs): a scale and zero point each


@dataclass
class _Op:
    """One TFLite op: its kind, the activation tensors it reads, the one it writes, its constants."""

    kind: str
    reads: list[int]
    out: int
    consts: list[_Const]
    scratch: list[int] = field(default_factory=list)  # reference-kernel scratch requests, bytes
    cmsis_scratch: list[int] = field(default_factory=list)  # what CMSIS-NN asks for instead/as well
    channels: int = 0  # output channels with per-channel requantization (conv, depthwise)


@dataclass
class TflmGraph:
    """The TFLite graph of a deploy model as the converter emits it: ops in order, tensor sizes.

    ``nbytes[t]`` is activation tensor ``t``'s bytes (int8: its element count); tensor 0 is the input,
    ``outputs`` the graph outputs.
    """

    nbytes: list[int] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def tensor(self, numel: int) -> int:
        self.nbytes.append(int(numel))
        return len(self.nbytes) - 1

    def emit(self, kind: str, reads: list[int], numel: int, consts: list[_Const], **extra: Any) -> int:
        out = self.tensor(numel)
        self.ops.append(_Op(kind, reads, out, consts, **extra))
        return out

    def constants(self) -> list[_Const]:
        """The distinct constant operands."""
        return list({(c.name, c.key): c for op in self.ops for c in op.consts}.values())


# -- lowering: traced aten ops -> TFLite ops -------------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """TFLite SAME padding of one spatial dim: (output size, pad before, pad after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return out, total // 2, total - total // 2


def _needs_pad(in_shape: Any, weight: Any, stride: Any, padding: Any, dilation: Any) -> bool:
    """Whether PyTorch's symmetric ``padding`` is neither VALID nor TFLite's SAME (then a PAD op comes first)."""
    if not any(padding):
        return False
    for size, k, s, p, d in zip(in_shape[2:], weight[2:], stride, padding, dilation):
        torch_out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        out, before, after = _same_padding(size, k, s, d)
        if (out, before, after) != (torch_out, p, p):
            return True
    return False


def _conv(graph: TflmGraph, k: int, src: int, args: tuple[Any, ...], out_shape: Any) -> int:
    x, w = args[0].shape, args[1].shape
    stride, padding, dilation, groups = args[3], args[4], args[5], args[8]
    c_in, c_out = x[1], w[0]
    if _needs_pad(x, w, stride, padding, dilation):
        padded = x[1] * math.prod(n + 2 * p for n, p in zip(x[2:], padding))
        src = graph.emit("PAD", [src], padded, [_Const("paddings", tuple(padding), 4 * 4 * 2)])
    depthwise = c_in == 1 or (groups == c_in and groups > 1)
    weights = [_Const("weights", k, math.prod(w), c_out), _Const("bias", k, 4 * c_out, c_out)]
    kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    return graph.emit(kind, [src], math.prod(out_shape), weights, channels=c_out,
                      cmsis_scratch=[_cmsis_conv_scratch(kind, x, w, stride, padding)])  # fmt: skip


def _cmsis_conv_scratch(kind: str, x: Any, w: Any, stride: Any, padding: Any) -> int:
    """Bytes of CMSIS-NN's scratch for one int8 conv on a DSP Cortex-M (M4, M7, M33), built with GCC.

    CMSIS-NN (``arm_convolve_wrapper_s8_get_buffer_size_dsp``, ``arm_convolve_s8_get_buffer_size``,
    ``arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp``): a 1x1 conv needs none (the fast 1x1 path
    asks for ``2 * C_in * 2`` bytes only when built with Arm Compiler 6); any other conv an im2col of
    two columns in int16, ``2 * 2 * align4(kh * kw * C_in)`` bytes; a depthwise conv with one output
    per input channel a ``C_in * kh * kw * 2``-byte buffer unless its kernel is 3x3 padded by at most 1
    (``arm_depthwise_conv_3x3_s8``); a depthwise conv with a channel multiplier none. Helium (MVE)
    cores, Cortex-M55/M85, ask for other sizes: not modelled (a few hundred bytes either way).
    """
    kh, kw, c_in = w[2], w[3], x[1]
    if kind == "CONV_2D":
        if kh == kw == 1:
            return 0
        return 2 * 2 * (-(-(kh * kw * c_in) // 4) * 4)
    if w[0] != c_in or (kh == kw == 3 and max(padding) <= 1):
        return 0
    return c_in * kh * kw * 2


def _linear(graph: TflmGraph, k: int, src: int, args: tuple[Any, ...], out_shape: Any) -> int:
    mats = args[1:3] if len(args) >= 3 else args[0:2]
    w = mats[1].shape
    c_out = out_shape[-1]
    return graph.emit("FULLY_CONNECTED", [src], math.prod(out_shape),
                      [_Const("weights", k, math.prod(w)), _Const("bias", k, 4 * c_out)],
                      channels=1)  # fmt: skip


def _mean(graph: TflmGraph, k: int, src: int, args: tuple[Any, ...], out_shape: Any) -> int:
    x = args[0].shape
    dims = tuple(sorted(d % len(x) for d in args[1])) if len(args) > 1 and args[1] is not None else ()
    spatial = math.prod(x[d] for d in dims) if dims else math.prod(x)
    n_out = math.prod(out_shape)
    first = "RESHAPE" if spatial == 1 else "TRANSPOSE"  # NHWC -> NCHW before reducing H, W
    moved = graph.emit(first, [src], math.prod(x), [_Const(first.lower(), tuple(x), 4 * len(x))])
    scratch = [4 * n_out, 4 * len(x), 4 * max(len(dims), 1)]
    kind = "SUM" if spatial == 1 else "MEAN"
    return graph.emit(kind, [moved], n_out, [_Const("axes", dims, 4 * max(len(dims), 1))],
                      scratch=scratch, cmsis_scratch=scratch)  # fmt: skip


def _binary(kind: str) -> Any:
    def lower_op(
        graph: TflmGraph, k: int, src: int, args: tuple[Any, ...], out_shape: Any, reads: list[int]
    ) -> int:
        consts = []
        for a in args[:2]:
            if not isinstance(a, torch.Tensor) or a.dim() == 0:
                consts.append(_Const("scalar", (k, str(a)), 1))
        return graph.emit(kind, reads, math.prod(out_shape), consts)

    return lower_op


def _simple(kind: str, const_bytes: int = 0) -> Any:
    def lower_op(
        graph: TflmGraph, k: int, src: int, args: tuple[Any, ...], out_shape: Any, reads: list[int]
    ) -> int:
        consts = [_Const(kind.lower(), tuple(out_shape), const_bytes)] if const_bytes else []
        return graph.emit(kind, reads, math.prod(out_shape), consts)

    return lower_op


def _average_pool(
    graph: TflmGraph, k: int, src: int, args: tuple[Any, ...], out_shape: Any, reads: list[int]
) -> int:
    # CMSIS-NN's average pool sums in an int32 per channel (arm_avgpool_s8_get_buffer_size_dsp).
    return graph.emit("AVERAGE_POOL_2D", [src], math.prod(out_shape), [], cmsis_scratch=[4 * out_shape[1]])


#: Ops with one activation input and a lowering of their own (the first argument is the activation).
_UNARY = {
    _aten.convolution: _conv,
    _aten._convolution: _conv,
    _aten.addmm: _linear,
    _aten.mm: _linear,
    _aten.mean: _mean,
}
#: Ops that become one TFLite op reading every activation argument.
_NARY = {
    _aten.add: _binary("ADD"),
    _aten.add_: _binary("ADD"),
    _aten.mul: _binary("MUL"),
    _aten.sigmoid: _simple("LOGISTIC"),
    _aten.relu: _simple("RELU"),
    _aten.hardtanh: _simple("RELU6"),
    _aten.upsample_bilinear2d: _simple("RESIZE_BILINEAR", 8),
    _aten._adaptive_avg_pool2d: _average_pool,
    _aten.avg_pool2d: _average_pool,
    _aten.cat: _simple("CONCATENATION"),
    _aten.stack: _simple("PACK"),
    _aten.max_pool2d: _simple("MAX_POOL_2D"),
    _aten.max_pool2d_with_indices: _simple("MAX_POOL_2D"),
    _aten.relu_: _simple("RELU"),
    _aten.hardtanh_: _simple("RELU6"),
}


def lower(tracer: Any, outputs: list[int | None]) -> TflmGraph:
    """The TFLite graph of one traced deploy model (module docstring, step 1).

    Args:
        tracer: a finished :class:`sdsearch.cost.trace._Tracer` (its ``folded`` set computed).
        outputs: the tracer's buffers of the model's outputs (None for a constant output).
    """
    graph = TflmGraph()
    pixels = graph.tensor(tracer.numel[0])
    channels = tracer.input_shape[1] if len(tracer.input_shape) > 1 else 1
    scaled = graph.emit("MUL", [pixels], tracer.numel[0], [_Const("scale", None, channels)])
    tensor_of = {0: graph.emit("ADD", [scaled], tracer.numel[0], [_Const("shift", None, channels)])}
    for k, (packet, args, outs) in enumerate(tracer.calls):
        reads = [tensor_of[b] for b, _ in sorted(tracer.reads[k]) if b in tensor_of]
        first_in = tracer.first_in[k]
        src = tensor_of.get(first_in[0]) if first_in is not None else (reads[0] if reads else None)
        out_buf = tracer.first_out[k]
        target = out_buf if out_buf is not None else (first_in[0] if first_in is not None else None)
        if target is None or src is None:
            continue
        if k in tracer.folded:  # BatchNorm folded, activation fused (in place too): the producer's tensor
            tensor_of[target] = src
            continue
        out_shape = outs[0].shape
        n = math.prod(out_shape)
        if tracer.kinds[k] == "bn":  # not folded (after a ReLU): a per-channel int8 MUL and ADD
            scaled = graph.emit("MUL", [src], n, [_Const("bn_scale", k, out_shape[1])])
            tensor_of[target] = graph.emit("ADD", [scaled], n, [_Const("bn_shift", k, out_shape[1])])
            continue
        if packet in _UNARY:
            tensor_of[target] = _UNARY[packet](graph, k, src, args, out_shape)
        elif packet in _NARY:
            tensor_of[target] = _NARY[packet](graph, k, src, args, out_shape, reads or [src])
            graph.ops[-1].consts += [
                _Const("operand", (k, i), a.numel())
                for i, a in enumerate(args[:2])
                if isinstance(a, torch.Tensor) and a.dim() > 0 and tracer.buffer(a) is None
            ]
        else:  # anything else: one op writing a new tensor
            tensor_of[target] = graph.emit(str(packet).split(".")[-1].upper(), reads or [src], n, [])
    graph.outputs = [tensor_of[b] for b in outputs if b is not None and b in tensor_of]
    return graph


# -- the arena ---------------------------------------------------------------------------------------------


def _planned(graph: TflmGraph, platform: Platform) -> int:
    """The head: TFLM's GreedyMemoryPlanner over tensor and scratch lifetimes (module docstring, step 2)."""
    n_ops = len(graph.ops)
    first = [-1] * len(graph.nbytes)
    last = [-1] * len(graph.nbytes)
    first[0] = last[0] = 0
    scratch: list[tuple[int, int, int]] = []
    for i, op in enumerate(graph.ops, start=1):
        if first[op.out] < 0:
            first[op.out] = i
        for t in op.reads:
            last[t] = i
        last[op.out] = i
        for b in op.cmsis_scratch if platform.cmsis_nn else op.scratch:
            if b:
                scratch.append((_align(b), i, i))
    for t in graph.outputs:
        last[t] = n_ops
    # (aligned bytes, first, last), in TFLM's order: tensors by index, then scratch requests
    buffers = [(_align(n), first[t], last[t]) for t, n in enumerate(graph.nbytes) if n and first[t] >= 0]
    buffers += scratch
    # TFLM fills its sort array from the back (greedy_memory_planner.cc, CalculateOffsetsIfNeeded),
    # then sorts it stably by size: equal sizes are placed last-added first.
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i][0])
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last), by offset
    top = 0
    for i in order:
        size, lo, hi = buffers[i]
        offset = 0
        for p_off, p_size, p_lo, p_hi in placed:
            if p_lo > hi or lo > p_hi:
                continue  # not live at the same time
            if p_off - offset >= size:
                break  # the gap before this one fits
            offset = max(offset, p_off + p_size)
        bisect.insort(placed, (offset, size, lo, hi))  # kept in offset order
        top = max(top, offset + size)
    return top


@dataclass(frozen=True)
class _Persistent:
    """Tail sizes of TFLite Micro on a 64-bit host (the reference build), in bytes.

    Struct sizes from TFLM's headers (``TfLiteEvalTensor``, ``NodeAndRegistration``, ``TfLiteTensor``,
    ``ScratchBufferHandle``), scaled to the platform's pointer size; the per-op data (each kernel's
    ``OpData`` with its builtin options) and the fixed part fitted once to the reference build's
    recording allocator (``bench/tflm_agreement.py`` checks them on models they were not fitted on).

    Margin on ``cortex-m``: op data and the fixed part keep their 64-bit sizes, though some of their
    fields are pointers, so the persistent part errs high by up to ~30 bytes an op (about 1 KiB for a
    40-op model): the side that keeps a budget safe.
    """

    eval_tensor: int = 24  # TfLiteEvalTensor: data pointer, dims pointer, type
    node: int = 64  # NodeAndRegistration: a TfLiteNode and a registration pointer
    io_tensor: int = 64  # the persistent TfLiteTensor of each graph input and output
    io_quantization: int = 32  # its TfLiteAffineQuantization and zero-point array
    scratch_handle: int = 8  # ScratchBufferHandle: one pointer per scratch request
    fixed: int = 585  # the interpreter's own structs: allocator, planner, subgraph tables
    #: Op data per kernel (the OpData struct and builtin options, 16-byte aligned), by TFLite op.
    op_data: dict[str, int] = field(default_factory=lambda: dict(_OP_DATA))


#: Measured per-op persistent bytes on the reference build (64-bit); ops not listed take _OP_DATA_DEFAULT.
_OP_DATA: dict[str, int] = {
    "CONV_2D": 108,
    "DEPTHWISE_CONV_2D": 108,
    "FULLY_CONNECTED": 64,
    "ADD": 72,
    "MUL": 68,
    "PAD": 64,
    "DEQUANTIZE": 56,
    "QUANTIZE": 56,
    "RESHAPE": 60,
    "MEAN": 48,
    "SUM": 48,
    "LOGISTIC": 32,
    "TRANSPOSE": 16,
    "RESIZE_BILINEAR": 16,
}
_OP_DATA_DEFAULT = 48
_SIZES = _Persistent()


def _io_structs(graph: TflmGraph, platform: Platform) -> int:
    """The persistent ``TfLiteTensor`` and quantization of the graph's input and each of its outputs."""
    return (1 + max(len(graph.outputs), 1)) * (
        int(_SIZES.io_tensor * platform.pointer_bytes / 8) + _SIZES.io_quantization
    )


def _persistent(graph: TflmGraph, platform: Platform) -> int:
    """The tail (module docstring, step 3), scaled from the 64-bit reference to ``platform``'s pointers."""
    sizes = _SIZES
    scale = platform.pointer_bytes / 8
    n_tensors = len(graph.nbytes) + len(graph.constants())
    total = _align(int(sizes.eval_tensor * scale) * n_tensors) + _align(
        int(sizes.node * scale) * len(graph.ops)
    )
    total += _io_structs(graph, platform) + sizes.fixed
    for op in graph.ops:
        total += sizes.op_data.get(op.kind, _OP_DATA_DEFAULT)
        if op.channels:
            total += 2 * _align(4 * op.channels)  # per-channel output multiplier and shift
        requests = op.cmsis_scratch if platform.cmsis_nn else op.scratch
        total += _align(int(sizes.scratch_handle * scale) * sum(1 for b in requests if b))
    return total


# -- the file ------------------------------------------------------------------------------------------------

#: Flatbuffer bytes of the .tflite's tables beside the constant data (sizes from the schema, fitted once).
_FILE = {
    "header": 1000,  # model, subgraph, signature and operator-code tables, version strings
    "tensor": 64,  # a Tensor table: shape vector, type, buffer index, quantization table
    "per_channel": 12,  # per quantized channel: a float32 scale and an int64 zero point
    "buffer": 16,  # a Buffer table and its vector header
    "op": 48,  # an Operator table with its input/output vectors and builtin options
}


def _file_bytes(graph: TflmGraph) -> int:
    consts = graph.constants()
    data = sum(_align(c.bytes) for c in consts)
    tensors = len(graph.nbytes) + len(consts)
    per_channel = sum(c.channels for c in consts)
    return (
        _FILE["header"]
        + data
        + _FILE["tensor"] * tensors
        + _FILE["per_channel"] * per_channel
        + _FILE["buffer"] * (len(consts) + 1)
        + sum(_FILE["op"] + 4 * (len(op.reads) + len(op.consts) + 1) for op in graph.ops)
    )


def _planning(graph: TflmGraph, platform: Platform) -> int:
    """Temporary bytes while TFLM plans the head (``MicroAllocator::CommitStaticMemoryPlan``).

    Beside the tail built so far it holds the scratch requests (``ScratchBufferRequest``: a size_t and
    two ints, for the requests plus ``kMaxScratchBuffersPerOp`` = 12 spare), an ``AllocationInfo`` per
    tensor and scratch buffer (a size_t, a pointer, three ints and a bool), and the greedy planner's
    40 bytes per planned buffer (``GreedyMemoryPlanner::per_buffer_size()``). For small models this,
    not the head, is what sets the smallest arena.
    """
    word = platform.pointer_bytes
    n_scratch = sum(
        1 for op in graph.ops for b in (op.cmsis_scratch if platform.cmsis_nn else op.scratch) if b
    )
    n_tensors = len(graph.nbytes) + len(graph.constants())
    n_planned = sum(1 for n in graph.nbytes if n) + n_scratch
    request = _align_to(word + 8, word)
    info = _align_to(2 * word + 13, word)
    return (
        _align(request * (n_scratch + 12))
        + _align(word)
        + _align(info * (n_tensors + n_scratch))
        + 40 * n_planned
    )


def _align_to(n: int, word: int) -> int:
    return -(-n // word) * word


def estimate(graph: TflmGraph, platform: str) -> TflmEstimate:
    """The TFLite Micro figures of ``graph`` on ``platform`` (a key of :data:`sdsearch.core.platforms.PLATFORMS`).

    The arena is the larger of the running layout (head + tail) and the moment of planning (the tail
    but the input and output structs, allocated after it, plus the planning's temporaries).
    """
    target = PLATFORMS[platform]
    planned = _planned(graph, target)
    persistent = _persistent(graph, target)
    planning = persistent - _io_structs(graph, target) + _planning(graph, target)
    return TflmEstimate(
        _align(max(planned + persistent, planning)), planned, persistent, _file_bytes(graph),
        dict(Counter(op.kind for op in graph.ops)),
    )  # fmt: skip
