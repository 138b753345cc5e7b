"""Dataset registry: every dataset becomes the same in-memory :class:`Dataset` record.

A :class:`Dataset` holds NUMPY arrays (uint8 NCHW images, int64 labels) for the train, validation and
test splits. Numpy rather than tensors so that Ray's object store can share one copy zero-copy
between all trials of a study (``ray.put`` of a numpy array is mapped read-only into every worker),
and so that this module imports neither torch nor torchvision: :func:`describe` is called by the
search to cost configs before anything is trained, and must stay cheap to import and to call.

Batches, augmentation and normalisation happen on the training device, in :mod:`sdsearch.loader`.

The validation split is carved from the training data, stratified and seeded by the trial seed; the
test split is fixed (the dataset's own, or for ``digits`` a fixed stratified hold-out) and never seen
during search. A final run (``load_dataset(..., full=True)``) trains on the whole training part,
validation images included.

Example:
    >>> from sdsearch.config import DataConfig
    >>> data = load_dataset(DataConfig(dataset="digits"), seed=0)
    >>> data.shape
    DataShape(in_chans=1, height=8, width=8, num_classes=10)
    >>> describe(DataConfig(dataset="digits")) == data.shape
    True
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdsearch.config import DataConfig
from sdsearch.errors import DataError
from sdsearch.registry import DATASETS, resolve

__all__ = [
    "DEFAULT_ROOT",
    "IMAGE_EXTENSIONS",
    "AugmentPolicy",
    "DataShape",
    "Dataset",
    "augment_policy",
    "describe",
    "load_dataset",
]

#: Where torchvision datasets go when ``download: true`` and no ``root`` is given.
DEFAULT_ROOT = "~/.cache/sdsearch/data"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

#: digits has no test split of its own: a fixed stratified hold-out (independent of the trial seed,
#: so every trial and ``sdsearch train`` see the same test images).
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0


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
    train_index, val_index = _stratified_split(y, cfg.val_fraction, seed=seed, key="data.val_fraction")
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


def _stratified_split(
    y: np.ndarray, fraction: float, *, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------------------------------
# Loaders: each returns (x_train, y_train, x_test, y_test, classes), images uint8 NCHW.

_Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, "tuple[str, ...] | None"]


def load_digits(cfg: DataConfig) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0-16 counts of an 4x4 block; scale them to the uint8 range of every other set.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    keep, test = _stratified_split(y, _DIGITS_TEST_FRACTION, seed=_DIGITS_TEST_SEED, key="digits test split")
    classes = tuple(str(c) for c in bunch.target_names)
    return x[keep], y[keep], x[test], y[test], classes


@dataclass(frozen=True)
class _TorchvisionSpec:
    title: str  # how users know the dataset
    cls: str  # class name in torchvision.datasets
    folder: str  # what torchvision keeps under root, for the error message
    split_kw: Callable[[bool], dict[str, Any]]


_TORCHVISION = {
    "cifar10": _TorchvisionSpec("CIFAR-10", "CIFAR10", "cifar-10-batches-py/", lambda t: {"train": t}),
    "cifar100": _TorchvisionSpec("CIFAR-100", "CIFAR100", "cifar-100-python/", lambda t: {"train": t}),
    "mnist": _TorchvisionSpec("MNIST", "MNIST", "MNIST/raw/", lambda t: {"train": t}),
    "fashion_mnist": _TorchvisionSpec(
        "Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw/", lambda t: {"train": t}
    ),
    "svhn": _TorchvisionSpec(
        "SVHN", "SVHN", "train_32x32.mat and test_32x32.mat", lambda t: {"split": "train" if t else "test"}
    ),
}


def load_torchvision(cfg: DataConfig) -> _Raw:
    spec = _TORCHVISION[cfg.dataset]
    if cfg.root is None and not cfg.download:
        raise DataError(
            f"data.root: not set; {cfg.dataset} needs a folder holding {spec.title} ({spec.folder}): "
            f"set data.root to it, or set data.download: true to fetch it (into {DEFAULT_ROOT} "
            "unless data.root is set)"
        )
    root = os.path.expanduser(cfg.root if cfg.root is not None else DEFAULT_ROOT)
    import torchvision.datasets  # lazy: torchvision is heavy and only these datasets need it

    cls = getattr(torchvision.datasets, spec.cls)
    splits = []
    for train in (True, False):
        try:
            ds = cls(root, download=cfg.download, **spec.split_kw(train))
        except RuntimeError as exc:
            if cfg.download:
                raise DataError(f"data.download: could not get {spec.title} into {root}: {exc}") from None
            raise DataError(
                f"data.root: {root} has no {spec.title} (expected {spec.folder} there); "
                "set data.download: true or point data.root at the folder that holds it"
            ) from None
        except OSError as exc:  # network errors while downloading (URLError is an OSError)
            raise DataError(f"data.download: could not download {spec.title} into {root}: {exc}") from None
        splits.append(_torchvision_arrays(ds))
    (x, y), (x_test, y_test) = splits
    classes = getattr(ds, "classes", None)
    return x, y, x_test, y_test, tuple(str(c) for c in classes) if classes else None


def _torchvision_arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data
    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels  # SVHN
    labels = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    if data.ndim == 3:  # MNIST family: N, H, W
        data = data[:, None]
    elif data.shape[-1] in (1, 3) and data.shape[1] not in (1, 3):  # CIFAR: NHWC; SVHN is NCHW
        data = data.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(data, dtype=np.uint8), labels.astype(np.int64)


# npz ----------------------------------------------------------------------------------------------

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_HELP = "an npz dataset holds x_train (uint8 N,H,W,C), y_train, x_test, y_test and optionally classes"


def _npz_path(cfg: DataConfig) -> Path:
    if not cfg.path:
        raise DataError(f"data.path: not set; {_NPZ_HELP}")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path: {path} does not exist; point data.path at a .npz file ({_NPZ_HELP})")
    return path


def load_npz(cfg: DataConfig) -> _Raw:
    path = _npz_path(cfg)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"data.path: {path} lacks {', '.join(missing)}; {_NPZ_HELP}")
            x, y, x_test, y_test = (z[k] for k in _NPZ_KEYS)
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"data.path: {path} is not a readable .npz file ({exc})") from None
    x = _npz_images(x, path, "x_train")
    x_test = _npz_images(x_test, path, "x_test")
    if x.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"data.path: {path}: x_train images are {x.shape[1:]} but x_test are {x_test.shape[1:]}"
        )
    y = _npz_labels(y, len(x), path, "y_train")
    y_test = _npz_labels(y_test, len(x_test), path, "y_test")
    return x, y, x_test, y_test, classes


def _npz_images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(f"data.path: {path}: {key} is {x.dtype} {x.shape}; {_NPZ_HELP}")
    if x.ndim == 3:  # grayscale N, H, W
        x = x[..., None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _npz_labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise DataError(
            f"data.path: {path}: {key} must be {n} non-negative integer labels, got {y.dtype} {y.shape}"
        )
    return y.astype(np.int64)


def describe_npz(cfg: DataConfig) -> DataShape:
    """Shape of an npz dataset from its array headers and its small label arrays."""
    path = _npz_path(cfg)
    try:
        with zipfile.ZipFile(path) as zf, zf.open("x_train.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, _ = read(f)
        with np.load(path, allow_pickle=False) as z:  # lazy: only the small members below are read
            if "classes" in z.files:
                num_classes = len(z["classes"])
            else:
                num_classes = int(max(z["y_train"].max(), z["y_test"].max())) + 1
    except KeyError:
        raise DataError(f"data.path: {path} lacks x_train, y_train or y_test; {_NPZ_HELP}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"data.path: {path} is not a readable .npz file ({exc})") from None
    if len(shape) not in (3, 4):
        raise DataError(f"data.path: {path}: x_train has shape {shape}; {_NPZ_HELP}")
    chans = shape[3] if len(shape) == 4 else 1
    return DataShape(int(chans), int(shape[1]), int(shape[2]), num_classes)


# imagefolder --------------------------------------------------------------------------------------

_FOLDER_HELP = "imagefolder expects ROOT/train/<class>/<image> and ROOT/test/<class>/<image>"


def _imagefolder_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise DataError(f"data.root: not set; {_FOLDER_HELP}")
    root = Path(cfg.root).expanduser()
    if not (root / "train").is_dir():
        raise DataError(f"data.root: {root} has no train/ folder; {_FOLDER_HELP}")
    return root


def _test_folder(root: Path) -> Path:
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    raise DataError(f"data.root: {root} has no test/ (or val/) folder; {_FOLDER_HELP}")


def _class_folders(split: Path) -> list[Path]:
    return sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _first_image(classes: list[Path], root: Path) -> Path:
    for folder in classes:
        files = _image_files(folder)
        if files:
            return files[0]
    raise DataError(f"data.root: {root}/train has no images ({', '.join(IMAGE_EXTENSIONS)}); {_FOLDER_HELP}")


def _image_mode(path: Path) -> tuple[str, tuple[int, int]]:
    """PIL mode every image is converted to (``L`` for grayscale, else ``RGB``) and (width, height)."""
    from PIL import Image

    with Image.open(path) as im:
        mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
        return mode, im.size


def describe_imagefolder(cfg: DataConfig) -> DataShape:
    """Shape of an imagefolder dataset from its first image and its class folders."""
    root = _imagefolder_root(cfg)
    classes = _class_folders(root / "train")
    if not classes:
        raise DataError(f"data.root: {root}/train has no class folders; {_FOLDER_HELP}")
    mode, (w, h) = _image_mode(_first_image(classes, root))
    return DataShape(1 if mode == "L" else 3, h, w, len(classes))


def load_imagefolder(cfg: DataConfig) -> _Raw:
    """Decode every image with PIL, converted to the first image's mode and resized to its size."""
    from PIL import Image

    root = _imagefolder_root(cfg)
    test_dir = _test_folder(root)
    classes = _class_folders(root / "train")
    if not classes:
        raise DataError(f"data.root: {root}/train has no class folders; {_FOLDER_HELP}")
    names = [c.name for c in classes]
    mode, size = _image_mode(_first_image(classes, root))

    def read(split: Path) -> tuple[np.ndarray, np.ndarray]:
        images: list[np.ndarray] = []
        labels: list[int] = []
        for folder in _class_folders(split):
            if folder.name not in names:
                raise DataError(
                    f"data.root: {split}/{folder.name} is a class that {root}/train does not have; "
                    f"classes are {', '.join(names)}"
                )
            for file in _image_files(folder):
                try:
                    with Image.open(file) as im:
                        im = im.convert(mode)
                        if im.size != size:
                            im = im.resize(size, Image.Resampling.BILINEAR)
                        images.append(np.asarray(im, dtype=np.uint8))
                except OSError as exc:
                    raise DataError(f"data.root: cannot read image {file}: {exc}") from None
                labels.append(names.index(folder.name))
        if not images:
            raise DataError(f"data.root: {split} has no images; {_FOLDER_HELP}")
        x = np.stack(images)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64)

    x, y = read(root / "train")
    x_test, y_test = read(test_dir)
    return x, y, x_test, y_test, tuple(names)
