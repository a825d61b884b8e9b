"""Data sets for the design-space explorer: scikit-learn digits, CIFAR-10 and CIFAR-100.

Everything is held as tensors in memory. Images are float32 ``[N, C, H, W]`` in
``[0, 1]`` and labels are int64 ``[N]``; normalisation (``DataSpec.mean`` /
``DataSpec.std``) and augmentation (:func:`random_crop_flip`) are left to the
training code so that attacks can work in ``[0, 1]`` pixel space.

CIFAR files are read from the standard "python version" directories
(``cifar-10-batches-py`` / ``cifar-100-python``) with a restricted unpickler that
only accepts what numpy arrays need, so a tampered file cannot run code. Fetching
the archives is opt-in (``download=True`` or :func:`download_cifar`) and the
archive's MD5 is checked before it is extracted.

Typical use::

    ds = load_dataset("cifar10", root="data", subset=2000, val_fraction=0.1, seed=0)
    for xb, yb in iterate_batches(ds.train, 128, shuffle=True, generator=g):
        xb = random_crop_flip(xb, generator=g) if ds.spec.augment else xb
"""

from __future__ import annotations

import codecs
import http.client
import hashlib
import io
import logging
import math
import os
import pathlib
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dse.errors import DataError

__all__ = [
    "CIFAR_SOURCES",
    "CifarSource",
    "DATASETS",
    "DataSpec",
    "Dataset",
    "Split",
    "dataset_spec",
    "download_cifar",
    "iterate_batches",
    "load_dataset",
    "random_crop_flip",
    "stratified_subset",
]

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100")

_NUM_CLASSES: dict[str, int] = {"digits": 10, "cifar10": 10, "cifar100": 100}

