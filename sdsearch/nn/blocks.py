"""Building blocks of the multi-exit network: conv layers, CBFE, exit branches and exit heads.

The bottom of ``sdsearch.nn``: nothing here imports the other nn modules.

- ``SDBranch``: the exit branch of the SD code (Zhang et al., "Self-Distillation: Towards Efficient
  and Compact Neural Networks", TPAMI 2021, https://doi.org/10.1109/TPAMI.2021.3067100): a
  SCAN-style attention followed by stride-2 separable convolutions.
- ``LiteBranch``: the bottleneck branch of BYOT (Zhang et al., "Be Your Own Teacher", ICCV 2019,
  https://arxiv.org/abs/1905.08094).
- ``CBFE``: channel-based feature enhancement (Zheng et al., Future Generation Computer Systems 169
  (2025) 107816): 1×1 reduce, 1×1 restore, element-wise multiply with the input. It is close to
  timm's ``SEModule`` without the pooling, and uses its layer names.

Every module takes ``device=None, dtype=None`` and passes them to each layer, so a whole network can
be built on ``device="meta"`` (that is how :mod:`sdsearch.cost.trace` counts params and MACs in milliseconds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CBFE",
    "ClassifierHead",
    "ConvNormAct",
    "LiteBranch",
    "SDAttention",
    "SDBranch",
    "SepConv",
    "create_branch",
    "init_weights",
    "make_divisible",
]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (timm's rule).

    Channel counts that are multiples of 8 are the fast path of most CPU and GPU kernels; the
    ``round_limit`` keeps rounding from removing more than 10% of the channels.
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class ConvNormAct(nn.Module):
    """Conv (no bias, BN follows) + BatchNorm + activation; ``act_layer=None`` leaves out the activation.

    ``padding=None`` pads k // 2 ("same" for odd kernels, the geometry every stride-2 layer relies on).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        *,
        groups: int = 1,
        padding: int | tuple[int, int] | None = None,
        act_layer: type[nn.Module] | None = nn.ReLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        padding = (ks[0] // 2, ks[1] // 2) if padding is None else padding
        self.conv = nn.Conv2d(in_chs, out_chs, ks, stride, padding=padding, groups=groups, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SepConv(nn.Module):
    """Separable conv of the SD code: two depthwise-pointwise pairs, each followed by BN and ReLU.

    ``dw k×k (stride) -> pw C_in -> BN -> ReLU -> dw k×k -> pw C_out -> BN -> ReLU``, as ``SepConv``
    in the SD authors' ``resnet.py`` (the first pair keeps the channels, the second changes them).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        kernel_size: int = 3,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.pair1 = _DepthwisePointwise(in_chs, in_chs, stride, kernel_size, **dd)
        self.pair2 = _DepthwisePointwise(in_chs, out_chs, 1, kernel_size, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pair2(self.pair1(x))


class _DepthwisePointwise(nn.Module):
    """One pair of :class:`SepConv`: depthwise k×k (carries the stride), pointwise 1×1, BN, ReLU."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        kernel_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv_dw = nn.Conv2d(
            in_chs, in_chs, kernel_size, stride, padding=kernel_size // 2, groups=in_chs, bias=False, **dd
        )
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_pw(self.conv_dw(x))))


