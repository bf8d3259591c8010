"""Tests for nas.data: real digits, real Fashion-MNIST when installed, and small files written here.

The fixtures write each on-disk format by hand (idx + gzip, CIFAR pickles, PNG
folders), so every loader path runs even on a machine without the real data.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import nas.data as data_mod
from nas.data import DATASETS, DataBundle, DataError, load_data, make_loader
from search_spaces import UnknownNameError

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


# --------------------------------------------------------------------------- helpers


def _stack(ds: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.stack([torch.as_tensor(y) for y in ys])


def _check_item(bundle: DataBundle) -> None:
    """Every split yields (float32 [C, R, R], int64 label) with a label in range."""
    for split in (bundle.train, bundle.val, bundle.test):
        x, y = split[0]
        assert x.dtype == torch.float32
        assert tuple(x.shape) == (bundle.in_channels, bundle.resolution, bundle.resolution)
        y = torch.as_tensor(y)
        assert y.dtype == torch.int64 and 0 <= int(y) < bundle.num_classes


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may write to the user's real cache."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def _staged(cache: Path) -> Path:
    return cache / "nas-engine" / "fashion_mnist" / "FashionMNIST" / "raw"


def _idx_bytes(array: np.ndarray) -> bytes:
    """idx format: big-endian magic (0x0800 | ndim for uint8) and dims, then the raw bytes."""
    magic = 0x0800 | array.ndim  # 2051 for images [N, H, W], 2049 for labels [N]
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(
    folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True, shift: int = 0
) -> None:
    """Tiny Fashion-MNIST lookalike: image i is constant (i * 3 + shift) % 256, label i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        values = (np.arange(n) * 3 + shift) % 256
        images = np.broadcast_to(values[:, None, None], (n, 28, 28))
        labels = np.arange(n) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = folder / f"{prefix}-{kind}-ubyte"
            blob = _idx_bytes(np.ascontiguousarray(array))
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(blob))
            else:
                path.write_bytes(blob)


def _cifar_image(red_ramp: bool = True) -> np.ndarray:
    """One CIFAR row (3072 uint8, channel-major): red rises along the width, green and blue are 0."""
    img = np.zeros((3, 32, 32), dtype=np.uint8)
    if red_ramp:
        img[0] = (np.arange(32) * 8)[None, :]
    return img.reshape(-1)


def _dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # the official files are protocol-2 pickles


def _write_cifar10(root: Path, per_batch: int = 10, n_test: int = 10) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = np.stack([_cifar_image()] * per_batch)
    for b in range(1, 6):
        _dump(folder / f"data_batch_{b}", {"data": rows, "labels": [i % 10 for i in range(per_batch)]})
    _dump(folder / "test_batch", {"data": np.stack([_cifar_image()] * n_test), "labels": list(range(n_test))})
    _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return folder


def _write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        rows = np.stack([_cifar_image()] * n)
        _dump(
            folder / name,
            {"data": rows, "fine_labels": [i % 100 for i in range(n)], "coarse_labels": [0] * n},
        )
    _dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return folder


def _write_pngs(folder: Path, classes: dict[str, int], size: tuple[int, int] = (20, 12)) -> None:
    """``classes`` maps class name -> number of PNGs; each image is a flat colour."""
    for k, (name, count) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, (40 * k, 10 * i, 200)).save(folder / name / f"{i}.png")


# --------------------------------------------------------------------------- digits


def test_datasets_registry_lists_every_loader() -> None:
    assert DATASETS.names() == sorted(("digits", "fashion_mnist", "cifar10", "cifar100", "imagefolder"))


def test_digits_shapes_classes_and_split_sizes() -> None:
    bundle = load_data()
    assert (bundle.name, bundle.num_classes, bundle.in_channels, bundle.resolution) == ("digits", 10, 1, 32)
    _check_item(bundle)
    sizes = [len(bundle.train), len(bundle.val), len(bundle.test)]
    assert sum(sizes) == 1797
    assert sizes == [1257, 270, 270]  # 70 / 15 / 15
    for split in (bundle.train, bundle.val, bundle.test):
        assert set(_stack(split)[1].tolist()) == set(range(10))  # stratified: every class in every split


