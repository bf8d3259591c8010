"""Data sets for supernet training and search, as uniform in-memory tensors where possible.

Every data set yields ``(float32 image [C, R, R], int64 label)`` pairs, already
normalised, so the training loop never needs to know which data set it runs on.
Search is CPU-bound (2 cores), so data sets that fit in memory (digits,
Fashion-MNIST, CIFAR) are decoded, resized and normalised ONCE into a
:class:`~torch.utils.data.TensorDataset`; a batch is then a tensor gather, with
no per-item PIL work. Only ``imagefolder``, which may not fit in memory, decodes
per item, and does so with one cheap PIL resize.

Splits and subsets are drawn from ``seed`` with scikit-learn (class-stratified
whenever every class can be represented), so a run is reproducible from its
arguments alone. Every failure caused by the data (or an argument about it) is a
:class:`DataError` whose message says what is wrong and how to fix it.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from nas.run.files import atomic_write_stream, cache_home
from search_spaces.errors import UserError
from search_spaces.registry import Registry

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10, ImageFolder

# torchvision and scikit-learn are imported where a data set needs them: together they take about 2.5 s to
# import (torchvision pulls in torch._dynamo), which every process that only predicts latency would pay.


class DataError(UserError):
    """A data set is missing, malformed or asked for with bad arguments; the message says how to fix it."""


@dataclass
class DataBundle:
    """The three splits of one data set plus the facts a model needs to be built for it."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    resolution: int  # square side length of every image tensor the datasets return


@dataclass(frozen=True)
class LoadRequest:
    """What :func:`load_data` asks of one data set's loader (arguments already checked)."""

    data_dir: str | None
    resolution: int
    seed: int
    limits: "Limits"
    val_fraction: float
    download: bool


Loader = Callable[[LoadRequest], DataBundle]

DATASETS: Registry[Loader] = Registry(
    "data set", normalize=lambda name: name.strip().lower().replace("-", "_")
)
"""Data set name -> loader; ``Fashion-MNIST``-style spellings are accepted. Each loader has a
``default_resolution``."""


def register_dataset(name: str, default_resolution: int) -> Callable[[Loader], Loader]:
    """Register a loader under ``name``; ``default_resolution`` is the image side used when none is asked
    for."""

    def deco(loader: Loader) -> Loader:
        loader.default_resolution = default_resolution  # type: ignore[attr-defined]
        return DATASETS.add(name, loader)

    return deco


