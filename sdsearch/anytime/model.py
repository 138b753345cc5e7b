"""The anytime model: one multi-exit network that stops at the first confident exit, per image.

:class:`AnytimeModel` runs a trained :class:`~sdsearch.nn.network.SelfDistillNet` as its trunk
segments and exit heads (:class:`~sdsearch.nn.network.AllExitsModel`), so that a sample that has
left never runs the rest of the trunk. :func:`exit_statistics` records every exit's confidence and correctness in one pass, which is
what the policy and calibration in :mod:`sdsearch.anytime.policy` work on; :func:`anytime_cost`
counts the MACs of every segment and head with :func:`sdsearch.cost.trace.module_cost`.

Example:
    >>> stats = exit_statistics(net, data.x_val, data.y_val, mean=data.mean, std=data.std)  # doctest: +SKIP
    >>> cost = anytime_cost(net, input_shape=(1, 8, 8))                                    # doctest: +SKIP
    >>> model = AnytimeModel(net, calibrate(stats, cost, accuracy_drop=0.005).thresholds)    # doctest: +SKIP
    >>> logits, exit_index = model(x)                                                       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sdsearch.anytime.policy import AnytimeCost, Calibration, ExitStats, _ordered, _thresholds, calibrate
from sdsearch.core.config import DEFAULT_ANYTIME_TARGET
from sdsearch.cost.trace import module_cost
from sdsearch.nn.network import AllExitsModel, SelfDistillNet
from sdsearch.training.fit import EVAL_BATCH_SIZE, eval_loader, strict_float32

__all__ = ["AnytimeModel", "anytime_cost", "calibrate_network", "exit_confidence", "exit_statistics"]


def exit_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability per row, in float32: the confidence every anytime decision uses."""
    return torch.softmax(logits.float(), dim=1).amax(dim=1)


