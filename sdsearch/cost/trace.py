"""Params, MACs, peak memory and size of deployed models, on the meta device.

One forward pass per exit on meta tensors (shapes only: no memory, no arithmetic) yields all four
numbers: :class:`_Tracer`, a dispatch mode, sees every aten op, counts MACs and records the op
graph; params come from the module, peak memory and size from the graph. A config costs about
20 ms of CPU time for all its exits (bench/cost_speed.py), so the searcher can reject
over-budget configs before training. Two things keep it that fast: shape rules answer the ops
whose meta kernels are slow Python references (BatchNorm, convolution, activations, init, and mean
and addmm, which also import ``torch._dynamo`` the first time), and results are cached per
(config, shape).

Conventions (what each number means):

- ``params``: parameter count of the module; a parameter used in several places (tied) counts once.
- ``macs``: multiply-accumulates of conv and linear layers (convolution, mm, addmm, bmm,
  baddbmm), with torch.utils.flop_counter's formulas halved: N·|W|·H_out·W_out per conv, m·k·n
  per matmul. That is the convention of lightweight-CNN papers, which often call them FLOPs;
  ``Cost.flops`` is 2 × MACs, torch's convention.
- ``peak_memory`` and ``size`` at ``dtype="int8"``: what TensorFlow Lite Micro needs for the model's
  int8 .tflite on ``platform``: its smallest arena (planned tensors and scratch buffers, plus the
  persistent structs) and the file's bytes (weights, int32 biases, per-channel scales and zero points,
  the flatbuffer's tables). Estimated from this same trace by :mod:`sdsearch.cost.tflm`, which lowers
  the op graph below to the TFLite ops the converter emits.
- ``peak_memory`` at ``dtype="float32"``: the *liveness count*, peak activation memory of one batch-1
  inference in bytes, with the buffer sharing of deployment toolchains:

  - a BatchNorm (eval) whose input is a conv output with no other consumer is folded into that
    conv: no new buffer;
  - ReLU, ReLU6 (hardtanh) and clamp applied to a conv, BatchNorm, add or linear output with no
    other consumer are fused into that op: same buffer;
  - view-like and in-place ops (view, reshape, t, expand, detach, ``add_``, ...; read from the op
    schema's alias info) alias their input: no new buffer;
  - every other op (add, mul, sigmoid, interpolate, pooling, mean, cat, stack, addmm, ...) writes
    a new buffer; outputs nothing reads (BatchNorm's saved statistics, max-pool's indices) are
    dropped, as a deploy graph drops them (*design*).

  A buffer is live from the op that produces it to the last op that reads it; the graph input from
  the first op to its last use, the graph output to the last op. At each op the live set is every
  buffer produced at or before it and read at or after it, so a residual's skip tensor and an
  attention gate's input count while the branch runs. Peak = max over ops of the live elements ×
  4 bytes. Weights, BatchNorm statistics and what ops compute from them alone (constant-folded,
  *design*) are never activations.
- ``size`` at ``dtype="float32"``: 4 bytes per parameter; tied parameters (one tensor used by several
  layers) count once.

``dtype`` is the deployment's element type, a key of :data:`DTYPE_BYTES` (defined in
:mod:`sdsearch.core.units`): ``int8`` (the default) is a microcontroller's peak SRAM and flash, as
MCUNet (Lin et al., NeurIPS 2020, https://arxiv.org/abs/2007.10319) reports them, here as TFLite Micro
itself needs them; ``float32`` an unquantized deployment. Costs are stored in MACs
and bytes; FLOPs and kB are how they are shown.

Example:
    >>> from sdsearch.core.config import ModelConfig
    >>> deploy_cost(ModelConfig(), "final", num_classes=100, in_chans=3, input_size=(32, 32)).params
    11220132
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._python_dispatch import (
    TorchDispatchMode,  # private, the way torch's FlopCounterMode is built too
)

from sdsearch.core.errors import ConfigError
from sdsearch.core.platforms import DEFAULT_PLATFORM, check_platform
from sdsearch.core.units import DTYPE_BYTES, check_dtype
from sdsearch.cost.tflm import TflmEstimate, TflmGraph, estimate, lower
from sdsearch.nn.network import SelfDistillNet

if TYPE_CHECKING:
    from sdsearch.core.config import ModelConfig

__all__ = ["Cost", "FastMetaMode", "deploy_cost", "exit_costs", "module_cost"]

_aten = torch.ops.aten


def _conv_macs(args: tuple[Any, ...], out: torch.Tensor) -> int:
    x, w, transposed = args[0], args[1], args[6]
    return x.shape[0] * w.numel() * math.prod((x if transposed else out).shape[2:])


def _mm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


#: MACs of the conv and linear ops, with torch.utils.flop_counter's formulas (halved): N·|W|·H·W
#: of the output per conv, m·k·n per matmul. Attention, which FlopCounterMode also counts, is not.
_MACS: dict[Any, Callable[[tuple[Any, ...], Any], int]] = {
    _aten.convolution: _conv_macs,
    _aten._convolution: _conv_macs,
    _aten.mm: lambda args, out: _mm_macs(args[0], args[1]),
    _aten.addmm: lambda args, out: _mm_macs(args[1], args[2]),
    _aten.bmm: lambda args, out: _bmm_macs(args[0], args[1]),
    _aten.baddbmm: lambda args, out: _bmm_macs(args[1], args[2]),
}
#: What each op is to the folding rules, by overload packet; ops not listed are "other".
_KINDS: dict[Any, str] = {
    _aten.convolution: "conv",
    _aten._convolution: "conv",
    _aten.addmm: "linear",
    _aten.mm: "linear",
    _aten.native_batch_norm: "bn",
    _aten._native_batch_norm_legit_no_training: "bn",
    _aten.relu: "act",
    _aten.relu_: "act",
    _aten.hardtanh: "act",
    _aten.hardtanh_: "act",
    _aten.clamp: "act",
    _aten.clamp_min: "act",
    _aten.clamp_max: "act",
    _aten.add: "add",
    _aten.add_: "add",
}
#: Which producers an op folds or fuses into (when it is their only consumer): BN into a conv, an
#: activation into a conv, BN, add or linear layer.
_FOLDS_INTO: dict[str, frozenset[str]] = {
    "bn": frozenset({"conv"}),
    "act": frozenset({"conv", "bn", "add", "linear"}),
}


def _empty(shape: Any, like: torch.Tensor) -> torch.Tensor:
    # torch.empty, not empty_like: on meta, empty_like is a Python reference (~170 µs a call, 70x slower).
    return torch.empty(shape, dtype=like.dtype, device="meta")


def _same_as_first(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return _empty(args[0].shape, args[0])


def _in_place(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0]


def _broadcast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    a, b = args[0], args[1]
    if not isinstance(b, torch.Tensor) or a.shape == b.shape:
        shape = list(a.shape)
    else:  # by hand: torch.broadcast_shapes takes ~160 µs a call
        n = max(a.dim(), b.dim())
        shape = []
        for x, y in zip((1,) * (n - a.dim()) + tuple(a.shape), (1,) * (n - b.dim()) + tuple(b.shape)):
            if x != y and 1 not in (x, y):
                raise RuntimeError(f"shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast")
            shape.append(y if x == 1 else x)
    return torch.empty(shape, dtype=torch.result_type(a, b), device="meta")


def _batch_norm(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = args[0]
    stats = _empty((x.shape[1],), x)
    return _empty(x.shape, x), stats, stats


def _upsample(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x, size = args[0], args[1]
    return _empty((*x.shape[:2], *size), x)


def _mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    dims = args[1] if len(args) > 1 and args[1] is not None else []
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    reduced = {d % x.dim() for d in dims} if dims else set(range(x.dim()))
    shape = [1 if i in reduced else n for i, n in enumerate(x.shape) if keepdim or i not in reduced]
    return torch.empty(shape, dtype=kwargs.get("dtype") or x.dtype, device="meta")


def _matmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    a, b = args[-2], args[-1]  # mm(a, b) and addmm(bias, a, b)
    return _empty((a.shape[0], b.shape[1]), a)


def _convolution(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x, w, _, stride, padding, dilation, transposed = args[:7]
    if transposed:
        return _aten.convolution.default(*args)  # rare: its meta kernel
    spatial = (
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(x.shape[2:], w.shape[2:], stride, padding, dilation)
    )
    return _empty((x.shape[0], w.shape[0], *spatial), x)


#: Shape rules for the ops whose meta kernels are Python decompositions (BatchNorm took ~1 ms a
#: call, convolution ~60 µs): together they made a ResNet-18 cost 10x slower than the rules do.
#: The meta kernels of mean and addmm also import torch._dynamo (~1 s) the first time they run.
_SHAPE_RULES: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], Any]] = {
    _aten.convolution.default: _convolution,
    _aten.native_batch_norm.default: _batch_norm,
    _aten._native_batch_norm_legit_no_training.default: _batch_norm,
    _aten.relu.default: _same_as_first,
    _aten.hardtanh.default: _same_as_first,
    _aten.sigmoid.default: _same_as_first,
    _aten.add.Tensor: _broadcast,
    _aten.mul.Tensor: _broadcast,
    _aten.upsample_bilinear2d.default: _upsample,
    _aten.mean.dim: _mean,
    _aten.mm.default: _matmul,
    _aten.addmm.default: _matmul,
    _aten.add_.Tensor: _in_place,
    _aten.normal_.default: _in_place,
    _aten.uniform_.default: _in_place,
    _aten.fill_.Scalar: _in_place,
    _aten.zero_.default: _in_place,
}


class FastMetaMode(TorchDispatchMode):
    """Answers a few slow meta ops from their shape rules; every other op runs its meta kernel."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps __torch_dispatch__ in torch._disable_dynamo unless this says False
        # (torch 2.5+): a Python frame per op, plus a ~1 s import of torch._dynamo on first use.
        # Nothing here runs under torch.compile, so the wrapper only costs time.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        rule = _SHAPE_RULES.get(func)
        if rule is not None and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return rule(args, kwargs or {})
        return func(*args, **(kwargs or {}))


