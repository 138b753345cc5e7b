"""Params and MACs of deployed models, counted on the meta device.

MACs are the multiply-accumulates of conv and linear layers, the convention of lightweight-CNN
papers (which often call them FLOPs); ``Cost.flops`` is 2 × MACs, torch's convention. Counting
runs ``torch.utils.flop_counter.FlopCounterMode`` over a forward pass on meta tensors: shapes only,
no memory, no arithmetic, so a config costs tens of milliseconds and the searcher can reject
over-budget configs before training. Two things keep it that fast: a dispatch mode answers the
few ops whose meta kernels are slow Python decompositions (BatchNorm, activations, init) from
their shape rules, and results are cached per (config, shape). The first count in a process also
pays the one-time import of ``torch._dynamo`` that PyTorch's Python dispatch modes trigger.

Example:
    >>> from sdsearch.config import ModelConfig
    >>> deploy_cost(ModelConfig(), "final", num_classes=100, in_chans=3, input_size=(32, 32)).params
    11220132
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sdsearch.errors import ConfigError
from sdsearch.nn.network import SelfDistillNet

if TYPE_CHECKING:
    from sdsearch.config import ModelConfig

__all__ = ["Cost", "config_costs", "deploy_cost", "exit_costs", "module_cost"]

_aten = torch.ops.aten
#: The ops that are conv or linear layers; FlopCounterMode also counts attention, which we do not.
_COUNTED_OPS = frozenset(
    {_aten.convolution, _aten._convolution, _aten.mm, _aten.addmm, _aten.bmm, _aten.baddbmm}
)


def _same_as_first(args: tuple[Any, ...]) -> torch.Tensor:
    return torch.empty_like(args[0])


def _in_place(args: tuple[Any, ...]) -> torch.Tensor:
    return args[0]


def _broadcast(args: tuple[Any, ...]) -> torch.Tensor:
    a, b = args[0], args[1]
    shape = torch.broadcast_shapes(a.shape, b.shape) if isinstance(b, torch.Tensor) else a.shape
    return torch.empty(shape, dtype=torch.result_type(a, b), device="meta")


def _batch_norm(args: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = args[0]
    stats = torch.empty((x.shape[1],), dtype=x.dtype, device="meta")
    return torch.empty_like(x), stats, stats


def _upsample(args: tuple[Any, ...]) -> torch.Tensor:
    x, size = args[0], args[1]
    return torch.empty((*x.shape[:2], *size), dtype=x.dtype, device="meta")


#: Shape rules for the ops whose meta kernels are Python decompositions (BatchNorm alone takes ~1 ms
#: per call): together they made a ResNet-18 cost 10x slower than the convolutions.
_SHAPE_RULES: dict[Any, Callable[[tuple[Any, ...]], Any]] = {
    _aten.native_batch_norm.default: _batch_norm,
    _aten._native_batch_norm_legit_no_training.default: _batch_norm,
    _aten.relu.default: _same_as_first,
    _aten.hardtanh.default: _same_as_first,
    _aten.sigmoid.default: _same_as_first,
    _aten.add.Tensor: _broadcast,
    _aten.mul.Tensor: _broadcast,
    _aten.upsample_bilinear2d.default: _upsample,
    _aten.add_.Tensor: _in_place,
    _aten.normal_.default: _in_place,
    _aten.uniform_.default: _in_place,
    _aten.fill_.Scalar: _in_place,
    _aten.zero_.default: _in_place,
}


class _FastMetaMode(TorchDispatchMode):
    """Answers a few slow meta ops from their shape rules; every other op runs its meta kernel.

    Used below ``FlopCounterMode``, which therefore still sees (and counts) every op.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        rule = _SHAPE_RULES.get(func)
        if rule is not None and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return rule(args)
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class Cost:
    """Inference cost of one sample: parameter count and conv/linear multiply-accumulates."""

    params: int
    macs: int

    @property
    def flops(self) -> int:
        """2 × MACs (a multiply and an add each), torch.utils.flop_counter's convention."""
        return 2 * self.macs


