"""Training-time fusion of the aligned exit maps {G_i} ∪ {F_L} into one map, and its head.

All inputs have the deepest map's shape (C_L, H_L, W_L) and are not detached: the fused head's loss
trains the branches and the trunk too. The fused logits are ``head(F_fused)`` (GAP + FC).

- ``channel_attention``: Zheng et al., Future Generation Computer Systems 169 (2025) 107816. The
  weighting is *design*, selective-kernel style (Li et al., "Selective Kernel Networks", CVPR 2019,
  https://arxiv.org/abs/1903.06586; timm's ``SelectiveKernelAttn``).
- ``spatial_mask_avg``: Qin et al., Electronics 14(1):182 (2025),
  https://doi.org/10.3390/electronics14010182, faithful to the abstract; the mask is a CBAM-style
  spatial gate (Woo et al., ECCV 2018, https://arxiv.org/abs/1807.06521; timm's ``SpatialAttn``).
- ``residual``: *design*, no paper's: ``F_fused = F_L + Σ_j BN0(conv1x1(G_j))`` with BN0's gamma
  zero at init, so the fused map starts as F_L and learns corrections from the branch maps. (sdsearch
  0.2 called it a reading of RSKD; it is not: RSKD has a pseudo-teacher and a residual *target*,
  and is the loss term ``loss.rskd_weight``, see ``sdsearch.nn.losses``.)
"""

from __future__ import annotations

import torch
from torch import nn

from sdsearch.nn.blocks import ClassifierHead

__all__ = [
    "ChannelAttentionFusion",
    "ResidualFusion",
    "SpatialMaskAvgFusion",
    "create_fusion",
]

_Device = torch.device | str | None


class ChannelAttentionFusion(nn.Module):
    """Selective-kernel fusion: ``s = GAP(Σ G_j)``, an MLP scores each input per channel,
    softmax across inputs, ``F = Σ w_j · G_j``.

    *design*: the MLP has no BatchNorm (timm's SK attention has one), so a training batch of one
    sample still works; ``rd_channels = max(C // 8, 8)``.

    Args:
        channels: C_L.
        num_inputs: number of maps fused (branch exits + 1).
        num_classes: classes of the fused head.
        map_size: (H_L, W_L); unused (every fusion takes it, so the registry builds them alike).
    """

    def __init__(
        self,
        channels: int,
        num_inputs: int,
        num_classes: int,
        map_size: tuple[int, int] | None = None,
        *,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        rd_channels = max(channels // 8, 8)
        self.num_inputs = num_inputs
        self.fc1 = nn.Linear(channels, rd_channels, **dd)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(rd_channels, channels * num_inputs, **dd)
        self.head = ClassifierHead(channels, num_classes, **dd)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(feats, dim=1)  # B, N, C, H, W
        s = x.sum(dim=1).mean(dim=(2, 3))  # B, C
        attn = self.fc2(self.act(self.fc1(s))).view(x.shape[0], self.num_inputs, x.shape[2], 1, 1)
        return (x * attn.softmax(dim=1)).sum(dim=1)


def _spatial_kernel(size: tuple[int, int]) -> int:
    # 7×7 as in CBAM, capped at 2·max(H, W) - 1: wider than that no output sees more of the map.
    return min(7, 2 * max(size) - 1)


class SpatialMaskAvgFusion(nn.Module):
    """Spatial-mask averaging: per input a mask ``M_j = sigmoid(conv([mean_c G_j, max_c G_j]))``,
    ``M̄ = mean_j M_j``, ``F = mean_j (G_j · M̄)``.

    *design*: the gate conv has a bias and no BatchNorm (CBAM's has one): a single-channel BN on a
    1×1 map fails with a batch of one.

    Args:
        channels: C_L.
        num_inputs: number of maps fused (branch exits + 1).
        num_classes: classes of the fused head.
        map_size: (H_L, W_L); caps the 7×7 gate kernel.
    """

    def __init__(
        self,
        channels: int,
        num_inputs: int,
        num_classes: int,
        map_size: tuple[int, int],
        *,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        k = _spatial_kernel(map_size)
        self.gates = nn.ModuleList(nn.Conv2d(2, 1, k, padding=k // 2, **dd) for _ in range(num_inputs))
        self.head = ClassifierHead(channels, num_classes, **dd)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        masks = []
        for gate, g in zip(self.gates, feats):
            pooled = torch.cat([g.mean(dim=1, keepdim=True), g.amax(dim=1, keepdim=True)], dim=1)
            masks.append(torch.sigmoid(gate(pooled)))
        mask = torch.stack(masks).mean(dim=0)
        return torch.stack(feats).mean(dim=0) * mask  # = mean_j (G_j · M̄)


class ResidualFusion(nn.Module):
    """Residual fusion: ``F = F_L + Σ_j BN0(conv1x1(G_j))`` over the branch maps G_j.

    BN0's gamma starts at zero (:meth:`zero_init_last`), so at init ``F == F_L`` exactly and the
    fused head begins as a second deepest head that learns corrections from the branches.

    Args:
        channels: C_L.
        num_inputs: number of maps fused (branch exits + 1; the last is F_L).
        num_classes: classes of the fused head.
        map_size: (H_L, W_L); unused (every fusion takes it, so the registry builds them alike).
    """

    def __init__(
        self,
        channels: int,
        num_inputs: int,
        num_classes: int,
        map_size: tuple[int, int] | None = None,
        *,
        device: _Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False, **dd), nn.BatchNorm2d(channels, **dd))
            for _ in range(num_inputs - 1)
        )
        self.head = ClassifierHead(channels, num_classes, **dd)
        self.zero_init_last()

    def zero_init_last(self) -> None:
        """Zero every BN0 gamma (and beta) so the fusion starts as F_L."""
        for proj in self.projs:
            nn.init.zeros_(proj[1].weight)
            nn.init.zeros_(proj[1].bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = feats[-1]
        for proj, g in zip(self.projs, feats[:-1]):
            out = out + proj(g)
        return out


def create_fusion(
    kind: str,
    channels: int,
    num_inputs: int,
    num_classes: int,
    map_size: tuple[int, int],
    *,
    device: _Device = None,
    dtype: torch.dtype | None = None,
) -> nn.Module | None:
    """Build the fusion module registered as ``kind`` (``None`` for ``none``). Its ``forward(feats)``
    takes the branch maps in depth order followed by F_L, and its ``head`` gives the fused logits.

    Every fusion class takes ``(channels, num_inputs, num_classes, map_size, *, device, dtype)``.

    Raises:
        KeyError: unknown kind (the message lists the registered ones).
    """
    from sdsearch.core.registry import FUSIONS

    cls = FUSIONS.get(kind)
    if cls is None:
        return None
    return cls(channels, num_inputs, num_classes, map_size, device=device, dtype=dtype)
