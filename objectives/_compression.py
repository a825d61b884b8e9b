"""Compression and deployment costs: BOPS (seed 004), size, DEFLATE size (seed 003), sparsity, latency (seed 002).

Each objective is a plain function ``fn(model, data, settings, *, cache=None) -> float`` (see
:mod:`objectives._base`); ``data.x.shape`` gives the input size, ``settings`` is read only by
the batch latency.

Per-layer bit-widths come from ``dse.compress.quant.layer_bits(module) -> (weight_bits, act_bits,
multiplier)`` when ``dse.compress.quant`` exists: ``(32, 32, 1)`` for a floating-point layer,
``(wb, ab, 1)`` for a fixed-point one, ``(1, 1, M * N)`` for a multi-bit (ABC-Net) layer with
M weight and N activation bases. Until then :func:`_layer_bits` reads the module attributes
``quant_mode``, ``weight_bits``, ``act_bits``, ``weight_bases``, ``act_bases``.

BOPS (seed 004, section 3.3 and Table 2) are counted for a bit-serial machine: a layer costs
``MACs x weight_bits x act_bits`` bit operations, and a multi-bit layer is ``M x N`` binary
convolutions (``MACs x 1 x 1 x M x N``). Seed 004 reports floating-point networks "at their
8-bit version" (section 4), so an operand at 32 bits (floating point) is counted at 8 bits
(:data:`FP_BOPS_BITS`). Its quantized and multi-bit ResNets keep the first conv and the last
linear layer in full precision, which the same rule counts at 8 x 8: that reproduces every
ResNet-20 and ResNet-56 CIFAR-10 row of Table 2 (see :func:`resnet_bops_table`) except one
misprint.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import statistics
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from dse.data import Split
from objectives._base import EvalSettings, Objective
from objectives._cost import _profile

__all__ = [
    "COMPRESSION_OBJECTIVES",
    "DEFAULT_LATENCY_BATCH",
    "FP_BOPS_BITS",
    "LATENCY_REPEATS",
    "LATENCY_WARMUP",
    "TABLE2_CIFAR10",
    "bops",
    "bops_from_layers",
    "compressed_bytes",
    "latency_batch_ms",
    "latency_info",
    "latency_ms",
    "layer_bit_table",
    "resnet20_bops_table",
    "resnet_bops_table",
    "size_bytes",
    "sparsity",
]

#: Bits at which a floating-point (32-bit) operand is counted in BOPS, as seed 004 does.
FP_BOPS_BITS = 8
#: Bits of a floating-point weight, bias, BN parameter or scale in the stored model.
FP_BITS = 32
#: Warm-up runs and timed repeats of the latency objectives.
LATENCY_WARMUP = 10
LATENCY_REPEATS = 30
#: Images per batch of :func:`latency_batch_ms` when the settings give none.
DEFAULT_LATENCY_BATCH = 64

_LAYER_TYPES = (nn.Conv2d, nn.Linear)
_MULTI_BIT_MODES = {"mbn", "multibit", "multi_bit", "multi-bit", "abc"}
_FP_MODES = {"fp", "fp32", "float", "none", "full"}


# --------------------------------------------------------------------------------------------
# Per-layer bits
# --------------------------------------------------------------------------------------------


def _quant_module() -> Any | None:
    """``dse.compress.quant`` if it exists (import errors inside it propagate), else ``None``."""
    if importlib.util.find_spec("dse.compress.quant") is None:
        return None
    return importlib.import_module("dse.compress.quant")


def _weight_bases(module: nn.Module) -> int | None:
    """M, the weight bases of a multi-bit layer (``None`` for any other layer)."""
    mode = getattr(module, "quant_mode", None)
    bases = getattr(module, "weight_bases", None)
    if isinstance(mode, str) and mode.lower() in _MULTI_BIT_MODES:
        return int(bases or 1)
    if mode is None and bases and getattr(module, "act_bases", None):
        return int(bases)
    return None


def _fallback_layer_bits(module: nn.Module) -> tuple[int, int, int]:
    """Reads ``quant_mode``, ``weight_bits``, ``act_bits``, ``weight_bases``, ``act_bases`` attributes."""
    mode = getattr(module, "quant_mode", None)
    if isinstance(mode, str) and mode.lower() in _FP_MODES:
        return FP_BITS, FP_BITS, 1
    m = _weight_bases(module)
    if m is not None:
        return 1, 1, m * int(getattr(module, "act_bases", None) or 1)
    wb, ab = getattr(module, "weight_bits", None), getattr(module, "act_bits", None)
    return int(wb or FP_BITS), int(ab or FP_BITS), 1


def _layer_bits(module: nn.Module) -> tuple[int, int, int]:
    """``(weight_bits, act_bits, multiplier)`` of a conv or linear layer.

    Uses ``dse.compress.quant.layer_bits`` when that module exists, else :func:`_fallback_layer_bits`.
    """
    quant = _quant_module()
    fn: Callable[[nn.Module], tuple[int, int, int]] | None = getattr(quant, "layer_bits", None)
    if fn is None:
        return _fallback_layer_bits(module)
    wb, ab, mult = fn(module)
    return int(wb), int(ab), int(mult)


def _storage_bits(module: nn.Module) -> tuple[int, int]:
    """Bits stored per weight and the number of fp32 scales of a layer.

    A multi-bit layer stores M bits per weight (one per binary basis) and M scales; a
    fixed-point layer its weight bits; a floating-point layer 32 bits.
    """
    m = _weight_bases(module)
    if m is not None:
        return m, m
    wb, _, mult = _layer_bits(module)
    if mult > 1:  # multi-bit without a readable M (only M x N known): assume M = N
        m = max(1, round(math.sqrt(mult)))
        return m, m
    return min(wb, FP_BITS), 0


# --------------------------------------------------------------------------------------------
# BOPS
# --------------------------------------------------------------------------------------------


def _bops_bits(bits: int, fp_bits: int | None) -> int:
    return fp_bits if fp_bits is not None and bits >= FP_BITS else bits


def bops_from_layers(layers: list[dict[str, Any]], *, fp_bits: int | None = FP_BOPS_BITS) -> float:
    """Bit operations of a list of layers (pure).

    Args:
        layers: One mapping per conv/linear layer with ``macs``, ``weight_bits``, ``act_bits``
            and ``multiplier`` (``M * N`` for a multi-bit layer, else 1; default 1).
        fp_bits: Bits at which a 32-bit (floating-point) operand is counted; seed 004 counts
            floating-point layers at 8 bits. ``None`` counts them at 32.

    Returns:
        ``sum(macs * weight_bits * act_bits * multiplier)``.
    """
    total = 0
    for layer in layers:
        wb = _bops_bits(int(layer["weight_bits"]), fp_bits)
        ab = _bops_bits(int(layer["act_bits"]), fp_bits)
        total += int(layer["macs"]) * wb * ab * int(layer.get("multiplier", 1))
    return float(total)


def layer_bit_table(model: nn.Module, data: Split, *, cache: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per layer: ``name``, ``kind``, ``macs`` (one image), ``weight_bits``, ``act_bits``, ``multiplier``."""
    rows = []
    for layer in _profile(model, data, cache)["layers"]:
        wb, ab, mult = _layer_bits(model.get_submodule(layer["name"]))
        rows.append({**layer, "weight_bits": wb, "act_bits": ab, "multiplier": mult})
    return rows


