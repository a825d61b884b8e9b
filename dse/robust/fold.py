"""BatchNorm folded into the convolutions that feed it, for attack passes; frozen batch statistics.

With its statistics frozen (running statistics, or one batch's statistics held fixed), a BatchNorm
layer is a per-channel affine map, and a plain convolution followed by it is one convolution with a
bias: ``W' = W * s``, ``b' = beta + (b - mean) * s`` with ``s = gamma / sqrt(var + eps)``. An
attack pass (forward and input gradient) then skips BatchNorm's forward and backward, which were
~45% of a PGD step of MobileNet-tiny W=0.35 E=6 on this 2-core CPU (0.30 s with BatchNorm, 0.13 s
folded, batch 128, ``bench/train_throughput.py``).

:func:`fold_batchnorm` returns a :class:`FoldedBatchNorm`: a view of the model in which every
BatchNorm is folded into the convolution that feeds it (or, where none does, is a frozen affine
map), while every other layer is the live model's own module (shared, not copied: quantizers,
pruning hooks and classifiers run as they do in the model). :meth:`FoldedBatchNorm.refresh` re-reads
the weights and the BatchNorm running statistics after the model changed (each optimizer step).
The view computes what the model computes in eval mode, up to float rounding.

:func:`frozen_batch_statistics` swaps a batch's statistics in for the running ones for the span of
a ``with`` block: attacks then run in eval mode on the function a training pass on that batch
computes (``attack_bn: frozen_batch`` in the recipe), and can be folded.

Written by hand, not ``torch.fx.experimental.optimization.fuse``: that folds a deep copy once, in
eval mode; training attacks need a view sharing all other layers with the live model, refreshed
after each optimizer step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

__all__ = ["FoldedBatchNorm", "fold_batchnorm", "frozen_batch_statistics", "load_batch_statistics"]

logger = logging.getLogger(__name__)

_BatchNorm = nn.modules.batchnorm._BatchNorm


class _Tracer(fx.Tracer):
    """Traces into dse's model classes and ``nn.Sequential``; every other module (torch layers,
    quantized layers, user modules) is called as a leaf, so custom autograd functions keep their backward."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m) is nn.Sequential:
            return False
        return super().is_leaf_module(m, module_qualified_name) or not type(m).__module__.startswith("dse.models")


class _FrozenAffine(nn.Module):
    """A BatchNorm with frozen statistics that no plain convolution feeds: ``x * scale + shift``."""

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x, self.scale)


@dataclass
class _Fold:
    bn: _BatchNorm  # the live model's BatchNorm (statistics, gamma, beta)
    conv: nn.Conv2d | None  # the live model's convolution feeding it, when folded
    target: nn.Module  # the view's module written by refresh: a folded Conv2d or a _FrozenAffine


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)