def test_digits_splits_are_disjoint_and_cover_every_image() -> None:
    """Recover the raw 0..16 pixels (resolution 8 = no resizing) and map every item to its source image."""
    bundle = load_data(resolution=8)
    parts = [_stack(s)[0].reshape(len(s), -1) for s in (bundle.train, bundle.val, bundle.test)]
    lo, hi = min(p.min() for p in parts), max(p.max() for p in parts)  # pixel values 0 and 16 occur
    original = {
        img.tobytes(): i for i, img in enumerate(load_digits().images.astype(np.uint8).reshape(1797, -1))
    }
    ids = []
    for part in parts:
        raw = torch.round((part - lo) / (hi - lo) * 16).to(torch.uint8).numpy()
        ids.append({original[row.tobytes()] for row in raw})
    assert [len(i) for i in ids] == [len(bundle.train), len(bundle.val), len(bundle.test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert ids[0] | ids[1] | ids[2] == set(range(1797))


def test_digits_deterministic_per_seed() -> None:
    a, b, c = load_data(seed=3), load_data(seed=3), load_data(seed=4)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).tensors[0], getattr(b, split).tensors[0])
        assert torch.equal(getattr(a, split).tensors[1], getattr(b, split).tensors[1])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])


def test_digits_test_split_is_the_same_for_every_seed() -> None:
    """Test accuracies of runs with different seeds are comparable: same test images, same labels; only
    train/val follow the seed."""
    a, c = load_data(seed=3, resolution=8), load_data(seed=4, resolution=8)
    assert torch.equal(a.test.tensors[0], c.test.tensors[0])
    assert torch.equal(a.test.tensors[1], c.test.tensors[1])
    for split in ("train", "val"):  # the same images overall, divided differently
        x_a, x_c = getattr(a, split).tensors[0], getattr(c, split).tensors[0]
        assert x_a.shape == x_c.shape and not torch.equal(x_a, x_c)
    rest_a = torch.cat([a.train.tensors[0], a.val.tensors[0]])
    rest_c = torch.cat([c.train.tensors[0], c.val.tensors[0]])

    def as_set(x: torch.Tensor) -> set[bytes]:
        return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}

    assert as_set(rest_a) == as_set(rest_c)  # train + val hold the same images: the test part never moves
    assert not as_set(a.val.tensors[0]) >= as_set(c.val.tensors[0])


def test_digits_resolution_and_normalisation() -> None:
    bundle = load_data("digits", resolution=16)
    assert bundle.resolution == 16
    _check_item(bundle)
    x = bundle.train.tensors[0]
    assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2


def test_digits_train_limit_keeps_all_classes_and_full_val() -> None:
    bundle = load_data(train_limit=100)
    assert len(bundle.train) == 100
    assert set(bundle.train.tensors[1].tolist()) == set(range(10))
    assert len(bundle.val) == 270  # min(len(val), max(1000, 100 // 5)) = all 270
    assert len(bundle.test) == 270


def test_dataset_name_spelling_is_forgiving() -> None:
    assert load_data("Digits", resolution=8).name == "digits"


# --------------------------------------------------------------------------- make_loader


def _order(loader: torch.utils.data.DataLoader) -> list[int]:
    return torch.cat([x.reshape(len(x), -1)[:, 0] for x, _ in loader]).tolist()


def test_make_loader_deterministic_per_seed_and_ignores_global_rng() -> None:
    ds = torch.utils.data.TensorDataset(
        torch.arange(200, dtype=torch.float32).view(200, 1), torch.zeros(200).long()
    )
    torch.manual_seed(1)
    first = _order(make_loader(ds, 16, shuffle=True, seed=7))
    torch.manual_seed(999)
    again = _order(make_loader(ds, 16, shuffle=True, seed=7))
    other = _order(make_loader(ds, 16, shuffle=True, seed=8))
    assert first == again and first != other
    assert sorted(first) == list(range(200))
    assert _order(make_loader(ds, 16, shuffle=False)) == list(range(200))


