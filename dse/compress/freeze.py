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

:func:`cached_weights` is the lighter half of it, for passes that need no weight gradient while the
weights stay as they are (a training attack's steps, an evaluation): each quantized layer's weights
are quantized once for the span of the block instead of at every forward, and nothing else
changes (mode, PACT sign flags, every value computed). An ABC-Net layer solves a least-squares
problem per forward; on ResNet-20 on digits this made a PGD step 1.2x (fixed 2/2) to 1.9x (MBN 3x1)
slower than with the weights cached (``bench/quant_weight_cache.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dse.compress.pruning import apply_mask
from dse.compress.quant import QUANT_LAYERS

__all__ = ["cached_weights", "frozen"]


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
                apply_mask(module)  # as the forward pre-hook does
            for layer in layers:
                layer.frozen_weight = layer.quantized_weight().detach().clone()
        yield model
    finally:
        for layer in layers:
            layer.frozen_weight = None
        model.train(was_training)


@contextmanager
def cached_weights(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with each quantized layer's weights quantized once, for the span of the block.

    The cached weights are the values :meth:`~dse.compress.quant.QConv2d.quantized_weight` returns
    (masked weights zeroed first, as the pruning pre-hook does at every forward), detached: passes
    inside compute exactly what they would without the cache, but give the weights no gradient.
    Use it only where the weights do not change inside (no optimizer step) and no weight gradient
    is needed. Layers already frozen or cached (a nested block) are left as they are; a model
    compiled with ``torch.compile`` runs uncached (its graph would be traced again for each cache).

    Args:
        model: A dse model, compressed or not (without quantized layers nothing happens).

    Yields:
        ``model`` itself.
    """
    if hasattr(model, "_orig_mod"):  # torch.compile's wrapper
        yield model
        return
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS) and m.quant_enabled
              and m.frozen_weight is None and m.weight_cache is None]
    try:
        with torch.no_grad():
            for layer in layers:
                apply_mask(layer)  # what the forward pre-hook does first
                layer.weight_cache = layer.quantized_weight().detach()
        yield model
    finally:
        for layer in layers:
            layer.weight_cache = None