class CBFE(nn.Module):
    """Channel-based feature enhancement: ``F * sigmoid(bn2(fc2(relu(bn1(fc1(F))))))``.

    Unlike SE there is no global pooling: the gate is computed per position, so it can enhance
    channels differently across the map. The hidden width is the paper's ``C / r``, floored and at least
    1 (``max(C // r, 1)``), so the searched ratios 2, 4 and 8 build different modules wherever
    C >= 8; 0.2's floor of 8 made them build one module on narrow stages. The BN/ReLU/sigmoid placement is
    *design* (the paper gives reduce, restore and multiply).

    Args:
        channels: C, channels of the input (and output).
        ratio: r, the reduction ratio of the bottleneck.
    """

    def __init__(
        self,
        channels: int,
        ratio: int = 4,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if ratio < 1:
            raise ValueError(f"CBFE ratio must be >= 1, but got {ratio}")
        dd = {"device": device, "dtype": dtype}
        rd_channels = max(channels // ratio, 1)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(rd_channels, **dd)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(channels, **dd)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.gate(self.bn2(self.fc2(self.act(self.bn1(self.fc1(x))))))
        return x * z


class SDAttention(nn.Module):
    """SD/SCAN attention: ``x * sigmoid(up2(relu(bn(SepConv_s2(x)))))``, as in the SD code (its
    :class:`SepConv` already ends in BN and ReLU; the code adds one more BN and ReLU, and so do we).

    The upsampling interpolates to the input's exact size instead of a fixed factor 2, so odd map
    sizes (a stride-2 conv turns 5 into 3, and 3×2 is not 5) work; for even sizes it is the same
    bilinear ×2 as the SD code.
    """

    def __init__(
        self, channels: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = SepConv(channels, channels, stride=2, **dd)
        self.bn = nn.BatchNorm2d(channels, **dd)
        self.act = nn.ReLU()
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.bn(self.conv(x)))
        a = F.interpolate(a, size=[x.shape[-2], x.shape[-1]], mode="bilinear", align_corners=False)
        return x * self.gate(a)


def _halve(n: int) -> int:
    # Output size of a k3/s2/p1 conv: the geometry of every downsampling layer in our backbones.
    return (n - 1) // 2 + 1


class SDBranch(nn.Module):
    """SD exit branch: stage-i map (C_i, H_i, W_i) -> G_i aligned to the deepest map (C_L, H_L, W_L).

    Stride-2 SepConvs double the channels (capped at C_L) while halving the map would not undershoot
    (H_L, W_L); the last SepConv maps straight to C_L (*design*: with MobileNetV2 widths, doubling
    does not land on C_L). Where halving cannot reach the target size exactly (sizes that are not
    powers of two apart), adaptive average pooling finishes the job; where no SepConv was needed,
    a 1×1 conv fixes the channels.

    Args:
        in_chs: C_i.
        in_size: (H_i, W_i).
        out_chs: C_L.
        out_size: (H_L, W_L).
        cbfe_ratio: if given, a CBFE(ratio) on the branch input (``cbfe.location: branch``).
    """

    def __init__(
        self,
        in_chs: int,
        in_size: tuple[int, int],
        out_chs: int,
        out_size: tuple[int, int],
        *,
        cbfe_ratio: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.cbfe = CBFE(in_chs, cbfe_ratio, **dd) if cbfe_ratio else nn.Identity()
        self.attn = SDAttention(in_chs, **dd)
        (h, w), (ht, wt) = in_size, out_size
        n_steps = 0
        while (h > ht or w > wt) and _halve(h) >= ht and _halve(w) >= wt:
            h, w, n_steps = _halve(h), _halve(w), n_steps + 1
        convs: list[nn.Module] = []
        chs = in_chs
        for step in range(n_steps):
            next_chs = out_chs if step == n_steps - 1 else min(2 * chs, out_chs)
            convs.append(SepConv(chs, next_chs, stride=2, **dd))
            chs = next_chs
        self.convs = nn.Sequential(*convs)
        self.pool = nn.AdaptiveAvgPool2d(out_size) if (h, w) != tuple(out_size) else nn.Identity()
        self.proj = ConvNormAct(chs, out_chs, 1, **dd) if chs != out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.cbfe(x))
        return self.proj(self.pool(self.convs(x)))


class LiteBranch(nn.Module):
    """BYOT bottleneck branch: 1×1 to C_L/4 -> k×k conv stride k -> 1×1 to C_L (BN + ReLU each).

    k = H_i / H_L. Where the ratio is not an integer (odd input sizes), the reduced map is first
    average-pooled to k·(H_L, W_L) with k = floor(H_i / H_L), so the strided conv lands exactly on
    (H_L, W_L) (*design*: pooling the C_L/4-channel map is the cheapest place).

    Args:
        in_chs: C_i.
        in_size: (H_i, W_i).
        out_chs: C_L.
        out_size: (H_L, W_L).
        cbfe_ratio: if given, a CBFE(ratio) on the branch input (``cbfe.location: branch``).
    """

    def __init__(
        self,
        in_chs: int,
        in_size: tuple[int, int],
        out_chs: int,
        out_size: tuple[int, int],
        *,
        cbfe_ratio: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        mid_chs = max(out_chs // 4, 8)
        (h, w), (ht, wt) = in_size, out_size
        kh, kw = max(h // ht, 1), max(w // wt, 1)
        self.cbfe = CBFE(in_chs, cbfe_ratio, **dd) if cbfe_ratio else nn.Identity()
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, **dd)
        exact = (h, w) == (kh * ht, kw * wt)
        self.pool = nn.Identity() if exact else nn.AdaptiveAvgPool2d((kh * ht, kw * wt))
        # No padding: a k×k kernel with stride k tiles the map exactly.
        self.conv2 = ConvNormAct(mid_chs, mid_chs, (kh, kw), (kh, kw), padding=0, **dd)
        self.conv3 = ConvNormAct(mid_chs, out_chs, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.cbfe(x))
        return self.conv3(self.conv2(self.pool(x)))


def create_branch(
    style: str,
    in_chs: int,
    in_size: tuple[int, int],
    out_chs: int,
    out_size: tuple[int, int],
    *,
    cbfe_ratio: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build the exit branch of ``style``, a name in the branch-style registry (``sd``: :class:`SDBranch`,
    ``lite``: :class:`LiteBranch`).

    Raises:
        KeyError: unknown style (the message lists the registered ones).
    """
    from sdsearch.core.registry import BRANCH_STYLES

    return BRANCH_STYLES.get(style)(
        in_chs, in_size, out_chs, out_size, cbfe_ratio=cbfe_ratio, device=device, dtype=dtype
    )


class ClassifierHead(nn.Module):
    """Exit head: global average pooling + a linear classifier (``head.fc``)."""

    def __init__(
        self,
        in_chs: int,
        num_classes: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chs, num_classes, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def init_weights(module: nn.Module, *, zero_init_last: bool = True) -> None:
    """He init for convs, unit BN, then (unless disabled) ``zero_init_last()`` of every submodule that has one.

    Linear layers keep PyTorch's default init, as in timm's ResNet.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules() if zero_init_last else ():
        if hasattr(m, "zero_init_last"):
            m.zero_init_last()