def _affine(bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


class FoldedBatchNorm(nn.Module):
    """The model in eval mode with BatchNorm folded away (build it with :func:`fold_batchnorm`).

    Its own parameters (folded weights and biases) do not require gradients; input gradients flow
    as through the model. Call :meth:`refresh` whenever the model's weights or BatchNorm
    statistics changed.
    """

    def __init__(self, graph_module: fx.GraphModule, folds: list[_Fold]) -> None:
        super().__init__()
        self.graph_module = graph_module
        self._folds = folds
        self.refresh()

    @property
    def folded_convs(self) -> int:
        """How many convolutions absorbed their BatchNorm (the others are frozen affine maps)."""
        return sum(fold.conv is not None for fold in self._folds)

    @torch.no_grad()
    def refresh(self) -> FoldedBatchNorm:
        """Re-reads the live model's weights and BatchNorm statistics; returns ``self``."""
        for fold in self._folds:
            scale, shift = _affine(fold.bn)
            if fold.conv is not None:
                assert isinstance(fold.target, nn.Conv2d) and fold.target.bias is not None
                fold.target.weight.data = fold.conv.weight.detach() * scale.view(-1, 1, 1, 1)
                bias = shift if fold.conv.bias is None else shift + fold.conv.bias.detach() * scale
                fold.target.bias.data = bias
            else:
                assert isinstance(fold.target, _FrozenAffine)
                fold.target.scale = scale.view(1, -1, 1, 1)
                fold.target.shift = shift.view(1, -1, 1, 1)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.graph_module(x)


def fold_batchnorm(model: nn.Module) -> FoldedBatchNorm | None:
    """A :class:`FoldedBatchNorm` view of ``model``, or ``None`` where folding does not apply.

    ``None`` (logged at debug level) when the model has no BatchNorm, cannot be traced by
    ``torch.fx``, or has a BatchNorm that the trace does not reach (inside a leaf module) or that
    carries hooks: the caller then attacks the model itself, which computes the same function.
    A ``BatchNorm2d`` fed only by a plain ``nn.Conv2d`` (exactly that class, no hooks) is folded
    into it; any other is replaced by its frozen affine map.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return None
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any trace failure means "attack the model itself"
        logger.debug("BatchNorm not folded: %s cannot be traced (%s)", type(model).__name__, exc)
        return None
    graph_module = fx.GraphModule(model, graph)
    modules = dict(model.named_modules())
    folds: list[_Fold] = []
    reached: set[int] = set()
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
            continue
        bn = modules[node.target]
        if _has_hooks(bn) or bn.running_mean is None or bn.running_var is None or len(node.args) != 1:
            logger.debug("BatchNorm not folded: %s has hooks or no running statistics", node.target)
            return None
        reached.add(id(bn))
        source = node.args[0]
        conv = modules.get(source.target) if isinstance(source, fx.Node) and source.op == "call_module" else None
        foldable = (
            type(bn) is nn.BatchNorm2d and type(conv) is nn.Conv2d and len(source.users) == 1 and not _has_hooks(conv)
        )
        if foldable:
            assert isinstance(conv, nn.Conv2d)
            weight = conv.weight.detach()
            fused = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
                device=weight.device, dtype=weight.dtype,
            ).requires_grad_(False)
            graph_module.add_submodule(source.target, fused)
            node.replace_all_uses_with(source)
            graph.erase_node(node)
            folds.append(_Fold(bn=bn, conv=conv, target=fused))
        else:
            scale, shift = _affine(bn)
            affine = _FrozenAffine(scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1))
            graph_module.add_submodule(node.target, affine)
            folds.append(_Fold(bn=bn, conv=None, target=affine))
    if any(id(bn) not in reached for bn in bns):
        logger.debug("BatchNorm not folded: %s has BatchNorm inside a leaf module", type(model).__name__)
        return None
    graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return FoldedBatchNorm(graph_module, folds)


def load_batch_statistics(model: nn.Module, x: Tensor) -> None:
    """Overwrites every BatchNorm's running statistics with those of batch ``x``.

    One forward pass (no gradients) with the BatchNorm layers in training mode and momentum 1:
    BatchNorm's own kernel writes the batch's mean and unbiased variance (twice as fast here as a
    separate ``var_mean`` over a channels_last tensor), and the variance is then made the biased
    one, which training normalizes with. Momenta and train/eval flags are restored; the running
    statistics and batch counters are not (see :func:`frozen_batch_statistics`).
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
    counts: dict[int, int] = {}

    def count(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        counts[id(module)] = args[0].numel() // args[0].shape[1]  # values per channel

    modes = [(m, m.training) for m in model.modules()]
    momenta = [bn.momentum for bn in bns]
    handles = [bn.register_forward_pre_hook(count) for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.train()
            bn.momentum = 1.0
        with torch.no_grad():
            model(x)
            for bn in bns:
                n = counts[id(bn)]
                bn.running_var.mul_((n - 1) / n if n > 1 else 0.0)
    finally:
        for handle in handles:
            handle.remove()
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def frozen_batch_statistics(model: nn.Module, x: Tensor) -> Iterator[None]:
    """Within the block, every BatchNorm's running statistics are those of batch ``x``.

    They are the statistics a training pass on ``x`` normalizes with (:func:`load_batch_statistics`);
    when the block ends the running statistics, batch counters and train/eval flags are restored.
    Run the model in eval mode inside.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
    saved = [(bn, bn.running_mean.clone(), bn.running_var.clone(),
              None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()) for bn in bns]
    modes = [(m, m.training) for m in model.modules()]
    try:
        load_batch_statistics(model, x)
        yield
    finally:
        with torch.no_grad():
            for bn, mean, var, counter in saved:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                if counter is not None:
                    bn.num_batches_tracked.copy_(counter)
        for module, training in modes:
            module.training = training