_CIFAR_PIXELS = 3 * 32 * 32


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class Split:
    """One split of a data set, held as tensors.

    Attributes:
        x: Images, float32 ``[N, C, H, W]`` with values in ``[0, 1]``, contiguous.
        y: Labels, int64 ``[N]``.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"Split.x: expected a [N, C, H, W] tensor, got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise DataError(
                f"Split.y: expected shape ({self.x.shape[0]},) to match Split.x, got {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """Return a copy of this split on ``device`` (the same object if nothing moves).

        Args:
            device: Target device, e.g. ``"cuda"``.

        Returns:
            The split with both tensors on ``device``.
        """
        x = self.x.to(device)
        y = self.y.to(device)
        if x is self.x and y is self.y:
            return self
        return Split(x=x, y=y)


@dataclass(frozen=True)
class DataSpec:
    """What a model (and the training loop) needs to know about a data set.

    Attributes:
        name: Data set name, one of :data:`DATASETS`.
        in_channels: Image channels (1 for digits, 3 for CIFAR).
        image_size: Image height and width (square images).
        num_classes: Number of classes.
        mean: Per-channel mean for input normalisation.
        std: Per-channel standard deviation for input normalisation.
        augment: Whether training should use :func:`random_crop_flip`.
    """

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool


@dataclass(frozen=True)
class Dataset:
    """A loaded data set.

    Attributes:
        spec: Shape, class count and normalisation constants.
        train: Training split (the training pool minus the validation split).
        val: Validation split carved from the training pool, or ``None`` when
            ``val_fraction == 0``.
        test: Test split.
    """

    spec: DataSpec
    train: Split
    val: Split | None
    test: Split


@dataclass(frozen=True)
class CifarSource:
    """Where a CIFAR archive lives and what it contains.

    Attributes:
        url: Archive URL (``.tar.gz``).
        md5: Expected MD5 hex digest of the archive.
        archive: File name the archive is saved under in ``root``.
        dirname: Directory the archive extracts to.
        train_files: Training pickles inside ``dirname``.
        test_files: Test pickles inside ``dirname``.
        meta_file: Metadata pickle inside ``dirname``.
        label_key: Key of the label list in each data pickle.
        names_key: Key of the class-name list in the metadata pickle.
        num_classes: Number of classes.
        mean: Standard per-channel mean.
        std: Standard per-channel standard deviation.
        title: Human-readable name used in messages.
    """

    url: str
    md5: str
    archive: str
    dirname: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    title: str

    @property
    def files(self) -> tuple[str, ...]:
        """All files the directory must contain."""
        return (*self.train_files, *self.test_files, self.meta_file)


#: Official CIFAR sources. Tests (or mirrors) may swap entries with ``dataclasses.replace``.
CIFAR_SOURCES: dict[str, CifarSource] = {
    "cifar10": CifarSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        archive="cifar-10-python.tar.gz",
        dirname="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        title="CIFAR-10",
    ),
    "cifar100": CifarSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        archive="cifar-100-python.tar.gz",
        dirname="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        title="CIFAR-100",
    ),
}


# --------------------------------------------------------------------------- public API


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
) -> Dataset:
    """Load a data set as in-memory tensors.

    ``digits`` uses a fixed stratified 80/20 train/test split (independent of
    ``seed``). For all data sets, ``subset`` first reduces the training pool and
    the test split to at most ``subset`` examples each (stratified; the training
    pool is drawn with ``seed``, the test split with a fixed seed so that every
    run is scored on the same images), then a stratified validation split of
    ``round(val_fraction * len(pool))`` examples is carved from the pool with
    ``seed``.

    ``spec.mean`` / ``spec.std`` are the standard constants for CIFAR and, for
    digits, the statistics of the fixed training pool (before ``subset`` and the
    validation split), so the spec equals :func:`dataset_spec` for every call.

    Args:
        name: One of :data:`DATASETS`.
        root: Directory holding the CIFAR files (either ``root`` itself or
            ``root/cifar-10-batches-py`` resp. ``root/cifar-100-python``).
            Required for CIFAR, ignored for digits.
        subset: Keep at most this many examples in each of the training pool
            and the test split; at least the number of classes. ``None`` keeps all.
        val_fraction: Fraction of the training pool used for validation,
            ``0 <= val_fraction < 1``; 0 gives ``val=None``.
        seed: Seed for the training-pool subset and the validation split.
        download: Fetch the CIFAR archive into ``root`` if the files are missing.

    Returns:
        The loaded :class:`Dataset`.

    Raises:
        DataError: Unknown name, bad ``subset`` / ``val_fraction``, or missing,
            corrupt or malformed data files (the message names the file).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    num_classes = _NUM_CLASSES[name]
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)):
            raise DataError(f"subset: expected an integer or None, got {subset!r}")
        if subset < num_classes:
            raise DataError(
                f"subset: must be at least the number of classes ({num_classes}) for {name}, got {subset}"
            )
        subset = int(subset)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.floating, np.integer)):
        raise DataError(f"val_fraction: expected a number in [0, 1), got {val_fraction!r}")
    val_fraction = float(val_fraction)
    if not (0.0 <= val_fraction < 1.0):
        raise DataError(f"val_fraction: must satisfy 0 <= val_fraction < 1, got {val_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed: expected an integer, got {seed!r}")
    seed = int(seed)

    digits_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    if name == "digits":
        x_pool, y_pool, x_test, y_test = _load_digits_arrays()
        digits_stats = _channel_stats(x_pool)
        source_desc = "scikit-learn digits"
    else:
        src = CIFAR_SOURCES[name]
        directory = _resolve_cifar_dir(name, root, download=download)
        x_pool, y_pool, x_test, y_test = _load_cifar_arrays(directory, src)
        source_desc = str(directory)

    if subset is not None:
        keep = stratified_subset(y_pool, subset, seed=seed)
        x_pool, y_pool = x_pool[keep], y_pool[keep]
        keep = stratified_subset(y_test, subset, seed=0)
        x_test, y_test = x_test[keep], y_test[keep]

    val: Split | None = None
    if val_fraction > 0.0:
        n_pool = int(y_pool.shape[0])
        n_val = min(max(1, round(val_fraction * n_pool)), n_pool - 1)
        if n_val < 1:
            raise DataError(
                f"val_fraction: training pool of {n_pool} example(s) is too small to carve a validation split"
            )
        val_idx = stratified_subset(y_pool, n_val, seed=seed)
        mask = torch.ones(n_pool, dtype=torch.bool)
        mask[val_idx] = False
        val = _make_split(x_pool[val_idx], y_pool[val_idx])
        train = _make_split(x_pool[mask], y_pool[mask])
    else:
        train = _make_split(x_pool, y_pool)
    test = _make_split(x_test, y_test)

    spec = _digits_spec(digits_stats) if digits_stats is not None else _cifar_spec(name)
    logger.info(
        "loaded %s from %s: train %d, val %d, test %d",
        name,
        source_desc,
        len(train),
        0 if val is None else len(val),
        len(test),
    )
    return Dataset(spec=spec, train=train, val=val, test=test)


