"""The self-distillation loss: cross-entropy on every exit, KD from a teacher, feature hints.

``L = ce_weight · Σ_exits CE(z_i, y) [+ ce_weight · CE(z_f, y)]
    + kd_weight · T² · Σ_students KL(softmax(z_t / T) ‖ softmax(z_i / T))
    + feature_weight · Σ_branch exits MSE(adapter_i(G_i), F_t)``

after BYOT (Zhang et al., "Be Your Own Teacher", ICCV 2019, https://arxiv.org/abs/1905.08094) and
SD (Zhang et al., TPAMI 2021, https://doi.org/10.1109/TPAMI.2021.3067100). ``style: sd`` is the SD
code's weighting: CE on the shallow (non-final) exits × 0.7 and no T² factor.

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

from sdsearch.config import LOSS_STYLES, TEACHERS, LossConfig
from sdsearch.errors import ConfigError
from sdsearch.nn.network import SDOutput, SelfDistillNet

__all__ = ["SD_SHALLOW_CE_SCALE", "LossOutput", "SelfDistillLoss", "kd_loss"]

#: ``style: sd`` scales CE on the shallow exits by this (the SD code's 1 - alpha, alpha = 0.3).
SD_SHALLOW_CE_SCALE = 0.7


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
        ConfigError: (a ``ValueError``) unknown teacher or style, ``teacher: fused`` on a network
            without fusion, or a negative weight or non-positive temperature.

    Example:
        >>> loss_fn = SelfDistillLoss(LossConfig(), net)
        >>> opt = torch.optim.SGD([*net.parameters(), *loss_fn.parameters()], lr=0.05)
        >>> loss_fn(net(x), y).total.backward()
    """

    def __init__(self, config: LossConfig, net: SelfDistillNet) -> None:
        super().__init__()
        if config.teacher not in TEACHERS:
            raise ConfigError(f"loss.teacher: {config.teacher!r} is not one of {', '.join(TEACHERS)}")
        if config.style not in LOSS_STYLES:
            raise ConfigError(f"loss.style: {config.style!r} is not one of {', '.join(LOSS_STYLES)}")
        if config.teacher == "fused" and net.fusion is None:
            raise ConfigError("loss.teacher: 'fused' needs a fusion head, but model.fusion.type is 'none'")
        if min(config.kd_weight, config.feature_weight, config.ce_weight) < 0 or config.temperature <= 0:
            raise ConfigError(
                "loss weights must be >= 0 and temperature > 0, but got "
                f"ce_weight={config.ce_weight}, kd_weight={config.kd_weight}, "
                f"feature_weight={config.feature_weight}, temperature={config.temperature}"
            )
        self.config = config
        self.exits = net.exits
        p = next(net.parameters())
        chs = net.feature_info[-1]["num_chs"]
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
        ce = sum(
            F.cross_entropy(z, target) * (SD_SHALLOW_CE_SCALE if sd and e != "final" else 1.0)
            for e, z in out.logits.items()
        )
        if out.fused_logits is not None:
            ce = ce + F.cross_entropy(out.fused_logits, target)
        ce = cfg.ce_weight * ce

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
                raise ConfigError(
                    "loss.teacher: 'fused' needs the network's fused outputs, but they are None"
                )
            return out.fused_logits.detach(), out.fused_features.detach(), self.exits
        final_map = out.features["final"].detach()
        if teacher == "ensemble":
            mean = torch.stack([out.logits[e] for e in self.exits]).mean(dim=0)
            return mean.detach(), final_map, self.exits
        return out.logits["final"].detach(), final_map, self.exits[:-1]
