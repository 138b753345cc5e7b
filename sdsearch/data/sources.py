"""Dataset sources: each reads one kind of dataset into ``(x_train, y_train, x_test, y_test, classes)``,
images uint8 NCHW, labels int64. The dataset registry (:data:`sdsearch.core.registry.DATASETS`)
names them; :func:`sdsearch.data.datasets.load_dataset` splits and checks what they return.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdsearch.core.config import DataConfig
from sdsearch.core.errors import DataError
from sdsearch.data.datasets import DataShape, stratified_split

__all__ = [
    "DEFAULT_ROOT",
    "IMAGE_EXTENSIONS",
    "describe_imagefolder",
    "describe_npz",
    "load_digits",
    "load_imagefolder",
    "load_npz",
    "load_torchvision",
]

#: Where torchvision datasets go when ``download: true`` and no ``root`` is given.
DEFAULT_ROOT = "~/.cache/sdsearch/data"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

#: digits has no test split of its own: a fixed stratified hold-out (independent of the trial seed,
#: so every trial and ``sdsearch train`` see the same test images).
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0


_Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, "tuple[str, ...] | None"]


def load_digits(cfg: DataConfig) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0-16 counts of an 4x4 block; scale them to the uint8 range of every other set.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    keep, test = stratified_split(y, _DIGITS_TEST_FRACTION, seed=_DIGITS_TEST_SEED, key="digits test split")
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