def dataset_spec(name: str) -> DataSpec:
    """Return the :class:`DataSpec` of a data set without loading its images (digits excepted).

    The result equals ``load_dataset(name, ...).spec`` for any ``subset``,
    ``val_fraction`` and ``seed``: CIFAR uses the standard constants and digits
    the statistics of its fixed training pool (a fraction of a second to compute).

    Args:
        name: One of :data:`DATASETS`.

    Returns:
        Shape, class count, normalisation constants and augmentation flag.

    Raises:
        DataError: Unknown name.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if name == "digits":
        x_pool = _load_digits_arrays()[0]
        return _digits_spec(_channel_stats(x_pool))
    return _cifar_spec(name)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches of a split.

    Args:
        split: The split to iterate over.
        batch_size: Examples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: Visit the examples in the order of ``torch.randperm(n, generator=generator)``.
        generator: Random generator for the permutation (for reproducibility).
        drop_last: Skip a final batch smaller than ``batch_size``.

    Yields:
        ``(x, y)`` tensor pairs, on the split's device.

    Raises:
        ValueError: If ``batch_size < 1``.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    n = len(split)
    stop = (n // batch_size) * batch_size if drop_last else n
    if shuffle:
        perm_device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(n, generator=generator, device=perm_device).to(split.x.device)
        for start in range(0, stop, batch_size):
            idx = perm[start : start + batch_size]
            yield split.x[idx], split.y[idx]
    else:
        for start in range(0, stop, batch_size):
            yield split.x[start : start + batch_size], split.y[start : start + batch_size]


def random_crop_flip(
    x: torch.Tensor,
    *,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop after zero padding, plus random horizontal flip, for a batch.

    Each image is padded by ``padding`` zeros on every side, a window of the
    original size is cropped at a uniformly random offset, and (if ``flip``)
    the crop is mirrored left-right with probability 1/2. Done with two
    ``gather`` calls, no per-image Python loop.

    Args:
        x: Images ``[N, C, H, W]``.
        padding: Zero padding on each side (0 disables cropping).
        flip: Whether to mirror a random half (in expectation) of the images.
        generator: Random generator (on the CPU or on ``x``'s device); a seeded
            one makes the output deterministic.

    Returns:
        A new tensor with the same shape, dtype and device as ``x``.

    Raises:
        ValueError: If ``x`` is not 4-D or ``padding`` is negative.
    """
    if x.ndim != 4:
        raise ValueError(f"random_crop_flip: expected x of shape [N, C, H, W], got {tuple(x.shape)}")
    if isinstance(padding, bool) or int(padding) != padding or padding < 0:
        raise ValueError(f"random_crop_flip: padding must be a non-negative integer, got {padding!r}")
    padding = int(padding)
    n, c, h, w = x.shape
    rng_device = generator.device if generator is not None else x.device
    if padding > 0:
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=rng_device).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=rng_device).to(x.device)
    else:
        oy = torch.zeros(n, dtype=torch.long, device=x.device)
        ox = torch.zeros(n, dtype=torch.long, device=x.device)
    cols_base = torch.arange(w, device=x.device)
    cols = ox[:, None] + cols_base[None, :]  # [N, W]
    if flip:
        flipped = torch.rand(n, generator=generator, device=rng_device).to(x.device) < 0.5
        cols = torch.where(flipped[:, None], ox[:, None] + (w - 1 - cols_base)[None, :], cols)
    rows = oy[:, None] + torch.arange(h, device=x.device)[None, :]  # [N, H]

    padded = F.pad(x, (padding, padding, padding, padding)) if padding > 0 else x
    wp = padded.shape[3]
    out = torch.gather(padded, 2, rows[:, None, :, None].expand(n, c, h, wp))
    out = torch.gather(out, 3, cols[:, None, None, :].expand(n, c, h, w))
    return out.contiguous()