def test_make_loader_batches_and_drop_last() -> None:
    bundle = load_data(resolution=8)
    batches = list(make_loader(bundle.train, 100, shuffle=True, drop_last=True))
    assert len(batches) == len(bundle.train) // 100
    x, y = batches[0]
    assert x.shape == (100, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(
    not REAL_FASHION.exists(),
    reason="real Fashion-MNIST not installed: `apt-get install dataset-fashion-mnist`",
)
def test_real_fashion_mnist(_private_cache: Path) -> None:
    bundle = load_data("fashion_mnist", train_limit=2000)
    assert (bundle.num_classes, bundle.in_channels, bundle.resolution) == (10, 1, 28)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (2000, 1000, 10000)
    _check_item(bundle)
    labels = bundle.test.tensors[1]
    assert labels.min() >= 0 and labels.max() <= 9
    assert torch.bincount(labels).tolist() == [1000] * 10  # the official test set is balanced
    assert set(bundle.train.tensors[1].tolist()) == set(range(10))
    assert float(bundle.test.tensors[0].std()) > 0.5  # real images, not a constant
    assert (_staged(_private_cache) / "train-images-idx3-ubyte").stat().st_size == 16 + 60000 * 784


@pytest.mark.parametrize(
    ("layout", "gz"),
    [("flat", True), ("flat", False), ("torchvision", True), ("torchvision", False)],
)
def test_fashion_mnist_from_written_idx_files(
    tmp_path: Path, _private_cache: Path, layout: str, gz: bool
) -> None:
    data_dir = tmp_path / "fm"
    _write_fashion(data_dir if layout == "flat" else data_dir / "FashionMNIST" / "raw", gz=gz)
    bundle = load_data("fashion_mnist", data_dir=str(data_dir), val_fraction=0.2)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (40, 10, 20)
    _check_item(bundle)
    x, y = bundle.test.tensors
    assert y.tolist() == [i % 10 for i in range(20)]  # test keeps file order
    means = x.mean(dim=(1, 2, 3))
    assert torch.all(means[1:] > means[:-1])  # image i is the constant 3 * i: decoded in order
    assert torch.allclose(x[0], x[0].flatten()[0].expand_as(x[0]))
    # only files that torchvision cannot read in place are staged into the cache
    assert _staged(_private_cache).exists() == (layout == "flat" or gz)


def test_fashion_mnist_resolution(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "fm")
    bundle = load_data("fashion_mnist", data_dir=str(tmp_path / "fm"), resolution=32)
    assert bundle.resolution == 32 and bundle.train[0][0].shape == (1, 32, 32)


def test_fashion_mnist_train_limit_bounds_val(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "fm", n_train=3000, n_test=10)
    bundle = load_data("fashion_mnist", data_dir=str(tmp_path / "fm"), train_limit=100)
    assert len(bundle.train) == 100
    assert len(bundle.val) == 300  # min(len(val) = 300, max(1000, 100 // 5))
    assert set(bundle.train.tensors[1].tolist()) == set(range(10))


def test_fashion_mnist_cache_reused_until_source_changes(tmp_path: Path, _private_cache: Path) -> None:
    data_dir = tmp_path / "fm"
    _write_fashion(data_dir)
    first = load_data("fashion_mnist", data_dir=str(data_dir))
    staged = _staged(_private_cache) / "t10k-images-idx3-ubyte"
    inode = staged.stat().st_ino
    load_data("fashion_mnist", data_dir=str(data_dir))
    assert staged.stat().st_ino == inode  # reused, not rewritten

    _write_fashion(data_dir, shift=100)
    src = data_dir / "t10k-images-idx3-ubyte.gz"
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    second = load_data("fashion_mnist", data_dir=str(data_dir))
    assert not torch.equal(first.test.tensors[0], second.test.tensors[0])


def test_fashion_mnist_truncated_gzip_leaves_no_partial_file(tmp_path: Path, _private_cache: Path) -> None:
    data_dir = tmp_path / "fm"
    _write_fashion(data_dir)
    bad = data_dir / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is not a valid gzip file"):
        load_data("fashion_mnist", data_dir=str(data_dir))
    left = sorted(p.name for p in _staged(_private_cache).iterdir())
    assert "train-images-idx3-ubyte" not in left
    assert not [name for name in left if name.endswith(".tmp")]


def test_fashion_mnist_bad_magic_names_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "fm"
    _write_fashion(data_dir, gz=False)
    path = data_dir / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x07" + path.read_bytes()[4:])
    expected = r"fm/t10k-labels-idx1-ubyte \(cached as .*\) is not an idx file \(magic 2055, expected 2049\)"
    with pytest.raises(DataError, match=expected):
        load_data("fashion_mnist", data_dir=str(data_dir))


def test_fashion_mnist_truncated_idx_names_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "fm"
    _write_fashion(data_dir, gz=True)
    path = data_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte\.gz \(cached as .*\) has .* bytes, .*implies"
    ):
        load_data("fashion_mnist", data_dir=str(data_dir))


