"""Tensor-resident batches with batched, on-device augmentation.

Small vision sets (CIFAR: 150 MB as uint8) fit in the memory of any training device many times over,
so :class:`DeviceLoader` keeps the whole split there as uint8 and builds every batch with a handful
of tensor ops: a seeded permutation, one ``index_select``, a random crop-with-padding and horizontal
flip done as two ``gather`` calls for the whole batch, and one fused normalisation. There is no
per-sample Python, no worker process and no host-to-device copy per step, which is what makes a
torch ``DataLoader`` with per-sample transforms the bottleneck for small models.

Placement (documented threshold): on CPU the split is always used in place (``torch.from_numpy``
shares the numpy memory, including a read-only array mapped from Ray's object store). On CUDA it is
copied to the device when it takes at most :data:`RESIDENT_FRACTION` of the device's free memory;
otherwise it stays in (pinned) host memory and each uint8 batch is gathered there and copied to the
device, where augmentation and normalisation still run batched.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sdsearch.data.datasets import AugmentPolicy

__all__ = [
    "RESIDENT_FRACTION",
    "DeviceLoader",
    "crop_flip",
    "fits_on_device",
    "random_crop_flip",
    "single_thread",
]

#: A split is kept on a CUDA device when its uint8 bytes are at most this share of free device
#: memory; the rest is left for the model, activations and other trials sharing the GPU.
RESIDENT_FRACTION = 0.25


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread, then restore the thread count.

    Batch building is a few memory-bound ops on ~0.4 MB tensors. Splitting them over OpenMP threads
    gains little, and when the cores are shared (concurrent trials, other jobs) every parallel op
    waits at a barrier for a descheduled thread: measured on a loaded 2-core machine, 5k images/s
    with 2 threads against 35k+ with 1. The model's convolutions keep all threads.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of data should live on ``device`` (always on CPU; see module docstring)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_FRACTION * free


def crop_flip(
    x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, *, pad: int
) -> torch.Tensor:
    """Crop each image of ``x`` from its zero-padded copy at given offsets, mirroring where ``flip``.

    Sample ``i`` of the result is ``F.pad(x, [pad] * 4)[i, :, oy[i]:oy[i] + H, ox[i]:ox[i] + W]``,
    reversed along the width where ``flip[i]``. Done as two ``torch.gather`` calls (rows, then
    columns) over the padded batch; the flip is folded into the column index, so it costs nothing.

    Args:
        x: images ``(B, C, H, W)`` of any dtype (uint8 is cheapest: augment before normalising).
        oy, ox: offsets in ``[0, 2 * pad]``, shape ``(B,)``, on ``x.device``.
        flip: booleans ``(B,)`` on ``x.device``.
        pad: zero padding on every side; 0 means no crop (then ``oy``, ``ox`` must be 0).
    """
    b, c, h, w = x.shape
    rows = oy[:, None] + torch.arange(h, device=x.device)
    ar = torch.arange(w, device=x.device)
    cols = ox[:, None] + torch.where(flip[:, None], w - 1 - ar, ar)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    x = torch.gather(x, 2, rows[:, None, :, None].expand(b, c, h, x.shape[3]))
    return torch.gather(x, 3, cols[:, None, None, :].expand(b, c, h, w))


def random_crop_flip(
    x: torch.Tensor, policy: AugmentPolicy, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply ``policy`` to a batch with per-sample random offsets and flips from ``generator``.

    Random numbers are drawn on the CPU generator and moved to ``x.device``, so a seed gives the same
    augmentation on every device.
    """
    if not policy.active:
        return x
    b = x.shape[0]
    span = 2 * policy.pad + 1
    oy = torch.randint(0, span, (b,), generator=generator)
    ox = torch.randint(0, span, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5 if policy.flip else torch.zeros(b, dtype=torch.bool)
    dev = x.device
    return crop_flip(x, oy.to(dev), ox.to(dev), flip.to(dev), pad=policy.pad)


class DeviceLoader:
    """Iterate over normalised float batches of a uint8 NCHW split kept on the training device.

    Each ``iter()`` is one epoch; the shuffle order and augmentation come from one seeded
    ``torch.Generator`` that carries over between epochs, so a seed fixes the whole run.

    Args:
        x: uint8 images ``(N, C, H, W)``, numpy or tensor.
        y: integer labels ``(N,)``.
        batch_size: images per batch.
        mean, std: per-channel statistics in [0, 1] units (``Dataset.mean`` / ``.std``).
        device: where batches are produced (default CPU).
        shuffle: a new permutation every epoch.
        policy: augmentation (crop padding and flips); None for evaluation.
        drop_last: drop a final partial batch (training, so BatchNorm never sees a tiny batch);
            a split smaller than one batch still gives one batch.
        seed: seeds shuffling and augmentation.
        channels_last: return batches in channels-last memory format (faster convolutions on CUDA and CPU).
        resident: force the placement; None decides with :func:`fits_on_device`.
    """

    def __init__(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str | None = None,
        shuffle: bool = False,
        policy: AugmentPolicy | None = None,
        drop_last: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        resident: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        xt, yt = _as_tensor(x), _as_tensor(y).long()
        if xt.dtype != torch.uint8 or xt.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {xt.dtype} {tuple(xt.shape)}")
        if len(xt) != len(yt):
            raise ValueError(f"{len(xt)} images but {len(yt)} labels")
        self.resident = fits_on_device(xt.nbytes, self.device) if resident is None else resident
        if self.resident:
            xt, yt = xt.to(self.device), yt.to(self.device)
        elif self.device.type == "cuda":
            xt = xt.pin_memory()
        self.x, self.y = xt, yt
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.policy = policy or AugmentPolicy()
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        c = xt.shape[1]
        # (x / 255 - mean) / std  ==  x * scale + shift: one fused addcmul per batch.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        n = self.num_samples
        if n == 0:
            return 0
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        steps = len(self)
        for step in range(steps):
            start = step * self.batch_size
            stop = n if (step == steps - 1 and not self.drop_last) else min(start + self.batch_size, n)
            yield self._batch(start, stop, order)

    def _batch(self, start: int, stop: int, order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type != "cpu":
            return self._build(start, stop, order)
        with single_thread():
            return self._build(start, stop, order)

    def _build(self, start: int, stop: int, order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if order is None:
            xb, yb = self.x[start:stop], self.y[start:stop]
        else:
            idx = order[start:stop]
            if self.resident:
                idx = idx.to(self.device, non_blocking=True)
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
        if not self.resident:
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
        xb = random_crop_flip(xb, self.policy, self.generator)
        xb = torch.addcmul(self._shift, xb.float(), self._scale)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, yb


def _as_tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    with warnings.catch_warnings():
        # Arrays shared through Ray's object store are read-only. The loader only ever reads them
        # (index_select and slicing copy), so sharing the memory instead of copying it is safe.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(a))
