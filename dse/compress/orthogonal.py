"""Orthogonal regularisation of quantized candidates (Defensive Quantization, Lin, Gan & Han, ICLR 2019).

Low-bit activations amplify small input changes: every activation quantizer is a step function,
so an input change that crosses a rounding threshold moves the next layer's input by a whole
level, and the jumps compound layer by layer (on digits, fixed 2/2 MobileNet-tiny's empirical
Lipschitz estimate is 30-40x the float network's; ``docs/reproduction.md``). Defensive
Quantization keeps each layer's Lipschitz constant near 1 by pulling its weight matrix towards
orthogonality during training:

    penalty = beta / 2 * sum_l || W_l W_l^T - I ||_F^2

with ``W_l`` the layer's float (latent) weight flattened to ``(out, fan_in)``, and the smaller
Gram matrix used when ``out > fan_in`` (``W^T W - I``: orthonormal columns); a grouped
(depthwise) convolution is one matrix per group, so each depthwise 3x3 kernel is pulled to unit
norm. The recipe's ``quant.orthogonal_reg`` is ``beta`` (0: off). Written by hand: it is a few
lines of the paper's formula and no library of the stack provides it.

Measured on digits (fixed 2/2 MobileNet-tiny, beta 0.001, one seed): no gain in robustness and
the Lipschitz estimate barely moved (BatchNorm after every convolution rescales its output
whatever the weight's norm); see ``docs/reproduction.md``.
"""

from __future__ import annotations

import torch
from torch import nn

from dse.compress.hooks import BaseHook

__all__ = ["OrthogonalRegularizer", "orthogonality_penalty"]


def orthogonality_penalty(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``|| W W^T - I ||_F^2`` of ``weight`` flattened to ``(out, fan_in)`` (the smaller Gram matrix).

    A grouped convolution is one matrix per group (``groups`` of ``(out / groups, fan_in)``), so a
    depthwise kernel's penalty is ``(||w_c||^2 - 1)^2`` per channel: it mixes no channels, and
    treating its ``(C, 9)`` weight as one matrix would couple unrelated filters.
    """
    w = weight.reshape(groups, weight.shape[0] // groups, -1)
    gram = w @ w.transpose(1, 2) if w.shape[1] <= w.shape[2] else w.transpose(1, 2) @ w
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return ((gram - eye) ** 2).sum()


class OrthogonalRegularizer(BaseHook):
    """Adds ``beta / 2 * sum || W W^T - I ||_F^2`` over every conv and linear layer to the loss.

    Args:
        model: The model whose conv/linear weights are regularised.
        beta: The penalty's weight (> 0).
    """

    def __init__(self, model: nn.Module, *, beta: float) -> None:
        if not beta > 0:
            raise ValueError(f"orthogonal_reg: expected a weight > 0, got {beta!r}")
        self.beta = float(beta)
        self.weights = [(m.weight, getattr(m, "groups", 1)) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def penalty(self) -> torch.Tensor:
        """The regularisation term of this batch (differentiable in the weights)."""
        return 0.5 * self.beta * torch.stack([orthogonality_penalty(w, g) for w, g in self.weights]).sum()
