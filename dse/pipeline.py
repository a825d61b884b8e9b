"""From a candidate to a trained model and back: the one path that the CLI, a Ray trial and
``dse rescore`` share (data loading, building, training, checkpoint to model)."""

from __future__ import annotations

from functools import lru_cache

from dse.data import Dataset, load_dataset

__all__ = ["cached_dataset"]


@lru_cache(maxsize=4)
def cached_dataset(dataset: str, root: str | None, subset: int | None, val_fraction: float, seed: int) -> Dataset:
    """A data set loaded once per process (a reused Ray actor keeps it between trials)."""
    return load_dataset(dataset, root=root, subset=subset, val_fraction=val_fraction, seed=seed)
