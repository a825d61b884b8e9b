"""Compression and deployment objectives: BOPS (seed 004), size, DEFLATE size (seed 003), sparsity,
latency (seed 002).

Each objective is a plain function ``fn(model, data, settings, *, cache=None) -> float`` (see
:mod:`objectives._base`); ``data.x.shape`` gives the input size, ``settings`` is read only by
the batch latency. The counting itself is :mod:`dse.profile`'s; this module wraps it as
objectives and measures latency.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dse import profile
from dse.data import Split
from objectives._base import EvalSettings, Objective
from objectives._cost import cached_profile

__all__ = [
    "COMPRESSION_OBJECTIVES",
    "DEFAULT_LATENCY_BATCH",
    "LATENCY_REPEATS",
    "LATENCY_WARMUP",
    "bops",
    "compressed_bytes",
    "latency_batch_ms",
    "latency_info",
    "latency_ms",
    "size_bytes",
    "sparsity",
]

#: Warm-up runs and timed repeats of the latency objectives.
LATENCY_WARMUP = 10
LATENCY_REPEATS = 30
#: Images per batch of :func:`latency_batch_ms` when the settings give none.
DEFAULT_LATENCY_BATCH = 64


# --------------------------------------------------------------------------------------------
# Counted from the model (dse.profile)
# --------------------------------------------------------------------------------------------


def bops(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Bit operations for one image: sum of MACs x weight bits x activation bits x (M x N) (seed 004).

    Floating-point operands count at 8 bits (seed 004 reports fp networks at their 8-bit version).
    See :func:`dse.profile.bops`.
    """
    return profile.bops(model, cached_profile(model, data, cache))


def size_bytes(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Bytes of the bit-packed model (:func:`dse.profile.size_bytes`)."""
    return profile.size_bytes(model)


def compressed_bytes(
    model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
) -> float:
    """Bytes of the DEFLATE-compressed serialized model, as seed 003 stores it (:func:`dse.profile.compressed_bytes`)."""
    return profile.compressed_bytes(model)


def sparsity(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Measured fraction of exactly-zero weights (after masks) over the prunable layers: every conv
    and linear layer except the first conv and the last linear, the layers ``prune_ratio`` targets
    (:func:`dse.profile.sparsity`). Measured on the weights, never read from the candidate."""
    return profile.sparsity(model)


# --------------------------------------------------------------------------------------------
# Latency (seed 002, Algorithms 4 and 5)
# --------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(model: nn.Module, step: Callable[[int], None], device: torch.device, warmup: int, repeats: int) -> float:
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup):
                step(i)
            _sync(device)
            for i in range(repeats):
                start = time.perf_counter()
                step(warmup + i)
                _sync(device)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    return float(statistics.median(times))


def latency_ms(
    model: nn.Module,
    data: Split,
    settings: EvalSettings | None = None,
    *,
    cache: dict[str, Any] | None = None,
    warmup: int = LATENCY_WARMUP,
    repeats: int = LATENCY_REPEATS,
) -> float:
    """Milliseconds of one forward pass on a single image already in memory (seed 002, Algorithm 4).

    Each run draws the next image of ``data`` (held on the model's device before timing);
    ``warmup`` untimed runs, then the median of ``repeats`` timed runs (Algorithm 4 averages; the
    median resists other load on a shared machine), in eval mode under ``torch.inference_mode``,
    synchronizing CUDA before each clock read. The model's train/eval mode is restored.
    """
    device = _model_device(model)
    images = data.x[: max(1, min(len(data), warmup + repeats))].to(device)

    def step(i: int) -> None:
        j = i % images.shape[0]
        model(images[j : j + 1])

    return _median_ms(model, step, device, warmup, repeats)


def _batch_size(settings: EvalSettings | None) -> int:
    return int(getattr(settings, "batch_size", None) or DEFAULT_LATENCY_BATCH)


def latency_batch_ms(
    model: nn.Module,
    data: Split,
    settings: EvalSettings | None = None,
    *,
    cache: dict[str, Any] | None = None,
    warmup: int = LATENCY_WARMUP,
    repeats: int = LATENCY_REPEATS,
    batch_size: int | None = None,
) -> float:
    """Milliseconds to load N images into memory and evaluate them (seed 002, Algorithm 5).

    N is ``batch_size``, else ``settings.batch_size``, else 64. The timed region gathers the next
    N images of ``data`` (cycling when ``data`` is smaller), moves them to the model's device and
    runs one forward pass; ``warmup`` untimed runs, then the median of ``repeats``.
    """
    device = _model_device(model)
    n = batch_size or _batch_size(settings)
    count = len(data)

    def step(i: int) -> None:
        index = torch.arange(i * n, (i + 1) * n) % count
        model(data.x[index].to(device, non_blocking=False))

    return _median_ms(model, step, device, warmup, repeats)


def latency_info(
    model: nn.Module | None = None,
    settings: EvalSettings | None = None,
    *,
    warmup: int = LATENCY_WARMUP,
    repeats: int = LATENCY_REPEATS,
) -> dict[str, Any]:
    """How the latency objectives measure, for reports: device, torch threads, warm-up, repeats, batch."""
    device = _model_device(model) if model is not None else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "device": str(device),
        "device_name": name,
        "torch_threads": torch.get_num_threads(),
        "warmup": warmup,
        "repeats": repeats,
        "statistic": "median",
        "batch_size": _batch_size(settings),
        "protocol": "seed 002 Alg. 4 (1 image in memory) and Alg. 5 (load + evaluate N images), eval, inference_mode",
        "torch": torch.__version__,
    }


COMPRESSION_OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "bops",
            "minimize",
            bops,
            "bit operations per image: MACs x weight bits x act bits x (M x N); fp operands at 8 bits (seed 004)",
        ),
        Objective(
            "size_bytes",
            "minimize",
            size_bytes,
            "bit-packed bytes: weights at their bits (MBN: M bits + M fp32 scales), fp32 others, 1-bit masks",
        ),
        Objective(
            "compressed_bytes",
            "minimize",
            compressed_bytes,
            "zlib level-9 DEFLATE bytes of masked quantized weight codes + fp32 others (seed 003)",
        ),
        Objective(
            "sparsity",
            "maximize",
            sparsity,
            "fraction of conv/linear weights that are zero after masks (a property; more is sparser)",
        ),
        Objective(
            "latency_ms",
            "minimize",
            latency_ms,
            f"ms per single-image forward (seed 002 Alg. 4): median of {LATENCY_REPEATS}"
            f" after {LATENCY_WARMUP} warm-up",
        ),
        Objective(
            "latency_batch_ms",
            "minimize",
            latency_batch_ms,
            f"ms to load + forward N = batch_size images (seed 002 Alg. 5): median of {LATENCY_REPEATS}"
            f" after {LATENCY_WARMUP} warm-up",
        ),
    )
}
