"""Tiny fake CIFAR directories and archives in the official python format, for tests.

The files are written with plain ``pickle.dump`` (protocol 2, numpy arrays), the
way the official ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` lay
them out, so the loader under test sees the same structure at a fraction of the
size.
"""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import tarfile

import numpy as np

__all__ = ["FakeCifar", "make_cifar_tarball", "write_fake_cifar10", "write_fake_cifar100"]


class FakeCifar:
    """What a fake CIFAR directory holds (raw uint8 ``[N, 3072]`` pixels and int labels)."""

    def __init__(self, directory: pathlib.Path, train_x: np.ndarray, train_y: np.ndarray,
                 test_x: np.ndarray, test_y: np.ndarray) -> None:
        self.directory = directory
        self.train_x = train_x
        self.train_y = train_y
        self.test_x = test_x
        self.test_y = test_y


def _dump(path: pathlib.Path, obj: object) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """Labels covering the classes as evenly as possible, in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def write_fake_cifar10(root: pathlib.Path, *, per_batch: int = 20, seed: int = 0) -> FakeCifar:
    """Write ``root/cifar-10-batches-py`` with five training batches, a test batch and the meta file."""
    rng = np.random.default_rng(seed)
    directory = pathlib.Path(root) / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = _labels(rng, per_batch, 10)
        _dump(directory / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [int(v) for v in y],
            b"data": x,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
        })
        xs.append(x)
        ys.append(y)
    test_x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
    test_y = _labels(rng, per_batch, 10)
    _dump(directory / "test_batch", {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in test_y],
        b"data": test_x,
        b"filenames": [f"test_{j}.png".encode() for j in range(per_batch)],
    })
    _dump(directory / "batches.meta", {
        b"num_cases_per_batch": per_batch,
        b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                         b"dog", b"frog", b"horse", b"ship", b"truck"],
        b"num_vis": 3072,
    })
    return FakeCifar(directory, np.concatenate(xs), np.concatenate(ys), test_x, test_y)


def write_fake_cifar100(root: pathlib.Path, *, n_train: int = 200, n_test: int = 100, seed: int = 0) -> FakeCifar:
    """Write ``root/cifar-100-python`` with ``train``, ``test`` and ``meta``."""
    rng = np.random.default_rng(seed)
    directory = pathlib.Path(root) / "cifar-100-python"
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = _labels(rng, n, 100)
        _dump(directory / split, {
            b"filenames": [f"{split}_{j}.png".encode() for j in range(n)],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) // 5 for v in fine],
            b"data": x,
        })
        out[split] = (x, fine)
    _dump(directory / "meta", {
        b"fine_label_names": [f"class_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    })
    return FakeCifar(directory, out["train"][0], out["train"][1], out["test"][0], out["test"][1])


def make_cifar_tarball(directory: pathlib.Path, archive: pathlib.Path) -> str:
    """Pack ``directory`` into a ``.tar.gz`` (member names start with its basename); return the MD5."""
    directory = pathlib.Path(directory)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    return hashlib.md5(pathlib.Path(archive).read_bytes()).hexdigest()
