"""CIFAR-10 and CIFAR-100 in the official "python version" layout: sources, download, parsing.

Files are read from ``cifar-10-batches-py`` / ``cifar-100-python`` (or ``root`` itself) with the
restricted unpickler of :mod:`dse.data.pickles`, and every array is checked (shape, dtype, label
range) with a message naming the file. Fetching is opt-in (:func:`download_cifar`).
"""

from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dse.data.download import fetch_archive, md5_of, safe_extract
from dse.data.pickles import read_pickle
from dse.data.tensors import DataSpec
from dse.errors import DataError

__all__ = ["CIFAR_SOURCES", "CifarSource", "cifar_spec", "download_cifar", "load_cifar_arrays", "resolve_cifar_dir"]

logger = logging.getLogger(__name__)

_CIFAR_PIXELS = 3 * 32 * 32


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

    if archive.is_file() and md5_of(archive) == md5:
        logger.info("reusing verified archive %s", archive)
    else:
        fetch_archive(url, archive, md5)
    safe_extract(archive, root_path)
    directory = root_path / src.dirname
    missing = [f for f in src.files if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{archive}: archive did not contain {directory / missing[0]}")
    logger.info("extracted %s to %s", src.title, directory)
    return directory


def cifar_spec(name: str) -> DataSpec:
    """The :class:`~dse.data.tensors.DataSpec` of CIFAR-10/100 with the standard normalisation constants.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        Shape, class count, normalisation constants; augmentation on.
    """
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


def resolve_cifar_dir(name: str, root: str | os.PathLike[str] | None, *, download: bool) -> pathlib.Path:
    """Find the directory holding the CIFAR files, downloading it if asked.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: ``root`` itself or ``root/<dirname>`` must hold the files.
        download: Fetch the archive into ``root`` if files are missing.

    Returns:
        The directory holding every file of the source.

    Raises:
        DataError: No root, or missing files (naming the first) without ``download``.
    """
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


def load_cifar_arrays(
    directory: pathlib.Path, src: CifarSource
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read and validate all CIFAR pickles of a directory.

    Args:
        directory: The directory :func:`resolve_cifar_dir` found.
        src: Its source (file names, label key, class count).

    Returns:
        ``(x_train, y_train, x_test, y_test)``: uint8 images ``[N, 3, 32, 32]`` and int64 labels.

    Raises:
        DataError: A malformed file, named.
    """
    meta_path = directory / src.meta_file
    meta = read_pickle(meta_path)
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
    obj = read_pickle(path)
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
