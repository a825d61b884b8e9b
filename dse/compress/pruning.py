"""Weight pruning of compact CNNs: masks, one-shot schemes and training-time pruners.

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
scheme (removing near-duplicate weights across layers) is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dse.errors import SpecError

__all__ = [
    "PRUNE_SCHEMES",
    "Pruner",
    "attach_masks",
    "cubic_schedule",
    "layer_ratios",
    "layer_sparsity",
    "make_pruner",
    "prunable_layers",
    "prune",
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

_MASK = "weight_mask"
_HOOK_FLAG = "_dse_prune_hook"


# --------------------------------------------------------------------------- validation


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(float(ratio)):
        raise SpecError(f"prune_ratio: expected a number in [0, 1), got {ratio!r}")
    if not 0.0 <= float(ratio) < 1.0:
        raise SpecError(f"prune_ratio: {ratio!r} is outside [0, 1)")
    return float(ratio)


def _check_scheme(scheme: str) -> str:
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


def _apply_mask_pre_hook(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: zeroes the masked weights in place before the layer runs."""
    mask = getattr(module, _MASK, None)
    if mask is not None:
        with torch.no_grad():
            module.weight.data.masked_fill_(mask == 0, 0.0)


def attach_masks(model: nn.Module) -> None:
    """Gives every prunable layer a ``weight_mask`` buffer of ones and the masking pre-hook.

    Idempotent: layers that already have a mask keep it (and its hook).

    Args:
        model: The network, changed in place.
    """
    for _, module in prunable_layers(model):
        if _MASK not in module._buffers:
            module.register_buffer(_MASK, torch.ones_like(module.weight.detach()))
        if not getattr(module, _HOOK_FLAG, False):
            module.register_forward_pre_hook(_apply_mask_pre_hook)
            setattr(module, _HOOK_FLAG, True)


def _masked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    attach_masks(model)
    return prunable_layers(model)


@torch.no_grad()
def _set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    buffer = getattr(module, _MASK)
    buffer.copy_(mask.reshape(buffer.shape).to(buffer.dtype))
    module.weight.data.masked_fill_(buffer == 0, 0.0)


