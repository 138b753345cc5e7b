"""Params, MACs, peak activation memory and weight size of deployed models, on the meta device.

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
- ``peak_memory``: peak activation memory of one batch-1 inference, in bytes, with the buffer
  sharing of int8 deployment toolchains (TFLite Micro, ONNX Runtime):

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
  the element size of ``dtype``. Weights, BatchNorm statistics and what ops compute from them
  alone (constant-folded, *design*) are never activations.
- ``size``: bytes of the deployed weights. ``int8``: each conv and linear layer stores 1 byte per
  weight plus, per output channel, a float32 scale (4 B) and an int32 bias (4 B, present even
  without a bias: BatchNorm folding adds one); a folded BatchNorm costs nothing; a BatchNorm not
  folded into a conv counts as a per-channel 1×1 depthwise conv, C × (1 + 4 + 4) bytes; any other
  parameter 1 byte per element (*design*; sdsearch's networks have none). ``float32``: 4 bytes
  per parameter. Tied parameters (one tensor used by several layers) count once.

``dtype`` is the deployment's element type, a key of :data:`DTYPE_BYTES` (defined in
:mod:`sdsearch.core.units`): ``int8`` (the default, 1 byte) is the microcontroller
convention that MCUNet (Lin et al., NeurIPS 2020, https://arxiv.org/abs/2007.10319) reports as
peak SRAM and flash; ``float32`` (4 bytes) an unquantized deployment. Costs are stored in MACs
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
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._python_dispatch import (
    TorchDispatchMode,  # private, the way torch's FlopCounterMode is built too
)

from sdsearch.core.errors import ConfigError
from sdsearch.core.units import DTYPE_BYTES, check_dtype
from sdsearch.nn.network import SelfDistillNet

if TYPE_CHECKING:
    from sdsearch.core.config import ModelConfig

__all__ = ["Cost", "FastMetaMode", "deploy_cost", "exit_costs", "module_cost"]

#: int8 per-output-channel overhead of a conv or linear layer: a float32 scale and an int32 bias.
_INT8_CHANNEL_BYTES = 4 + 4

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
    _aten.hardtanh: "act",
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
        self.numel: list[int] = [x.numel()]
        self.producer: list[int] = [0]
        self._writer: list[int] = [-1]
        self.kinds: list[str | None] = []
        self.reads: list[frozenset[tuple[int, int]]] = []
        self.first_in: list[tuple[int, int] | None] = []
        self.first_out: list[int | None] = []
        #: (op index, kind, weight or BN key, the parameters the layer covers, output channels).
        self.layers: list[tuple[int, str, torch.Tensor, tuple[torch.Tensor, ...], int]] = []
        self._base: dict[torch.Tensor, torch.Tensor] = {}  # view of a constant -> the constant
        self.folded: set[int] = set()  # BN and activation ops folded or fused into their producer

    def _const(self, t: Any) -> Any:
        return self._base.get(t, t) if isinstance(t, torch.Tensor) else None

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
        if not acts:  # constants only: track views of weights (t(W) in a linear layer), nothing else
            for alias, o in zip(aliases, outs):
                if alias is not None:
                    src = args[alias[0]]
                    for t in _tensors(o):
                        self._base[t] = self._base.get(src, src)
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
        self.kinds.append(self._record_layer(k, _KINDS.get(packet), args, outs))
        return out

    def _record_layer(self, k: int, kind: str | None, args: tuple[Any, ...], outs: Any) -> str | None:
        """Note the weights of a conv, linear or BN op; returns the op's kind for the folding rules."""
        if kind == "conv":
            w, bias = self._const(args[1]), self._const(args[2])
            self.layers.append((k, kind, w, (w, bias), outs[0].shape[1]))
        elif kind == "linear":
            mats = args[1:3] if len(args) >= 3 else args[0:2]  # addmm(bias, x, w) or mm(x, w)
            if mats[1] not in self._buf:
                w, channels = self._const(mats[1]), outs[0].shape[-1]
            elif mats[0] not in self._buf:
                w, channels = self._const(mats[0]), outs[0].shape[-2]
            else:
                return None  # activation @ activation (attention): no weights, not a layer
            bias = self._const(args[0]) if len(args) >= 3 else None
            self.layers.append((k, kind, w, (w, bias), channels))
        elif kind == "bn":
            if len(args) > 5 and args[5] is True:
                return None  # native_batch_norm(training=True): batch statistics do not fold
            stats = tuple(self._const(t) for t in args[1:5])
            key = next((t for t in stats if t is not None), None)
            if key is not None:
                self.layers.append((k, kind, key, stats, args[0].shape[1]))
        return kind

    def finish(self, outputs: Any, params: list[torch.Tensor]) -> tuple[int, int]:
        """Peak live activation elements and int8 weight bytes, once the forward has returned.

        Args:
            outputs: what the forward returned; its tensors stay live to the last op.
            params: the module's parameters, each tensor once.

        Returns:
            ``(peak elements, int8 bytes)`` under the conventions of the module docstring.
        """
        peak = self._peak_elements(outputs)
        return peak, self._int8_size(params)

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
            if into is None or value is None or out is None or value[1] < 0:
                continue
            if self.kinds[value[1]] in into and readers[value] == 1:  # its producer's only consumer
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

    def _int8_size(self, params: list[torch.Tensor]) -> int:
        # After _peak_elements, which decides which BatchNorms fold.
        covered: set[torch.Tensor] = set()
        seen: set[torch.Tensor] = set()
        total = 0
        for k, kind, key, tensors, channels in self.layers:
            covered.update(t for t in tensors if t is not None)
            if key in seen:
                continue  # tied weights (or a BN used twice) count once
            seen.add(key)
            if kind != "bn":
                total += key.numel() + channels * _INT8_CHANNEL_BYTES
            elif k not in self.folded:
                total += channels * (1 + _INT8_CHANNEL_BYTES)
        return total + sum(p.numel() for p in params if p not in covered)


