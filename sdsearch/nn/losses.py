"""The self-distillation loss: cross-entropy on every exit, KD from a teacher, feature hints.

With alpha = ``kd_weight`` and T = ``temperature``:

``byot`` (BYOT, Zhang et al., "Be Your Own Teacher", ICCV 2019, https://arxiv.org/abs/1905.08094;
its eq. 1 weights every classifier's CE by 1 - alpha, the deepest included)::

    L = ce_weight · (1 - α) · Σ_exits CE(z_i, y) [+ ce_weight · (1 - α) · CE(z_f, y)]
        + α · T² · Σ_students KL(softmax(z_t / T) ‖ softmax(z_i / T))
        + feature_weight · Σ_branch exits MSE(adapter_i(G_i), F_t)

``sd`` (SD, Zhang et al., TPAMI 2021, https://doi.org/10.1109/TPAMI.2021.3067100, as its public
code weights it): the deepest exit (and the fused head) keep the full CE, each shallow exit's CE
is scaled by (1 - α), and the KD term has no T² factor::

    L = ce_weight · [CE(z_final, y) + (1 - α) · Σ_shallow CE(z_i, y) [+ CE(z_f, y)]]
        + α · Σ_students KL(...) + feature_weight · Σ MSE(...)

*design*: the T² factor of ``byot`` is Hinton's, which keeps the KD gradients' scale as T changes
(the BYOT paper writes the KL term without it).

Teachers (their logits z_t and map F_t are always detached):

- ``deepest``: the final exit and F_L.
- ``fused``: the fusion head and the fused map (needs ``fusion.type != none``).
- ``ensemble``: the mean of all exits' logits, and F_L (*design*: an ensemble has no map of its own).

Students are the exits other than the teacher itself: every exit but ``final`` for ``deepest``,
every exit for ``fused`` and ``ensemble``. *design*: the fused head is never a KD student; it learns
from CE, and from the exits it fuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdsearch.core.config import LossConfig
from sdsearch.core.exits import FINAL
from sdsearch.nn.network import SDOutput, SelfDistillNet

__all__ = ["LossOutput", "SelfDistillLoss", "ce_weights", "kd_loss"]


@dataclass(frozen=True)
class LossOutput:
    """The total loss (backpropagate this) and its weighted parts ``ce``, ``kd``, ``feature``
    (detached, for logging; they sum to ``total``)."""

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

    It owns the feature-hint adapters (a 1×1 conv C_L -> C_L per branch exit, none when
    ``feature_weight == 0``), so optimise ``net.parameters()`` and ``loss.parameters()`` together.

    Args:
        config: weights, temperature, teacher and style.
        net: the network whose outputs this loss takes (sizes the adapters, checks the teacher).

    Raises:
        ValueError: ``teacher: fused`` on a network without fusion.

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
        p = next(net.parameters())
        chs = net.feature_info.channels()[-1]
        self.adapters = nn.ModuleDict(
            {
                e: nn.Conv2d(chs, chs, 1, device=p.device, dtype=p.dtype)
                for e in self.exits[:-1]
                if config.feature_weight > 0
            }
        )

    def forward(self, out: SDOutput, target: torch.Tensor) -> LossOutput:
        """Loss of one batch.

        Args:
            out: the network's output for the batch.
            target: class indices, shape (B,).
        """
        cfg = self.config
        sd = cfg.style == "sd"
        w = self.ce_weights
        ce = sum(F.cross_entropy(z, target) * w[e] for e, z in out.logits.items())
        if out.fused_logits is not None:
            ce = ce + F.cross_entropy(out.fused_logits, target) * w["fused"]

        teacher_logits, teacher_map, students = self._teacher(out)
        zero = ce.new_zeros(())
        kd = zero
        if cfg.kd_weight > 0 and students:
            t = cfg.temperature
            kd = sum(kd_loss(out.logits[e], teacher_logits, t) for e in students)
            kd = cfg.kd_weight * (1.0 if sd else t * t) * kd
        feature = zero
        if len(self.adapters) > 0:
            feature = sum(F.mse_loss(a(out.features[e]), teacher_map) for e, a in self.adapters.items())
            feature = cfg.feature_weight * feature
        total = ce + kd + feature
        return LossOutput(total, {"ce": ce.detach(), "kd": kd.detach(), "feature": feature.detach()})

    def _teacher(self, out: SDOutput) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        teacher = self.config.teacher
        if teacher == "fused":
            if out.fused_logits is None or out.fused_features is None:
                raise ValueError("loss.teacher: 'fused' needs the network's fused outputs, but they are None")
            return out.fused_logits.detach(), out.fused_features.detach(), self.exits
        final_map = out.features[FINAL].detach()
        if teacher == "ensemble":
            mean = torch.stack([out.logits[e] for e in self.exits]).mean(dim=0)
            return mean.detach(), final_map, self.exits
        return out.logits[FINAL].detach(), final_map, self.exits[:-1]


def ce_weights(config: LossConfig, exits: tuple[str, ...]) -> dict[str, float]:
    """The cross-entropy weight of every exit and of the fused head (key ``fused``) for a loss style."""
    keep = 1.0 - config.kd_weight
    if config.style == "byot":
        weights = dict.fromkeys((*exits, "fused"), keep)
    else:  # sd: shallow exits keep 1 - alpha, the deepest exit and the fused head the full CE
        weights = {e: (1.0 if e == FINAL else keep) for e in exits} | {"fused": 1.0}
    return {e: config.ce_weight * w for e, w in weights.items()}