def stratified_subset(y: torch.Tensor, n: int, *, seed: int) -> torch.Tensor:
    """Pick ``n`` indices of ``y`` with class proportions preserved.

    Each class present gets at least one index when ``n`` is at least the
    number of classes present; the remainder is shared in proportion to class
    frequency (largest remainders, ties to the smaller class id). Indices
    within a class are drawn with a generator seeded by ``seed``.

    Args:
        y: Integer labels ``[N]``.
        n: Number of indices to draw; ``n >= N`` returns all indices.
        seed: Random seed.

    Returns:
        Sorted int64 indices into ``y``, ``min(n, N)`` of them.

    Raises:
        ValueError: If ``y`` is not 1-D or ``n`` is negative.
    """
    y = torch.as_tensor(y)
    if y.ndim != 1:
        raise ValueError(f"stratified_subset: expected 1-D labels, got shape {tuple(y.shape)}")
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"stratified_subset: n must be a non-negative integer, got {n!r}")
    n = int(n)
    total = int(y.shape[0])
    if n >= total:
        return torch.arange(total, dtype=torch.long)
    y_cpu = y.detach().to("cpu", torch.long)
    classes, counts = torch.unique(y_cpu, sorted=True, return_counts=True)
    alloc = _allocate(counts.tolist(), n)
    gen = torch.Generator().manual_seed(int(seed))
    chosen: list[torch.Tensor] = []
    for cls, k in zip(classes.tolist(), alloc):
        if k == 0:
            continue
        members = torch.nonzero(y_cpu == cls, as_tuple=False).flatten()
        pick = torch.randperm(members.numel(), generator=gen)[:k]
        chosen.append(members[pick])
    if not chosen:
        return torch.empty(0, dtype=torch.long)
    return torch.sort(torch.cat(chosen)).values


def download_cifar(
    name: str,
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    md5: str | None = None,
) -> pathlib.Path:
    """Download, verify and extract a CIFAR archive into ``root``.

    The archive is streamed to a temporary file under ``root``, its MD5 checked
    (a partial or mismatching file is deleted), then kept as ``root/<archive>``
    and extracted with path and link checks. An archive already present with
    the right MD5 is reused.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: Directory to download into (created if missing).
        url: Override of the archive URL (default: :data:`CIFAR_SOURCES`).
        md5: Override of the expected MD5 hex digest.

    Returns:
        The extracted data directory, ``root/cifar-10-batches-py`` or ``root/cifar-100-python``.

    Raises:
        DataError: Unknown name, network error, MD5 mismatch or unsafe/corrupt archive.
    """
    if name not in CIFAR_SOURCES:
        raise DataError(f"download: unknown CIFAR dataset {name!r}; known: {', '.join(CIFAR_SOURCES)}")
    src = CIFAR_SOURCES[name]
    url = src.url if url is None else url
    md5 = (src.md5 if md5 is None else md5).lower()
    root_path = pathlib.Path(root).expanduser()
    try:
        root_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{root_path}: cannot create data directory ({exc})") from exc
    archive = root_path / src.archive

    if archive.is_file() and _md5_of(archive) == md5:
        logger.info("reusing verified archive %s", archive)
    else:
        _fetch(url, archive, md5)
    _safe_extract(archive, root_path)
    directory = root_path / src.dirname
    missing = [f for f in src.files if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{archive}: archive did not contain {directory / missing[0]}")
    logger.info("extracted %s to %s", src.title, directory)
    return directory


# --------------------------------------------------------------------------- digits


def _load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the fixed digits train pool and test split as ``(x, y, x_test, y_test)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(labels.shape[0]), test_size=0.2, stratify=labels, random_state=0
    )
    idx_train = np.sort(idx_train)
    idx_test = np.sort(idx_test)
    x = torch.from_numpy(images.astype(np.float32))
    y = torch.from_numpy(labels)
    tr = torch.from_numpy(idx_train)
    te = torch.from_numpy(idx_test)
    return x[tr], y[tr], x[te], y[te]