def bops(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Bit operations for one image: sum of MACs x weight bits x activation bits x (M x N) (seed 004).

    Floating-point operands count at 8 bits (seed 004 reports fp networks at their 8-bit version).
    """
    return bops_from_layers(layer_bit_table(model, data, cache=cache))


#: Seed 004 Table 2, CIFAR-10 rows: (method, weights, activations, kind, BOPS). ``kind`` is
#: ``fp`` (counted at 8/8), ``fixed`` (bits) or ``mbn`` (weights/activations are bases M/N).
TABLE2_CIFAR10: dict[str, list[tuple[str, int, int, str, float]]] = {
    "resnet20": [
        ("ResNet-20 8/8", 8, 8, "fp", 25.95e8),
        ("PACT-4", 4, 4, "fixed", 6.70e8),
        ("PACT-2", 2, 2, "fixed", 1.89e8),
        ("XNOR-Net", 1, 1, "fixed", 0.68e8),
        ("MBN 1x1", 1, 1, "mbn", 0.68e8),
        ("MBN 3x1", 3, 1, "mbn", 1.49e8),
        ("MBN 1x3", 1, 3, "mbn", 1.49e8),
        ("MBN 5x1", 5, 1, "mbn", 2.29e8),
        ("MBN 1x5", 1, 5, "mbn", 2.29e8),
        ("MBN 7x1", 7, 1, "mbn", 3.09e8),
        ("MBN 1x7", 1, 7, "mbn", 3.09e8),
        ("MBN 3x3", 3, 3, "mbn", 3.98e8),
        ("MBN 5x5", 5, 5, "mbn", 10.31e8),
    ],
    "resnet56": [
        ("ResNet-56 8/8", 8, 8, "fp", 80.31e8),
        ("PACT-4", 4, 4, "fixed", 20.29e8),
        ("PACT-2", 2, 2, "fixed", 5.29e8),
        ("XNOR-Net", 1, 1, "fixed", 1.53e8),
        ("MBN 1x1", 1, 1, "mbn", 1.53e8),
        ("MBN 3x1", 3, 1, "mbn", 4.03e8),
        ("MBN 1x3", 1, 3, "mbn", 4.03e8),
        ("MBN 5x1", 5, 1, "mbn", 6.54e8),
        ("MBN 1x5", 1, 5, "mbn", 6.54e8),
        ("MBN 7x1", 7, 1, "mbn", 9.04e8),
        ("MBN 1x7", 1, 7, "mbn", 9.04e8),
        ("MBN 3x3", 3, 3, "mbn", 11.54e8),
        ("MBN 5x5", 5, 5, "mbn", 31.54e8),
    ],
}


def resnet_bops_table(arch: str = "resnet20", *, image_size: int = 32) -> list[dict[str, Any]]:
    """Recomputes seed 004 Table 2's BOPS of a CIFAR-10 ResNet from its per-layer MACs.

    Every layer but the first conv and the last linear takes the row's bits (fixed point) or
    bases (multi-bit: 1 x 1 bit x M x N); those two stay in full precision and count at 8 x 8.

    Args:
        arch: ``resnet20`` or ``resnet56``.
        image_size: Input size (32 for CIFAR-10).

    Returns:
        One dict per Table 2 row: ``method``, ``weights``, ``activations``, ``kind``,
        ``bops`` (computed), ``paper`` (Table 2) and ``rel_error``.
    """
    from dse.models import ResNetConfig, build_resnet

    model = build_resnet(ResNetConfig(arch=arch), in_channels=3, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    probe = Split(x=torch.zeros(1, 3, image_size, image_size), y=torch.zeros(1, dtype=torch.long))
    macs = [layer["macs"] for layer in _profile(model, probe, None)["layers"]]
    rows = []
    for method, w, a, kind, paper in TABLE2_CIFAR10[arch]:
        if kind == "fp":
            inner = (FP_BITS, FP_BITS, 1)
        elif kind == "fixed":
            inner = (w, a, 1)
        else:
            inner = (1, 1, w * a)
        layers = []
        for i, m in enumerate(macs):
            wb, ab, mult = (FP_BITS, FP_BITS, 1) if i in (0, len(macs) - 1) else inner
            layers.append({"macs": m, "weight_bits": wb, "act_bits": ab, "multiplier": mult})
        value = bops_from_layers(layers)
        rows.append(
            {"method": method, "weights": w, "activations": a, "kind": kind, "bops": value, "paper": paper,
             "rel_error": value / paper - 1.0}
        )
    return rows


def resnet20_bops_table() -> list[dict[str, Any]]:
    """:func:`resnet_bops_table` for ResNet-20 on 32x32 CIFAR-10 images."""
    return resnet_bops_table("resnet20")


# --------------------------------------------------------------------------------------------
# Size, DEFLATE size, sparsity
# --------------------------------------------------------------------------------------------


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The layer's weight with its ``weight_mask`` applied (if it has one), detached on the CPU."""
    weight = module.weight.detach()
    mask = getattr(module, "weight_mask", None)
    if isinstance(mask, torch.Tensor):
        weight = weight * mask.detach().to(weight.dtype)
    return weight.float().cpu()


def _other_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every floating-point parameter and buffer other than conv/linear weights and masks.

    Biases, BN affine parameters and running statistics, the input normalization constants and
    any auxiliary tensor of a quantized layer (e.g. a learned clipping level) are stored as fp32.
    """
    for module in model.modules():
        skip = {"weight", "weight_orig", "weight_mask"} if isinstance(module, _LAYER_TYPES) else set()
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in tensors:
            if name not in skip and tensor is not None and tensor.is_floating_point():
                yield tensor


def _layers(model: nn.Module) -> Iterator[nn.Module]:
    return (m for m in model.modules() if isinstance(m, _LAYER_TYPES))


def _bytes(bits: int) -> int:
    return -(-bits // 8)


def size_bytes(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Bytes of the bit-packed model, each tensor rounded up to whole bytes.

    Conv/linear weights at their layer's weight bits (floating point: 32; fixed point: its bits;
    multi-bit: M bits per weight plus M fp32 scales); a layer with a ``weight_mask`` buffer adds
    1 bit per weight; every other floating tensor (biases, BN parameters and statistics,
    normalization constants) is 32 bits per value.
    """
    total = 0
    for module in _layers(model):
        bits, scales = _storage_bits(module)
        total += _bytes(module.weight.numel() * bits) + _bytes(scales * FP_BITS)
        if isinstance(getattr(module, "weight_mask", None), torch.Tensor):
            total += _bytes(module.weight.numel())
    total += sum(_bytes(t.numel() * FP_BITS) for t in _other_tensors(model))
    return float(total)


def _uniform_codes(weight: torch.Tensor, bits: int) -> list[bytes]:
    """Uniform symmetric codes of ``weight`` at ``bits`` (1 bit: sign, pruned zeros stay 0) and one fp32 scale."""
    if bits <= 1:
        codes = torch.sign(weight).to(torch.int8).numpy()
        scale = weight.abs().mean().item()
    else:
        levels = 2 ** (bits - 1) - 1
        scale = weight.abs().max().item() / levels or 1.0
        codes = torch.round(weight / scale).clamp(-levels, levels).to(torch.int64).numpy()
        codes = codes.astype(np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32)
    return [codes.tobytes(), np.asarray([scale], "<f4").tobytes()]


def _codebook_codes(weight: torch.Tensor, bits: int) -> list[bytes] | None:
    """Codebook indices of the distinct values of ``weight`` plus the fp32 codebook (seed 003's ``h``).

    ``None`` if the tensor has more distinct values than ``bits`` can index (plus the pruned zero),
    e.g. an INQ layer whose weights are not all frozen yet.
    """
    values, index = torch.unique(weight, return_inverse=True)
    if values.numel() > 2**bits + 1:
        return None
    dtype = np.uint8 if values.numel() <= 256 else np.uint16
    return [index.numpy().astype(dtype).tobytes(), values.numpy().astype("<f4").tobytes()]


def _serialized_layer(module: nn.Module) -> list[bytes]:
    """The stored form of one conv/linear weight tensor (masked): fp32, codebook indices or uniform codes."""
    bits, _ = _storage_bits(module)
    if bits >= FP_BITS:
        return [_effective_weight(module).numpy().astype("<f4").tobytes()]
    quantized_weight = getattr(module, "quantized_weight", None)
    if callable(quantized_weight):
        with torch.no_grad():
            weight = quantized_weight().detach().float().cpu()
        mask = getattr(module, "weight_mask", None)
        if isinstance(mask, torch.Tensor):
            weight = weight * mask.detach().float().cpu()
        codes = _codebook_codes(weight, bits)
        if codes is not None:
            return codes
    return _uniform_codes(_effective_weight(module), bits)


def compressed_bytes(
    model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
) -> float:
    """Bytes of the DEFLATE-compressed (zlib, level 9) serialized model, as seed 003 stores its networks.

    Each conv/linear weight tensor is masked (``weight * weight_mask``) and written as value
    codes: a quantized layer (``dse.compress.quant``, with ``quantized_weight()``) as one index per weight
    into its codebook of distinct quantized values (one byte per index, the fp32 codebook after
    it), as seed 003 encodes INQ weights; a layer that only declares bits (no
    ``quantized_weight``) as uniform symmetric codes at its weight bits (M bits for a multi-bit
    layer) with one fp32 scale; a floating-point layer as fp32 bytes. All other floating tensors
    (biases, BN, PACT clipping levels...) follow as fp32. Pruned (zero) weights and the unused
    high bits of each code byte are what DEFLATE squeezes.
    """
    chunks: list[bytes] = []
    for module in _layers(model):
        chunks.extend(_serialized_layer(module))
    chunks.extend(t.detach().float().cpu().numpy().astype("<f4").tobytes() for t in _other_tensors(model))
    return float(len(zlib.compress(b"".join(chunks), 9)))


def sparsity(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Measured fraction of exactly-zero weights (after masks) over the prunable layers: every conv
    and linear layer except the first conv and the last linear, the layers ``prune_ratio`` targets
    (:func:`dse.compress.pruning.sparsity`). Measured on the weights, never read from the candidate."""
    from dse.compress.pruning import sparsity as prunable_sparsity

    return prunable_sparsity(model)


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
