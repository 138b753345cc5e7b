"""Elastic width: one multi-exit network whose leading channel slices run as narrower networks.

Slimmable networks (Yu et al., ICLR 2019, https://arxiv.org/abs/1812.08928; universally slimmable,
ICCV 2019, https://arxiv.org/abs/1903.05134) train one set of weights at several widths. Here the
network at multiplier m is *defined* as the :class:`SelfDistillNet` that ``backbone.width`` times m
builds, with every parameter the leading slice of the widest network's parameter of the same name
(``weight[:out, :in]``): what runs at width m in training is exactly the model deployed at width m,
so its costs are that config's costs and its logits those of its deployed exits, bit for bit.

*design*: the narrower networks have no fusion head (they learn by in-place distillation from the
widest network's exits, which is their only teacher), and each width keeps its own BatchNorm
statistics (switchable BN, Yu et al. 2019, with shared affine parameters as in the universally
slimmable form): the widest network's statistics never mix with a narrow width's.

A backbone can be sliced when its channels at a smaller width are the leading channels at a larger
one, layer by layer. The built-in ``resnet`` and ``mobilenetv2`` are; a user's factory says so with
an ``elastic_width = True`` attribute, and every parameter of the narrower network must then fit
inside the widest one's (checked when the network is built).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from sdsearch.core.config import ModelConfig
from sdsearch.core.errors import ConfigError
from sdsearch.core.exits import candidate_name, width_text
from sdsearch.core.registry import can_slice, cannot_slice
from sdsearch.nn.network import ExitModel, SDOutput, SelfDistillNet

__all__ = ["ElasticNet", "distinct_widths", "width_config"]

#: The key that switches elastic training on, named in errors (declared with the search's support).
_KEY = "train.elastic_widths"


def distinct_widths(
    config: ModelConfig,
    multipliers: Sequence[float],
    *,
    num_classes: int,
    in_chans: int = 3,
    input_size: tuple[int, int] = (32, 32),
) -> dict[float, float]:
    """Every multiplier -> the largest multiplier that builds the same network (channel rounding makes
    several narrow widths one network): the widths an elastic trial really has. Meta device, no compute.

    Raises:
        ConfigError: a multiplier out of (0, 1], or a backbone that cannot be sliced.
    """
    return _layouts(config, multipliers, {"num_classes": num_classes, "in_chans": in_chans,
                                          "input_size": tuple(input_size)})[0]  # fmt: skip


def _layouts(
    config: ModelConfig, multipliers: Sequence[float], shape: dict[str, Any]
) -> tuple[dict[float, float], dict[float, SelfDistillNet]]:
    """(merged multipliers, the meta network of every distinct width)."""
    if not multipliers:
        raise ConfigError("needs at least one width multiplier", key=_KEY)
    if any(not 0 < m <= 1 for m in multipliers):
        raise ConfigError(f"multipliers must be in (0, 1], got {list(multipliers)}", key=_KEY)
    if not can_slice(config.backbone.arch):
        raise ConfigError(cannot_slice(config.backbone.arch), key=_KEY)
    ordered = sorted(set(multipliers), reverse=True)
    # Layouts compared without the fusion head: only the widest network has one, and it is not deployed.
    metas = {
        m: SelfDistillNet(width_config(config, m, widest=False), **shape, device="meta") for m in ordered
    }
    largest: dict[str, float] = {}  # a network's layout -> the largest multiplier that builds it
    for m in ordered:
        largest.setdefault(repr(metas[m]), m)
    merged = {m: largest[repr(metas[m])] for m in multipliers}
    return merged, {m: metas[m] for m in dict.fromkeys(merged[m] for m in ordered)}


def width_config(config: ModelConfig, multiplier: float, *, widest: bool) -> ModelConfig:
    """The model config of the network at ``multiplier``; narrower networks have no fusion head."""
    model = config.at_width(multiplier)
    return model if widest else model.replace(fusion=model.fusion.replace(type="none"))


class ElasticNet(nn.Module):
    """The widest :class:`SelfDistillNet` of a config, runnable at every width multiplier.

    Args:
        config: the model config; ``backbone.width`` times each multiplier is a width.
        multipliers: in (0, 1]; the largest is the widest network, the one that holds the weights.
            Multipliers that build the same network are merged into the largest of them.
        num_classes, in_chans, input_size, device, dtype: as :class:`SelfDistillNet`.

    Attributes:
        net: the widest network (its parameters are all the parameters there are).
        multipliers: the distinct widths, widest first.
        merged: every given multiplier -> the multiplier whose network it builds.

    Raises:
        ConfigError: a multiplier out of (0, 1], a backbone that cannot be sliced, or a narrower
            network with a parameter that does not fit inside the widest one's.
    """

    def __init__(
        self,
        config: ModelConfig,
        multipliers: Sequence[float],
        *,
        num_classes: int,
        in_chans: int = 3,
        input_size: tuple[int, int] = (32, 32),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.base = config
        self._shape = {"num_classes": num_classes, "in_chans": in_chans, "input_size": tuple(input_size)}
        self.merged, metas = _layouts(config, multipliers, self._shape)
        #: The distinct widths, widest first.
        self.multipliers: tuple[float, ...] = tuple(metas)
        self.net = SelfDistillNet(
            self.width_config(self.multipliers[0], narrow=False), **self._shape, device=device, dtype=dtype
        )
        # Structure only, on the meta device: never registered, so never trained or saved.
        self._narrow = {m: metas[m] for m in self.multipliers[1:]}
        self._slices = {m: self._check_slices(m, narrow) for m, narrow in self._narrow.items()}
        # Switchable BN: each narrower width's running statistics, starting as the widest's do.
        wide_buffers = dict(self.net.named_buffers())
        self.stats = nn.ModuleDict(
            {
                _name(m): _Buffers(
                    {n: wide_buffers[n][self._slices[m][n]].clone() for n, _ in narrow.named_buffers()}
                )
                for m, narrow in self._narrow.items()
            }
        )

    def train(self, mode: bool = True) -> ElasticNet:
        """Train or eval mode for every width: the narrower networks are not submodules."""
        super().train(mode)
        for narrow in self._narrow.values():
            narrow.train(mode)
        return self

    def layouts(self) -> dict[float, str]:
        """Every width's network as ``repr`` shows it (layer by layer, shapes included), widest first:
        what tells two elastic configs apart (``sdsearch.training.identity``)."""
        return {m: repr(self.net if m == self.multipliers[0] else self._narrow[m]) for m in self.multipliers}

    def width_config(self, multiplier: float, *, narrow: bool = True) -> ModelConfig:
        """The model config of width ``multiplier`` (:func:`width_config`)."""
        return width_config(self.base, multiplier, widest=not narrow)

    @property
    def exits(self) -> tuple[str, ...]:
        """Every candidate, ``EXIT@multiplier`` (:func:`~sdsearch.core.exits.candidate_name`), widest
        first, each width's exits in depth order: the names of :meth:`named_logits`."""
        return tuple(candidate_name(e, m) for m in self.multipliers for e in self.net.exits)

    def named_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The logits of every candidate (:attr:`exits`): one forward pass per width."""
        return {candidate_name(e, m): z for m in self.multipliers for e, z in self(x, width=m).logits.items()}

    def forward(self, x: torch.Tensor, width: float | None = None) -> SDOutput:
        """The network's outputs at ``width`` (a given multiplier; None: the widest)."""
        m = self._width(width)
        if m == self.multipliers[0]:
            return self.net(x)
        return functional_call(self._narrow[m], self.tensors(m), (x,))

    def at(self, width: float) -> nn.Module:
        """A module that runs this network at ``width`` (sharing its weights): what code that calls
        ``net(x)`` (evaluation, calibration) takes."""
        return _AtWidth(self, self._width(width))

    @torch.no_grad()
    def recalibrate(self, width: float, batches: Iterable[torch.Tensor]) -> None:
        """Recompute ``width``'s BatchNorm statistics as the exact mean over ``batches`` (train-mode
        forward passes, no gradients): the universally slimmable network's post-training
        calibration, the alternative to the running statistics kept per width while training."""
        m = self._width(width)
        module = self.net if m == self.multipliers[0] else self._narrow[m]
        norms = [b for b in module.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        momenta = [b.momentum for b in norms]
        own = dict(self.net.named_buffers()) if m == self.multipliers[0] else self.stats[_name(m)].as_dict()
        for name, t in own.items():  # this width's statistics only
            if name.endswith(("running_mean", "num_batches_tracked")):
                t.zero_()
            elif name.endswith("running_var"):
                t.fill_(1.0)
        mode = self.training
        try:
            for b in norms:
                b.momentum = None  # a cumulative average: every batch counts alike
            self.train()
            for x in batches:
                self(x, width=m)
        finally:
            for b, momentum in zip(norms, momenta, strict=True):
                b.momentum = momentum
            self.train(mode)

    def tensors(self, width: float) -> dict[str, torch.Tensor]:
        """Every parameter (a slice of the widest one's: gradients reach it) and buffer (this
        width's own BN statistics) of the network at ``width``."""
        m = self._width(width)
        if m == self.multipliers[0]:
            return {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}
        wide = dict(self.net.named_parameters())
        params = {n: wide[n][index] for n, index in self._slices[m].items() if n in wide}
        return {**params, **self.stats[_name(m)].as_dict()}

    def subnet(self, width: float) -> SelfDistillNet:
        """A standalone network of ``width`` holding copies of its slices and statistics."""
        m = self._width(width)
        net = SelfDistillNet(self.width_config(m, narrow=m != self.multipliers[0]), **self._shape)
        net.load_state_dict({n: t.detach().clone() for n, t in self.tensors(m).items()})
        return net.train(self.training)

    def deploy(self, exit: str, width: float | None = None) -> ExitModel:
        """The plain single-exit model of ``exit`` at ``width`` (see :meth:`SelfDistillNet.deploy`)."""
        return self.subnet(self._width(width)).deploy(exit)

    def _width(self, width: float | None) -> float:
        if width is None:
            return self.multipliers[0]
        if width not in self.merged:
            raise ConfigError(f"width {width} is not one of {sorted(self.merged, reverse=True)}", key=_KEY)
        return self.merged[width]

    def _check_slices(self, m: float, narrow: SelfDistillNet) -> dict[str, tuple[slice, ...]]:
        """Each tensor of the network at ``m`` as leading slices of the widest one's of the same name."""
        wide = {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}
        slices = {}
        for name, t in (*narrow.named_parameters(), *narrow.named_buffers()):
            big = wide.get(name)
            if (
                big is None
                or big.dim() != t.dim()
                or any(s > b for s, b in zip(t.shape, big.shape, strict=True))
            ):
                have = "none" if big is None else tuple(big.shape)
                raise ConfigError(
                    f"at multiplier {m} the network's {name} has shape {tuple(t.shape)}, which is not a "
                    f"slice of the widest network's ({have}); backbone {self.base.backbone.arch!r} "
                    "cannot run at this width",
                    key=_KEY,
                )
            slices[name] = tuple(slice(0, s) for s in t.shape)
        return slices


class _AtWidth(nn.Module):
    """An :class:`ElasticNet` at one width: ``forward(x)`` is ``net(x, width=width)``."""

    def __init__(self, net: ElasticNet, width: float) -> None:
        super().__init__()
        self.net, self.width = net, width

    def forward(self, x: torch.Tensor) -> SDOutput:
        return self.net(x, width=self.width)


class _Buffers(nn.Module):
    """Named tensors as buffers of one module (a dotted name is stored with ``/`` for ``.``)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name.replace(".", "/"), t)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {n.replace("/", "."): t for n, t in self.named_buffers()}


def _name(multiplier: float) -> str:
    # Module names cannot hold dots.
    return f"w{width_text(multiplier)}".replace(".", "_")