class AnytimeModel(AllExitsModel):
    """A multi-exit network that returns, per sample, the logits of the first confident exit.

    Exits run in depth order. At shallow exit ``k`` a sample leaves when its confidence (max
    softmax probability, :func:`exit_confidence`) is strictly greater than ``thresholds[k]``; a
    sample no shallow exit was confident about leaves at the final exit. Only the samples still in
    flight continue through the trunk, so a batch costs what its samples cost one by one. Use it in
    eval mode (``.eval()``), as any deploy model: in train mode BatchNorm would see sub-batches.

    Invariants: deterministic; equal to :func:`~sdsearch.anytime.policy.exit_indices` on the
    confidences of :meth:`forward_exits` (every exit's logits, the worst case); the logits of a
    sample are those of the deploy model of the exit it left at (``SelfDistillNet.deploy(exit)``,
    same modules, same order of operations).

    Args:
        net: the trained multi-exit network (its fusion module, training only, is left out).
        thresholds: one per shallow exit, in depth order or keyed by exit name; stored as float32.
        share_weights: reuse ``net``'s modules instead of deep copies (for statistics and costs).

    Attributes:
        thresholds: float32 buffer, one per shallow exit (the rest is
            :class:`~sdsearch.nn.network.AllExitsModel`'s: ``exits``, ``stage_of``, ``trunk``, ``heads``).

    Raises:
        ConfigError: (a ``ValueError``) not one threshold per shallow exit, or one outside [0, 1].
    """

    def __init__(
        self,
        net: SelfDistillNet,
        thresholds: Sequence[float] | Mapping[str, float],
        *,
        share_weights: bool = False,
    ) -> None:
        super().__init__(net, share_weights=share_weights)
        t = _thresholds(_ordered(thresholds, self.exits), len(self.exits))
        self.register_buffer("thresholds", torch.from_numpy(t.copy()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, num_classes)`` of the exit each sample left at, and that exit's index ``(B,)``."""
        b = x.shape[0]
        last = len(self.exits) - 1
        index = torch.full((b,), last, dtype=torch.int64, device=x.device)
        logits: torch.Tensor | None = None
        active = torch.arange(b, device=x.device)
        h = x
        for k, (segment, head) in enumerate(zip(self.trunk, self.heads, strict=True)):
            if active.numel() == 0:
                break
            h = segment(h)
            z = head(h)
            if logits is None:
                logits = z.new_empty((b, z.shape[1]))
            if k == last:
                logits[active] = z
                break
            stop = exit_confidence(z) > self.thresholds[k]
            logits[active[stop]] = z[stop]
            index[active[stop]] = k
            active, h = active[~stop], h[~stop]
        if logits is None:  # an empty batch
            logits = x.new_empty((0, self.num_classes), dtype=torch.float32)
        return logits, index


def anytime_cost(net: SelfDistillNet, *, input_shape: tuple[int, int, int]) -> AnytimeCost:
    """MACs of every trunk segment and exit head of ``net``, counted on the meta device.

    Each piece is counted with :func:`sdsearch.cost.trace.module_cost` (conv and linear MACs, meta
    stand-ins for the weights, so a trained network is neither read nor changed and a network built
    on ``device="meta"`` works too). Trunk segments are counted as differences of cumulative trunks
    (stem + stages up to each exit's stage), so their sum is the whole trunk exactly and
    ``AnytimeCost.deploy`` equals :func:`sdsearch.cost.trace.deploy_cost` of every exit.

    Args:
        net: the multi-exit network.
        input_shape: ``(C, H, W)`` of one input image.

    Example:
        >>> net = SelfDistillNet(ModelConfig(), num_classes=10, in_chans=1, input_size=(8, 8), device="meta")  # doctest: +SKIP
        >>> anytime_cost(net, input_shape=(1, 8, 8)).worst_case                                               # doctest: +SKIP
    """
    model = AllExitsModel(net, share_weights=True)
    cumulative = [
        module_cost(nn.Sequential(*model.trunk[: k + 1]), tuple(input_shape)).macs
        for k in range(len(model.exits))
    ]
    trunk = [cumulative[0], *np.diff(cumulative).tolist()]
    branch = []
    for k, stage in enumerate(model.stage_of):
        shape = (net.feature_info.channels()[stage - 1], *net.feature_sizes[stage - 1])
        branch.append(module_cost(model.heads[k], shape).macs)
    params = sum(p.numel() for p in model.parameters())
    return AnytimeCost(
        exits=model.exits, trunk=tuple(int(v) for v in trunk), branch=tuple(branch), params=params
    )


def calibrate_network(net: SelfDistillNet, data: Any, target: Any = None) -> tuple[Calibration, AnytimeCost]:
    """Thresholds for ``target`` (an ``AnytimeTarget``; None: the default accuracy drop) calibrated
    on ``data``'s validation split, and the network's per-exit MACs: what a trial and
    ``sdsearch train`` both do after training."""
    goal = (target or DEFAULT_ANYTIME_TARGET).to_dict()
    net.eval()
    stats = exit_statistics(net, data.x_val, data.y_val, mean=data.mean, std=data.std)
    cost = anytime_cost(net, input_shape=(data.shape.in_chans, *data.shape.input_size))
    return calibrate(stats, cost, **{k: v for k, v in goal.items() if v is not None}), cost


@torch.no_grad()
def exit_statistics(
    net: SelfDistillNet,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = EVAL_BATCH_SIZE,
    device: torch.device | str | None = None,
) -> ExitStats:
    """Every exit's confidence and correctness on uint8 images, from one batched eval pass.

    Runs the trunk once per batch and every exit head on it (no fusion), in eval mode and float32
    (what deployment runs); ``net``'s train/eval mode is restored afterwards.

    Args:
        net: the trained multi-exit network; it is moved to ``device`` (default: where it is).
        x, y: uint8 images ``(N, C, H, W)`` and labels, e.g. ``data.x_val, data.y_val``.
        mean, std: normalisation of the training split (``Dataset.mean`` / ``.std``).
        batch_size: images per batch.

    Example:
        >>> stats = exit_statistics(net, data.x_val, data.y_val, mean=data.mean, std=data.std)  # doctest: +SKIP
        >>> stats.exit_accuracy                                                               # doctest: +SKIP
        {'1': 0.93, '2': 0.95, '3': 0.96, 'final': 0.97}
    """
    loader = eval_loader(net, x, y, mean=mean, std=std, batch_size=batch_size, device=device)
    if loader.num_samples == 0:
        raise ValueError("cannot collect exit statistics on an empty split")
    was_training = net.training
    model = AnytimeModel(net, [1.0] * (len(net.exits) - 1), share_weights=True).eval()
    confidence, correct = [], []
    # Thresholds sit near 1.0, so confidences must be the float32 ones deployment computes (no TF32).
    try:
        with strict_float32(loader.device):
            for xb, yb in loader:
                logits = model.forward_exits(xb)
                confidence.append(torch.stack([exit_confidence(z) for z in logits], dim=1).cpu())
                correct.append(torch.stack([z.argmax(dim=1) == yb for z in logits], dim=1).cpu())
    finally:
        net.train(was_training)
    return ExitStats(
        exits=model.exits,
        confidence=torch.cat(confidence).numpy(),
        correct=torch.cat(correct).numpy(),
    )
