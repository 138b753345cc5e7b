"""The preprocessing every deployed graph starts with: uint8 pixels ``(N, H, W, C)`` in, the
network's normalised float ``(N, C, H, W)`` out, exactly as the training loader computes it.

Example:
    >>> model = PixelModel(net.deploy("final"), mean=data.mean, std=data.std).eval()   # doctest: +SKIP
    >>> model(torch.zeros(1, 8, 8, 1, dtype=torch.uint8)).shape                        # doctest: +SKIP
    torch.Size([1, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["PixelModel", "Preprocess", "normalise"]


def _affine(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / 255 - mean) / std == x * scale + shift``; both ``(1, C, 1, 1)``, as the loader computes them."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def normalise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NCHW images as the network sees them: float32 ``(x / 255 - mean) / std``."""
    scale, shift = _affine(mean, std)
    return x.astype(np.float32) * scale.numpy() + shift.numpy()


class Preprocess(nn.Module):
    """uint8 pixels ``(N, H, W, C)`` -> the network's input: float ``(N, C, H, W)``, ``(x / 255 - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        scale, shift = _affine(mean, std)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.permute(0, 3, 1, 2).float() * self.scale + self.shift


class PixelModel(nn.Module):
    """A deploy module behind :class:`Preprocess`: uint8 NHWC pixels in, logits out."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.preprocess = Preprocess(mean, std)
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(pixels))
