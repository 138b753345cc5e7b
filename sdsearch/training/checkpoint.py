"""Checkpoints: a training network's weights with the config that builds it, one format for every writer.

``sdsearch train`` writes one beside the model it deploys, and every search trial that completes leaves
one in its study's folder (``store.attrs.CHECKPOINT``), which ``sdsearch train --from-study`` deploys
without retraining.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdsearch.core.files import write_atomic

if TYPE_CHECKING:
    import torch

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

#: The ``format`` field of every checkpoint sdsearch writes.
CHECKPOINT_FORMAT = "sdsearch-checkpoint/1"
PathLike = str | os.PathLike[str]


def save_checkpoint(
    path: PathLike, *, state_dict: dict[str, Any], config: dict[str, Any], **extra: Any
) -> Path:
    """Save a training network's ``state_dict`` with the config that builds it.

    Everything stored is tensors or plain Python values, so :func:`load_checkpoint` can use
    ``torch.load(weights_only=True)`` (no pickled code is ever executed on load).

    Args:
        path: file to write (conventionally ``checkpoint.pt``).
        state_dict: ``net.state_dict()`` (tensors are moved to CPU).
        config: ``TrialConfig.to_dict()``.
        **extra: more plain values, e.g. ``loss_state_dict``, ``mean``, ``std``, ``shape``.
    """
    import torch

    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **extra,
    }
    buffer = (
        io.BytesIO()
    )  # torch.save to a path leaves a truncated file and a bare RuntimeError on a full disk
    torch.save(payload, buffer)
    return write_atomic(path, buffer.getvalue())


def load_checkpoint(path: PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Example:
        >>> ckpt = load_checkpoint("runs/best/checkpoint.pt")                       # doctest: +SKIP
        >>> cfg = TrialConfig.from_dict(ckpt["config"])                           # doctest: +SKIP
        >>> net = SelfDistillNet(cfg.model, num_classes=10); net.load_state_dict(ckpt["state_dict"])  # doctest: +SKIP

    Raises:
        ValueError: the file is not an sdsearch checkpoint.
    """
    import torch

    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an sdsearch checkpoint (expected format {CHECKPOINT_FORMAT})")
    return payload
