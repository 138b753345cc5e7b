"""The multi-exit self-distillation network and the single-exit models it deploys.

Structure (BYOT, Zhang et al. ICCV 2019, https://arxiv.org/abs/1905.08094; SD, Zhang et al. TPAMI
2021, https://doi.org/10.1109/TPAMI.2021.3067100): a 4-stage backbone; after each stage listed in
``branches.placement`` an exit branch maps the stage output to G_i, aligned to the deepest map F_L
(C_L × H_L × W_L); every exit has a GAP + FC head; an optional fusion module (training only) fuses
{G_i} ∪ {F_L} into a map with its own head. CBFE (Zheng et al. 2025) sits either on each branch
input (``branch``) or on each stage output (``trunk``, so every deployed model keeps it).

State-dict keys: ``stem.*``, ``stages.<i>.blocks.*``, ``stages.<i>.cbfe.*`` (trunk CBFE),
``branches.<exit>.*``, ``heads.<exit>.fc.*`` and ``fusion.*``. A deployed model keeps ``stem``,
``stages`` and names the exit's branch and head ``branch`` and ``head``.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sdsearch.core.config import LEAVES, BackboneConfig, ModelConfig
from sdsearch.core.errors import ConfigError
from sdsearch.core.exits import FINAL, exit_stage
from sdsearch.nn.backbones import create_backbone
from sdsearch.nn.blocks import CBFE, ClassifierHead, create_branch, init_weights
from sdsearch.nn.fusion import create_fusion

__all__ = ["AllExitsModel", "ExitModel", "SDOutput", "SelfDistillNet"]


@dataclass(frozen=True)
class SDOutput:
    """What one forward pass of :class:`SelfDistillNet` gives the loss.

    Attributes:
        logits: every exit's logits, in depth order, ``"final"`` last.
        fused_logits: the fused head's logits, or ``None`` without fusion.
        features: G_i per branch exit and F_L under ``"final"``, all (B, C_L, H_L, W_L).
        fused_features: the fused map, or ``None`` without fusion.
        stage_features: per branch exit, the stage map its branch reads (C_i, H_i, W_i): where
            RSKD's intermediate extension attaches.
    """

    logits: dict[str, torch.Tensor]
    fused_logits: torch.Tensor | None
    features: dict[str, torch.Tensor]
    fused_features: torch.Tensor | None
    stage_features: dict[str, torch.Tensor] = field(default_factory=dict)


class ExitModel(nn.Module):
    """A deployed single exit: ``head(branch(stages(stem(x))))``; plain, scriptable, no extras.

    ``branch`` is ``nn.Identity`` for the final exit. Built by :meth:`SelfDistillNet.deploy`.
    """

    def __init__(self, stem: nn.Module, stages: nn.Sequential, branch: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.branch = branch
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.branch(self.stages(self.stem(x))))


def backbone_options(config: BackboneConfig) -> dict[str, object]:
    """The factory options of a backbone config: every backbone leaf beyond arch, width and depth
    whose condition holds (``last_channel`` only for mobilenetv2), as the leaf declarations say."""
    values = {f"backbone.{name}": value for name, value in config}
    return {
        leaf.name: values[leaf.key]
        for leaf in LEAVES.values()
        if leaf.section == "backbone"
        and leaf.name not in ("arch", "width", "depth")
        and (leaf.applies is None or leaf.applies.holds(values))
    }


class SelfDistillNet(nn.Module):
    """Multi-exit CNN for self-distillation, built from a frozen :class:`~sdsearch.core.config.ModelConfig`.

    Invariants: ``exits`` equals ``config.exits`` (depth order, ``"final"`` last); ``forward`` gives
    logits for each of them; for every exit, ``deploy(exit)`` in eval mode reproduces that exit's
    logits bit for bit.

    Args:
        config: the architecture.
        num_classes: classes of every head.
        in_chans: input channels.
        input_size: (H, W) of the inputs; sizes the branches (any size from 8×8 up).
        device: where to allocate (``"meta"`` for cost counting).
        dtype: parameter dtype.

    Attributes:
        exits: exit names, depth order, ``"final"`` last.
        feature_info: the backbone's :class:`~sdsearch.nn.backbones.FeatureInfo` (channels, reductions).
        feature_sizes: (H, W) of each stage's map for ``input_size``.

    Raises:
        ConfigError: the backbone cannot be built, or the input is smaller than 8×8.

    Example:
        >>> from sdsearch.core.config import BackboneConfig
        >>> cfg = ModelConfig(backbone=BackboneConfig(width=0.25, depth=1))
        >>> net = SelfDistillNet(cfg, num_classes=10, input_size=(16, 16))
        >>> out = net(torch.randn(2, 3, 16, 16))
        >>> list(out.logits)
        ['1', '2', '3', 'final']
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        num_classes: int,
        in_chans: int = 3,
        input_size: tuple[int, int] = (32, 32),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if min(input_size) < 8:
            raise ConfigError(f"input_size must be at least 8×8, but got {tuple(input_size)}")
        dd = {"device": device, "dtype": dtype}
        self.config = config
        self.num_classes = num_classes
        self.exits: tuple[str, ...] = config.exits
        bb = config.backbone
        backbone = create_backbone(
            bb.arch, width=bb.width, depth=bb.depth, in_chans=in_chans, **dd, **backbone_options(bb)
        )
        self.feature_info = backbone.feature_info
        chs = self.feature_info.channels()
        sizes = [
            (math.ceil(input_size[0] / r), math.ceil(input_size[1] / r))
            for r in self.feature_info.reduction()
        ]
        self.feature_sizes: list[tuple[int, int]] = sizes
        ratio, loc = config.cbfe.ratio, config.cbfe.location

        self.stem = backbone.stem
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    OrderedDict(blocks=blocks, cbfe=CBFE(c, ratio, **dd) if loc == "trunk" else nn.Identity())
                )
                for blocks, c in zip(backbone.stages, chs, strict=True)
            )
        )
        self.branches = nn.ModuleDict(
            {
                e: create_branch(
                    config.branches.style,
                    chs[exit_stage(e) - 1],
                    sizes[exit_stage(e) - 1],
                    chs[-1],
                    sizes[-1],
                    cbfe_ratio=ratio if loc == "branch" else None,
                    **dd,
                )
                for e in self.exits[:-1]
            }
        )
        self.heads = nn.ModuleDict({e: ClassifierHead(chs[-1], num_classes, **dd) for e in self.exits})
        self.fusion = create_fusion(
            config.fusion.type, chs[-1], len(self.exits), num_classes, sizes[-1], **dd
        )
        self.init_weights()

    def init_weights(self) -> None:
        """He init for what sdsearch adds to the backbone (branches, heads, fusion, trunk CBFE), then
        each ``zero_init_last()`` there (residual fusion starts as F_L). The backbone initialised
        itself: a built-in one as ``backbone.zero_init_last`` says, a user's one as it chose."""
        for module in (self.branches, self.heads, self.fusion, *(stage.cbfe for stage in self.stages)):
            if module is not None:
                init_weights(module)

    def forward(self, x: torch.Tensor) -> SDOutput:
        x = self.stem(x)
        features: dict[str, torch.Tensor] = {}
        stage_features: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            name = str(i)
            if name in self.branches:
                stage_features[name] = x
                features[name] = self.branches[name](x)
        features[FINAL] = x
        logits = {e: self.heads[e](features[e]) for e in self.exits}
        fused_features = fused_logits = None
        if self.fusion is not None:
            fused_features = self.fusion([features[e] for e in self.exits])
            fused_logits = self.fusion.head(fused_features)
        return SDOutput(logits, fused_logits, features, fused_features, stage_features)

    def deploy(self, exit: str, *, share_weights: bool = False) -> ExitModel:
        """A new single-exit model with deep copies of what ``exit`` needs at inference.

        It holds the stem, the stages up to the exit's stage (with trunk CBFE, if any), the exit's
        branch (with its CBFE, if any) and its head; nothing of other exits or of the fusion. It
        keeps this net's train/eval mode: call ``.eval()`` before exporting it.

        Args:
            exit: one of :attr:`exits`.
            share_weights: reuse this net's modules instead of copying them (cheap; for
                inspection and cost counting, where nobody trains or mutates either model).

        Returns:
            An :class:`ExitModel` whose ``forward(x)`` returns the exit's logits; it works with
            ``torch.jit.trace`` and ``torch.jit.script``.

        Raises:
            ConfigError: (a ``ValueError``) ``exit`` is not one of :attr:`exits`.
        """
        if exit not in self.exits:
            raise ConfigError(f"exit {exit!r} is not one of this network's exits: {', '.join(self.exits)}")
        n_stages = exit_stage(exit, len(self.stages))
        branch = self.branches[exit] if exit != FINAL else nn.Identity()
        model = ExitModel(self.stem, self.stages[:n_stages], branch, self.heads[exit])
        # The new containers start in train mode; take the mode of the ones they stand for.
        model.training, model.stages.training = self.training, self.stages.training
        return model if share_weights else copy.deepcopy(model)


