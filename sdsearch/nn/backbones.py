"""Four-stage CNN backbones for small inputs, and their registry.

- ``resnet``: CIFAR-style ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR
  2016, https://arxiv.org/abs/1512.03385) with a 3×3 stride-1 stem and no max-pool, as in the
  BYOT/SD CIFAR experiments. Width 1, depth 2 is CIFAR ResNet-18 (11.22 M params, 0.556 G MACs at
  32×32 with 100 classes).
- ``mobilenetv2``: MobileNetV2 (Sandler et al., CVPR 2018, https://arxiv.org/abs/1801.04381) with
  a stride-1 stem for small inputs.

Backbone contract (what :class:`sdsearch.nn.network.SelfDistillNet` relies on):

- ``stem`` and ``stages`` (an ``nn.Sequential`` of exactly 4 stages) hold every parameter;
  ``forward_intermediates(x)`` returns the 4 stage outputs and ``forward_features(x)`` the last one.
  There is no classifier: exits and heads belong to the network.
- ``feature_info``: one ``dict(num_chs, reduction, module)`` per stage, as in timm.
- Every downsampling layer is a stride-2 conv with padding k // 2, so stage i of an H×W input
  is ``ceil(H / reduction_i) × ceil(W / reduction_i)``; any input from 8×8 up works (an 8×8
  input gives maps of 8, 4, 2 and 1).
- Builders take ``width``, ``depth``, ``in_chans``, ``device`` and ``dtype`` (keyword-only).

Example:
    >>> net = create_backbone("resnet", width=0.25, depth=1, in_chans=1)
    >>> [f["num_chs"] for f in net.feature_info]
    [16, 32, 64, 128]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sdsearch.errors import ConfigError
from sdsearch.nn.blocks import ConvNormAct, init_weights, make_divisible

__all__ = [
    "BasicBlock",
    "InvertedResidual",
    "MobileNetV2",
    "ResNet",
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


class Backbone(nn.Module):
    """What every backbone shares: a ``stem``, 4 ``stages`` and their ``feature_info``."""

    stem: nn.Module
    stages: nn.Sequential
    feature_info: list[dict[str, Any]]

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 4 stage outputs, shallowest first."""
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The deepest stage's map F_L."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class ResNet(Backbone):
    """CIFAR-style ResNet: 3×3 stride-1 stem, 4 stages of ``depth`` BasicBlocks, strides 1, 2, 2, 2.

    Args:
        widths: channels of the stem (= stage 1) and of the 4 stages.
        depth: BasicBlocks per stage.
        in_chans: input channels.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        depth: int,
        in_chans: int = 3,
        *,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"resnet depth must be >= 1, but got {depth}")
        dd = {"device": device, "dtype": dtype}
        self.stem = ConvNormAct(in_chans, widths[0], 3, **dd)
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        in_chs, reduction = widths[0], 1
        for i, (out_chs, stride) in enumerate(zip(widths, (1, 2, 2, 2), strict=True)):
            blocks = [
                BasicBlock(in_chs if b == 0 else out_chs, out_chs, stride if b == 0 else 1, **dd)
                for b in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            in_chs, reduction = out_chs, reduction * stride
            self.feature_info.append({"num_chs": out_chs, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        init_weights(self)


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
#: bottleneck groups by output resolution, lets ``depth`` set the repeats of the five middle groups
#: (the paper uses 2, 3, 4, 3, 3; depth 3 is close) and drops the final 1×1 conv to 1280 channels:
#: it would dominate params at small inputs and widen every exit branch to 1280 channels.
MBV2_STAGES: tuple[tuple[tuple[int, int, int | None, int], ...], ...] = (
    ((1, 16, 1, 1), (6, 24, None, 1)),
    ((6, 32, None, 2),),
    ((6, 64, None, 2), (6, 96, None, 1)),
    ((6, 160, None, 2), (6, 320, 1, 1)),
)
MBV2_STEM_CHS = 32


class MobileNetV2(Backbone):
    """MobileNetV2 for small inputs: 3×3 stride-1 stem, inverted residual blocks in 4 stages.

    Args:
        stages: per stage, its block groups ``(exp_ratio, out_chs, repeats, stride)`` with the
            channels already scaled (see :data:`MBV2_STAGES`).
        stem_chs: stem channels.
        in_chans: input channels.
    """

    def __init__(
        self,
        stages: tuple[tuple[tuple[int, int, int, int], ...], ...],
        stem_chs: int,
        in_chans: int = 3,
        *,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.stem = ConvNormAct(in_chans, stem_chs, 3, act_layer=nn.ReLU6, **dd)
        in_chs, reduction = stem_chs, 1
        built: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        for i, groups in enumerate(stages):
            blocks: list[nn.Module] = []
            for exp_ratio, out_chs, repeats, stride in groups:
                for r in range(repeats):
                    blocks.append(InvertedResidual(in_chs, out_chs, stride if r == 0 else 1, exp_ratio, **dd))
                    in_chs = out_chs
                reduction *= stride
            built.append(nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": in_chs, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*built)
        init_weights(self)


_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: file a backbone builder under ``fn.__name__`` (a re-registration warns and wins)."""
    name = fn.__name__
    if name in _BACKBONES:
        warnings.warn(
            f"backbone {name!r} is registered again; the new builder replaces the old", stacklevel=2
        )
    _BACKBONES[name] = fn
    return fn


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_BACKBONES)


def create_backbone(
    name: str,
    *,
    width: float,
    depth: int,
    in_chans: int,
    device: _Device = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: a registered builder (``resnet``, ``mobilenetv2``).
        width: channel multiplier.
        depth: blocks per stage (per block group for ``mobilenetv2``).
        in_chans: input channels.
        device: where to allocate (``"meta"`` for cost counting).
        dtype: parameter dtype.

    Raises:
        ConfigError: unknown name, or a non-positive width or depth.

    Example:
        >>> create_backbone("mobilenetv2", width=0.5, depth=1, in_chans=3, device="meta").feature_info[-1]
        {'num_chs': 160, 'reduction': 8, 'module': 'stages.3'}
    """
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(list_backbones())}")
    if width <= 0 or depth < 1:
        raise ConfigError(
            f"backbone width > 0 and depth >= 1 must hold, but got width={width}, depth={depth}"
        )
    return _BACKBONES[name](width=width, depth=depth, in_chans=in_chans, device=device, dtype=dtype)


def _scaled(channels: int, width: float) -> int:
    # At least 8 channels, multiples of 8: keeps 64·w for the searched widths 0.25-1 (16, 32, 48, 64).
    return make_divisible(channels * width, 8)


RESNET_WIDTHS = (64, 128, 256, 512)


@register_backbone
def resnet(*, width: float = 1.0, depth: int = 2, in_chans: int = 3, **kw: Any) -> ResNet:
    """CIFAR ResNet; width 1, depth 2 is ResNet-18."""
    widths = tuple(_scaled(c, width) for c in RESNET_WIDTHS)
    return ResNet(widths, depth, in_chans, **kw)  # type: ignore[arg-type]


@register_backbone
def mobilenetv2(*, width: float = 1.0, depth: int = 2, in_chans: int = 3, **kw: Any) -> MobileNetV2:
    """MobileNetV2 for small inputs, grouped as in :data:`MBV2_STAGES`."""
    stages = tuple(
        tuple((t, _scaled(c, width), depth if n is None else n, s) for t, c, n, s in groups)
        for groups in MBV2_STAGES
    )
    return MobileNetV2(stages, _scaled(MBV2_STEM_CHS, width), in_chans, **kw)
