"""Counting params and MACs the way seed 000 counts them, per layer.

Params are the weights of conv and linear layers plus the linear biases; BatchNorm and the
input normalization are excluded. MACs are the multiply-accumulates of conv and linear layers
for one input image. Counting is done per layer with forward hooks (rather than
``FlopCounterMode`` alone) because later cost models (BOPS) need each layer's MACs next to its
bit-widths; a test checks the totals against ``torch.utils.flop_counter``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["LayerCost", "count_params", "layer_costs", "profile_model"]


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
    return sum(_layer_params(m) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


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
        if isinstance(module, (nn.Conv2d, nn.Linear)):
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


def profile_model(model: nn.Module, *, in_channels: int, image_size: int) -> dict[str, object]:
    """Totals and per-layer costs of a model for one image: ``params``, ``macs``, ``layers``."""
    costs = layer_costs(model, in_channels=in_channels, image_size=image_size)
    return {
        "params": sum(c.params for c in costs),
        "macs": sum(c.macs for c in costs),
        "layers": [asdict(c) for c in costs],
    }
