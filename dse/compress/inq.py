"""Incremental network quantization (Zhou et al. 2017; seed 003): freezing growing parts of the weights.

Frozen weights are re-snapped to their power of two in the forward of the ``pow2`` layers of
:mod:`dse.compress.quant` and taken from a detached tensor, so their gradient is exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dse.compress.quant import QUANT_LAYERS, QConv2d, QLinear
from dse.compress.quantizers import inq_exponent_range, pow2_weight

__all__ = ["INQSchedule"]


class INQSchedule:
    """Incremental network quantization (Zhou et al. 2017; seed 003) of a model's ``pow2`` layers.

    Creating the schedule fixes each layer's exponent range from its current weights (INQ's
    ``n1``, stored in the buffer ``inq_n1``) and switches the layers to INQ: weights train in full
    precision until frozen. ``step(i)`` freezes the largest-magnitude not-yet-frozen weights of
    each layer until ``fractions[i]`` of them are frozen, rounds them to powers of two (written
    into ``weight``) and marks them in the buffer ``inq_frozen``; their gradient is zero from then
    on (the forward takes them from a detached tensor).

    Args:
        model: A model quantized with ``QuantSpec(mode="pow2", ...)``.
        fractions: Increasing accumulated fractions in ``(0, 1]``.

    Raises:
        ValueError: If ``fractions`` is not increasing in ``(0, 1]`` or the model has no pow2 layer.
    """

    def __init__(self, model: nn.Module, *, fractions: Sequence[float] = (0.5, 0.75, 0.875, 1.0)) -> None:
        fr = [float(f) for f in fractions]
        if not fr or any(not 0.0 < f <= 1.0 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
            raise ValueError(f"INQSchedule: fractions must increase within (0, 1], got {tuple(fractions)}")
        self.fractions = tuple(fr)
        self.layers: list[QConv2d | QLinear] = [
            m for m in model.modules() if isinstance(m, QUANT_LAYERS) and m.quant_mode == "pow2"
        ]
        if not self.layers:
            raise ValueError("INQSchedule: the model has no pow2-quantized layer")
        with torch.no_grad():
            for layer in self.layers:
                if bool(torch.isnan(layer.inq_n1)):
                    assert layer.weight_bits is not None
                    n1, _ = inq_exponent_range(float(layer.weight.abs().max()), layer.weight_bits)
                    layer.inq_n1.fill_(n1)

    def step(self, index: int) -> None:
        """Freezes and quantizes ``fractions[index]`` of each pow2 layer's weights (largest magnitudes first)."""
        fraction = self.fractions[index]
        with torch.no_grad():
            for layer in self.layers:
                frozen: Tensor = layer.inq_frozen
                w = layer.weight
                target = min(w.numel(), round(fraction * w.numel()))
                todo = target - int(frozen.sum())
                if todo > 0:
                    mag = w.abs().reshape(-1).masked_fill(frozen.reshape(-1), -1.0)
                    idx = torch.topk(mag, todo).indices
                    frozen.view(-1)[idx] = True
                assert layer.weight_bits is not None
                snapped = pow2_weight(w, layer.weight_bits, int(layer.inq_n1))
                w.copy_(torch.where(frozen, snapped, w))

    def frozen_fraction(self) -> float:
        """The fraction of all pow2 weights frozen so far."""
        total = sum(layer.weight.numel() for layer in self.layers)
        return sum(int(layer.inq_frozen.sum()) for layer in self.layers) / total
