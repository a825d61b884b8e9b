"""Compression of candidates: quantizers, quantized layers, pruning, and the hooks training calls.

Modules: :mod:`~dse.compress.keys` (candidate keys, applying them, their hooks),
:mod:`~dse.compress.quantizers` (straight-through estimators), :mod:`~dse.compress.quant`
(quantized layers), :mod:`~dse.compress.inq` (incremental quantization),
:mod:`~dse.compress.pruning` (masks and schemes), :mod:`~dse.compress.pruner` (pruning during
training), :mod:`~dse.compress.hooks` (the :class:`TrainingHook` protocol) and :mod:`~dse.compress.freeze`
(a model frozen for export).
"""

from dse.compress.freeze import frozen
from dse.compress.hooks import BaseHook, INQHook, TrainingHook
from dse.compress.inq import INQSchedule
from dse.compress.keys import COMPRESSION_KEYS, CompressionConfig, apply_compression, training_hooks
from dse.compress.pruner import Pruner, cubic_schedule, make_pruner
from dse.compress.pruning import (
    PRUNE_SCHEMES,
    attach_masks,
    layer_ratios,
    layer_sparsity,
    prunable_layers,
    prune,
    sparsity,
)
from dse.compress.quant import QUANT_MODES, QConv2d, QLinear, QuantSpec, layer_bits, quantize_model
from dse.compress.quantizers import (
    PACTQuant,
    Pow2Quant,
    RoundSTE,
    SignSTE,
    dorefa_weight,
    inq_exponent_range,
    mbn_activation,
    mbn_weight,
    pact,
    pact_alpha_init,
    pow2_weight,
)

__all__ = [
    "COMPRESSION_KEYS",
    "PRUNE_SCHEMES",
    "QUANT_MODES",
    "BaseHook",
    "CompressionConfig",
    "INQHook",
    "INQSchedule",
    "PACTQuant",
    "Pow2Quant",
    "Pruner",
    "QConv2d",
    "QLinear",
    "QuantSpec",
    "RoundSTE",
    "SignSTE",
    "TrainingHook",
    "apply_compression",
    "attach_masks",
    "cubic_schedule",
    "dorefa_weight",
    "frozen",
    "inq_exponent_range",
    "layer_bits",
    "layer_ratios",
    "layer_sparsity",
    "make_pruner",
    "mbn_activation",
    "mbn_weight",
    "pact",
    "pact_alpha_init",
    "pow2_weight",
    "prunable_layers",
    "prune",
    "quantize_model",
    "sparsity",
    "training_hooks",
]