@dataclass(frozen=True)
class Cost:
    """Inference cost of one sample (module docstring: what each number counts).

    Attributes:
        params: parameter count.
        macs: conv and linear multiply-accumulates.
        peak_memory: peak activation memory of a batch-1 inference, in bytes at ``dtype``.
        size: bytes of the deployed weights at ``dtype``.
        dtype: the deployment's element type, one of :data:`DTYPES`.
    """

    params: int
    macs: int
    peak_memory: int
    size: int
    dtype: str = "int8"

    @property
    def flops(self) -> int:
        """2 × MACs (a multiply and an add each), torch.utils.flop_counter's convention."""
        return 2 * self.macs


@dataclass(frozen=True)
class _Counts:
    """What one traced forward pass yields, before a dtype turns elements into bytes."""

    params: int
    macs: int
    peak_elements: int
    int8_size: int

    def cost(self, dtype: str) -> Cost:
        size = self.int8_size if dtype == "int8" else DTYPE_BYTES[dtype] * self.params
        return Cost(self.params, self.macs, self.peak_elements * DTYPE_BYTES[dtype], size, dtype)


def module_cost(module: nn.Module, input_shape: tuple[int, ...], *, dtype: str = "int8") -> Cost:
    """Params, per-sample MACs, peak activation memory and deployed size of ``module``.

    A module on the meta device is run as is; any other module is run through
    ``torch.func.functional_call`` with meta stand-ins for its parameters and buffers, so its own
    tensors are neither read nor changed. It runs in eval mode (costs are inference costs; its
    own mode is restored).

    Args:
        module: any module whose ``forward`` takes one tensor.
        input_shape: shape of ONE sample, without the batch dimension, e.g. ``(3, 32, 32)``.
        dtype: deployment element type, one of :data:`DTYPES`.

    Returns:
        The :class:`Cost` at ``dtype``, with the conventions of the module docstring.

    Raises:
        ConfigError: ``dtype`` is not one of :data:`DTYPES`.

    Example:
        >>> module_cost(nn.Linear(10, 5), (10,))  # 10 + 5 activations; 50 weights + 5 × (4 + 4) B
        Cost(params=55, macs=50, peak_memory=15, size=90, dtype='int8')
    """
    check_dtype(dtype)
    return _module_counts(module, input_shape).cost(dtype)


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
    peak_elements, int8_size = tracer.finish(out, params)
    return _Counts(sum(p.numel() for p in params), tracer.macs, peak_elements, int8_size)


def exit_costs(
    config: ModelConfig,
    *,
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    dtype: str = "int8",
) -> dict[str, Cost]:
    """Deploy cost of every exit of ``config``, in depth order (``"final"`` last).

    Builds the network once on the meta device and traces one forward pass per exit; results are
    cached per (config, shape), for every dtype at once.

    Raises:
        ConfigError: the config cannot be built (see :class:`~sdsearch.nn.network.SelfDistillNet`),
            or ``dtype`` is not one of :data:`DTYPES`.

    Example:
        >>> from sdsearch.core.config import ModelConfig
        >>> costs = exit_costs(ModelConfig(), num_classes=10, in_chans=3, input_size=(32, 32))
        >>> list(costs), costs["final"].dtype
        (['1', '2', '3', 'final'], 'int8')
    """
    check_dtype(dtype)
    return {e: c.cost(dtype) for e, c in _exit_costs(config, num_classes, in_chans, tuple(input_size))}


def deploy_cost(
    config: ModelConfig,
    exit: str,
    *,
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    dtype: str = "int8",
) -> Cost:
    """Cost of the model that ``SelfDistillNet(config).deploy(exit)`` returns.

    Raises:
        ConfigError: ``exit`` is not one of ``config.exits``, the config cannot be built, or
            ``dtype`` is not one of :data:`DTYPES`.
    """
    costs = exit_costs(config, num_classes=num_classes, in_chans=in_chans, input_size=input_size, dtype=dtype)
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