# --------------------------------------------------------------------------- CIFAR reading


def _resolve_cifar_dir(name: str, root: str | os.PathLike[str] | None, *, download: bool) -> pathlib.Path:
    """Find the directory holding the CIFAR files, downloading it if asked."""
    src = CIFAR_SOURCES[name]
    if root is None:
        raise DataError(
            f"root: {name} needs a data directory holding {src.dirname}/ "
            f"(pass root=..., with download=True to fetch it)"
        )
    root_path = pathlib.Path(root).expanduser()
    directory = _find_cifar_dir(root_path, src)
    if directory is not None and all((directory / f).is_file() for f in src.files):
        return directory
    if download:
        return download_cifar(name, root_path)
    if not root_path.is_dir():
        raise DataError(f"{root_path}: data directory not found; pass --download (download=True) to fetch {src.title}")
    if directory is None:
        raise DataError(
            f"{root_path}: no {src.title} files found (looked in {root_path / src.dirname} and {root_path}); "
            f"pass --download (download=True) to fetch them"
        )
    missing = next(f for f in src.files if not (directory / f).is_file())
    raise DataError(f"{directory / missing}: {src.title} file not found; pass --download (download=True) to fetch it")


def _find_cifar_dir(root: pathlib.Path, src: CifarSource) -> pathlib.Path | None:
    """Return ``root/dirname`` or ``root`` (whichever holds CIFAR files), else ``None``."""
    sub = root / src.dirname
    if sub.is_dir():
        return sub
    if root.is_dir() and any((root / f).exists() for f in src.files):
        return root
    return None


def _load_cifar_arrays(
    directory: pathlib.Path, src: CifarSource
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read and validate all CIFAR pickles; return uint8 images and int64 labels."""
    meta_path = directory / src.meta_file
    meta = _read_pickle(meta_path)
    names = meta.get(src.names_key)
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != src.num_classes):
        got = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise DataError(f"{meta_path}: expected {src.num_classes} entries under {src.names_key!r}, got {got}")

    def read_all(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for fname in files:
            x, y = _read_cifar_batch(directory / fname, src)
            xs.append(x)
            ys.append(y)
        x_all = np.concatenate(xs) if len(xs) > 1 else xs[0]
        y_all = np.concatenate(ys) if len(ys) > 1 else ys[0]
        x_t = torch.from_numpy(np.ascontiguousarray(x_all).reshape(-1, 3, 32, 32))
        return x_t, torch.from_numpy(y_all.astype(np.int64))

    x_train, y_train = read_all(src.train_files)
    x_test, y_test = read_all(src.test_files)
    return x_train, y_train, x_test, y_test


def _read_cifar_batch(path: pathlib.Path, src: CifarSource) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR data pickle; return uint8 ``[N, 3072]`` and int64 ``[N]``."""
    obj = _read_pickle(path)
    if b"data" not in obj:
        raise DataError(f"{path}: missing key b'data' (keys: {_keys_desc(obj)})")
    if src.label_key not in obj:
        raise DataError(f"{path}: missing key {src.label_key!r} (keys: {_keys_desc(obj)})")
    labels = _as_labels(obj[src.label_key], path, src)
    data = _as_pixels(obj[b"data"], labels.shape[0], path)
    return data, labels


def _as_labels(raw: Any, path: pathlib.Path, src: CifarSource) -> np.ndarray:
    """Validate a label list/array and return it as int64."""
    key = src.label_key
    if isinstance(raw, np.ndarray):
        arr = raw
    elif isinstance(raw, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw):
            raise DataError(f"{path}: {key!r} must be a list of integers")
        arr = np.asarray(raw, dtype=np.int64) if raw else np.zeros(0, dtype=np.int64)
    else:
        raise DataError(f"{path}: {key!r} must be a list or array of integers, got {type(raw).__name__}")
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{path}: {key!r} must be a 1-D integer array, got dtype {arr.dtype} shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= src.num_classes):
        bad = int(arr[(arr < 0) | (arr >= src.num_classes)][0])
        raise DataError(f"{path}: label {bad} under {key!r} is outside [0, {src.num_classes})")
    return arr


