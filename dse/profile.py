"""What a model costs, counted from the model itself: params, MACs, BOPS, bytes, sparsity.

* Params are the weights of conv and linear layers plus the linear biases (BatchNorm and the input
  normalization excluded); MACs are the multiply-accumulates of conv and linear layers for one
  image. Both are counted per layer the way seed 000 counts them, with forward hooks (rather than
  ``FlopCounterMode`` alone) because BOPS need each layer's MACs next to its bit-widths; a test
  checks the totals against ``torch.utils.flop_counter``.
* BOPS (seed 004, section 3.3) are counted for a bit-serial machine: a layer costs ``MACs x
  weight_bits x act_bits`` bit operations and a multi-bit layer is ``M x N`` binary convolutions
  (``MACs x 1 x 1 x M x N``). Seed 004 reports floating-point networks "at their 8-bit version",
  so an operand at 32 bits counts at 8 (:data:`FP_BOPS_BITS`); its quantized ResNets keep the first
  conv and the last linear layer in full precision, which the same rule counts at 8 x 8.
* :func:`size_bytes` is the bit-packed model; :func:`compressed_bytes` the DEFLATE-compressed
  serialized model (seed 003); :func:`sparsity` (from :mod:`dse.compress.pruning`) the measured
  zeros of the prunable layers.

Per-layer bit-widths come from :func:`dse.compress.quant.layer_bits`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dse.compress.pruning import MASK_BUFFER, effective_weight, sparsity
from dse.compress.quant import layer_bits

__all__ = [
    "FP_BITS",
    "FP_BOPS_BITS",
    "LayerCost",
    "bops",
    "bops_from_layers",
    "compressed_bytes",
    "count_params",
    "layer_bit_table",
    "layer_costs",
    "profile_model",
    "size_bytes",
    "sparsity",
]

#: Bits at which a floating-point (32-bit) operand is counted in BOPS, as seed 004 does.
FP_BOPS_BITS = 8
#: Bits of a floating-point weight, bias, BN parameter or scale in the stored model.
FP_BITS = 32

_LAYER_TYPES = (nn.Conv2d, nn.Linear)


# --------------------------------------------------------------------------- params and MACs


@dataclass(frozen=True)
class LayerCost:
    """Cost of one conv or linear layer for one image."""

    name: str
    kind: str
    params: int
    macs: int


def _layer_params(module: nn.Module) -> int:
    n = module.weight.numel()
    if isinstance(module, nn.Linear) and module.bias is not None:
        n += module.bias.numel()
    return n


def count_params(model: nn.Module) -> int:
    """Conv and linear weights plus linear biases (BatchNorm excluded), as seed 000 counts them."""
    return sum(_layer_params(m) for m in model.modules() if isinstance(m, _LAYER_TYPES))


@torch.no_grad()
def layer_costs(model: nn.Module, *, in_channels: int, image_size: int) -> list[LayerCost]:
    """Runs one image through ``model`` and returns the params and MACs of every conv and linear layer."""
    costs: list[LayerCost] = []
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
                macs = output[0].numel() * per_output
                kind = "depthwise_conv" if module.groups == module.in_channels and module.groups > 1 else "conv"
            else:
                macs = module.in_features * module.out_features
                kind = "linear"
            costs.append(LayerCost(name=name, kind=kind, params=_layer_params(module), macs=int(macs)))

        return record

    for name, module in model.named_modules():
        if isinstance(module, _LAYER_TYPES):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return costs


def profile_model(model: nn.Module, *, in_channels: int, image_size: int) -> dict[str, Any]:
    """Totals and per-layer costs of a model for one image: ``params``, ``macs``, ``layers``."""
    costs = layer_costs(model, in_channels=in_channels, image_size=image_size)
    return {
        "params": sum(c.params for c in costs),
        "macs": sum(c.macs for c in costs),
        "layers": [asdict(c) for c in costs],
    }


# --------------------------------------------------------------------------- BOPS


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


def layer_bit_table(model: nn.Module, profile: dict[str, Any]) -> list[dict[str, Any]]:
    """Per layer: ``name``, ``kind``, ``params``, ``macs`` (one image), ``weight_bits``, ``act_bits``, ``multiplier``.

    Args:
        model: The model.
        profile: Its :func:`profile_model`.
    """
    rows = []
    for layer in profile["layers"]:
        wb, ab, mult = layer_bits(model.get_submodule(layer["name"]))
        rows.append({**layer, "weight_bits": int(wb), "act_bits": int(ab), "multiplier": int(mult)})
    return rows


def bops(model: nn.Module, profile: dict[str, Any]) -> float:
    """Bit operations for one image: sum of MACs x weight bits x activation bits x (M x N) (seed 004).

    Args:
        model: The model.
        profile: Its :func:`profile_model` (the image size the MACs are counted for).
    """
    return bops_from_layers(layer_bit_table(model, profile))


# --------------------------------------------------------------------------- bytes and sparsity


def _weight_bases(module: nn.Module) -> int | None:
    """M, the weight bases of a multi-bit layer (``None`` for any other layer)."""
    if getattr(module, "quant_mode", None) == "mbn":
        return int(getattr(module, "weight_bases", None) or 1)
    return None


def _storage_bits(module: nn.Module) -> tuple[int, int]:
    """Bits stored per weight and the number of fp32 scales of a layer.

    A multi-bit layer stores M bits per weight (one per binary basis) and M scales; a
    fixed-point layer its weight bits; a floating-point layer 32 bits. With per-channel weight
    scales (``per_channel``) a layer stores its scales once per output channel (a fixed-point
    layer: one per channel; per tensor, its one scale is not counted).
    """
    channels = int(module.weight.shape[0]) if getattr(module, "per_channel", False) else 1
    m = _weight_bases(module)
    if m is not None:
        return m, m * channels
    bits = min(layer_bits(module)[0], FP_BITS)
    return bits, channels if channels > 1 and bits < FP_BITS else 0


def _stored_weight(module: nn.Module) -> torch.Tensor:
    """The layer's weight with its mask applied, detached, as float32 on the CPU."""
    return effective_weight(module).float().cpu()