def test_fashion_mnist_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*apt-get install dataset-fashion-mnist"):
        load_data("fashion_mnist", data_dir=str(tmp_path / "nowhere"))


def test_fashion_mnist_dir_without_files_lists_them(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        DataError, match=r"missing .*t10k-labels-idx1-ubyte.*apt-get install dataset-fashion-mnist"
    ):
        load_data("fashion_mnist", data_dir=str(tmp_path))


def test_fashion_mnist_default_location_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "SYSTEM_FASHION_DIR", tmp_path / "not-installed")
    with pytest.raises(DataError, match=r"not-installed.*train-images-idx3-ubyte.*apt-get install"):
        load_data("fashion_mnist")


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_from_written_batches(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    bundle = load_data("cifar10", data_dir=str(tmp_path))
    assert (bundle.num_classes, bundle.in_channels, bundle.resolution) == (10, 3, 32)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45, 5, 10)
    _check_item(bundle)
    assert bundle.test.tensors[1].tolist() == list(range(10))
    x = bundle.test[0][0]
    # channel-major rows decoded like torchvision: red ramps along the width, green/blue are 0
    assert torch.all(x[0, :, 1:] > x[0, :, :-1]) and torch.allclose(x[0], x[0, :1].expand(32, 32))
    assert torch.allclose(x[1], x[1, 0, 0].expand(32, 32)) and float(x[1, 0, 0]) < 0


def test_cifar10_resolution_and_train_limit(tmp_path: Path) -> None:
    _write_cifar10(tmp_path, per_batch=40)
    bundle = load_data("cifar10", data_dir=str(tmp_path), resolution=16, train_limit=30)
    assert bundle.train[0][0].shape == (3, 16, 16)
    assert (len(bundle.train), len(bundle.val)) == (30, 20)


def test_cifar100_from_written_files(tmp_path: Path) -> None:
    _write_cifar100(tmp_path)
    bundle = load_data("cifar100", data_dir=str(tmp_path))
    assert (bundle.num_classes, bundle.in_channels) == (100, 3)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (180, 20, 100)
    _check_item(bundle)


def test_cifar_needs_data_dir() -> None:
    with pytest.raises(DataError, match=r"--data-dir.*cifar-10-batches-py.*--download"):
        load_data("cifar10")


def test_cifar_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere does not exist.*cifar-10-batches-py"):
        load_data("cifar10", data_dir=str(tmp_path / "nowhere"))


def test_cifar_dir_without_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing .*data_batch_1.*cifar-10-batches-py/.*--download"):
        load_data("cifar10", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"cifar-100-python.*--download"):
        load_data("cifar100", data_dir=str(tmp_path))


def test_cifar_one_missing_batch_named(tmp_path: Path) -> None:
    (_write_cifar10(tmp_path) / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing in .*: data_batch_3\. "):
        load_data("cifar10", data_dir=str(tmp_path))


def test_cifar_garbage_file_named(tmp_path: Path) -> None:
    (_write_cifar10(tmp_path) / "data_batch_1").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"data_batch_1 is not a readable CIFAR pickle"):
        load_data("cifar10", data_dir=str(tmp_path))


