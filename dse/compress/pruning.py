"""Weight pruning of compact CNNs: masks and the one-shot rules of each scheme.

Every prunable layer (each ``nn.Conv2d`` and ``nn.Linear`` except the first conv and the last
linear, which stay dense as in the literature) carries a buffer ``weight_mask`` and a forward
pre-hook that multiplies its weight by the mask in place. The masks are buffers, so they travel
with ``state_dict``, checkpoints and exports; ``build_model`` + :func:`attach_masks` +
``load_state_dict(strict=True)`` restores a pruned model.

Schemes (``prune_scheme``) and what the ratio ``k`` (``prune_ratio``) means:

* ``irregular``: fraction ``k`` of all prunable weights, smallest magnitude first, one global
  threshold (seed 002's *irregular* scheme, layers end up with different ratios).
* ``funnel``: per-layer magnitude pruning whose ratios rise linearly with depth and whose
  parameter-weighted mean is ``k`` (seed 002's *funnel* scheme: each layer is pruned
  proportionally more than the one before it).
* ``structured``: whole output channels (rows of the weight; whole channels of a depthwise
  conv) with the smallest L1 norm, the same channel fraction in every layer (adjusted by at
  most one channel per layer) so that fraction ``k`` of the prunable parameters is removed.
* ``admm``: ADMM robust pruning (seed 002, Alg. 1, Eqs. 6-9): the training loss gets
  ``rho/2 * ||W - Z + U||^2``; at each epoch end ``Z`` is the projection of ``W + U`` onto
  the sparsity set (global magnitude, fraction ``k`` zero) and ``U += W - Z``; at the last
  epoch the weights are hard-pruned with the support of ``Z``.
* ``dns``: dynamic network surgery (seed 003, Guo et al. 2016): the weights keep training
  with straight-through gradients while masks are recomputed from their magnitude with a
  hysteresis band ``a < b`` (prune when ``|w| < a``, splice back when ``|w| > b``).

``irregular``, ``funnel`` and ``structured`` prune gradually during training with the cubic
schedule of Zhu & Gupta (2017) (one pruning step at the end of each epoch from ``start_epoch``
to the last epoch), ``dns`` follows the same schedule for its target. Seed 002's *redundant*
scheme (removing near-duplicate weights across layers) is not implemented. The training-time
side (gradual schedule, ADMM, DNS) is :mod:`dse.compress.pruner`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dse.errors import SpecError

__all__ = [
    "DNS_BAND",
    "MASK_BUFFER",
    "PRUNE_SCHEMES",
    "apply_mask",
    "attach_masks",
    "check_ratio",
    "check_scheme",
    "effective_weight",
    "global_keep",
    "layer_ratios",
    "layer_sparsity",
    "masked_layers",
    "masked_weight",
    "prunable_layers",
    "prune",
    "set_mask",
    "sparsity",
]

PRUNE_SCHEMES = ("none", "irregular", "funnel", "structured", "admm", "dns")

#: Highest per-layer ratio the funnel ramp may reach (a layer always keeps some weights).
FUNNEL_MAX_RATIO = 0.99
#: Fraction of the steepest feasible funnel slope used (0.5: the first layer is pruned at
#: about half of what the ramp could take from it, so no layer is left dense nor emptied).
FUNNEL_SLOPE_FRACTION = 0.5
#: Half-width of the DNS hysteresis band around the magnitude threshold ``t``: ``a = (1 - h) t``,
#: ``b = (1 + h) t``.
DNS_BAND = 0.1

#: Name of the mask buffer of a prunable layer.
MASK_BUFFER = "weight_mask"
_HOOK_FLAG = "_dse_prune_hook"


# --------------------------------------------------------------------------- validation


def check_ratio(ratio: float) -> float:
    """``prune_ratio`` as a float in [0, 1); a one-line :class:`SpecError` otherwise."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(float(ratio)):
        raise SpecError(f"prune_ratio: expected a number in [0, 1), got {ratio!r}")
    if not 0.0 <= float(ratio) < 1.0:
        raise SpecError(f"prune_ratio: {ratio!r} is outside [0, 1)")
    return float(ratio)


def check_scheme(scheme: str) -> str:
    """``prune_scheme`` if it is one of :data:`PRUNE_SCHEMES`; a one-line :class:`SpecError` otherwise."""
    if scheme not in PRUNE_SCHEMES:
        raise SpecError(f"prune_scheme: unknown scheme {scheme!r} (known: {', '.join(PRUNE_SCHEMES)})")
    return scheme


