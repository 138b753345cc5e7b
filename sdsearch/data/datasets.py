"""Datasets as records: every source becomes the same in-memory :class:`Dataset`, split and checked.

A :class:`Dataset` holds NUMPY arrays (uint8 NCHW images, int64 labels) for the train, validation and
test splits. Numpy rather than tensors so that Ray's object store can share one copy zero-copy
between all trials of a study (``ray.put`` of a numpy array is mapped read-only into every worker),
and so that this module imports neither torch nor torchvision: :func:`describe` is called by the
search to cost configs before anything is trained, and must stay cheap to import and to call.

The sources themselves (digits, torchvision sets, npz files, image folders) are
:mod:`sdsearch.data.sources`, named in the dataset registry. Batches, augmentation and
normalisation happen on the training device, in :mod:`sdsearch.data.loader`.

The validation split is carved from the training data, stratified and seeded by the trial seed; the
test split is fixed (the dataset's own, or for ``digits`` a fixed stratified hold-out) and never seen
during search. A final run (``load_dataset(..., full=True)``) trains on the whole training part,
validation images included.

Example:
    >>> from sdsearch.core.config import DataConfig
    >>> data = load_dataset(DataConfig(dataset="digits"), seed=0)
    >>> data.shape
    DataShape(in_chans=1, height=8, width=8, num_classes=10)
    >>> describe(DataConfig(dataset="digits")) == data.shape
    True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from sdsearch.core.config import DataConfig
from sdsearch.core.errors import DataError
from sdsearch.core.registry import DATASETS, resolve

__all__ = [
    "AugmentPolicy",
    "DataShape",
    "Dataset",
    "augment_policy",
    "describe",
    "load_dataset",
    "stratified_split",
]


@dataclass(frozen=True)
class DataShape:
    """What a network needs to know about a dataset: input channels, size and classes."""

    in_chans: int
    height: int
    width: int
    num_classes: int

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)``, as ``SelfDistillNet(input_size=...)`` takes it."""
        return (self.height, self.width)


