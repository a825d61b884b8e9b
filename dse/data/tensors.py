"""In-memory splits and what the training loop does with them: batches, crop/flip, subsets.

Images are float32 ``[N, C, H, W]`` in ``[0, 1]`` and labels int64 ``[N]``. Batches are index
slices of the split's tensors and the augmentation is two batched ``gather`` calls, so nothing
loops over images in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dse.errors import DataError

__all__ = [
    "DataSpec",
    "Dataset",
    "Split",
    "channel_stats",
    "iterate_batches",
    "make_split",
    "random_crop_flip",
    "stratified_subset",
]


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
        name: Data set name, one of :data:`dse.data.DATASETS`.
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


def make_split(x: torch.Tensor, y: torch.Tensor) -> Split:
    """Build a :class:`Split`, converting uint8 images to float32 in ``[0, 1]``.

    Args:
        x: Images ``[N, C, H, W]`` (uint8 or floating point).
        y: Integer labels ``[N]``.

    Returns:
        The split with contiguous float32 images and int64 labels.
    """
    if x.dtype == torch.uint8:
        xf = x.to(torch.float32).div_(255.0)
    else:
        xf = x.to(torch.float32)
    return Split(x=xf.contiguous(), y=y.to(torch.int64).contiguous())


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``[N, C, H, W]`` images.

    Args:
        x: Images ``[N, C, H, W]``.

    Returns:
        ``(mean, std)``, one float per channel each (std clamped to at least 1e-8).
    """
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