# --------------------------------------------------------------------------- layers and masks


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers that pruning may sparsify, in module (depth) order.

    Every ``nn.Conv2d`` (depthwise included) and ``nn.Linear`` except the first conv and the
    last linear, which stay dense. A model without a linear layer keeps its last conv dense.

    Args:
        model: The network.

    Returns:
        ``(qualified name, module)`` pairs.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    dense = set()
    if convs:
        dense.add(convs[0])
    if linears:
        dense.add(linears[-1])
    elif convs:
        dense.add(convs[-1])
    return [(n, m) for n, m in layers if n not in dense]


def apply_mask(module: nn.Module) -> None:
    """Zeroes a layer's masked weights in place (nothing without a mask): what its forward pre-hook
    does before each forward, for code that reads the weights without running the layer."""
    mask = getattr(module, MASK_BUFFER, None)
    if isinstance(mask, torch.Tensor):
        with torch.no_grad():
            module.weight.data.masked_fill_(mask == 0, 0.0)


def _apply_mask_pre_hook(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: :func:`apply_mask` before the layer runs."""
    apply_mask(module)


def attach_masks(model: nn.Module) -> None:
    """Gives every prunable layer a ``weight_mask`` buffer of ones and the masking pre-hook.

    Idempotent: layers that already have a mask keep it (and its hook).

    Args:
        model: The network, changed in place.
    """
    for _, module in prunable_layers(model):
        if MASK_BUFFER not in module._buffers:
            module.register_buffer(MASK_BUFFER, torch.ones_like(module.weight.detach()))
        if not getattr(module, _HOOK_FLAG, False):
            module.register_forward_pre_hook(_apply_mask_pre_hook)
            setattr(module, _HOOK_FLAG, True)


def masked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """:func:`prunable_layers` after :func:`attach_masks` (every returned layer has its mask)."""
    attach_masks(model)
    return prunable_layers(model)


@torch.no_grad()
def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Writes ``mask`` into a layer's mask buffer and zeroes the masked weights."""
    buffer = getattr(module, MASK_BUFFER)
    buffer.copy_(mask.reshape(buffer.shape).to(buffer.dtype))
    module.weight.data.masked_fill_(buffer == 0, 0.0)


def masked_weight(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight * mask``, except that a masked non-finite weight is zero too."""
    return torch.where(mask != 0, weight, torch.zeros_like(weight))


def effective_weight(module: nn.Module) -> torch.Tensor:
    """A layer's detached weight with its mask applied (:func:`masked_weight`), if it has one."""
    weight = module.weight.detach()
    mask = getattr(module, MASK_BUFFER, None)
    return weight if mask is None else masked_weight(weight, mask)


def sparsity(model: nn.Module) -> float:
    """Measured fraction of zero weights (``weight * mask == 0``) over the prunable layers.

    Args:
        model: The network (with or without masks).

    Returns:
        Zeros over prunable weights; 0.0 when there is no prunable layer.
    """
    zeros, total = 0, 0
    for _, module in prunable_layers(model):
        w = effective_weight(module)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Measured fraction of zero weights of each prunable layer, by qualified name."""
    return {name: float((effective_weight(m) == 0).float().mean()) for name, m in prunable_layers(model)}


# --------------------------------------------------------------------------- scheme rules


def global_keep(scores: Sequence[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Boolean keep-masks pruning exactly ``round(ratio * N)`` smallest scores over all layers."""
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    n_prune = min(round(ratio * flat.numel()), flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.topk(flat, n_prune, largest=False, sorted=False).indices] = False
    out, start = [], 0
    for s in scores:
        out.append(keep[start : start + s.numel()].reshape(s.shape))
        start += s.numel()
    return out


def _layer_keep(score: torch.Tensor, ratio: float) -> torch.Tensor:
    return global_keep([score], ratio)[0]


def _funnel_ratios(sizes: Sequence[int], ratio: float) -> list[float]:
    """Ratios rising linearly with layer index whose size-weighted mean is ``ratio``."""
    n = len(sizes)
    if n == 0:
        return []
    if n == 1 or ratio == 0.0:
        return [ratio] * n
    depth = [i / (n - 1) for i in range(n)]
    total = float(sum(sizes))
    mean_depth = sum(s * d for s, d in zip(sizes, depth)) / total
    limits = []
    if mean_depth > 0:
        limits.append(ratio / mean_depth)  # first layer stays >= 0
    if mean_depth < 1:
        limits.append(max(FUNNEL_MAX_RATIO - ratio, 0.0) / (1 - mean_depth))  # last layer <= max
    slope = FUNNEL_SLOPE_FRACTION * min(limits)
    return [ratio + slope * (d - mean_depth) for d in depth]


def _channel_counts(modules: Sequence[nn.Module], ratio: float) -> list[int]:
    """Output channels to remove per layer so that ``ratio`` of the parameters go.

    Every layer loses ``floor(ratio * C)`` channels, then layers with the largest remainders
    lose one more channel while that brings the parameter count closer to the target. Every
    layer keeps at least one channel.
    """
    chans = [m.weight.shape[0] for m in modules]
    rows = [m.weight[0].numel() for m in modules]
    target = ratio * sum(c * r for c, r in zip(chans, rows))
    counts = [min(math.floor(ratio * c), c - 1) for c in chans]
    remaining = target - sum(k * r for k, r in zip(counts, rows))
    order = sorted(range(len(chans)), key=lambda i: ratio * chans[i] - math.floor(ratio * chans[i]), reverse=True)
    for i in order:
        if counts[i] < chans[i] - 1 and abs(remaining - rows[i]) < abs(remaining):
            counts[i] += 1
            remaining -= rows[i]
    return counts


def _structured_keep(modules: Sequence[nn.Module], ratio: float) -> list[torch.Tensor]:
    keeps = []
    for module, k in zip(modules, _channel_counts(modules, ratio)):
        w = effective_weight(module)
        l1 = w.abs().reshape(w.shape[0], -1).sum(1)
        keep_rows = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
        if k > 0:
            keep_rows[torch.topk(l1, k, largest=False, sorted=False).indices] = False
        keeps.append(keep_rows.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w))
    return keeps


def _keep_masks(modules: Sequence[nn.Module], ratio: float, scheme: str) -> list[torch.Tensor]:
    """Keep-masks of one pruning step from the current (masked) weights."""
    if scheme == "none" or ratio == 0.0:
        return [torch.ones_like(m.weight, dtype=torch.bool) for m in modules]
    if scheme == "structured":
        return _structured_keep(modules, ratio)
    scores = [effective_weight(m).abs() for m in modules]
    if scheme == "funnel":
        ratios = _funnel_ratios([s.numel() for s in scores], ratio)
        return [_layer_keep(s, r) for s, r in zip(scores, ratios)]
    return global_keep(scores, ratio)  # irregular, admm, dns: one global magnitude threshold


def layer_ratios(model: nn.Module, ratio: float, scheme: str) -> dict[str, float]:
    """Per-layer target ratios of a scheme at an overall ratio.

    ``irregular``/``admm``/``dns``: the fraction of each layer under the global magnitude
    threshold of the current weights. ``funnel``: the linear depth ramp (weight-mean
    ``ratio``). ``structured``: the fraction of output channels removed from each layer.

    Args:
        model: The network.
        ratio: Overall pruning ratio in [0, 1).
        scheme: One of :data:`PRUNE_SCHEMES`.

    Raises:
        SpecError: Bad ``prune_ratio`` or ``prune_scheme``.
    """
    ratio, scheme = check_ratio(ratio), check_scheme(scheme)
    layers = prunable_layers(model)
    names, modules = [n for n, _ in layers], [m for _, m in layers]
    if scheme == "none" or ratio == 0.0:
        return dict.fromkeys(names, 0.0)
    if scheme == "funnel":
        return dict(zip(names, _funnel_ratios([m.weight.numel() for m in modules], ratio)))
    if scheme == "structured":
        counts = _channel_counts(modules, ratio)
        return {n: k / m.weight.shape[0] for n, m, k in zip(names, modules, counts)}
    keeps = _keep_masks(modules, ratio, scheme)
    return {n: 1.0 - float(k.float().mean()) for n, k in zip(names, keeps)}


def prune(model: nn.Module, ratio: float, scheme: str) -> None:
    """One-shot pruning: sets the masks (attaching them if needed) and zeroes masked weights.

    ``irregular``, ``admm`` and ``dns`` prune by global magnitude; ``funnel`` by per-layer
    magnitude with the funnel ratios; ``structured`` removes whole output channels by L1 norm.
    Already-masked weights count as zero, so repeated calls with rising ratios are monotone.

    Args:
        model: The network, changed in place.
        ratio: Fraction of prunable weights to remove, in [0, 1).
        scheme: One of :data:`PRUNE_SCHEMES` (``none`` does nothing).

    Raises:
        SpecError: Bad ``prune_ratio`` or ``prune_scheme``.
    """
    ratio, scheme = check_ratio(ratio), check_scheme(scheme)
    if scheme == "none":
        return
    modules = [m for _, m in masked_layers(model)]
    for module, keep in zip(modules, _keep_masks(modules, ratio, scheme)):
        set_mask(module, keep)
