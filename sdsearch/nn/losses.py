"""The self-distillation loss: cross-entropy on every exit, KD from a teacher, feature hints, RSKD.

With alpha = ``kd_weight``, T = ``temperature`` and k = T² if ``kd_t2`` else 1:

``byot`` (BYOT, Zhang et al., "Be Your Own Teacher", ICCV 2019, https://arxiv.org/abs/1905.08094;
its eq. 1 weights every classifier's CE by 1 - alpha, the deepest included)::

    L = ce_weight · (1 - α) · Σ_exits CE(z_i, y) [+ ce_weight · (1 - α) · CE(z_f, y)]
        + α · k · Σ_students KL(softmax(z_t / T) ‖ softmax(z_i / T))
        + feature_weight · Σ_branch exits MSE(hint_i(G_i), F_t)
        + rskd_weight · Σ_students RSKD_i

``sd`` (SD, Zhang et al., TPAMI 2021, https://doi.org/10.1109/TPAMI.2021.3067100, as its public
code weights it): the deepest exit (and the fused head) keep the full CE, each shallow exit's CE
is scaled by (1 - α)::

    L = ce_weight · [CE(z_final, y) + (1 - α) · Σ_shallow CE(z_i, y) [+ CE(z_f, y)]]
        + α · k · Σ_students KL(...) + feature_weight · Σ MSE(...) + rskd_weight · Σ RSKD_i

The KD factor k: BYOT's eq. 1 has no T², nor has the SD code (its KD term is a soft cross-entropy
times alpha), so ``kd_t2`` is off for both styles. Hinton's T², which keeps the KD gradients' scale
as T changes, is the key's other value (an unofficial BYOT re-implementation uses it; sdsearch 0.2
always did for ``byot``).

The hint: ``adapter`` maps G_i through a 1×1 conv C_L -> C_L before the MSE (the SD code's
"adaptation layers"; it uses a linear layer on pooled features, the conv is our form for maps);
``byot`` compares G_i with F_t directly, BYOT's eq. 1: the bottleneck branch is the adaptation.

RSKD (Liu, Zhang, He, "Residual Learning for Self-Knowledge Distillation", IEEE Trans. Big Data
11(5):2615-2627, 2025). The paper's: the student's last feature layer learns the residual gap
between the outputs of the pseudo-teacher and the student, and, extended, each intermediate feature
layer learns the gap between the corresponding deeper features of pseudo-teacher and student. Our
reading (the full text was out of reach; the abstract settles no more):

- the pseudo-teacher is the configured teacher (deepest exit, fused head or ensemble);
- ``last``: per student exit i a residual head r_i = Linear(GAP(G_i)) on its last feature map (its
  branch output; F_L for the final exit when it is a student) regresses the detached logit gap:
  ``RSKD_i = MSE(r_i(G_i), z_t - z_i)``, so that z_i + r_i(G_i) ≈ z_t;
- ``all`` adds, per branch exit, a head q_i = Linear(GAP(F_s)) on the stage map F_s its branch
  reads (the intermediate layer), regressing the detached gap of the deeper features, pooled:
  ``MSE(q_i(F_s), GAP(F_t) - GAP(G_i))``;
- MSE, as the gap is a real-valued target.

The heads are owned by the loss, like the hint adapters: training only, never deployed or costed.

Teachers (their logits z_t and map F_t are always detached):

- ``deepest``: the final exit and F_L.
- ``fused``: the fusion head and the fused map (needs ``fusion.type != none``).
- ``ensemble``: the mean of all exits' logits, and F_L (*design*: an ensemble has no map of its own).

Students are the exits other than the teacher itself: every exit but ``final`` for ``deepest``,
every exit for ``fused`` and ``ensemble``. *design*: the fused head is never a KD student; it learns
from CE, and from the exits it fuses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdsearch.core.config import LossConfig
from sdsearch.core.errors import ConfigError
from sdsearch.core.exits import FINAL, exit_stage
from sdsearch.nn.elastic import ElasticNet
from sdsearch.nn.network import SDOutput, SelfDistillNet

__all__ = ["LossOutput", "SandwichLoss", "SelfDistillLoss", "ce_weights", "kd_loss", "students"]


@dataclass(frozen=True)
class LossOutput:
    """The total loss (backpropagate this) and its weighted parts ``ce``, ``kd``, ``feature``,
    ``rskd`` (detached, for logging; they sum to ``total``)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher / T) ‖ softmax(student / T))``, batch mean, without the T² factor.

    Both sides go through ``log_softmax`` (``log_target=True``): equal logits give exactly zero and
    large logits do not overflow.
    """
    return F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )


class SelfDistillLoss(nn.Module):
    """Self-distillation loss for one :class:`~sdsearch.nn.network.SelfDistillNet`.

    It owns the training-only modules the loss needs: the feature-hint adapters (a 1×1 conv
    C_L -> C_L per branch exit, with ``hint: adapter`` and ``feature_weight > 0``) and RSKD's
    residual heads (``rskd_weight > 0``), so optimise ``net.parameters()`` and ``loss.parameters()``
    together. None of them is deployed.

    Args:
        config: weights, temperature, teacher, style, hint and RSKD settings.
        net: the network whose outputs this loss takes (sizes the modules, checks the teacher).

    Raises:
        ValueError: ``teacher: fused`` on a network without fusion.
        ConfigError: ``hint: byot`` where a branch's map does not have the deepest map's shape.

    Example:
        >>> loss_fn = SelfDistillLoss(LossConfig(), net)
        >>> opt = torch.optim.SGD([*net.parameters(), *loss_fn.parameters()], lr=0.05)
        >>> loss_fn(net(x), y).total.backward()
    """

    def __init__(self, config: LossConfig, net: SelfDistillNet) -> None:
        super().__init__()
        if config.teacher == "fused" and net.fusion is None:  # a TrialConfig cannot hold this pair
            raise ValueError("loss.teacher: 'fused' needs a fusion head, but the network has none")
        self.config = config
        self.ce_weights = ce_weights(config, net.exits)
        self.exits = net.exits
        self.students = students(config.teacher, net.exits)
        p = next(net.parameters())
        dd = {"device": p.device, "dtype": p.dtype}
        chs = net.feature_info.channels()
        branch_exits = self.exits[:-1] if config.feature_weight > 0 else ()
        if config.hint == "byot":
            _check_byot_hint(net, branch_exits)
        self.adapters = nn.ModuleDict(
            {e: nn.Conv2d(chs[-1], chs[-1], 1, **dd) for e in branch_exits if config.hint == "adapter"}
        )
        self.hinted = branch_exits
        rskd = config.rskd_weight > 0
        self.residual_heads = nn.ModuleDict(
            {e: nn.Linear(chs[-1], net.num_classes, **dd) for e in self.students if rskd}
        )
        self.feature_gap_heads = nn.ModuleDict(
            {
                e: nn.Linear(chs[exit_stage(e) - 1], chs[-1], **dd)
                for e in self.students
                if rskd and config.rskd_layers == "all" and e != FINAL
            }
        )

    def batch_loss(self, net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> LossOutput:
        """Loss of one training batch: the network's forward pass, then :meth:`forward`."""
        return self(net(x), target)

    def forward(self, out: SDOutput, target: torch.Tensor) -> LossOutput:
        """Loss of one batch.

        Args:
            out: the network's output for the batch.
            target: class indices, shape (B,).
        """
        cfg = self.config
        w = self.ce_weights
        ce = sum(F.cross_entropy(z, target) * w[e] for e, z in out.logits.items())
        if out.fused_logits is not None:
            ce = ce + F.cross_entropy(out.fused_logits, target) * w["fused"]

        teacher_logits, teacher_map = self._teacher(out)
        zero = ce.new_zeros(())
        kd = zero
        if cfg.kd_weight > 0 and self.students:
            t = cfg.temperature
            kd = sum(kd_loss(out.logits[e], teacher_logits, t) for e in self.students)
            kd = cfg.kd_weight * (t * t if cfg.kd_t2 else 1.0) * kd
        feature = zero
        if self.hinted:  # BYOT's hint has no adapter: G_i itself meets the teacher map
            adapt = self.adapters
            feature = sum(
                F.mse_loss(adapt[e](out.features[e]) if e in adapt else out.features[e], teacher_map)
                for e in self.hinted
            )
            feature = cfg.feature_weight * feature
        rskd = zero
        if len(self.residual_heads) > 0:
            rskd = cfg.rskd_weight * self._rskd(out, teacher_logits, teacher_map)
        total = ce + kd + feature + rskd
        parts = {"ce": ce, "kd": kd, "feature": feature, "rskd": rskd}
        return LossOutput(total, {k: v.detach() for k, v in parts.items()})

    def _rskd(self, out: SDOutput, teacher_logits: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
        """RSKD's residual-gap regressions, summed over students (see the module docstring)."""
        total = sum(
            F.mse_loss(head(out.features[e].mean(dim=(2, 3))), (teacher_logits - out.logits[e]).detach())
            for e, head in self.residual_heads.items()
        )
        if len(self.feature_gap_heads) > 0:
            teacher_pooled = teacher_map.mean(dim=(2, 3))
            total = total + sum(
                F.mse_loss(
                    head(out.stage_features[e].mean(dim=(2, 3))),
                    (teacher_pooled - out.features[e].mean(dim=(2, 3))).detach(),
                )
                for e, head in self.feature_gap_heads.items()
            )
        return total

    def _teacher(self, out: SDOutput) -> tuple[torch.Tensor, torch.Tensor]:
        teacher = self.config.teacher
        if teacher == "fused":
            if out.fused_logits is None or out.fused_features is None:
                raise ValueError("loss.teacher: 'fused' needs the network's fused outputs, but they are None")
            return out.fused_logits.detach(), out.fused_features.detach()
        final_map = out.features[FINAL].detach()
        if teacher == "ensemble":
            mean = torch.stack([out.logits[e] for e in self.exits]).mean(dim=0)
            return mean.detach(), final_map
        return out.logits[FINAL].detach(), final_map


class SandwichLoss(nn.Module):
    """The sandwich rule of slimmable training (Yu & Huang, ICCV 2019) for an :class:`ElasticNet`.

    Per batch: the widest network under the self-distillation loss, then the narrowest width and
    one random width between them (none with two widths), each *distilled in place*: every exit of
    the narrower network learns the widest network's same exit, ``KL(softmax(z_wide) ‖
    softmax(z_m))`` at temperature 1, the teacher detached, no labels (the paper's soft targets;
    at T = 1 KL and its soft cross-entropy differ by a constant). The part ``inplace`` is their sum.

    Args:
        config: the widest network's loss.
        net: the elastic network (its widest network sizes the self-distillation loss).
        inplace: distil the narrower widths from the widest one (the method); False trains them on
            the labels instead (cross-entropy on every exit, part ``narrow_ce``): the ablation that
            shows what in-place distillation adds.
    """

    def __init__(self, config: LossConfig, net: ElasticNet, *, inplace: bool = True) -> None:
        super().__init__()
        self.widest = SelfDistillLoss(config, net.net)
        self.multipliers = net.multipliers
        self.inplace = inplace

    def batch_loss(self, net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> LossOutput:
        """Loss of one training batch at the sandwich's widths (the random one from torch's generator)."""
        wide_out = net(x)
        wide = self.widest(wide_out, target)
        teacher = {e: z.detach() for e, z in wide_out.logits.items()}
        narrow = wide.total.new_zeros(())
        for m in self.sandwich():
            out = net(x, width=m)
            if self.inplace:
                narrow = narrow + sum(kd_loss(z, teacher[e], 1.0) for e, z in out.logits.items())
            else:
                narrow = narrow + sum(F.cross_entropy(z, target) for z in out.logits.values())
        part = "inplace" if self.inplace else "narrow_ce"
        return LossOutput(wide.total + narrow, {**wide.parts, part: narrow.detach()})

    def sandwich(self) -> list[float]:
        """The narrower widths of one step: the narrowest, and one drawn from those in between."""
        narrower = self.multipliers[1:]
        if len(narrower) <= 1:
            return list(narrower)
        middle = narrower[:-1]
        return [narrower[-1], middle[int(torch.randint(len(middle), ()))]]


def students(teacher: str, exits: tuple[str, ...]) -> tuple[str, ...]:
    """The exits a teacher teaches: all but the final exit for ``deepest``, every exit otherwise."""
    return exits[:-1] if teacher == "deepest" else exits


def _check_byot_hint(net: SelfDistillNet, exits: tuple[str, ...]) -> None:
    """BYOT's hint compares G_i with the teacher map as they are: each branch must yield (C_L, H_L, W_L).

    The built-in branches always do; a registered one may not. Probed on the meta device (no compute).
    """
    chs, sizes = net.feature_info.channels(), net.feature_sizes
    want = (chs[-1], *sizes[-1])
    for e in exits:
        stage = exit_stage(e) - 1
        probe = copy.deepcopy(net.branches[e]).to("meta").eval()
        got = tuple(probe(torch.empty(1, chs[stage], *sizes[stage], device="meta")).shape[1:])
        if got != want:
            raise ConfigError(
                f"'byot' compares each branch's map with the deepest map, but the {net.config.branches.style!r} "
                f"branch of exit {e} gives {'x'.join(map(str, got))}, not {'x'.join(map(str, want))}; "
                "use hint: adapter, or a branch style that ends at the deepest map's shape",
                key="loss.hint",
            )


def ce_weights(config: LossConfig, exits: tuple[str, ...]) -> dict[str, float]:
    """The cross-entropy weight of every exit and of the fused head (key ``fused``) for a loss style."""
    keep = 1.0 - config.kd_weight
    if config.style == "byot":
        weights = dict.fromkeys((*exits, "fused"), keep)
    else:  # sd: shallow exits keep 1 - alpha, the deepest exit and the fused head the full CE
        weights = {e: (1.0 if e == FINAL else keep) for e in exits} | {"fused": 1.0}
    return {e: config.ce_weight * w for e, w in weights.items()}
