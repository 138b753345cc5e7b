"""Four-stage CNN backbones for small inputs, the backbone contract, and user backbones.

- ``resnet``: CIFAR-style ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR
  2016, https://arxiv.org/abs/1512.03385) with a 3×3 stride-1 stem and no max-pool, as in the
  BYOT/SD CIFAR experiments. Width 1, depth 2 is CIFAR ResNet-18 (11.22 M params, 0.556 G MACs at
  32×32 with 100 classes).
- ``mobilenetv2``: MobileNetV2 (Sandler et al., CVPR 2018, https://arxiv.org/abs/1801.04381) with
  a stride-1 stem for small inputs, optionally with the paper's last 1×1 conv to 1280·w channels.

The backbone contract (timm's ``features_only`` convention), which a user's own backbone follows
too (``backbone.arch: "package.module:factory"``, or an entry point in group ``sdsearch.backbones``):

- the factory takes the keyword arguments ``in_chans``, ``width`` and ``depth`` and returns an
  ``nn.Module``; it is called under ``with torch.device("meta")`` for costing, so it need not know
  about devices;
- ``forward(x)`` returns the list of the 4 stage maps, shallowest first;
- ``feature_info.channels()`` and ``feature_info.reduction()`` give their channels and reductions.

:func:`create_backbone` returns a :class:`Stages` view of any backbone: ``stem`` and 4 ``stages``
run in sequence, which is what exit branches, trunk CBFE and ``deploy(exit)`` need. Built-in
backbones are built that way; a user's module is split into its stages with ``torch.fx``.

Example:
    >>> net = create_backbone("resnet", width=0.25, depth=1, in_chans=1)
    >>> net.feature_info.channels()
    [16, 32, 64, 128]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from sdsearch.core.errors import ConfigError
from sdsearch.core.exits import N_STAGES
from sdsearch.core.registry import BACKBONES
from sdsearch.nn.blocks import ConvNormAct, init_weights, make_divisible

__all__ = [
    "BasicBlock",
    "FeatureInfo",
    "InvertedResidual",
    "MobileNetV2",
    "ResNet",
    "Stages",
    "create_backbone",
    "list_backbones",
    "mobilenetv2",
    "register_backbone",
    "resnet",
]

_Device = torch.device | str | None


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs and a shortcut (1×1 conv + BN when the shape changes)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        *,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(out_chs, **dd)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.act2 = nn.ReLU()
        if stride != 1 or in_chs != out_chs:
            self.downsample: nn.Module = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False, **dd), nn.BatchNorm2d(out_chs, **dd)
            )
        else:
            self.downsample = nn.Identity()

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma so the block starts as its shortcut (timm's default)."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class FeatureInfo:
    """Channels, reductions and module names of a backbone's 4 stage maps (timm's ``FeatureInfo``)."""

    def __init__(self, stages: Sequence[dict[str, Any]]) -> None:
        self.info = [dict(s) for s in stages]

    def channels(self) -> list[int]:
        return [int(s["num_chs"]) for s in self.info]

    def reduction(self) -> list[int]:
        return [int(s["reduction"]) for s in self.info]

    def module_name(self) -> list[str]:
        return [str(s.get("module", f"stages.{i}")) for i, s in enumerate(self.info)]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"


class Stages(nn.Module):
    """A backbone as a ``stem`` and 4 ``stages`` run in sequence, with their :class:`FeatureInfo`.

    ``forward`` follows the features_only contract (the 4 stage maps); ``stem`` and ``stages``
    are what the multi-exit network interleaves its branches with and truncates for deploy.
    """

    stem: nn.Module
    stages: nn.Sequential
    feature_info: FeatureInfo

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class ResNet(Stages):
    """CIFAR-style ResNet: 3×3 stride-1 stem, 4 stages of ``depth`` BasicBlocks, strides 1, 2, 2, 2.

    Args:
        widths: channels of the stem (= stage 1) and of the 4 stages.
        depth: BasicBlocks per stage.
        in_chans: input channels.
        zero_init_last: zero each block's last BN gamma, so blocks start as their shortcut.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        depth: int,
        in_chans: int = 3,
        *,
        zero_init_last: bool = True,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.stem = ConvNormAct(in_chans, widths[0], 3, **dd)
        stages: list[nn.Module] = []
        info: list[dict[str, Any]] = []
        in_chs, reduction = widths[0], 1
        for i, (out_chs, stride) in enumerate(zip(widths, (1, 2, 2, 2), strict=True)):
            blocks = [
                BasicBlock(in_chs if b == 0 else out_chs, out_chs, stride if b == 0 else 1, **dd)
                for b in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            in_chs, reduction = out_chs, reduction * stride
            info.append({"num_chs": out_chs, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(info)
        init_weights(self, zero_init_last=zero_init_last)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand (skipped at ratio 1), 3×3 depthwise (stride), 1×1 linear project."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        exp_ratio: int = 6,
        *,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        mid_chs = in_chs * exp_ratio
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = (
            ConvNormAct(in_chs, mid_chs, 1, act_layer=nn.ReLU6, **dd) if exp_ratio != 1 else nn.Identity()
        )
        self.conv_dw = ConvNormAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, act_layer=nn.ReLU6, **dd)
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, act_layer=None, **dd)

    def zero_init_last(self) -> None:
        """Zero the projection BN's gamma of residual blocks so they start as the identity."""
        if self.has_skip:
            nn.init.zeros_(self.conv_pwl.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        if self.has_skip:
            out = out + x
        return out


#: MobileNetV2's block groups ``(exp_ratio, out_chs, repeats, stride)`` arranged in 4 stages of
#: reduction 1, 2, 4, 8 (``repeats=None`` means ``depth``). *design*: this follows the common
#: CIFAR MobileNetV2 (stride-1 stem, stride 1 in the 24-channel group), groups the paper's seven
#: bottleneck groups by output resolution and lets ``depth`` set the repeats of the five middle
#: groups (the paper uses 2, 3, 4, 3, 3; depth 3 is close). The paper's final 1×1 conv to 1280
#: channels is off by default (``backbone.last_channel``): it dominates params at small inputs and
#: widens every exit branch to 1280·w channels.
MBV2_STAGES: tuple[tuple[tuple[int, int, int | None, int], ...], ...] = (
    ((1, 16, 1, 1), (6, 24, None, 1)),
    ((6, 32, None, 2),),
    ((6, 64, None, 2), (6, 96, None, 1)),
    ((6, 160, None, 2), (6, 320, 1, 1)),
)
MBV2_STEM_CHS = 32
MBV2_LAST_CHS = 1280


class MobileNetV2(Stages):
    """MobileNetV2 for small inputs: 3×3 stride-1 stem, inverted residual blocks in 4 stages.

    Args:
        stages: per stage, its block groups ``(exp_ratio, out_chs, repeats, stride)`` with the
            channels already scaled (see :data:`MBV2_STAGES`).
        stem_chs: stem channels.
        in_chans: input channels.
        last_chs: if set, the paper's final 1×1 conv (BN, ReLU6) to this many channels ends stage 4.
        zero_init_last: zero the projection BN of residual blocks, so they start as the identity.
    """

    def __init__(
        self,
        stages: tuple[tuple[tuple[int, int, int, int], ...], ...],
        stem_chs: int,
        in_chans: int = 3,
        *,
        last_chs: int | None = None,
        zero_init_last: bool = True,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.stem = ConvNormAct(in_chans, stem_chs, 3, act_layer=nn.ReLU6, **dd)
        in_chs, reduction = stem_chs, 1
        built: list[nn.Module] = []
        info: list[dict[str, Any]] = []
        for i, groups in enumerate(stages):
            blocks: list[nn.Module] = []
            for exp_ratio, out_chs, repeats, stride in groups:
                for r in range(repeats):
                    blocks.append(InvertedResidual(in_chs, out_chs, stride if r == 0 else 1, exp_ratio, **dd))
                    in_chs = out_chs
                reduction *= stride
            if last_chs is not None and i == len(stages) - 1:
                blocks.append(ConvNormAct(in_chs, last_chs, 1, act_layer=nn.ReLU6, **dd))
                in_chs = last_chs
            built.append(nn.Sequential(*blocks))
            info.append({"num_chs": in_chs, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*built)
        self.feature_info = FeatureInfo(info)
        init_weights(self, zero_init_last=zero_init_last)


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: file a backbone factory under ``fn.__name__`` in the registry validation asks.

    A re-registration warns and wins. The factory follows the backbone contract (module docstring).
    """
    return BACKBONES.register(fn.__name__, fn)


def list_backbones() -> list[str]:
    """Backbone names validation accepts: built-ins, registered ones and installed plugins."""
    return BACKBONES.names()


def create_backbone(
    name: str,
    *,
    width: float,
    depth: int,
    in_chans: int,
    device: _Device = None,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> Stages:
    """Build a backbone by registry name or import string, as :class:`Stages`.

    Built-in factories take ``device``, ``dtype`` and their options (``zero_init_last``,
    ``last_channel``); a user's factory takes only ``in_chans``, ``width`` and ``depth`` and is
    called under ``with torch.device(device)``, then split into its stages.

    Args:
        name: a registered name (``resnet``, ``mobilenetv2``, a plugin) or ``package.module:factory``.
        width: channel multiplier.
        depth: blocks per stage (per block group for ``mobilenetv2``).
        in_chans: input channels.
        device: where to allocate (``"meta"`` for cost counting).
        dtype: parameter dtype.
        **options: options of a built-in factory.

    Raises:
        ConfigError: unknown name, a factory that fails, or a module that breaks the contract.

    Example:
        >>> create_backbone("mobilenetv2", width=0.5, depth=1, in_chans=3, device="meta").feature_info
        FeatureInfo(channels=[16, 16, 48, 160], reduction=[1, 2, 4, 8])
    """
    try:
        factory = BACKBONES.get(name)
    except (KeyError, ImportError) as exc:
        raise ConfigError(f"backbone.arch: {exc.args[0] if exc.args else exc}") from None
    if BACKBONES.is_builtin(name):
        return factory(width=width, depth=depth, in_chans=in_chans, device=device, dtype=dtype, **options)
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            module = factory(in_chans=in_chans, width=width, depth=depth)
    except Exception as exc:  # a user's factory may raise anything
        raise ConfigError(f"backbone.arch: {name} failed to build: {type(exc).__name__}: {exc}") from None
    if dtype is not None:
        module = module.to(dtype)
    return as_stages(module, name=name)


def as_stages(module: nn.Module, *, name: str = "backbone") -> Stages:
    """A features_only module as :class:`Stages`: each stage a ``torch.fx`` graph from the previous
    stage's map to its own (the module's parameters are shared, not copied).

    Raises:
        ConfigError: no usable ``feature_info``, not traceable by ``torch.fx``, not 4 maps, or a
            stage that reads more than the previous stage's map (stages must run in sequence).
    """
    if isinstance(module, Stages):
        return module
    info = getattr(module, "feature_info", None)
    try:
        channels, reductions = list(info.channels()), list(info.reduction())  # type: ignore[union-attr]
    except Exception:
        raise ConfigError(
            f"backbone.arch: {name} has no feature_info.channels() and .reduction(); a backbone follows "
            f"timm's features_only convention (forward returns the {N_STAGES} stage maps)"
        ) from None
    if len(channels) != N_STAGES or len(reductions) != N_STAGES:
        raise ConfigError(
            f"backbone.arch: {name} describes {len(channels)} stage maps in feature_info, not {N_STAGES}"
        )
    staged = Stages()
    staged.stem = nn.Identity()
    staged.stages = nn.Sequential(*_split_stages(module, name))
    staged.feature_info = FeatureInfo(
        [
            {"num_chs": c, "reduction": r, "module": f"stages.{i}"}
            for i, (c, r) in enumerate(zip(channels, reductions))
        ]
    )
    return staged


def _split_stages(module: nn.Module, name: str) -> list[nn.Module]:
    import torch.fx as fx

    try:
        traced = fx.symbolic_trace(module)
    except Exception as exc:
        raise ConfigError(
            f"backbone.arch: {name} cannot be traced by torch.fx ({type(exc).__name__}: {exc}); "
            "sdsearch splits a backbone into its stages with torch.fx"
        ) from None
    nodes = list(traced.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    maps = next(n for n in nodes if n.op == "output").args[0]
    if len(inputs) != 1 or not isinstance(maps, (list, tuple)) or len(maps) != N_STAGES:
        raise ConfigError(f"backbone.arch: {name}.forward(x) must return a list of the {N_STAGES} stage maps")
    stages: list[nn.Module] = []
    previous = inputs[0]
    for i, node in enumerate(maps):
        graph = fx.Graph()
        x = graph.placeholder("stage_input")
        copies: dict[Any, Any] = {previous: x}
        graph.graph_copy(traced.graph, copies)
        graph.output(copies[node])
        stage = fx.GraphModule(traced, graph, class_name=f"Stage{i + 1}")
        stage.graph.eliminate_dead_code()
        for extra in [n for n in stage.graph.nodes if n.op == "placeholder" and n is not x]:
            if extra.users:
                raise ConfigError(
                    f"backbone.arch: {name}: stage {i + 1} reads more than stage {i}'s map; sdsearch needs "
                    "stages that run in sequence"
                )
            stage.graph.erase_node(extra)
        stage.delete_all_unused_submodules()
        stage.recompile()
        stages.append(stage)
        previous = node
    return stages


def _scaled(channels: int, width: float) -> int:
    # At least 8 channels, multiples of 8: keeps 64·w for the searched widths 0.25-1 (16, 32, 48, 64).
    return make_divisible(channels * width, 8)


RESNET_WIDTHS = (64, 128, 256, 512)


def resnet(*, width: float = 1.0, depth: int = 2, in_chans: int = 3, **kw: Any) -> ResNet:
    """CIFAR ResNet; width 1, depth 2 is ResNet-18."""
    widths = tuple(_scaled(c, width) for c in RESNET_WIDTHS)
    return ResNet(widths, depth, in_chans, **kw)  # type: ignore[arg-type]


def mobilenetv2(
    *, width: float = 1.0, depth: int = 2, in_chans: int = 3, last_channel: bool = False, **kw: Any
) -> MobileNetV2:
    """MobileNetV2 for small inputs, grouped as in :data:`MBV2_STAGES`; ``last_channel`` adds the
    paper's final 1×1 conv to 1280·w channels."""
    stages = tuple(
        tuple((t, _scaled(c, width), depth if n is None else n, s) for t, c, n, s in groups)
        for groups in MBV2_STAGES
    )
    last = _scaled(MBV2_LAST_CHS, width) if last_channel else None
    return MobileNetV2(stages, _scaled(MBV2_STEM_CHS, width), in_chans, last_chs=last, **kw)
