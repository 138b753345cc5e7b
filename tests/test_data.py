"""Datasets (digits, npz, imagefolder), splits, describe(), and the batched on-device loader."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdsearch.core.config import DataConfig
from sdsearch.core.errors import DataError
from sdsearch.data.datasets import AugmentPolicy, DataShape, augment_policy, describe, load_dataset
from sdsearch.data.loader import DeviceLoader, crop_flip, random_crop_flip

# -- fixtures: datasets written by the tests -----------------------------------------------------


def _images(rng: np.random.Generator, n: int, h: int, w: int, c: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


@pytest.fixture
def npz_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    y_train = np.repeat(np.arange(4), 15)  # 4 classes x 15
    np.savez(
        path,
        x_train=_images(rng, 60, 12, 10, 3),
        y_train=y_train,
        x_test=_images(rng, 8, 12, 10, 3),
        y_test=np.repeat(np.arange(4), 2),
        classes=np.array(["a", "b", "c", "d"]),
    )
    return path


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "folder"
    for split, per_class in (("train", 6), ("test", 2)):
        for name in ("cat", "dog", "eel"):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(_images(rng, 1, 9, 11, 3)[0]).save(d / f"{i}.png")
    return root


# -- loading ---------------------------------------------------------------------------------------


def test_digits_loads_as_uint8_nchw_with_train_stats() -> None:
    data = load_dataset(DataConfig(dataset="digits", val_fraction=0.2), seed=0)
    assert data.shape == DataShape(1, 8, 8, 10)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert x.dtype == np.uint8 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == np.int64 and len(y) == len(x)
    assert data.x_train.max() == 255  # 0-16 counts scaled to the full uint8 range
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    x = data.x_train.astype(np.float64) / 255
    assert data.mean == pytest.approx((x.mean(),))
    assert data.std == pytest.approx((x.std(),))


def test_digits_test_split_does_not_depend_on_the_seed() -> None:
    a = load_dataset(DataConfig(dataset="digits"), seed=0)
    b = load_dataset(DataConfig(dataset="digits"), seed=5)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.val_index, b.val_index)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("fraction", [0.2, 0.35])
def test_validation_split_is_stratified_disjoint_and_seeded(seed: int, fraction: float) -> None:
    cfg = DataConfig(dataset="digits", val_fraction=fraction)
    data = load_dataset(cfg, seed=seed)
    assert not set(data.train_index) & set(data.val_index)
    n = len(data.train_index) + len(data.val_index)
    np.testing.assert_array_equal(np.sort(np.concatenate([data.train_index, data.val_index])), np.arange(n))
    total = np.bincount(np.concatenate([data.y_train, data.y_val]))
    val = np.bincount(data.y_val, minlength=len(total))
    assert np.all(np.abs(val - fraction * total) <= 1)
    again = load_dataset(cfg, seed=seed)
    np.testing.assert_array_equal(again.val_index, data.val_index)
    np.testing.assert_array_equal(again.x_val, data.x_val)


def test_npz_loads_nhwc_as_nchw(npz_path: Path) -> None:
    data = load_dataset(DataConfig(dataset="npz", path=str(npz_path), val_fraction=0.25), seed=0)
    assert data.shape == DataShape(3, 12, 10, 4)
    assert data.classes == ("a", "b", "c", "d")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (45, 15, 8)
    with np.load(npz_path) as z:
        first = z["x_train"][data.train_index[0]]
    np.testing.assert_array_equal(data.x_train[0], first.transpose(2, 0, 1))


def test_npz_grayscale_without_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "gray.npz"
    np.savez(path, x_train=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y_train=np.arange(30) % 3,
             x_test=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8), y_test=np.arange(6) % 3)  # fmt: skip
    cfg = DataConfig(dataset="npz", path=str(path))
    data = load_dataset(cfg, seed=0)
    assert data.shape == describe(cfg) == DataShape(1, 8, 8, 3)
    assert data.classes is None


def test_imagefolder_reads_class_folders(folder_root: Path) -> None:
    from PIL import Image

    cfg = DataConfig(dataset="imagefolder", root=str(folder_root), val_fraction=0.5)
    data = load_dataset(cfg, seed=0)
    assert data.shape == DataShape(3, 9, 11, 3)
    assert data.classes == ("cat", "dog", "eel")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (9, 9, 6)
    np.testing.assert_array_equal(np.bincount(data.y_test), [2, 2, 2])
    png = np.asarray(Image.open(folder_root / "test" / "dog" / "0.png"))
    np.testing.assert_array_equal(data.x_test[2], png.transpose(2, 0, 1))  # PNG is lossless


def test_describe_agrees_with_load(npz_path: Path, folder_root: Path) -> None:
    for cfg in (
        DataConfig(dataset="digits"),
        DataConfig(dataset="npz", path=str(npz_path)),
        DataConfig(dataset="imagefolder", root=str(folder_root), val_fraction=0.5),
    ):
        assert describe(cfg) == load_dataset(cfg, seed=0).shape


@pytest.mark.parametrize(
    ("name", "shape"),
    [("cifar10", (3, 32, 32, 10)), ("cifar100", (3, 32, 32, 100)), ("mnist", (1, 28, 28, 10)),
     ("fashion_mnist", (1, 28, 28, 10)), ("svhn", (3, 32, 32, 10))],
)  # fmt: skip
def test_describe_needs_no_files_for_torchvision_sets(name: str, shape: tuple[int, ...]) -> None:
    assert describe(DataConfig(dataset=name, root="/nonexistent")) == DataShape(*shape)


@pytest.mark.parametrize(
    ("given", "key", "hint"),
    [
        ({"dataset": "cifar10"}, "data.root", "data.download: true"),
        ({"dataset": "cifar100", "root": "{tmp}"}, "data.root", "data.download: true"),
        ({"dataset": "mnist", "root": "{tmp}"}, "data.root", "MNIST"),
        ({"dataset": "svhn", "root": "{tmp}"}, "data.root", "train_32x32.mat"),
        ({"dataset": "npz", "path": "{tmp}/absent.npz"}, "data.path", "does not exist"),
        ({"dataset": "imagefolder", "root": "{tmp}"}, "data.root", "no train/ folder"),
    ],
)
def test_missing_dataset_is_one_line_data_error(tmp_path: Path, given: dict, key: str, hint: str) -> None:
    cfg = DataConfig(**{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in given.items()})
    with pytest.raises(DataError) as info:
        load_dataset(cfg, seed=0)
    message = str(info.value)
    assert message.startswith(key + ":") and hint in message and "\n" not in message
    assert not any(tmp_path.iterdir())  # nothing was downloaded


def test_npz_missing_array_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=r"data\.path: .* lacks x_test, y_test"):
        load_dataset(DataConfig(dataset="npz", path=str(path)), seed=0)
    path2 = tmp_path / "float.npz"
    np.savez(path2, x_train=np.zeros((4, 8, 8, 3)), y_train=np.zeros(4), x_test=np.zeros((4, 8, 8, 3)),
             y_test=np.zeros(4))  # fmt: skip
    with pytest.raises(DataError, match="x_train is float64"):
        load_dataset(DataConfig(dataset="npz", path=str(path2)), seed=0)


@pytest.mark.parametrize(
    ("y_train", "y_test", "classes", "message"),
    [
        ([0] * 12, [0] * 4, None, "the training split has 12 images of 1 class (0); a classifier needs"),
        ([3] * 12, [3] * 4, None, "the training split has 12 images of 1 class (3)"),
        ([0, 1, 2, 3, 4], [0, 1], list("abcdefghij"),
         "the training split has 5 images for 10 classes, and 5 of them (f, g, h, i, j) have none"),
        ([0, 1] * 6, [0, 1, 2, 2], None,
         "the test split has images of 1 class(es) that the training split has none of (2)"),
        ([0, 1, 2] * 4, [0, 1], ["cat", "dog"], "the training split has label 2 but there are 2 classes (cat, dog)"),
    ],
    ids=["one-class", "one-class-not-zero", "fewer-images-than-classes", "test-class-unseen", "label-beyond-classes"],
)  # fmt: skip
def test_an_npz_no_classifier_can_learn_is_refused(tmp_path: Path, y_train, y_test, classes, message) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "bad.npz"
    extra = {"classes": np.array(classes)} if classes else {}
    np.savez(path, x_train=_images(rng, len(y_train), 8, 8, 1), y_train=np.array(y_train),
             x_test=_images(rng, len(y_test), 8, 8, 1), y_test=np.array(y_test), **extra)  # fmt: skip
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(dataset="npz", path=str(path)), seed=0)
    assert str(info.value).startswith(f"data.path: {path}: {message}") and "\n" not in str(info.value)


def test_an_imagefolder_no_classifier_can_learn_is_refused(folder_root: Path) -> None:
    import shutil

    cfg = DataConfig(dataset="imagefolder", root=str(folder_root), val_fraction=0.5)
    for image in (folder_root / "train" / "eel").iterdir():  # a class folder without images
        image.unlink()
    with pytest.raises(DataError, match=r"the test split has images of 1 class\(es\) that the training split has none of \(eel\)"):  # fmt: skip
        load_dataset(cfg, seed=0)
    shutil.rmtree(folder_root / "test" / "eel")
    with pytest.raises(DataError, match=r"^data\.root: .*: the training split has 12 images for 3 classes, "
                       r"and 1 of them \(eel\) have none; give every class training images or remove its folder"):  # fmt: skip
        load_dataset(cfg, seed=0)
    shutil.rmtree(folder_root / "train" / "eel")
    shutil.rmtree(folder_root / "train" / "dog")
    with pytest.raises(DataError, match=r"^data\.root: .*/test/dog is a class that .*/train does not have"):
        load_dataset(cfg, seed=0)  # the loader's own check: test/dog has no train/dog
    shutil.rmtree(folder_root / "test" / "dog")
    with pytest.raises(
        DataError, match=r"6 images of 1 class \(cat\); a classifier needs images of at least 2"
    ):
        load_dataset(cfg, seed=0)


def test_a_test_split_missing_a_class_is_warned_about(folder_root: Path) -> None:
    import shutil

    shutil.rmtree(folder_root / "test" / "eel")
    cfg = DataConfig(dataset="imagefolder", root=str(folder_root), val_fraction=0.5)
    with pytest.warns(UserWarning, match=r"the test split has no images of 1 class\(es\) \(eel\)"):
        data = load_dataset(cfg, seed=0)
    assert data.shape.num_classes == 3


def test_imagefolder_without_test_folder(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"data\.root: .* has no test/"):
        load_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path)), seed=0)


def test_bad_names_fractions_and_missing_keys_are_refused_where_declared() -> None:
    with pytest.raises(ValueError, match=r"'cifar' is not one of digits, cifar10"):
        DataConfig(dataset="cifar")
    with pytest.raises(ValueError, match="greater than 0"):
        DataConfig(val_fraction=0.0)
    with pytest.raises(ValueError, match="dataset npz needs path"):
        DataConfig(dataset="npz")
    with pytest.raises(ValueError, match="dataset imagefolder needs root"):
        DataConfig(dataset="imagefolder")
    with pytest.raises(ValueError, match="'mixup' is not one of auto"):
        DataConfig(augment="mixup")


# -- augmentation ----------------------------------------------------------------------------------


def test_augment_policy_per_dataset() -> None:
    assert augment_policy("auto", "digits", (8, 8)) == AugmentPolicy(pad=1, flip=False)
    assert augment_policy("auto", "cifar10", (32, 32)) == AugmentPolicy(pad=4, flip=True)
    assert augment_policy("auto", "fashion_mnist", (28, 28)) == AugmentPolicy(pad=3, flip=True)
    for name in ("mnist", "svhn"):
        assert not augment_policy("auto", name, (32, 32)).flip
    assert augment_policy("crop", "cifar10", (32, 32)) == AugmentPolicy(pad=4, flip=False)
    assert augment_policy("crop_flip", "digits", (8, 8)) == AugmentPolicy(pad=1, flip=True)
    assert not augment_policy("none", "cifar10", (32, 32)).active


def test_crop_flip_takes_windows_of_the_padded_image() -> None:
    x = torch.randint(0, 256, (5, 3, 6, 7), dtype=torch.uint8)
    oy, ox = torch.tensor([0, 4, 2, 1, 3]), torch.tensor([4, 0, 2, 3, 1])
    flip = torch.tensor([False, True, False, True, True])
    out = crop_flip(x, oy, ox, flip, pad=2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(5):
        want = padded[i, :, oy[i] : oy[i] + 6, ox[i] : ox[i] + 7]
        torch.testing.assert_close(out[i], want.flip(-1) if flip[i] else want, rtol=0, atol=0)
    no_crop = crop_flip(x, torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), flip, pad=0)
    torch.testing.assert_close(no_crop, torch.where(flip[:, None, None, None], x.flip(-1), x), rtol=0, atol=0)


def _window_of(sample: torch.Tensor, padded: torch.Tensor, pad: int) -> tuple[int, int, bool] | None:
    h, w = sample.shape[-2:]
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            window = padded[:, oy : oy + h, ox : ox + w]
            for flipped in (False, True):
                if torch.equal(sample, window.flip(-1) if flipped else window):
                    return oy, ox, flipped
    return None


def test_random_crop_flip_outputs_shifted_windows() -> None:
    g = torch.Generator().manual_seed(0)
    # 1..255 so the zero padding is distinguishable from image content.
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, AugmentPolicy(pad=2, flip=True), g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    found = [_window_of(out[i], padded[i], 2) for i in range(64)]
    assert all(f is not None for f in found)
    assert len({f[:2] for f in found if f}) > 10  # offsets differ per sample
    assert 10 < sum(f[2] for f in found if f) < 54  # about half are flipped
    crop_only = random_crop_flip(x, AugmentPolicy(pad=1, flip=False), g)
    assert all(not _window_of(crop_only[i], F.pad(x[i], (1, 1, 1, 1)), 1)[2] for i in range(64))


# -- DeviceLoader ----------------------------------------------------------------------------------


def test_loader_normalises_and_covers_every_sample_once() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 2, 4, 4), dtype=np.uint8)
    y = np.arange(50)
    mean, std = (0.5, 0.25), (0.2, 0.4)
    loader = DeviceLoader(x, y, batch_size=16, mean=mean, std=std, shuffle=True, seed=0)
    assert len(loader) == 4
    threads = torch.get_num_threads()
    seen = []
    for xb, yb in loader:
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        want = (
            torch.from_numpy(x[yb.numpy()]).float() / 255 - torch.tensor(mean).view(1, 2, 1, 1)
        ) / torch.tensor(std).view(1, 2, 1, 1)
        torch.testing.assert_close(xb, want)
        seen.extend(yb.tolist())
    assert sorted(seen) == list(range(50)) and seen != list(range(50))
    assert torch.get_num_threads() == threads  # batches are built on one thread, then restored


def test_loader_drop_last_and_seeded_order() -> None:
    x = np.zeros((50, 1, 4, 4), np.uint8)
    y = np.arange(50)

    def orders(seed: int) -> list[list[int]]:
        loader = DeviceLoader(x, y, batch_size=16, mean=(0.0,), std=(1.0,), shuffle=True, drop_last=True,
                              seed=seed, policy=AugmentPolicy(pad=1, flip=True))  # fmt: skip
        assert len(loader) == 3
        return [[int(v) for v in yb] for _ in range(2) for _, yb in loader]

    first = orders(0)
    assert all(len(b) == 16 for b in first)
    assert first == orders(0) and first != orders(1)
    assert first[:3] != first[3:]  # a new permutation every epoch
    small = DeviceLoader(x[:5], y[:5], batch_size=16, mean=(0.0,), std=(1.0,), drop_last=True)
    assert [len(yb) for _, yb in small] == [5]


def test_loader_shares_read_only_arrays_without_warning() -> None:
    x = np.zeros((4, 1, 4, 4), np.uint8)
    x.setflags(write=False)  # as Ray's object store hands them out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = DeviceLoader(x, np.zeros(4, np.int64), batch_size=2, mean=(0.0,), std=(1.0,))
        assert sum(len(yb) for _, yb in loader) == 4


def test_streaming_placement_gives_the_same_batches() -> None:
    """The host-resident fallback (for splits too big for the device) only changes where data lives."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8), np.arange(40)
    kw = {"batch_size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3, "shuffle": True, "seed": 3,
          "policy": AugmentPolicy(pad=1, flip=True)}  # fmt: skip
    resident = list(DeviceLoader(x, y, resident=True, **kw))
    streamed = list(DeviceLoader(x, y, resident=False, **kw))
    for (xa, ya), (xb, yb) in zip(resident, streamed, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert torch.equal(ya, yb)


SHARED_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_12k.npz"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_NPZ.is_file(), reason="the CIFAR-10 subset is not at ../shared/data")
def test_shared_cifar10_subset() -> None:
    cfg = DataConfig(dataset="npz", path=str(SHARED_NPZ), val_fraction=0.1)
    data = load_dataset(cfg, seed=0)
    assert data.shape == describe(cfg) == DataShape(3, 32, 32, 10)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (9000, 1000, 2000)
    np.testing.assert_array_equal(np.bincount(data.y_val), [100] * 10)
    assert data.classes is not None and data.classes[0] == "airplane"
    assert 0.4 < data.mean[0] < 0.55 and 0.2 < data.std[0] < 0.3  # CIFAR-10's usual statistics
