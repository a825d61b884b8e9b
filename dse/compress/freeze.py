"""A compressed model frozen into the fixed function it deploys as (ONNX export, deployed latency).

While :func:`frozen` holds, the model is in eval mode and changes no state when it runs:

* pruning masks are applied to the float weights once (what their forward pre-hook does at every
  forward), so a pruned layer exports as its masked float weights;
* every quantized layer (:class:`~dse.compress.quant.QConv2d`, :class:`~dse.compress.quant.QLinear`)
  computes with its quantized weights computed once, a constant (``frozen_weight``): DoReFa,
  ABC-Net's least-squares bases and INQ's powers of two do not run per forward (ONNX has no
  least-squares op), and an exported graph carries the quantized weight values as initializers;
* the PACT sign flags (``act_signed``) keep the values they were trained to.

Activation quantizers still run as their straight-through functions (their forward is plain
torch maths: clip, round, sign), so an exporter that inlines autograd functions sees ordinary ops.
On exit the weights are released and the train/eval mode is restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dse.compress.pruning import MASK_BUFFER, set_mask
from dse.compress.quant import QUANT_LAYERS

__all__ = ["frozen"]


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` frozen for inference and export (see the module docstring), restored on exit.

    Args:
        model: A dse model, compressed or not (a plain float model passes through unchanged).

    Yields:
        ``model`` itself, in eval mode.
    """
    was_training = model.training
    model.eval()
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
    try:
        with torch.no_grad():
            for module in model.modules():
                mask = getattr(module, MASK_BUFFER, None)
                if isinstance(mask, torch.Tensor):
                    set_mask(module, mask)  # zeroes the masked weights, as the forward pre-hook does
            for layer in layers:
                layer.frozen_weight = layer.quantized_weight().detach().clone()
        yield model
    finally:
        for layer in layers:
            layer.frozen_weight = None
        model.train(was_training)