SYSTEM_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the four ``.gz`` idx files."""

FASHION_FILES: dict[str, int] = {
    "train-images-idx3-ubyte": 2051,
    "train-labels-idx1-ubyte": 2049,
    "t10k-images-idx3-ubyte": 2051,
    "t10k-labels-idx1-ubyte": 2049,
}
"""Uncompressed idx file name -> magic number (0x08 = uint8, low byte = number of dims)."""

_DIGITS_HELD_OUT = 0.15  # digits has no official test split: 70/15/15 train/val/test
_DIGITS_TEST_SEED = 0  # the held-out test images are the same for every --seed (comparable test accuracies)
_MIN_LIMITED_VAL = 1000  # with train_limit, val keeps at least this many images (if it has them)
_CONVERT_CHUNK = 4096  # images converted per step, bounding the float32 peak on top of the result


@dataclass(frozen=True)
class _Stats:
    """Per-channel mean/std of pixel values scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def affine(self, max_value: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` of shape [C, 1, 1] so that ``raw * scale + shift`` is normalised."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return 1.0 / (max_value * std), -mean / std


# digits: measured over all 1797 images (values / 16); the others are the usual published constants.
_DIGITS_STATS = _Stats((0.3053,), (0.3760,))
_FASHION_STATS = _Stats((0.2860,), (0.3530,))
_CIFAR10_STATS = _Stats((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = _Stats((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = _Stats((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# --------------------------------------------------------------------------- public API


def load_data(
    name: str = "digits",
    data_dir: str | None = None,
    resolution: int | None = None,
    seed: int = 0,
    train_limit: int | None = None,
    val_limit: int | None = None,
    val_fraction: float = 0.1,
    download: bool = False,
) -> DataBundle:
    """Load data set ``name`` as train/val/test splits of normalised ``[C, R, R]`` float32 images.

    - ``data_dir``: where the files are (unused by digits; optional for
      fashion_mnist, which defaults to the Debian package's folder).
    - ``resolution``: output side length; ``None`` uses the data set's default
      (digits 32, fashion_mnist 28, cifar 32, imagefolder 64).
    - ``seed``: drives every split and subset, so equal arguments give equal data.
    - ``val_fraction``: share of the training images held out for validation when
      the data set has no validation split of its own (fashion_mnist, cifar,
      imagefolder without ``val/``; also its ``test/`` share when that is absent).
      digits always uses a stratified 70/15/15 split whose test part is the same
      for every seed (only train/val follow ``seed``).
    - ``val_limit``: keep this many validation images (overrides the rule below;
      larger validation sets make ranking studies less noisy).
    - ``train_limit``: keep only this many training images (class-stratified when
      possible) for quick CPU runs. Validation is then cut to
      ``min(len(val), max(1000, train_limit // 5))``: small enough that evaluating
      stays cheap next to a short training run, large enough (1000) that ranking
      architectures by accuracy is not pure noise. The test split is never cut.
    - ``download``: fetch fashion_mnist / cifar with torchvision when missing
      (needs a network); off by default so nothing is fetched unasked.
    """
    loader = DATASETS.get(name, setting="data.name")
    _check_args(resolution, train_limit, val_fraction)
    res = resolution if resolution is not None else loader.default_resolution  # type: ignore[attr-defined]
    return loader(LoadRequest(data_dir, res, seed, Limits(train_limit, val_limit), val_fraction, download))


@register_dataset("digits", default_resolution=32)
def _digits(r: LoadRequest) -> DataBundle:
    """scikit-learn's 8x8 handwritten digits (embedded: no files needed), upsampled; fixed 70/15/15 split."""
    return _load_digits(r.resolution, r.seed, r.limits)


@register_dataset("fashion_mnist", default_resolution=28)
def _fashion_mnist(r: LoadRequest) -> DataBundle:
    """Fashion-MNIST idx files (Debian's dataset-fashion-mnist, or --data-dir)."""
    return _load_fashion_mnist(r.data_dir, r.resolution, r.seed, r.limits, r.val_fraction, r.download)


@register_dataset("cifar10", default_resolution=32)
def _cifar10(r: LoadRequest) -> DataBundle:
    """CIFAR-10 in torchvision's python layout (--data-dir)."""
    return _load_cifar("cifar10", r.data_dir, r.resolution, r.seed, r.limits, r.val_fraction, r.download)


@register_dataset("cifar100", default_resolution=32)
def _cifar100(r: LoadRequest) -> DataBundle:
    """CIFAR-100 in torchvision's python layout (--data-dir)."""
    return _load_cifar("cifar100", r.data_dir, r.resolution, r.seed, r.limits, r.val_fraction, r.download)


@register_dataset("imagefolder", default_resolution=64)
def _imagefolder(r: LoadRequest) -> DataBundle:
    """DIR/train/<class>/<image> (optionally val/ and test/), resized."""
    return _load_imagefolder(r.data_dir, r.resolution, r.seed, r.limits, r.val_fraction)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on ``seed``, never on the global RNG.

    Its own ``torch.Generator`` means other code drawing random numbers (weight
    init, architecture sampling) cannot change the batch order, and vice versa.
    In-memory data sets gain nothing from ``num_workers > 0``; keep it 0 for them.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
    )


# --------------------------------------------------------------------------- argument checks


def _check_args(resolution: int | None, train_limit: int | None, val_fraction: float) -> None:
    """Reject arguments that would otherwise fail deep inside torch with an unhelpful message."""
    if resolution is not None and (not isinstance(resolution, int) or resolution <= 0):
        raise DataError(
            f"resolution must be a positive integer (got {resolution!r}); omit it for the default"
        )
    if train_limit is not None and (not isinstance(train_limit, int) or train_limit <= 0):
        raise DataError(
            f"train_limit must be a positive number of training images (got {train_limit!r}); "
            "omit it to use the whole training set"
        )
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must lie strictly between 0 and 1 (got {val_fraction!r}), e.g. 0.1")


# --------------------------------------------------------------------------- splits and subsets


def _held_count(n: int, fraction: float) -> int:
    """How many of ``n`` items a ``fraction`` holds out: at least one, and never all of them."""
    if n < 2:
        raise DataError(f"cannot split {n} image(s) into two parts; add more images or provide the split")
    return min(max(1, round(n * fraction)), n - 1)


def _choose(labels: np.ndarray, pool: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``pool`` into ``(rest, chosen)`` with ``len(chosen) == count``, class-stratified when possible.

    Stratification needs every class to fit on both sides; tiny pools fall back to a seeded shuffle.
    """
    _, counts = np.unique(labels[pool], return_counts=True)
    n_classes = len(counts)
    can_stratify = counts.min() >= 2 and n_classes <= count <= len(pool) - n_classes
    from sklearn.model_selection import train_test_split

    rest, chosen = train_test_split(
        pool, test_size=count, stratify=labels[pool] if can_stratify else None, random_state=seed
    )
    return np.sort(rest), np.sort(chosen)


def _limit(labels: np.ndarray, pool: np.ndarray, keep: int, seed: int) -> np.ndarray:
    """At most ``keep`` indices of ``pool``, drawn deterministically from ``seed``."""
    if keep >= len(pool):
        return pool
    _, chosen = _choose(labels, pool, keep, seed)
    return chosen


class Limits(NamedTuple):
    """How many training / validation images to keep (None: all, or the default rule for val)."""

    train: int | None = None
    val: int | None = None


def _val_limit(n_val: int, limits: Limits) -> int:
    """Validation size under ``limits`` (see :func:`load_data` for why these numbers); ``limits.val`` wins."""
    if limits.val is not None:
        return min(n_val, limits.val)
    train_limit = limits.train
    if train_limit is None:
        return n_val
    return min(n_val, max(_MIN_LIMITED_VAL, train_limit // 5))


def _train_val_indices(
    labels: np.ndarray, pool: np.ndarray, val_count: int, seed: int, limits: Limits
) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``val_count`` of ``pool`` out for validation, then apply ``limits`` to both parts."""
    train_idx, val_idx = _choose(labels, pool, val_count, seed)
    if limits.train is not None:
        train_idx = _limit(labels, train_idx, limits.train, seed)
    return train_idx, _limit(labels, val_idx, _val_limit(len(val_idx), limits), seed)


# --------------------------------------------------------------------------- in-memory tensors


def _to_normalised(images: torch.Tensor, max_value: float, resolution: int, stats: _Stats) -> torch.Tensor:
    """``[N, C, H, W]`` raw pixels (0..max_value) -> normalised float32 ``[N, C, R, R]``, in chunks.

    Chunking bounds the temporary float copy; normalising commutes with bilinear
    resizing (its weights sum to one), so the order of the two does not matter.
    """
    n, c = images.shape[:2]
    scale, shift = stats.affine(max_value)
    out = torch.empty((n, c, resolution, resolution), dtype=torch.float32)
    for start in range(0, n, _CONVERT_CHUNK):
        x = images[start : start + _CONVERT_CHUNK].to(torch.float32)
        if tuple(x.shape[-2:]) != (resolution, resolution):
            x = F.interpolate(
                x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
            )
        out[start : start + _CONVERT_CHUNK] = x * scale + shift
    return out


def _tensor_dataset(
    images: torch.Tensor,
    labels: np.ndarray,
    idx: np.ndarray,
    max_value: float,
    resolution: int,
    stats: _Stats,
) -> TensorDataset:
    """Convert only the selected images (a train_limit run never converts the rest)."""
    index = torch.as_tensor(idx, dtype=torch.long)
    x = _to_normalised(images[index], max_value, resolution, stats)
    y = torch.as_tensor(labels[idx], dtype=torch.int64)
    return TensorDataset(x, y)


@dataclass
class _RawSplits:
    """Decoded but unconverted images of a data set with an official train/test split."""

    train_x: torch.Tensor  # [N, C, H, W] uint8
    train_y: np.ndarray
    test_x: torch.Tensor
    test_y: np.ndarray
    num_classes: int


def _in_memory_bundle(
    name: str, raw: _RawSplits, stats: _Stats, resolution: int, seed: int, limits: Limits, val_frac: float
) -> DataBundle:
    """Bundle for a train/test data set: seeded val split from train, then convert once."""
    pool = np.arange(len(raw.train_y))
    train_idx, val_idx = _train_val_indices(raw.train_y, pool, _held_count(len(pool), val_frac), seed, limits)
    convert = partial(_tensor_dataset, max_value=255.0, resolution=resolution, stats=stats)
    return DataBundle(
        name=name,
        train=convert(raw.train_x, raw.train_y, train_idx),
        val=convert(raw.train_x, raw.train_y, val_idx),
        test=convert(raw.test_x, raw.test_y, np.arange(len(raw.test_y))),
        num_classes=raw.num_classes,
        in_channels=raw.train_x.shape[1],
        resolution=resolution,
    )


def _check_labels(labels: np.ndarray, num_classes: int, source: str, fix: str) -> None:
    """Labels outside ``0..num_classes-1`` would crash the loss much later; say which file holds them."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{source} has labels outside 0..{num_classes - 1} (found {labels.min()}..{labels.max()}); {fix}"
        )


# --------------------------------------------------------------------------- digits


def _load_digits(resolution: int, seed: int, limits: Limits) -> DataBundle:
    """scikit-learn's 1797 8x8 digits (shipped with it, so always available), stratified 70/15/15.

    digits has no official test split, so one is held out here, always the same one (drawn with
    ``_DIGITS_TEST_SEED``, not ``seed``): test accuracies of runs with different seeds are measured on the
    same images. The train/val split of the remaining images follows ``seed``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32)).unsqueeze(1)  # [N, 1, 8, 8], values 0..16
    labels = digits.target.astype(np.int64)
    held = _held_count(len(labels), _DIGITS_HELD_OUT)
    rest, test_idx = _choose(labels, np.arange(len(labels)), held, _DIGITS_TEST_SEED)
    train_idx, val_idx = _train_val_indices(labels, rest, held, seed, limits)
    convert = partial(
        _tensor_dataset, images, labels, max_value=16.0, resolution=resolution, stats=_DIGITS_STATS
    )
    return DataBundle("digits", convert(train_idx), convert(val_idx), convert(test_idx), 10, 1, resolution)


# --------------------------------------------------------------------------- Fashion-MNIST

_FASHION_HOW_TO_GET = (
    f"Install it with `apt-get install dataset-fashion-mnist` (puts the files in {SYSTEM_FASHION_DIR}/), "
    "or point --data-dir at a folder holding the four idx files (.gz or uncompressed, flat or in "
    "torchvision's FashionMNIST/raw/ layout), or pass --download when a network is available"
)


def _load_fashion_mnist(
    data_dir: str | None, resolution: int, seed: int, limits: Limits, val_frac: float, download: bool
) -> DataBundle:
    """Real Fashion-MNIST (60k train / 10k test), read by torchvision from a located or staged copy."""
    root, origins = _locate_fashion(data_dir, download)
    raw_dir = root / "FashionMNIST" / "raw"
    for file_name, magic in FASHION_FILES.items():
        _check_idx_file(raw_dir / file_name, magic, origins.get(file_name))
    train_x, train_y = _read_fashion_split(root, True, origins)
    test_x, test_y = _read_fashion_split(root, False, origins)
    raw = _RawSplits(train_x.unsqueeze(1), train_y, test_x.unsqueeze(1), test_y, 10)
    return _in_memory_bundle("fashion_mnist", raw, _FASHION_STATS, resolution, seed, limits, val_frac)


def _locate_fashion(data_dir: str | None, download: bool) -> tuple[Path, dict[str, Path]]:
    """Root with torchvision's ``FashionMNIST/raw/<uncompressed>`` layout, and where each file came from.

    A ``data_dir`` already in that layout is used as is; flat or gzipped files
    (as the Debian package ships them) are staged into the user cache first.
    """
    base = Path(data_dir).expanduser() if data_dir else SYSTEM_FASHION_DIR
    if data_dir and not base.is_dir() and not download:
        raise DataError(f"data directory {base} does not exist. {_FASHION_HOW_TO_GET}")
    tv_raw = base / "FashionMNIST" / "raw"
    if all((tv_raw / f).is_file() for f in FASHION_FILES):
        return base, {f: tv_raw / f for f in FASHION_FILES}
    for folder in (base, tv_raw):
        sources = _find_idx_sources(folder)
        if len(sources) == len(FASHION_FILES):
            return _stage_fashion(sources), sources
    if download:
        root = base if data_dir else _fashion_cache_root()
        _download_fashion(root)
        return root, {f: root / "FashionMNIST" / "raw" / f for f in FASHION_FILES}
    missing = [f"{f}[.gz]" for f in FASHION_FILES if f not in _find_idx_sources(base)]
    raise DataError(f"Fashion-MNIST files missing in {base}: {', '.join(missing)}. {_FASHION_HOW_TO_GET}")


def _find_idx_sources(folder: Path) -> dict[str, Path]:
    """Existing file per idx name in ``folder``, uncompressed preferred over ``.gz``."""
    found: dict[str, Path] = {}
    for file_name in FASHION_FILES:
        for candidate in (folder / file_name, folder / f"{file_name}.gz"):
            if candidate.is_file():
                found[file_name] = candidate
                break
    return found


def _fashion_cache_root() -> Path:
    """Where staged (uncompressed) Fashion-MNIST copies live, in torchvision's layout."""
    return cache_home() / "fashion_mnist"


def _stage_fashion(sources: dict[str, Path]) -> Path:
    """Decompress / copy the idx files into the cache in torchvision's layout; returns its root."""
    root = _fashion_cache_root()
    raw_dir = root / "FashionMNIST" / "raw"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the cache folder {raw_dir} ({exc}); set XDG_CACHE_HOME to a writable folder"
        ) from exc
    for file_name, src in sources.items():
        _stage_file(src, raw_dir / file_name)
    return root


def _source_stamp(src: Path) -> str:
    """Identity of a source file; a cached copy is reused only while this is unchanged."""
    st = src.stat()
    return f"{src.resolve()}\n{st.st_size}\n{st.st_mtime_ns}\n"


def _stage_file(src: Path, dest: Path) -> None:
    """Make ``dest`` an uncompressed copy of ``src``, reusing a previous copy of the same source.

    The stamp is removed before and rewritten after the data, so a crash in
    between can never pair a stamp with data from a different source.
    """
    stamp = dest.with_name(dest.name + ".source")
    wanted = _source_stamp(src)
    if dest.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return
    stamp.unlink(missing_ok=True)
    _atomic_write(dest, lambda out: _copy_decompressed(src, out), src)
    _atomic_write(stamp, lambda out: out.write(wanted.encode()), src)


def _copy_decompressed(src: Path, out: IO[bytes]) -> None:
    """Stream ``src`` (gunzipped if it ends in .gz) into ``out`` without holding it all in memory."""
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rb") as f:
        shutil.copyfileobj(f, out, length=1 << 20)


def _atomic_write(dest: Path, fill: Callable[[IO[bytes]], Any], src: Path) -> None:
    """Write ``dest`` atomically from ``fill``; a bad source or a failed write is a :class:`DataError` naming
    both files."""

    def checked_fill(out: IO[bytes]) -> None:
        try:
            fill(out)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{src} is not a valid gzip file ({exc}); re-install or re-download it") from None

    try:
        atomic_write_stream(dest, checked_fill)
    except OSError as exc:
        raise DataError(
            f"could not copy {src} into the cache as {dest} ({exc}); "
            "check free space and permissions, or set XDG_CACHE_HOME to a writable folder"
        ) from exc


def _check_idx_file(path: Path, magic: int, origin: Path | None) -> None:
    """Check magic number and length of an idx file, naming the file the user actually has."""
    shown = f"{origin} (cached as {path})" if origin is not None and origin != path else str(path)
    fix = "re-install it (`apt-get install --reinstall dataset-fashion-mnist`) or re-download it"
    ndim = magic & 0xFF
    try:
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {shown} ({exc}); check that it is a readable file") from exc
    found = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
    if found != magic:
        raise DataError(f"{shown} is not an idx file (magic {found}, expected {magic}); {fix}")
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{shown} is truncated inside its header; {fix}")
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = len(head) + int(np.prod(dims))
    if size != expected:
        raise DataError(f"{shown} has {size} bytes, its header {dims} implies {expected}; {fix}")


def _read_fashion_split(root: Path, train: bool, origins: dict[str, Path]) -> tuple[torch.Tensor, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and int64 labels of one split, via torchvision's reader."""
    prefix = "train" if train else "t10k"
    files = [str(origins[f]) for f in FASHION_FILES if f.startswith(prefix)]
    from torchvision.datasets import FashionMNIST

    try:
        ds = FashionMNIST(str(root), train=train, download=False)
        images, labels = ds.data, ds.targets.numpy().astype(np.int64)
    except (RuntimeError, AssertionError, ValueError, TypeError, OSError) as exc:
        raise DataError(
            f"could not read Fashion-MNIST files {', '.join(files)} ({exc}); re-install them"
        ) from exc
    if len(images) != len(labels) or tuple(images.shape[1:]) != (28, 28):
        raise DataError(
            f"{' and '.join(files)} disagree: images {tuple(images.shape)}, {len(labels)} labels; "
            "the pair must come from the same release"
        )
    _check_labels(labels, 10, files[-1], "it is not a Fashion-MNIST label file")
    return images, labels


def _download_fashion(root: Path) -> None:
    """Let torchvision fetch Fashion-MNIST into ``root`` (only when the user passed download)."""
    from torchvision.datasets import FashionMNIST  # outside the try: a broken install is not a network error

    try:
        FashionMNIST(str(root), train=True, download=True)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
        raise DataError(
            f"downloading Fashion-MNIST into {root} failed ({exc}); check the network, "
            "or install the files with `apt-get install dataset-fashion-mnist`"
        ) from exc


# --------------------------------------------------------------------------- CIFAR
#
# torchvision's CIFAR10/CIFAR100 classes md5-check every batch file on construction
# and answer any mismatch with "Dataset not found or corrupted", without naming the
# file. That rejects every file that is not byte-identical to the official release
# (re-pickled copies, small fixtures in tests) even when its contents are valid.
# So torchvision is used for what it is good at here, the official file list
# (its class attributes) and the download, while the pickles are read below, in the
# same format torchvision reads, with structural checks that name the bad file.
# The pickles are opened with an allow-list unpickler, so a tampered data folder
# cannot execute code (plain pickle.load, as torchvision uses, would).

_CIFAR: dict[str, tuple[str, _Stats]] = {  # torchvision class name, normalisation
    "cifar10": ("CIFAR10", _CIFAR10_STATS),
    "cifar100": ("CIFAR100", _CIFAR100_STATS),
}

_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and plain containers: data files must not run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _load_cifar(
    key: str,
    data_dir: str | None,
    resolution: int,
    seed: int,
    limits: Limits,
    val_frac: float,
    download: bool,
) -> DataBundle:
    """CIFAR-10/100 from the python-version archive layout under ``data_dir``."""
    import torchvision.datasets

    cls_name, stats = _CIFAR[key]
    cls = getattr(torchvision.datasets, cls_name)
    folder = _cifar_folder(key, cls, data_dir, download)
    classes = _read_cifar_meta(folder / cls.meta["filename"], cls.meta["key"])
    train_x, train_y = _read_cifar_batches(folder, [n for n, _ in cls.train_list], len(classes))
    test_x, test_y = _read_cifar_batches(folder, [n for n, _ in cls.test_list], len(classes))
    raw = _RawSplits(train_x, train_y, test_x, test_y, len(classes))
    return _in_memory_bundle(key, raw, stats, resolution, seed, limits, val_frac)


def _cifar_required(cls: type[CIFAR10]) -> list[str]:
    """File names the archive layout must contain, taken from torchvision so they never drift."""
    return [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar_folder(key: str, cls: type[CIFAR10], data_dir: str | None, download: bool) -> Path:
    """``data_dir/<base_folder>`` with every batch file present, downloading only if asked to."""
    layout = f"{cls.base_folder}/ ({', '.join(_cifar_required(cls))})"
    how = f"extract {cls.url} there, or add --download to fetch it when a network is available"
    if not data_dir:
        raise DataError(f"{key} needs --data-dir DIR, the folder that contains {cls.base_folder}/; {how}")
    root = Path(data_dir).expanduser()
    if not root.is_dir() and not download:
        raise DataError(f"data directory {root} does not exist; it should contain {layout}. To get it: {how}")
    folder = root / cls.base_folder
    missing = [n for n in _cifar_required(cls) if not (folder / n).is_file()]
    if missing and download:
        _download_cifar(cls, root)
        missing = [n for n in _cifar_required(cls) if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{key} files missing in {folder}: {', '.join(missing)}. Expected the python-version "
            f"archive layout {layout} inside {root}; {how}"
        )
    return folder


def _download_cifar(cls: type[CIFAR10], root: Path) -> None:
    """Fetch and extract the official archive (torchvision verifies its md5)."""
    from torchvision.datasets.utils import download_and_extract_archive  # outside the try, as above

    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
        raise DataError(
            f"downloading {cls.url} into {root} failed ({exc}); check the network or fetch the archive "
            "by hand and extract it there"
        ) from exc


def _unpickle(path: Path) -> dict:
    """One CIFAR pickle as a dict, or a DataError naming the file."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except (
        Exception
    ) as exc:  # pickle raises many types on garbage (UnpicklingError, EOFError, ValueError, ...)
        raise DataError(
            f"{path} is not a readable CIFAR pickle ({exc}); re-extract it from the official archive"
        ) from exc
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a {type(entry).__name__}, not a CIFAR dict; re-extract it")
    return entry


def _read_cifar_meta(path: Path, names_key: str) -> list[str]:
    """Class names from ``batches.meta`` / ``meta``; their count is the number of classes."""
    names = _unpickle(path).get(names_key)
    if not isinstance(names, list) or not names:
        raise DataError(f"{path} has no {names_key!r} list of class names; re-extract it")
    return names


def _read_cifar_batches(
    folder: Path, file_names: Sequence[str], num_classes: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Concatenate batch files into ``[N, 3, 32, 32]`` uint8 images and int64 labels."""
    images, labels = [], []
    for file_name in file_names:
        x, y = _read_cifar_batch(folder / file_name, num_classes)
        images.append(x)
        labels.append(y)
    return torch.from_numpy(np.concatenate(images)), np.concatenate(labels)


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch: ``data`` uint8 [N, 3072] (channel-major rows) plus ``labels`` or ``fine_labels``."""
    entry = _unpickle(path)
    data = entry.get("data")
    raw_labels = entry.get("labels", entry.get("fine_labels"))
    fix = "re-extract it from the official archive"
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape [N, 3072] (got {shape}); {fix}")
    if raw_labels is None or len(raw_labels) != len(data):
        raise DataError(f"{path}: needs 'labels' (or 'fine_labels') with one label per image; {fix}")
    labels = np.asarray(raw_labels, dtype=np.int64)
    _check_labels(labels, num_classes, str(path), fix)
    return data.reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------- image folders

_IMAGEFOLDER_LAYOUT = "DIR/train/<class>/<image>, optionally DIR/val/<class>/... and DIR/test/<class>/..."


class _ImageReader:
    """Open, shrink and normalise one image file (an ImageFolder loader).

    A class rather than a closure so DataLoader worker processes can pickle it.
    ``draft`` lets JPEG decode at reduced size, the biggest saving for large photos.
    """

    def __init__(self, resolution: int, stats: _Stats):
        self.resolution = resolution
        self.scale, self.shift = stats.affine(255.0)

    def __call__(self, path: str) -> torch.Tensor:
        size = (self.resolution, self.resolution)
        try:
            with Image.open(path) as img:
                img.draft("RGB", size)
                rgb = img.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {path} ({exc}); delete or replace the file") from exc
        chw = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # HWC uint8 -> CHW, as pil_to_tensor does
        return chw.to(torch.float32).mul_(self.scale).add_(self.shift)


def _as_int64(label: int) -> torch.Tensor:
    """Labels as int64 tensors, like the in-memory data sets return them."""
    return torch.tensor(label, dtype=torch.int64)


def _image_folder(folder: Path, reader: _ImageReader) -> ImageFolder:
    """torchvision ImageFolder, with its 'no classes / no images' errors turned into DataErrors."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(folder), loader=reader, target_transform=_as_int64)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DataError(
            f"no usable classes/images in {folder} ({exc}); expected layout {_IMAGEFOLDER_LAYOUT}"
        ) from exc


def _optional_split(folder: Path, reader: _ImageReader, classes: list[str]) -> ImageFolder | None:
    """``val/`` or ``test/`` if present; its class folders must match ``train/`` or labels would differ."""
    if not folder.is_dir():
        return None
    split = _image_folder(folder, reader)
    if split.classes != classes:
        only_here = sorted(set(split.classes) - set(classes))
        only_train = sorted(set(classes) - set(split.classes))
        raise DataError(
            f"class folders of {folder} differ from train/: only here {only_here}, only in train"
            f" {only_train}; give every split the same class folders"
        )
    return split


def _imagefolder_root(data_dir: str | None) -> Path:
    """``data_dir``, which must hold at least a ``train/`` folder."""
    if not data_dir:
        raise DataError(f"imagefolder needs --data-dir DIR laid out as {_IMAGEFOLDER_LAYOUT}")
    root = Path(data_dir).expanduser()
    if not (root / "train").is_dir():
        what = "does not exist" if not root.is_dir() else "has no train/ folder"
        raise DataError(f"data directory {root} {what}; expected layout {_IMAGEFOLDER_LAYOUT}")
    return root


def _load_imagefolder(
    data_dir: str | None, resolution: int, seed: int, limits: Limits, val_frac: float
) -> DataBundle:
    """RGB image folders decoded per item; a missing val or test split is ``val_fraction`` of train/ each."""
    root = _imagefolder_root(data_dir)
    reader = _ImageReader(resolution, _IMAGENET_STATS)
    train = _image_folder(root / "train", reader)
    labels = np.asarray(train.targets, dtype=np.int64)
    pool = np.arange(len(labels))
    test: Dataset | None = _optional_split(root / "test", reader, train.classes)
    if test is None:
        pool, test_idx = _choose(labels, pool, _held_count(len(pool), val_frac), seed)
        test = Subset(train, test_idx.tolist())
    val = _optional_split(root / "val", reader, train.classes)
    if val is None:
        same_share = val_frac * len(labels) / len(pool)  # val is as large as a carved test split
        train_idx, val_idx = _train_val_indices(
            labels, pool, _held_count(len(pool), same_share), seed, limits
        )
        val_ds: Dataset = Subset(train, val_idx.tolist())
    else:
        train_idx = pool if limits.train is None else _limit(labels, pool, limits.train, seed)
        val_ds = _limited_folder(val, _val_limit(len(val), limits), seed)
    train_ds = Subset(train, train_idx.tolist())
    return DataBundle("imagefolder", train_ds, val_ds, test, len(train.classes), 3, resolution)


def _limited_folder(folder: ImageFolder, keep: int, seed: int) -> Dataset:
    """``folder`` itself, or a seeded class-stratified subset of ``keep`` of its images."""
    if keep >= len(folder):
        return folder
    labels = np.asarray(folder.targets, dtype=np.int64)
    return Subset(folder, _limit(labels, np.arange(len(labels)), keep, seed).tolist())