@dataclass(frozen=True, eq=False)
class Dataset:
    """All three splits of a dataset in memory, plus what training needs to normalise them.

    Images are uint8 NCHW and labels int64; ``mean`` and ``std`` are per channel, in units of the
    image scaled to [0, 1], computed on the training split *after* the validation split was carved,
    so validation never leaks into normalisation. ``train_index`` and ``val_index`` are the
    positions in the dataset's original training set (sorted; disjoint unless ``val_held_out`` is False).

    ``val_held_out`` is False for a final run on all the data (``load_dataset(..., full=True)``):
    the training split then holds every training image, the validation images included (and its
    statistics), and accuracy on ``x_val`` is accuracy on images trained on, not a held-out estimate.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: DataShape
    train_index: np.ndarray
    val_index: np.ndarray
    classes: tuple[str, ...] | None = None
    val_held_out: bool = True

    @property
    def nbytes(self) -> int:
        """Bytes of all image and label arrays (what the object store and a device copy hold)."""
        arrays = (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test)
        return sum(a.nbytes for a in arrays)


@dataclass(frozen=True)
class AugmentPolicy:
    """Resolved augmentation: random crop with ``pad`` pixels of zero padding (0: none) and flips."""

    pad: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip


def augment_policy(augment: str, dataset: str, input_size: tuple[int, int]) -> AugmentPolicy:
    """Resolve ``augment: auto|none|crop|crop_flip`` for a dataset.

    ``auto`` means crop for every dataset and flips only where mirror images are still the same
    class (the dataset registry's ``flips``: a flipped 3 is not a 3, so digits, mnist and svhn only
    get crops). The crop padding scales with the image: 1 pixel for 8x8 digits, 4 for 32x32 (the
    CIFAR convention), ``min(H, W) // 8`` in general.
    """
    if augment == "none":
        return AugmentPolicy()
    pad = max(1, min(input_size) // 8)
    if augment == "auto":
        return AugmentPolicy(pad=pad, flip=DATASETS.get(dataset).flips)
    return AugmentPolicy(pad=pad, flip=augment == "crop_flip")


# --------------------------------------------------------------------------------------------------
# Public entry points.


def describe(cfg: DataConfig) -> DataShape:
    """Shape and class count of a dataset without loading it.

    Cheap by construction: a fixed table for the torchvision datasets and digits, the array headers
    (plus the small label or ``classes`` arrays) for npz, and one image plus a folder count for
    imagefolder. The search calls this to cost every sampled config before training.

    Raises:
        DataError: an npz or imagefolder dataset is missing or malformed.
    """
    spec = DATASETS.get(cfg.dataset)
    if spec.shape is not None:
        return DataShape(*spec.shape)
    return resolve(spec.describe)(cfg)


def load_dataset(cfg: DataConfig, *, seed: int, full: bool = False) -> Dataset:
    """Load a dataset and carve a stratified, seeded validation split from its training part.

    Args:
        cfg: which dataset and where it lives (``data:`` of a space or trainer config).
        seed: seeds the validation split; the same seed always gives the same split.
        full: train on the whole training part (the final run, once the search has chosen): the
            training split keeps the validation images too, and ``val_held_out`` is False.

    Returns:
        The three splits as numpy arrays, with normalisation statistics of the training split.

    Raises:
        DataError: the dataset is missing (the message names the key to set and how to get it),
            unreadable, cannot be learned (fewer than two classes, a class without training
            images, labels beyond the classes, test classes the training split lacks), or too small
            to stratify. Checked here so that ``sdsearch run`` refuses it before creating a study
            and ``sdsearch train`` before training.

    Example:
        >>> data = load_dataset(DataConfig(dataset="digits", val_fraction=0.2), seed=0)
        >>> data.x_train.dtype, data.x_train.shape[1:]
        (dtype('uint8'), (1, 8, 8))
    """
    x, y, x_test, y_test, classes = resolve(DATASETS.get(cfg.dataset).loader)(cfg)
    num_classes = len(classes) if classes is not None else int(max(y.max(), y_test.max())) + 1
    _check_learnable(cfg, y, y_test, num_classes, classes)
    train_index, val_index = stratified_split(y, cfg.val_fraction, seed=seed, key="data.val_fraction")
    if full:
        train_index = np.arange(len(y))
    x_train, y_train = x[train_index], y[train_index]
    mean, std = _channel_stats(x_train)
    shape = DataShape(int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), num_classes)
    return Dataset(
        name=cfg.dataset,
        x_train=x_train,
        y_train=y_train,
        x_val=x[val_index],
        y_val=y[val_index],
        x_test=x_test,
        y_test=y_test,
        mean=mean,
        std=std,
        shape=shape,
        train_index=train_index,
        val_index=val_index,
        classes=classes,
        val_held_out=not full,
    )


# --------------------------------------------------------------------------------------------------
# Can it be learned?


def _check_learnable(
    cfg: DataConfig, y: np.ndarray, y_test: np.ndarray, num_classes: int, classes: tuple[str, ...] | None
) -> None:
    """Refuse a dataset no classifier can learn, naming the key that points at it.

    Raise = invalid: labels beyond the classes, fewer than two classes, test labels the training
    split lacks, a class without training images (which covers fewer images than classes). Warn =
    valid but probably unintended: training classes the test split lacks (their test accuracy is
    not measured).
    """
    where = _where(cfg)

    def names(labels: np.ndarray | list[int]) -> str:
        shown = [classes[i] if classes is not None else str(i) for i in list(labels)[:5]]
        more = len(labels) - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

    for split, labels in (("training", y), ("test", y_test)):
        if len(labels) and int(labels.max()) >= num_classes:
            raise DataError(
                f"{where}: the {split} split has label {int(labels.max())} but there are {num_classes} "
                f"classes ({names(list(range(num_classes)))}); labels must be 0 to {num_classes - 1}"
            )
    seen = np.unique(y)
    if len(seen) < 2:
        only = f" ({names(seen)})" if len(seen) else ""
        raise DataError(
            f"{where}: the training split has {len(y)} images of {len(seen)} class{only}; "
            "a classifier needs images of at least 2 classes"
        )
    unknown = sorted(set(np.unique(y_test).tolist()) - set(seen.tolist()))
    if unknown:
        raise DataError(
            f"{where}: the test split has images of {len(unknown)} class(es) that the training split "
            f"has none of ({names(unknown)}); both splits must hold the same classes"
        )
    empty = sorted(set(range(num_classes)) - set(seen.tolist()))
    if empty:
        raise DataError(
            f"{where}: the training split has {len(y)} images for {num_classes} classes, and "
            f"{len(empty)} of them ({names(empty)}) have none; give every class training images"
            + (" or remove its folder" if cfg.dataset == "imagefolder" else "")
        )
    untested = sorted(set(seen.tolist()) - set(np.unique(y_test).tolist()))
    if untested:
        warnings.warn(
            f"{where}: the test split has no images of {len(untested)} class(es) ({names(untested)}); "
            "their test accuracy is not measured",
            UserWarning,
            stacklevel=3,
        )


def _where(cfg: DataConfig) -> str:
    """``data.<key>: <value>`` of the key that locates a dataset (the registry's required key)."""
    key = next(iter(DATASETS.get(cfg.dataset).requires), None)
    if key is None:
        return f"data.dataset: {cfg.dataset}"
    return f"data.{key}: {getattr(cfg, key)}"


# --------------------------------------------------------------------------------------------------
# Splits and statistics.


def stratified_split(y: np.ndarray, fraction: float, *, seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    try:
        keep, held = train_test_split(
            index, test_size=fraction, stratify=y, random_state=seed % 2**32, shuffle=True
        )
    except ValueError as exc:  # too few samples of some class, or a split smaller than the classes
        counts = np.bincount(y)
        raise DataError(
            f"{key}: cannot carve a stratified split of {fraction} from {len(y)} samples "
            f"(smallest class has {counts[counts > 0].min()}): {exc}"
        ) from None
    return np.sort(keep), np.sort(held)


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images in [0, 1] units, in float64 chunks.

    Chunked so a 50k-image set does not need a float64 copy of itself (1.2 GB for CIFAR).
    """
    c = x.shape[1]
    total = np.zeros(c)
    squares = np.zeros(c)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)  # a constant channel: normalise by 1, not by 0
    return tuple(float(v) / 255.0 for v in mean), tuple(float(v) / 255.0 for v in std)