def _masked(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight * mask``, except that a masked non-finite weight is zero too."""
    return torch.where(mask != 0, weight, torch.zeros_like(weight))


def _effective(module: nn.Module) -> torch.Tensor:
    weight = module.weight.detach()
    mask = getattr(module, _MASK, None)
    return weight if mask is None else _masked(weight, mask)


def sparsity(model: nn.Module) -> float:
    """Measured fraction of zero weights (``weight * mask == 0``) over the prunable layers.

    Args:
        model: The network (with or without masks).

    Returns:
        Zeros over prunable weights; 0.0 when there is no prunable layer.
    """
    zeros, total = 0, 0
    for _, module in prunable_layers(model):
        w = _effective(module)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Measured fraction of zero weights of each prunable layer, by qualified name."""
    return {name: float((_effective(m) == 0).float().mean()) for name, m in prunable_layers(model)}


# --------------------------------------------------------------------------- scheme rules


def _global_keep(scores: Sequence[torch.Tensor], ratio: float) -> list[torch.Tensor]:
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
    return _global_keep([score], ratio)[0]


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
        w = _effective(module)
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
    scores = [_effective(m).abs() for m in modules]
    if scheme == "funnel":
        ratios = _funnel_ratios([s.numel() for s in scores], ratio)
        return [_layer_keep(s, r) for s, r in zip(scores, ratios)]
    return _global_keep(scores, ratio)  # irregular, admm, dns: one global magnitude threshold


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
    ratio, scheme = _check_ratio(ratio), _check_scheme(scheme)
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
    ratio, scheme = _check_ratio(ratio), _check_scheme(scheme)
    if scheme == "none":
        return
    modules = [m for _, m in _masked_layers(model)]
    for module, keep in zip(modules, _keep_masks(modules, ratio, scheme)):
        _set_mask(module, keep)


# --------------------------------------------------------------------------- training-time pruner


def cubic_schedule(ratio: float, epoch: int, start_epoch: int, epochs: int) -> float:
    """Zhu & Gupta (2017) target after ``epoch`` (1-based): ``k (1 - (1 - p)^3)``, ``p`` the progress."""
    if epoch < start_epoch:
        return 0.0
    progress = min(1.0, (epoch - start_epoch + 1) / (epochs - start_epoch + 1))
    return ratio * (1.0 - (1.0 - progress) ** 3)


class Pruner:
    """Drives a pruning scheme during training through the training loop's hooks.

    The loop adds :meth:`penalty` to the loss, calls :meth:`after_step` after every optimizer
    step, :meth:`on_epoch_end` with the 1-based epoch after each epoch (as
    :func:`dse.training.train` does) and :meth:`finalize` after the last.

    * ``irregular``/``funnel``/``structured``: gradual magnitude pruning, one step at the end of
      each epoch from ``start_epoch`` (default 1) to ``epochs`` with the cubic schedule,
      reaching ``ratio`` at the end of the last epoch; the masks are re-applied after every step.
    * ``admm``: ``Z`` starts as the projection of the initial weights and ``U`` at zero; each
      epoch end updates ``Z = proj(W + U)``, ``U = U + W - Z``; the last epoch hard-prunes to
      the support of ``Z`` and the penalty becomes zero.
    * ``dns``: every ``dns_interval`` steps the masks are recomputed from the magnitude of the
      dense weights (kept by the pruner; masked weights keep receiving their updates) with
      the hysteresis band around the threshold of the scheduled ratio; the last epoch fixes the
      masks at exactly ``ratio``.

    Training-time state (ADMM ``Z``/``U``, DNS dense weights) lives in the pruner, not in the
    model's ``state_dict``; it follows the weights' device.

    Args:
        model: The network; masks are attached if missing.
        scheme: One of :data:`PRUNE_SCHEMES`.
        ratio: Target fraction of zero prunable weights, in [0, 1).
        epochs: Number of training epochs.
        start_epoch: First epoch (1-based) whose end prunes (gradual schemes and DNS).
        rho: ADMM penalty parameter.
        dns_interval: Optimizer steps between DNS mask updates.
        dns_band: Half-width of the DNS hysteresis band, relative to the threshold.

    Raises:
        SpecError: Bad ``prune_ratio``, ``prune_scheme``, epochs or start epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        scheme: str,
        ratio: float,
        epochs: int,
        start_epoch: int | None = None,
        rho: float = 1e-3,
        dns_interval: int = 1,
        dns_band: float = DNS_BAND,
    ) -> None:
        self.scheme = _check_scheme(scheme)
        self.ratio = _check_ratio(ratio)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise SpecError(f"epochs: expected an integer >= 1, got {epochs!r}")
        start = 1 if start_epoch is None else start_epoch
        if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= epochs:
            raise SpecError(f"start_epoch: {start_epoch!r} is outside [1, {epochs}]")
        if not rho > 0:
            raise SpecError(f"rho: expected a positive number, got {rho!r}")
        if isinstance(dns_interval, bool) or not isinstance(dns_interval, int) or dns_interval < 1:
            raise SpecError(f"dns_interval: expected an integer >= 1, got {dns_interval!r}")
        if not 0.0 <= dns_band < 1.0:
            raise SpecError(f"dns_band: {dns_band!r} is outside [0, 1)")
        self.model = model
        self.epochs = epochs
        self.start_epoch = start
        self.rho = float(rho)
        self.dns_interval = dns_interval
        self.dns_band = float(dns_band)
        self.active = self.scheme != "none" and self.ratio > 0.0
        self.layers = _masked_layers(model) if self.active else prunable_layers(model)
        self.current_ratio = 0.0
        self.finalized = False
        self._steps = 0
        self._admm_done = False
        self._z: list[torch.Tensor] = []
        self._u: list[torch.Tensor] = []
        self._dense: list[torch.Tensor] = []
        if self.active and self.scheme == "admm":
            self._z = self._project([m.weight.detach() for m in self._modules])
            self._u = [torch.zeros_like(z) for z in self._z]
        if self.active and self.scheme == "dns":
            self._dense = [m.weight.detach().clone() for m in self._modules]

    @property
    def _modules(self) -> list[nn.Module]:
        return [m for _, m in self.layers]

    def _follow_device(self) -> None:
        """Moves the pruner's tensors to the weights' device (the model may move after init)."""
        for store in (self._z, self._u, self._dense):
            for i, (t, m) in enumerate(zip(store, self._modules)):
                if t.device != m.weight.device:
                    store[i] = t.to(m.weight.device)

    def _project(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Euclidean projection onto the sparsity set: keep the largest ``1 - ratio`` globally."""
        keeps = _global_keep([t.abs() for t in tensors], self.ratio)
        return [t * k for t, k in zip(tensors, keeps)]

    def penalty(self) -> torch.Tensor:
        """ADMM augmented-Lagrangian term ``rho/2 * sum ||W - Z + U||^2`` (zero otherwise).

        Returns:
            A scalar tensor, differentiable in the weights for ADMM before hard pruning.
        """
        modules = self._modules
        device = modules[0].weight.device if modules else torch.device("cpu")
        if not (self.active and self.scheme == "admm") or self._admm_done:
            return torch.zeros((), device=device)
        self._follow_device()
        total = torch.zeros((), device=device)
        for m, z, u in zip(modules, self._z, self._u):
            total = total + (m.weight - z + u).pow(2).sum()
        return 0.5 * self.rho * total

    @torch.no_grad()
    def after_step(self) -> None:
        """Re-applies the masks; DNS also updates its dense weights and, every interval, its masks."""
        if not self.active:
            return
        self._steps += 1
        if self.scheme == "dns" and not self.finalized:
            self._follow_device()
            for i, m in enumerate(self._modules):
                mask = getattr(m, _MASK).bool()
                # Masked weights were zero before the step: their value now is their update.
                self._dense[i] = torch.where(mask, m.weight, self._dense[i] + m.weight)
            if self.current_ratio > 0.0 and self._steps % self.dns_interval == 0:
                self._dns_update()
            for m, dense in zip(self._modules, self._dense):
                m.weight.copy_(_masked(dense, getattr(m, _MASK)))
            return
        for m in self._modules:
            m.weight.masked_fill_(getattr(m, _MASK) == 0, 0.0)

    def _dns_update(self) -> None:
        """Prune ``|w| < a``, splice ``|w| > b``, keep the rest as they are (hysteresis)."""
        flat = torch.cat([d.abs().reshape(-1) for d in self._dense])
        k = round(self.current_ratio * flat.numel())
        if k == 0:
            return
        threshold = torch.kthvalue(flat.float().cpu(), k).values.item()
        a, b = (1.0 - self.dns_band) * threshold, (1.0 + self.dns_band) * threshold
        for m, dense in zip(self._modules, self._dense):
            mask = getattr(m, _MASK)
            magnitude = dense.abs()
            new = torch.where(magnitude < a, torch.zeros_like(mask), mask)
            new = torch.where(magnitude > b, torch.ones_like(mask), new)
            mask.copy_(new)

    def _hard_prune_dense(self) -> None:
        keeps = _global_keep([d.abs() for d in self._dense], self.ratio)
        for m, dense, keep in zip(self._modules, self._dense, keeps):
            getattr(m, _MASK).copy_(keep.to(m.weight.dtype))
            m.weight.copy_(_masked(dense, keep))

    def _hard_prune_admm(self) -> None:
        for m, z in zip(self._modules, self._z):
            _set_mask(m, z != 0)
        self._admm_done = True

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """One scheduled pruning step (gradual, DNS target) or ADMM ``Z``/``U`` update.

        Args:
            epoch: The epoch just finished, 1-based.
        """
        if not self.active or self.finalized:
            return
        self._follow_device()
        if self.scheme == "admm":
            if self._admm_done:
                return
            weights = [m.weight.detach() for m in self._modules]
            self._z = self._project([w + u for w, u in zip(weights, self._u)])
            self._u = [u + w - z for u, w, z in zip(self._u, weights, self._z)]
            if epoch >= self.epochs:
                self._hard_prune_admm()
            return
        self.current_ratio = cubic_schedule(self.ratio, epoch, self.start_epoch, self.epochs)
        if self.scheme == "dns":
            if epoch >= self.epochs:
                self._hard_prune_dense()
                self.finalized = True
            elif self.current_ratio > 0.0:
                self._dns_update()
                for m, dense in zip(self._modules, self._dense):
                    m.weight.copy_(_masked(dense, getattr(m, _MASK)))
            return
        if self.current_ratio > 0.0:
            prune(self.model, self.current_ratio, self.scheme)

    @torch.no_grad()
    def finalize(self) -> None:
        """Sets the final hard masks at exactly ``ratio`` (measured over the prunable layers).

        After this the masks are fixed: :meth:`after_step` only re-applies them and the ADMM
        penalty is zero.
        """
        if not self.active:
            return
        self._follow_device()
        if self.scheme == "admm" and not self._admm_done:
            weights = [m.weight.detach() for m in self._modules]
            self._z = self._project([w + u for w, u in zip(weights, self._u)])
            self._hard_prune_admm()
        elif self.scheme == "dns" and not self.finalized:
            self._hard_prune_dense()
        scheme = "irregular" if self.scheme in ("admm", "dns") else self.scheme
        prune(self.model, self.ratio, scheme)
        self.current_ratio = self.ratio
        self.finalized = True


def make_pruner(model: nn.Module, scheme: str, ratio: float, epochs: int) -> Pruner | None:
    """The training-time pruner of a candidate's scheme, or None when it does not prune.

    Args:
        model: The network (masks are attached when a pruner is made).
        scheme: ``prune_scheme``.
        ratio: ``prune_ratio`` in [0, 1).
        epochs: Training epochs.

    Raises:
        SpecError: Bad ``prune_ratio`` or ``prune_scheme``.
    """
    scheme, ratio = _check_scheme(scheme), _check_ratio(ratio)
    if scheme == "none" or ratio == 0.0:
        return None
    return Pruner(model, scheme=scheme, ratio=ratio, epochs=epochs)
