"""Loading a data set by name: subsets, the validation split and the :class:`DataSpec`."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from dse.data.cifar import CIFAR_SOURCES, cifar_spec, load_cifar_arrays, resolve_cifar_dir
from dse.data.digits import digits_spec, load_digits_arrays
from dse.data.tensors import DataSpec, Dataset, Split, make_split, stratified_subset
from dse.errors import DataError

__all__ = ["DATASETS", "dataset_spec", "load_dataset"]

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100")

_NUM_CLASSES: dict[str, int] = {"digits": 10, "cifar10": 10, "cifar100": 100}


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

    if name == "digits":
        x_pool, y_pool, x_test, y_test = load_digits_arrays()
        spec = digits_spec(x_pool)
        source_desc = "scikit-learn digits"
    else:
        directory = resolve_cifar_dir(name, root, download=download)
        x_pool, y_pool, x_test, y_test = load_cifar_arrays(directory, CIFAR_SOURCES[name])
        spec = cifar_spec(name)
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
        val = make_split(x_pool[val_idx], y_pool[val_idx])
        train = make_split(x_pool[mask], y_pool[mask])
    else:
        train = make_split(x_pool, y_pool)
    test = make_split(x_test, y_test)

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
        return digits_spec()
    return cifar_spec(name)
