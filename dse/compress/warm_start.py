"""How quantized candidates are trained: the recipe's ``quant`` section and its training hook.

Low-bit MobileNet-tiny trained quantized from a random start learns slowly or not at all (see
the README's compression section and ``bench/quant_diagnosis.py``): at initialisation the
2-bit PACT clipping levels sit far from where the activations are, most depthwise kernels round
to a single level, and the straight-through gradients of the early layers are noise. The
literature's remedies are recipe choices, not changes of the search space:

* ``warm_start_epochs``: train the float model first, then switch the quantizers on (PACT,
  LSQ and ABC-Net all start from a trained or warmed-up float network);
* ``calibrate``: when the quantizers switch on, each PACT clipping level is set to the value
  that minimises the quantization error of the layer's inputs on a batch (ACIQ-style), instead
  of a fixed guess;
* ``bn_reestimate_batches``: the BatchNorm running statistics are re-estimated on training
  batches right after the switch (the float statistics no longer describe quantized layers);
* ``clip_lr_mult`` / ``clip_weight_decay``: the learning rate and weight decay of the clipping
  parameters (PACT's ``alpha``, MBN's activation scales and shifts) apart from the weights';
* ``clip_grad: lsq``: LSQ's gradient for the PACT clips (learned step size: the clip also learns
  from the rounding error of unclipped inputs, :class:`~dse.compress.quantizers.LSQClipQuant`);
* ``calibrate_init``: without a warm start, set the PACT clips by ``calibrate`` on the
  initialised network before the first step (after a BatchNorm re-estimation, so that the
  statistics the calibration sees are the training batches'), as LSQ initialises its steps
  from the data instead of a fixed guess;
* ``orthogonal_reg``: Defensive Quantization's orthogonal regularisation of every weight matrix
  (:mod:`dse.compress.orthogonal`), against the error amplification of low-bit activations.

Structural choices that change the deployed model (per-channel weight scales, a minimum
precision for depthwise convolutions) are candidate keys instead (``per_channel``,
``depthwise_bits`` in :mod:`dse.compress.keys`), so BOPS and size count them.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from dse.compress.hooks import BaseHook
from dse.compress.quant import QUANT_LAYERS
from dse.compress.quantizers import CLIP_GRADS, pact

__all__ = ["CLIP_PARAMETERS", "QuantRecipe", "QuantWarmStart", "calibrate_pact", "reestimate_batchnorm", "set_clip_grad",
           "set_quantizers"]

#: Names of the clipping parameters of quantized layers (their own learning rate and weight decay).
CLIP_PARAMETERS = ("act_alpha", "act_scale", "act_shift")
#: Candidate clipping levels tried by :func:`calibrate_pact`: quantiles of ``|x|`` and fractions of
#: its maximum (float-trained activations are heavy-tailed: at 2 bits the best clip is often a
#: small fraction of the maximum, far below the 0.9 quantile of a mostly-zero post-ReLU input).
_QUANTILES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
_MAX_FRACTIONS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75)


class QuantRecipe(BaseModel):
    """The ``quant`` section of a recipe: how quantized candidates are trained (ignored otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warm_start_epochs: int = Field(0, ge=0)
    calibrate: bool = True
    bn_reestimate_batches: int = Field(20, ge=0)
    clip_lr_mult: float = Field(1.0, gt=0)
    clip_weight_decay: float = Field(0.0, ge=0)
    orthogonal_reg: float = Field(0.0, ge=0)
    clip_grad: Literal["pact", "lsq"] = "pact"
    calibrate_init: bool = False


def set_clip_grad(model: nn.Module, clip_grad: str) -> None:
    """Sets the PACT clip gradient (``"pact"`` or ``"lsq"``) of every quantized layer."""
    if clip_grad not in CLIP_GRADS:
        raise ValueError(f"clip_grad: {clip_grad!r} is not one of {', '.join(CLIP_GRADS)}")
    for m in model.modules():
        if isinstance(m, QUANT_LAYERS):
            m.clip_grad = clip_grad


def set_quantizers(model: nn.Module, enabled: bool) -> None:
    """Switches every quantized layer's quantizers on or off (off: the layer computes in float)."""
    for m in model.modules():
        if isinstance(m, QUANT_LAYERS):
            m.quant_enabled = enabled


def _batches(split, n: int, batch_size: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(split), generator=gen)
    for i in range(min(n, max(1, len(split) // batch_size))):
        idx = order[i * batch_size : (i + 1) * batch_size]
        yield split.x[idx].to(device)


@contextlib.contextmanager
def _train_mode_with_momentum(model: nn.Module, momentum: float | None):
    """Train-mode forwards with every BatchNorm's momentum set to ``momentum`` (0: normalise with
    the batch's statistics and leave the running ones unchanged; ``None``: cumulative average);
    the momenta and the model's mode are restored afterwards. Yields the BatchNorm layers."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.momentum = momentum
    model.train()
    try:
        yield bns
    finally:
        for bn, mom in zip(bns, momenta, strict=True):
            bn.momentum = mom
        model.train(was_training)


@torch.no_grad()
def calibrate_pact(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Sets each PACT clipping level to the candidate (quantiles of ``|input|``) with the lowest
    quantization MSE on ``x``'s activations, layer by layer in forward order. Returns name -> alpha.

    The forwards normalise with ``x``'s own BatchNorm statistics, as training does: running
    statistics describe the network before the clips changed (a float warm start, or an
    initialisation), and in eval mode every calibrated layer would shift the inputs of the next
    ones (seen: clips growing from 2.6 to 30 with depth on inputs of standard deviation 0.6).
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS) and getattr(m, "uses_pact", False)]
    chosen: dict[str, float] = {}
    with _train_mode_with_momentum(model, 0.0):
        for name, layer in layers:  # one pass per layer: earlier layers are already calibrated
            seen: list[torch.Tensor] = []
            handle = layer.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
            try:
                model(x)
            finally:
                handle.remove()
            xin = seen[0].float()
            signed = bool(xin.amin() < 0)
            mags = (xin.abs() if signed else xin.clamp_min(0)).flatten()
            sample = mags[torch.randperm(mags.numel(), generator=torch.Generator().manual_seed(0))[:200_000].to(mags.device)]
            best, best_err = None, float("inf")
            top = sample.max()
            grid = [torch.quantile(sample, q) for q in _QUANTILES] + [top * f for f in _MAX_FRACTIONS]
            for alpha in grid:
                alpha = alpha.clamp_min(1e-3)
                err = float(((pact(xin, alpha, layer.act_bits, signed=signed) - xin) ** 2).mean())
                if err < best_err:
                    best, best_err = alpha, err
            assert best is not None
            layer.act_alpha.copy_(best.to(layer.act_alpha.dtype))
            layer.act_signed.fill_(signed)
            chosen[name] = float(best)
    return chosen


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches) -> int:
    """Recomputes every BatchNorm's running statistics as the average over ``batches`` (train-mode
    forwards, no gradient). Returns the number of batches used."""
    n = 0
    with _train_mode_with_momentum(model, None) as bns:  # cumulative moving average over the batches
        for bn in bns:
            bn.reset_running_stats()
        for x in batches:
            model(x)
            n += 1
    return n


class QuantWarmStart(BaseHook):
    """Trains the float model for ``recipe.warm_start_epochs`` epochs, then switches the quantizers
    on, calibrates the PACT clipping levels and re-estimates BatchNorm (see the module docstring).

    Args:
        model: A model quantized by :func:`dse.compress.quant.quantize_model`.
        recipe: The recipe's ``quant`` section.
        data: The training split (calibration and BatchNorm batches come from it).
        batch_size: Batch size of those batches.
    """

    def __init__(self, model: nn.Module, *, recipe: QuantRecipe, data, batch_size: int) -> None:
        self.model, self.recipe, self.data, self.batch_size = model, recipe, data, batch_size
        self.switched_at: int | None = None
        self.alphas: dict[str, float] = {}
        set_clip_grad(model, recipe.clip_grad)
        if recipe.warm_start_epochs > 0:
            set_quantizers(model, False)
        elif recipe.calibrate_init:
            self._calibrate_init()

    def _calibrate_init(self) -> None:
        n_bn = max(1, self.recipe.bn_reestimate_batches)  # both steps restore the model's mode
        self._reestimate_bn(n_bn)
        self._calibrate()
        self._reestimate_bn(n_bn)

    def _calibrate(self) -> None:
        device = next(self.model.parameters()).device
        x = next(_batches(self.data, 1, max(self.batch_size, 256), device))
        self.alphas = calibrate_pact(self.model, x)

    def _reestimate_bn(self, n: int) -> None:
        device = next(self.model.parameters()).device
        reestimate_batchnorm(self.model, _batches(self.data, n, self.batch_size, device))

    def on_epoch_end(self, epoch: int) -> None:
        """Switches quantization on after the warm-start epochs."""
        if self.switched_at is None and epoch >= self.recipe.warm_start_epochs > 0:
            self.switch(epoch)

    def switch(self, epoch: int) -> None:
        """Quantizers on; calibration and BatchNorm re-estimation as the recipe says."""
        set_quantizers(self.model, True)
        self.switched_at = epoch
        if self.recipe.calibrate:
            self._calibrate()
        if self.recipe.bn_reestimate_batches:
            self._reestimate_bn(self.recipe.bn_reestimate_batches)

    def finalize(self) -> None:
        """Never leaves a model in float: switches on if training ended inside the warm start."""
        if self.recipe.warm_start_epochs > 0 and self.switched_at is None:
            self.switch(-1)