def _as_pixels(raw: Any, n: int, path: pathlib.Path) -> np.ndarray:
    """Validate the ``b'data'`` entry and return uint8 ``[n, 3072]``."""
    expected = f"expected key b'data' with uint8 array of shape [{n}, {_CIFAR_PIXELS}]"
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) != n * _CIFAR_PIXELS:
            raise DataError(f"{path}: {expected}, got {len(raw)} raw bytes")
        return np.frombuffer(bytes(raw), dtype=np.uint8).reshape(n, _CIFAR_PIXELS).copy()
    if isinstance(raw, (list, tuple)):
        try:
            raw = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: {expected}, got a ragged list") from exc
    if not isinstance(raw, np.ndarray):
        raise DataError(f"{path}: {expected}, got {type(raw).__name__}")
    if raw.ndim != 2 or raw.shape[1] != _CIFAR_PIXELS or raw.shape[0] != n:
        raise DataError(f"{path}: {expected}, got shape {raw.shape}")
    if raw.dtype == np.uint8:
        return raw
    if raw.dtype.kind in "iu" and (raw.size == 0 or (raw.min() >= 0 and raw.max() <= 255)):
        return raw.astype(np.uint8)
    raise DataError(f"{path}: {expected}, got dtype {raw.dtype}")


def _keys_desc(obj: dict[Any, Any]) -> str:
    """Short description of a dict's keys for error messages."""
    keys = list(obj.keys())
    desc = ", ".join(repr(k) for k in keys[:8])
    return desc + (", ..." if len(keys) > 8 else "")


