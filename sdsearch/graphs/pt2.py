"""``torch.export`` of an exit model behind its preprocessing: uint8 pixels in, logits out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sdsearch.graphs.preprocess import PixelModel

__all__ = ["export_pt2"]


def export_pt2(module: nn.Module, *, mean: Sequence[float], std: Sequence[float], input_shape: tuple[int, int, int]
               ) -> torch.export.ExportedProgram:  # fmt: skip
    """``torch.export`` of ``PixelModel(module)``: uint8 ``(N, H, W, C)`` pixels in, logits out, dynamic N.

    Example:
        >>> torch.export.save(export_pt2(deploy, mean=m, std=s, input_shape=(1, 8, 8)), "model.pt2")  # doctest: +SKIP
        >>> torch.export.load("model.pt2").module()(pixels)                                          # doctest: +SKIP
    """
    c, h, w = input_shape
    model = PixelModel(module, mean, std).eval()
    # Batch 2: export specialises a dimension whose example size is 1.
    example = torch.zeros(2, h, w, c, dtype=torch.uint8)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
