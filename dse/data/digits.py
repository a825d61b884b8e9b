"""The scikit-learn digits data set: 8x8 grey images in a fixed stratified 80/20 split."""

from __future__ import annotations

import numpy as np
import torch

from dse.data.tensors import DataSpec, channel_stats

__all__ = ["digits_spec", "load_digits_arrays"]


def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


def digits_spec(x_pool: torch.Tensor | None = None) -> DataSpec:
    """The :class:`DataSpec` of digits, normalised with the statistics of its fixed training pool.

    Args:
        x_pool: The training pool images if already loaded (else they are loaded).

    Returns:
        Shape, class count and the pool's per-channel mean and std.
    """
    if x_pool is None:
        x_pool = load_digits_arrays()[0]
    mean, std = channel_stats(x_pool)
    return DataSpec(name="digits", in_channels=1, image_size=8, num_classes=10, mean=mean, std=std, augment=False)