class AllExitsModel(nn.Module):
    """Every exit of a network as one deployed model: trunk segments in depth order, each followed by
    its exit's head, so exit ``k``'s logits come out before the trunk goes on.

    What an anytime deployment is built from (its early-exit subclass skips what a sample no longer
    needs), and, run whole, its worst case: the model a budget bounds. The fusion module (training
    only) is left out.

    Args:
        net: the multi-exit network.
        share_weights: reuse ``net``'s modules instead of deep copies (for statistics and costs).

    Attributes:
        exits: exit names in depth order, the final exit last.
        stage_of: the stage (1-4) each exit follows.
        num_classes: width of the logits.
        trunk: one segment per exit: ``stem`` and ``stage1``..``stageS`` for the first exit, then
            the stages after the previous exit's stage up to this exit's.
        heads: per exit, its ``branch`` and ``head`` (only ``head`` for the final exit).
    """

    def __init__(self, net: SelfDistillNet, *, share_weights: bool = False) -> None:
        super().__init__()
        self.exits: tuple[str, ...] = tuple(net.exits)
        self.num_classes = net.num_classes
        n_stages = len(net.stages)
        self.stage_of: tuple[int, ...] = tuple(exit_stage(e, n_stages) for e in self.exits)
        segments, heads, done = [], [], 0
        for exit, stage in zip(self.exits, self.stage_of, strict=True):
            parts: list[tuple[str, nn.Module]] = [("stem", net.stem)] if done == 0 else []
            parts += [(f"stage{s + 1}", net.stages[s]) for s in range(done, stage)]
            segments.append(nn.Sequential(OrderedDict(parts)))
            parts = [("branch", net.branches[exit])] if exit != FINAL else []
            heads.append(nn.Sequential(OrderedDict([*parts, ("head", net.heads[exit])])))
            done = stage
        self.trunk = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        self.train(net.training)
        if not share_weights:
            self.trunk, self.heads = copy.deepcopy(self.trunk), copy.deepcopy(self.heads)

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits for every sample, in depth order: all exits run."""
        out = []
        for segment, head in zip(self.trunk, self.heads, strict=True):
            x = segment(x)
            out.append(head(x))
        return out

    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_exits(x)