def test_cifar_wrong_shape_named(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    _dump(folder / "data_batch_2", {"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4})
    with pytest.raises(DataError, match=r"data_batch_2: 'data' must be a uint8 array of shape \[N, 3072\]"):
        load_data("cifar10", data_dir=str(tmp_path))


def test_cifar_label_out_of_range_named(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    _dump(folder / "test_batch", {"data": np.stack([_cifar_image()] * 2), "labels": [0, 10]})
    with pytest.raises(DataError, match=r"test_batch has labels outside 0\.\.9"):
        load_data("cifar10", data_dir=str(tmp_path))


class _Payload:
    """Pickles to a call of ``open(path, 'w')``: would create a file if the loader ran it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path / "c")
    marker = tmp_path / "pwned"
    _dump(folder / "batches.meta", {"label_names": _Payload(marker)})
    with pytest.raises(DataError, match=r"batches\.meta is not a readable CIFAR pickle .*refusing"):
        load_data("cifar10", data_dir=str(tmp_path / "c"))
    assert not marker.exists()


# --------------------------------------------------------------------------- image folders


def test_imagefolder_carves_val_and_test_from_train(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"cat": 10, "dog": 10})
    bundle = load_data("imagefolder", data_dir=str(tmp_path), resolution=16, val_fraction=0.2)
    assert (bundle.num_classes, bundle.in_channels, bundle.resolution) == (2, 3, 16)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 4, 4)
    _check_item(bundle)
    x, y = next(iter(make_loader(bundle.train, 5, shuffle=True)))
    assert x.shape == (5, 3, 16, 16) and y.dtype == torch.int64
    assert set(_stack(bundle.test)[1].tolist()) == {0, 1}


def test_imagefolder_uses_given_val_and_test(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"a": 3, "b": 3})
    _write_pngs(tmp_path / "val", {"a": 1, "b": 1})
    _write_pngs(tmp_path / "test", {"a": 2, "b": 1})
    bundle = load_data("imagefolder", data_dir=str(tmp_path))
    assert bundle.resolution == 64
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (6, 2, 3)
    _check_item(bundle)


def test_imagefolder_class_mismatch(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"a": 2, "b": 2})
    _write_pngs(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(DataError, match=r"class folders of .*val differ from train/: only here \['c'\]"):
        load_data("imagefolder", data_dir=str(tmp_path))


def test_imagefolder_needs_data_dir_and_train(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--data-dir"):
        load_data("imagefolder")
    with pytest.raises(DataError, match=r"does not exist"):
        load_data("imagefolder", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"has no train/ folder"):
        load_data("imagefolder", data_dir=str(tmp_path))


def test_imagefolder_without_classes_or_images(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"no usable classes/images in .*train"):
        load_data("imagefolder", data_dir=str(tmp_path))
    (tmp_path / "train" / "empty_class").mkdir()
    (tmp_path / "train" / "empty_class" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no usable classes/images in .*train"):
        load_data("imagefolder", data_dir=str(tmp_path))


def test_imagefolder_corrupt_image_named(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"a": 4})
    (tmp_path / "train" / "a" / "0.png").write_bytes(b"\x89PNG broken")
    bundle = load_data("imagefolder", data_dir=str(tmp_path), val_fraction=0.25)
    with pytest.raises(DataError, match=r"cannot read image .*0\.png"):
        for split in (bundle.train, bundle.val, bundle.test):
            _stack(split)


# --------------------------------------------------------------------------- argument errors


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(
        UnknownNameError,
        match=(
            r"unknown data set 'mnist2' \(data.name\); available: cifar10, cifar100, digits, fashion_mnist,"
            r" imagefolder"
        ),
    ):
        load_data("mnist2")


@pytest.mark.parametrize("limit", [0, -5])
def test_train_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(DataError, match=r"train_limit must be a positive"):
        load_data(train_limit=limit)


@pytest.mark.parametrize("res", [0, -3])
def test_resolution_must_be_positive(res: int) -> None:
    with pytest.raises(DataError, match=r"resolution must be a positive integer"):
        load_data(resolution=res)


@pytest.mark.parametrize("frac", [0.0, 1.0, 1.5])
def test_val_fraction_must_be_a_fraction(frac: float) -> None:
    with pytest.raises(DataError, match=r"val_fraction must lie strictly between 0 and 1"):
        load_data("cifar10", val_fraction=frac)


def test_val_limit_overrides_the_default_validation_size():
    data = load_data("digits", seed=0, val_limit=100)
    assert len(data.val) == 100
    assert len(load_data("digits", seed=0, train_limit=200, val_limit=250).val) == 250