def module_cost(module: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Params and per-sample MACs of ``module``.

    A module on the meta device is run as is; any other module is run through
    ``torch.func.functional_call`` with meta stand-ins for its parameters and buffers, so its own
    tensors are neither read nor changed.

    Args:
        module: any module whose ``forward`` takes one tensor.
        input_shape: shape of ONE sample, without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns:
        ``Cost(params=sum of parameter numel (shared ones once), macs=conv/linear MACs)``.

    Example:
        >>> module_cost(nn.Linear(10, 5), (10,))
        Cost(params=55, macs=50)
    """
    params = sum(p.numel() for p in module.parameters())
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.empty((1, *input_shape), device="meta", dtype=dtype)
    tensors = dict(itertools.chain(module.named_parameters(), module.named_buffers()))
    on_meta = all(t.is_meta for t in tensors.values())
    counter = FlopCounterMode(display=False)
    # Eval mode: training-mode BatchNorm rejects one sample on a 1×1 map, and costs are inference costs.
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        # _FastMetaMode first, so that it sits below the counter: the counter sees every op.
        with torch.no_grad(), _FastMetaMode(), counter:
            if on_meta:
                module(x)
            else:
                stand_ins = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
                torch.func.functional_call(module, stand_ins, (x,))
    finally:
        for m, training in modes.items():
            m.training = training
    counts = counter.get_flop_counts().get("Global", {})
    flops = sum(n for op, n in counts.items() if op in _COUNTED_OPS)
    return Cost(params=params, macs=flops // 2)


def exit_costs(
    config: ModelConfig, *, num_classes: int, in_chans: int, input_size: tuple[int, int]
) -> dict[str, Cost]:
    """Deploy cost of every exit of ``config``, in depth order (``"final"`` last).

    Builds the network once on the meta device; results are cached per (config, shape).

    Raises:
        ConfigError: the config cannot be built (see :class:`~sdsearch.nn.network.SelfDistillNet`).
    """
    return dict(_exit_costs(config, num_classes, in_chans, tuple(input_size)))


def deploy_cost(
    config: ModelConfig, exit: str, *, num_classes: int, in_chans: int, input_size: tuple[int, int]
) -> Cost:
    """Params and MACs of the model that ``SelfDistillNet(config).deploy(exit)`` returns.

    Raises:
        ConfigError: ``exit`` is not one of ``config.exits``, or the config cannot be built.
    """
    costs = exit_costs(config, num_classes=num_classes, in_chans=in_chans, input_size=input_size)
    if exit not in costs:
        raise ConfigError(f"exit {exit!r} is not one of this config's exits: {', '.join(costs)}")
    return costs[exit]


def config_costs(
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> dict[str, Cost]:
    """Deploy cost of every exit of the model in a trainer config file (``sdsearch cost``).

    Args:
        path: trainer config YAML (a space with every value fixed).
        input_shape: ``(C, H, W)``; default: the shape of the config's dataset.
        num_classes: default: the class count of the config's dataset.

    Raises:
        SpaceError: the file is not a valid trainer config.
        DataError: the dataset must be inspected for its shape but cannot be read.

    Example:
        >>> config_costs("best.yaml", input_shape=(3, 32, 32))["final"].macs  # doctest: +SKIP
    """
    from sdsearch.space import load_trial_config

    config = load_trial_config(path)
    if input_shape is None or num_classes is None:
        from sdsearch.data import describe

        shape = describe(config.data)
        input_shape = input_shape or (shape.in_chans, shape.height, shape.width)
        num_classes = num_classes or shape.num_classes
    c, h, w = input_shape
    return exit_costs(config.model, num_classes=num_classes, in_chans=c, input_size=(h, w))


@functools.lru_cache(maxsize=1024)
def _exit_costs(
    config: ModelConfig, num_classes: int, in_chans: int, input_size: tuple[int, int]
) -> tuple[tuple[str, Cost], ...]:
    # A tuple, not a dict: the cached value must not be mutable by callers.
    with _FastMetaMode():  # init ops (normal_ above all) are slow on meta and pointless there
        net = SelfDistillNet(
            config, num_classes=num_classes, in_chans=in_chans, input_size=input_size, device="meta"
        )
    shape = (in_chans, *input_size)
    return tuple((e, module_cost(net.deploy(e, share_weights=True), shape)) for e in net.exits)