def _tensors(value: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(t for t in value if isinstance(t, torch.Tensor))
    return ()


def _output_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a forward's return value: nested lists, tuples, dicts and dataclasses."""
    if isinstance(value, torch.Tensor):
        return [value]
    if is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in fields(value)]
    elif isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _output_tensors(v)]
    return []


@functools.cache
def _aliases(func: Any) -> tuple[tuple[int, bool] | None, ...]:
    """Per return of ``func``: (index of the argument it aliases, whether it writes) or None."""
    # OpOverload._schema is private; it is the only place torch states which outputs alias which
    # inputs (torch's own functionalization reads it the same way). A torch change here fails
    # tests/test_memory.py, not silently.
    arguments = func._schema.arguments
    out: list[tuple[int, bool] | None] = []
    for ret in func._schema.returns:
        info = ret.alias_info
        if info is None:
            out.append(None)
            continue
        # Lists (split, unbind: ``Tensor(a)[]``) carry the alias set on the element type, so an
        # empty set falls back to the first argument that has one.
        matches = [
            i
            for i, a in enumerate(arguments)
            if a.alias_info is not None and (not info.before_set or a.alias_info.before_set & info.before_set)
        ]
        out.append((matches[0], info.is_write) if matches else None)
    return tuple(out)


class _Tracer(FastMetaMode):
    """Counts conv/linear MACs and records the activation graph of one forward pass.

    Buffers are numbered from 0, the graph input. Invariants: ``_buf`` maps every activation tensor
    seen (outputs and views of them) to its buffer, and only those: a tensor not in it is a
    constant. Ops are recorded only when they read an activation and are not pure views; each read
    is a value ``(buffer, index of the op that last wrote it)``, -1 for the graph input, so an
    in-place op makes a new value of the same buffer.
    """

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.macs = 0
        self._buf: dict[torch.Tensor, int] = {x: 0}
        self.input_shape = tuple(x.shape)
        self.numel: list[int] = [x.numel()]
        self.producer: list[int] = [0]
        self._writer: list[int] = [-1]
        self.kinds: list[str | None] = []
        self.reads: list[frozenset[tuple[int, int]]] = []
        self.first_in: list[tuple[int, int] | None] = []
        self.first_out: list[int | None] = []
        self.folded: set[int] = set()  # BN and activation ops folded or fused into their producer
        #: Per recorded op: (op family, its arguments, its outputs), for the TFLite lowering of
        #: sdsearch.cost.tflm (meta tensors: shapes only, nothing to copy).
        self.calls: list[tuple[Any, tuple[Any, ...], tuple[Any, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        rule = _SHAPE_RULES.get(func)
        if rule is not None and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            out = rule(args, kwargs or {})
        else:
            out = func(*args, **(kwargs or {}))
        packet = func._overloadpacket  # private: the op family, as torch.utils.flop_counter keys it too
        macs = _MACS.get(packet)
        if macs is not None:
            self.macs += macs(args, out)

        buf = self._buf
        acts: list[torch.Tensor] = []  # the activations among the arguments (cat and stack take lists)
        for a in args:
            if isinstance(a, torch.Tensor):
                if a in buf:
                    acts.append(a)
            elif isinstance(a, (list, tuple)):
                acts.extend(t for t in a if isinstance(t, torch.Tensor) and t in buf)
        aliases = _aliases(func)
        outs = out if len(aliases) > 1 else (out,)  # one entry per schema return
        if not acts:  # constants only (t(W) in a linear layer): constant-folded, not an activation
            return out
        if all(a is not None and not a[1] for a in aliases):  # a pure view: same buffer, no op
            for alias, o in zip(aliases, outs):
                src = args[alias[0]]  # type: ignore[index]
                if src in buf:
                    for t in _tensors(o):
                        buf[t] = buf[src]
            return out

        k = len(self.kinds)
        writer = self._writer
        self.reads.append(frozenset((buf[t], writer[buf[t]]) for t in acts))
        first = args[0]
        in_buf = buf.get(first) if isinstance(first, torch.Tensor) else None
        self.first_in.append(None if in_buf is None else (in_buf, writer[in_buf]))
        first_out: int | None = None
        for i, (alias, o) in enumerate(zip(aliases, outs)):
            src = args[alias[0]] if alias is not None else None
            for t in _tensors(o):
                if isinstance(src, torch.Tensor) and src in buf:  # in place: a new value, same buffer
                    b = buf[t] = buf[src]
                    if alias[1]:  # type: ignore[index]
                        writer[b] = k
                    continue
                b = buf[t] = len(self.numel)
                self.numel.append(t.numel())
                self.producer.append(k)
                writer.append(k)
                if i == 0 and first_out is None:
                    first_out = b
        self.first_out.append(first_out)
        self.kinds.append(self._kind(_KINDS.get(packet), args))
        self.calls.append((packet, args, outs))
        return out

    def _kind(self, kind: str | None, args: tuple[Any, ...]) -> str | None:
        """The op's kind for the folding rules; None for a matmul of two activations (no weights) and
        a training-mode BatchNorm (batch statistics do not fold)."""
        if kind == "linear":
            mats = args[1:3] if len(args) >= 3 else args[0:2]  # addmm(bias, x, w) or mm(x, w)
            if mats[0] in self._buf and mats[1] in self._buf:
                return None
        elif kind == "bn" and len(args) > 5 and args[5] is True:
            return None
        return kind

    def finish(self, outputs: Any) -> int:
        """Peak live activation elements (module docstring), once the forward has returned ``outputs``.

        Also decides which BatchNorms and activations fold into their producers (``folded``), what the
        TFLite lowering of :mod:`sdsearch.cost.tflm` reads.
        """
        return self._peak_elements(outputs)

    def buffer(self, t: torch.Tensor) -> int | None:
        """The activation buffer of tensor ``t``, or None for a constant."""
        return self._buf.get(t)

    def _peak_elements(self, outputs: Any) -> int:
        n_ops, n_bufs = len(self.kinds), len(self.numel)
        readers: dict[tuple[int, int], int] = {}
        last_read = [-1] * n_bufs
        for k, values in enumerate(self.reads):
            for value in values:
                readers[value] = readers.get(value, 0) + 1
                last_read[value[0]] = k
        group = list(range(n_bufs))  # union-find: buffers folded or fused together share one

        def find(b: int) -> int:
            while group[b] != b:
                group[b] = group[group[b]]
                b = group[b]
            return b

        self.folded.clear()
        for k, kind in enumerate(self.kinds):
            into = _FOLDS_INTO.get(kind)  # type: ignore[arg-type]
            value, out = self.first_in[k], self.first_out[k]
            if into is None or value is None or value[1] < 0:
                continue
            if self.kinds[value[1]] in into and readers[value] == 1:  # its producer's only consumer
                if out is not None:  # an in-place one (ReLU(inplace=True)) already shares the buffer
                    group[find(out)] = find(value[0])
                self.folded.add(k)
        last = max(n_ops - 1, 0)
        for t in _output_tensors(outputs):
            if t in self._buf:
                last_read[self._buf[t]] = last
        start, end, size = [last + 1] * n_bufs, [-1] * n_bufs, [0] * n_bufs
        for b in range(n_bufs):
            if last_read[b] < 0:
                continue  # nothing reads it: a deploy graph drops it
            g = find(b)
            start[g] = min(start[g], self.producer[b])
            end[g] = max(end[g], last_read[b])
            size[g] = max(size[g], self.numel[b])
        live = [0] * (last + 2)
        for g in range(n_bufs):
            if end[g] >= 0:
                live[start[g]] += size[g]
                live[end[g] + 1] -= size[g]
        return max(itertools.accumulate(live[:-1]))


@dataclass(frozen=True)
class Cost:
    """Inference cost of one sample (module docstring: what each number counts).

    Attributes:
        params: parameter count.
        macs: conv and linear multiply-accumulates.
        peak_memory: bytes of RAM of a batch-1 inference: at int8 TFLite Micro's arena on ``platform``,
            at float32 the live activations.
        size: bytes in flash: at int8 the .tflite file, at float32 4 bytes a parameter.
        dtype: the deployment's element type, one of :data:`DTYPES`.
        platform: the microcontroller of the int8 figures (:data:`sdsearch.core.platforms.PLATFORMS`).
        tflm: the int8 estimate in full (planned and persistent arena, ops); None at float32.
    """

    params: int
    macs: int
    peak_memory: int
    size: int
    dtype: str = "int8"
    platform: str = DEFAULT_PLATFORM
    tflm: TflmEstimate | None = None

    @property
    def flops(self) -> int:
        """2 × MACs (a multiply and an add each), torch.utils.flop_counter's convention."""
        return 2 * self.macs


@dataclass(frozen=True)
class _Counts:
    """What one traced forward pass yields, before a dtype and platform pick the byte figures."""

    params: int
    macs: int
    peak_elements: int
    graph: TflmGraph  # the TFLite lowering, estimated per platform when first asked
    _estimates: dict[str, TflmEstimate] = field(default_factory=dict, compare=False, repr=False)

    def cost(self, dtype: str, platform: str = DEFAULT_PLATFORM) -> Cost:
        if dtype != "int8":
            return Cost(self.params, self.macs, self.peak_elements * DTYPE_BYTES[dtype],
                        DTYPE_BYTES[dtype] * self.params, dtype, platform)  # fmt: skip
        check_platform(platform)
        if platform not in self._estimates:
            self._estimates[platform] = estimate(self.graph, platform)
        tflm = self._estimates[platform]
        return Cost(self.params, self.macs, tflm.arena_bytes, tflm.model_bytes, dtype, platform, tflm)


def module_cost(
    module: nn.Module, input_shape: tuple[int, ...], *, dtype: str = "int8", platform: str = DEFAULT_PLATFORM
) -> Cost:
    """Params, per-sample MACs, peak activation memory and deployed size of ``module``.

    A module on the meta device is run as is; any other module is run through
    ``torch.func.functional_call`` with meta stand-ins for its parameters and buffers, so its own
    tensors are neither read nor changed. It runs in eval mode (costs are inference costs; its
    own mode is restored).

    Args:
        module: any module whose ``forward`` takes one tensor.
        input_shape: shape of ONE sample, without the batch dimension, e.g. ``(3, 32, 32)``.
        dtype: deployment element type, one of :data:`DTYPES`.
        platform: the microcontroller of the int8 figures, a key of ``sdsearch.core.platforms.PLATFORMS``.

    Returns:
        The :class:`Cost` at ``dtype``, with the conventions of the module docstring.

    Raises:
        ConfigError: ``dtype`` or ``platform`` is not a known one.

    Example:
        >>> module_cost(nn.Linear(10, 5), (10,), dtype="float32")  # (10 + 5) x 4 B; 55 x 4 B
        Cost(params=55, macs=50, peak_memory=60, size=220, dtype='float32', platform='cortex-m', tflm=None)
    """
    check_dtype(dtype)
    return _module_counts(module, input_shape).cost(dtype, platform)


def _module_counts(module: nn.Module, input_shape: tuple[int, ...]) -> _Counts:
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    float_dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.empty((1, *input_shape), device="meta", dtype=float_dtype)
    named = dict(module.named_parameters())
    tensors = named | dict(module.named_buffers())
    # Eval mode: training-mode BatchNorm rejects one sample on a 1×1 map, and costs are inference costs.
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        if all(t.is_meta for t in tensors.values()):
            return _trace(module, x, list(named.values()))
        stand_ins = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
        return _trace(
            lambda x: torch.func.functional_call(module, stand_ins, (x,)), x, [stand_ins[n] for n in named]
        )
    finally:
        for m, training in modes.items():
            m.training = training


def _trace(forward: Callable[[torch.Tensor], Any], x: torch.Tensor, params: list[torch.Tensor]) -> _Counts:
    """One traced forward of an eval-mode model on meta tensors; ``params`` once each."""
    tracer = _Tracer(x)
    with torch.no_grad(), tracer:
        out = forward(x)
    peak_elements = tracer.finish(out)
    graph = lower(tracer, [tracer.buffer(t) for t in _output_tensors(out)])
    return _Counts(sum(p.numel() for p in params), tracer.macs, peak_elements, graph)


def exit_costs(
    config: ModelConfig,
    *,
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    dtype: str = "int8",
    platform: str = DEFAULT_PLATFORM,
) -> dict[str, Cost]:
    """Deploy cost of every exit of ``config``, in depth order (``"final"`` last).

    Builds the network once on the meta device and traces one forward pass per exit; results are
    cached per (config, shape), for every dtype at once.

    Raises:
        ConfigError: the config cannot be built (see :class:`~sdsearch.nn.network.SelfDistillNet`),
            or ``dtype`` or ``platform`` is not a known one.

    Example:
        >>> from sdsearch.core.config import ModelConfig
        >>> costs = exit_costs(ModelConfig(), num_classes=10, in_chans=3, input_size=(32, 32))
        >>> list(costs), costs["final"].dtype
        (['1', '2', '3', 'final'], 'int8')
    """
    check_dtype(dtype)
    return {
        e: c.cost(dtype, platform) for e, c in _exit_costs(config, num_classes, in_chans, tuple(input_size))
    }


def deploy_cost(
    config: ModelConfig,
    exit: str,
    *,
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    dtype: str = "int8",
    platform: str = DEFAULT_PLATFORM,
) -> Cost:
    """Cost of the model that ``SelfDistillNet(config).deploy(exit)`` returns.

    Raises:
        ConfigError: ``exit`` is not one of ``config.exits``, the config cannot be built, or
            ``dtype`` or ``platform`` is not a known one.
    """
    costs = exit_costs(config, num_classes=num_classes, in_chans=in_chans, input_size=input_size, dtype=dtype,
                       platform=platform)  # fmt: skip
    if exit not in costs:
        raise ConfigError(f"exit {exit!r} is not one of this config's exits: {', '.join(costs)}")
    return costs[exit]


@functools.lru_cache(maxsize=1024)
def _exit_costs(
    config: ModelConfig, num_classes: int, in_chans: int, input_size: tuple[int, int]
) -> tuple[tuple[str, _Counts], ...]:
    # A tuple, not a dict: the cached value must not be mutable by callers.
    with FastMetaMode():  # init ops (normal_ above all) are slow on meta and pointless there
        net = SelfDistillNet(
            config, num_classes=num_classes, in_chans=in_chans, input_size=input_size, device="meta"
        )
    net.eval()  # once for every exit: the deployed models share its modules and take its mode
    x = torch.empty((1, in_chans, *input_size), device="meta")
    counts = []
    for e in net.exits:
        model = net.deploy(e, share_weights=True)
        counts.append((e, _trace(model, x, list(model.parameters()))))
    return tuple(counts)