def _other_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every floating-point parameter and buffer other than conv/linear weights and masks.

    Biases, BN affine parameters and running statistics, the input normalization constants and
    any auxiliary tensor of a quantized layer (e.g. a learned clipping level) are stored as fp32.
    """
    for module in model.modules():
        skip = {"weight", "weight_orig", MASK_BUFFER} if isinstance(module, _LAYER_TYPES) else set()
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in tensors:
            if name not in skip and tensor is not None and tensor.is_floating_point():
                yield tensor


def _layers(model: nn.Module) -> Iterator[nn.Module]:
    return (m for m in model.modules() if isinstance(m, _LAYER_TYPES))


def _bytes(bits: int) -> int:
    return -(-bits // 8)


def size_bytes(model: nn.Module) -> float:
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
        if isinstance(getattr(module, MASK_BUFFER, None), torch.Tensor):
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
        return [_stored_weight(module).numpy().astype("<f4").tobytes()]
    quantized_weight = getattr(module, "quantized_weight", None)
    if callable(quantized_weight):
        with torch.no_grad():
            weight = quantized_weight().detach().float().cpu()
        mask = getattr(module, MASK_BUFFER, None)
        if isinstance(mask, torch.Tensor):
            weight = weight * mask.detach().float().cpu()
        if getattr(module, "per_channel", False):  # one codebook per output channel
            rows = [_codebook_codes(row, bits) for row in weight.reshape(weight.shape[0], -1)]
            if all(r is not None for r in rows):
                return [b for r in rows for b in r]  # type: ignore[union-attr]
        codes = _codebook_codes(weight, bits)
        if codes is not None:
            return codes
    return _uniform_codes(_stored_weight(module), bits)


def compressed_bytes(model: nn.Module) -> float:
    """Bytes of the DEFLATE-compressed (zlib, level 9) serialized model, as seed 003 stores its networks.

    Each conv/linear weight tensor is masked and written as value codes: a quantized layer (with
    ``quantized_weight()``) as one index per weight into its codebook of distinct quantized values
    (one byte per index, the fp32 codebook after it), as seed 003 encodes INQ weights; a layer
    whose codebook is too large for its bits (an INQ layer not yet frozen) as uniform symmetric
    codes at its weight bits with one fp32 scale; a floating-point layer as fp32 bytes. All other
    floating tensors (biases, BN, PACT clipping levels...) follow as fp32. Pruned (zero) weights
    and the unused high bits of each code byte are what DEFLATE squeezes.
    """
    chunks: list[bytes] = []
    for module in _layers(model):
        chunks.extend(_serialized_layer(module))
    chunks.extend(t.detach().float().cpu().numpy().astype("<f4").tobytes() for t in _other_tensors(model))
    return float(len(zlib.compress(b"".join(chunks), 9)))