def _numpy_attr(*candidates: tuple[str, str]) -> Any:
    """Return the first importable ``module.attr`` among ``candidates``."""
    import importlib

    for module, attr in candidates:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {candidates} is available in this numpy")


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what numpy's protocol-2 pickles use (latin-1 str -> bytes)."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1" or errors != "strict":
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(obj).__name__}, {encoding!r}, {errors!r})")
    return obj.encode("latin1")


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` that refuses object dtypes (they could hold arbitrary objects)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refusing object dtype {dt}")
    return dt


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need."""

    def __init__(self, file: io.BytesIO, path: pathlib.Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals()
        key = (module, name)
        if key not in allowed:
            raise DataError(f"{self._path}: refusing to unpickle {module}.{name}")
        return allowed[key]


_ALLOWED_CACHE: dict[tuple[str, str], Any] = {}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Map of the (module, name) pairs the CIFAR unpickler may resolve."""
    if not _ALLOWED_CACHE:
        reconstruct = _numpy_attr(("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"))
        frombuffer = _numpy_attr(("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"))
        _ALLOWED_CACHE.update(
            {
                ("numpy.core.multiarray", "_reconstruct"): reconstruct,
                ("numpy._core.multiarray", "_reconstruct"): reconstruct,
                ("numpy.core.numeric", "_frombuffer"): frombuffer,
                ("numpy._core.numeric", "_frombuffer"): frombuffer,
                ("numpy", "ndarray"): np.ndarray,
                ("numpy", "dtype"): _safe_dtype,
                ("_codecs", "encode"): _latin1_encode,
            }
        )
    return _ALLOWED_CACHE


def _read_pickle(path: pathlib.Path) -> dict[Any, Any]:
    """Read a CIFAR pickle with the restricted unpickler; it must hold a dict."""
    try:
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; pass --download (download=True) to fetch it") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        obj = _RestrictedUnpickler(io.BytesIO(payload), path).load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        ImportError,
        MemoryError,
        RecursionError,
    ) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {detail})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------- download helpers


def _md5_of(path: pathlib.Path) -> str:
    """MD5 hex digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, archive: pathlib.Path, md5: str) -> None:
    """Stream ``url`` to ``archive`` via a temporary file, checking the MD5."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DataError(f"{url}: unsupported URL scheme {scheme!r} (use http, https or file)")
    fd, tmp_name = tempfile.mkstemp(dir=archive.parent, prefix=archive.name + ".", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    ok = False
    try:
        logger.info("downloading %s to %s", url, archive)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            done = 0
            next_log = 0.1
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total_n and done / total_n >= next_log:
                    logger.info("downloaded %.0f%% (%d / %d bytes)", 100.0 * done / total_n, done, total_n)
                    next_log += 0.1
            if total_n is not None and done != total_n:
                raise DataError(f"{url}: download incomplete ({done} of {total_n} bytes)")
        got = digest.hexdigest()
        if got != md5:
            raise DataError(f"{url}: MD5 mismatch (expected {md5}, got {got}); partial file deleted")
        os.replace(tmp, archive)
        ok = True
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{url}: download failed ({exc})") from exc
    finally:
        if not ok:
            tmp.unlink(missing_ok=True)


def _safe_extract(archive: pathlib.Path, dest: pathlib.Path) -> None:
    """Extract a tar archive, refusing absolute paths, ``..``, links and special files."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = pathlib.PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or os.path.isabs(m.name) or ".." in parts or ":" in m.name:
                    raise DataError(f"{archive}: refusing unsafe member path {m.name!r}")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: refusing link or special file {m.name!r}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract archive ({exc})") from exc


# --------------------------------------------------------------------------- small helpers


def _digits_spec(stats: tuple[tuple[float, ...], tuple[float, ...]]) -> DataSpec:
    """DataSpec for digits given the (mean, std) of its fixed training pool."""
    mean, std = stats
    return DataSpec(name="digits", in_channels=1, image_size=8, num_classes=10, mean=mean, std=std, augment=False)


def _cifar_spec(name: str) -> DataSpec:
    """DataSpec for CIFAR-10/100 with the standard normalisation constants."""
    src = CIFAR_SOURCES[name]
    return DataSpec(
        name=name,
        in_channels=3,
        image_size=32,
        num_classes=src.num_classes,
        mean=tuple(src.mean),
        std=tuple(src.std),
        augment=True,
    )


def _make_split(x: torch.Tensor, y: torch.Tensor) -> Split:
    """Build a Split, converting uint8 images to float32 in [0, 1]."""
    if x.dtype == torch.uint8:
        xf = x.to(torch.float32).div_(255.0)
    else:
        xf = x.to(torch.float32)
    return Split(x=xf.contiguous(), y=y.to(torch.int64).contiguous())


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``[N, C, H, W]`` images."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, correction=0).clamp_min(1e-8)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _allocate(counts: list[int], n: int) -> list[int]:
    """Share ``n`` draws over classes with ``counts`` members (largest-remainder apportionment).

    Every class gets at least one draw when ``n >= len(counts)``; no class gets
    more than its count. Requires ``0 <= n <= sum(counts)`` and positive counts.
    """
    k = len(counts)
    total = sum(counts)
    quotas = [n * c / total for c in counts]
    alloc = [min(int(math.floor(q)), c) for q, c in zip(quotas, counts)]
    if n >= k:
        alloc = [max(a, 1) for a in alloc]
    while sum(alloc) < n:
        i = min((i for i in range(k) if alloc[i] < counts[i]), key=lambda i: (alloc[i] - quotas[i], i))
        alloc[i] += 1
    while sum(alloc) > n:
        i = min((i for i in range(k) if alloc[i] > 1), key=lambda i: (quotas[i] - alloc[i], i))
        alloc[i] -= 1
    return alloc
