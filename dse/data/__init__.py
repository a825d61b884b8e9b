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

Modules: :mod:`~dse.data.tensors` (splits, batches, crop/flip, subsets),
:mod:`~dse.data.digits`, :mod:`~dse.data.cifar` (with :mod:`~dse.data.pickles`, the restricted
unpickler), :mod:`~dse.data.download` (fetch + tar checks) and :mod:`~dse.data.load`
(:func:`load_dataset` by name).

Typical use::

    ds = load_dataset("cifar10", root="data", subset=2000, val_fraction=0.1, seed=0)
    for xb, yb in iterate_batches(ds.train, 128, shuffle=True, generator=g):
        xb = random_crop_flip(xb, generator=g) if ds.spec.augment else xb
"""

from dse.data.cifar import CIFAR_SOURCES, CifarSource, download_cifar
from dse.data.load import DATASETS, dataset_spec, load_dataset
from dse.data.tensors import DataSpec, Dataset, Split, iterate_batches, random_crop_flip, stratified_subset

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
