"""Training one candidate: natural, PGD-AT, TRADES, FastAT, free AT, and clean/adversarial mixes.

(Over 400 lines on purpose: the recipe schema, its per-data-set defaults and the one training loop
that reads every field are kept together; the attacks and free AT's perturbation live in
:mod:`dse.robust`.)

Methods (the training attack lives in ``Recipe.attack``, apart from the evaluation settings):

* ``natural``: cross-entropy on clean inputs.
* ``pgd_at`` (Madry et al. 2018): cross-entropy on PGD examples.
* ``trades`` (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, x_adv from the
  KL inner maximization.
* ``fast_at`` (Wong et al. 2020): FGSM from a uniform random start with step ``alpha``.
* ``free`` (Shafahi et al. 2019): each minibatch is replayed ``free_replays`` (m, default 4)
  times; each replay is ONE forward/backward pass on ``x + delta`` that gives both the weight
  gradient (one optimizer step) and the input gradient (``delta`` takes one eps step, projected
  into the eps-ball and ``[0, 1]``: :class:`~dse.robust.free.FreePerturbation`). ``delta`` persists
  across replays and minibatches (zeroed when the batch shape changes). ``epochs`` counts passes
  over the data, each replaying every batch m times (m times a natural epoch's optimizer steps),
  so the paper's "divide the epochs by m" is up to the recipe: K natural epochs' budget is
  ``epochs: ceil(K / m)``. The LR schedule and warmup count optimizer steps (m per batch);
  ``train_loss``/``train_acc`` average over every replay. The pass is a training pass (train mode,
  running statistics updated), so ``attack_bn`` does not apply and ``attack_dtype`` must stay
  float32; ``adv_weight: 0`` trains on clean inputs, other mixes do not apply (as for ``trades``).

Training attacks craft as the recipe's ``attack_bn`` says (:mod:`dse.recipe`).

For ``pgd_at`` and ``fast_at``, ``adv_weight`` mixes clean and adversarial loss:
``mix_mode: loss`` uses ``(1 - w) CE(clean) + w CE(adv)`` on every sample (seed 002 used w = 0.9);
``mix_mode: batch`` attacks only the first ``w`` of each batch (seed 003: half-and-half batches).

Speed:

* ``attack_dtype: bfloat16`` runs the training attack's passes (PGD, FGSM-RS, TRADES' inner
  maximization) under bfloat16 ``torch.autocast`` on the training device; its examples stay float32
  in the eps-ball and ``[0, 1]``, and the training pass stays float32 (or AMP's). ``float32``
  (default) adds no autocast.
* ``compile: true`` trains (attacks included) through ``torch.compile(model)``; the evaluator,
  hooks and the returned model see the plain module.
* Random draws (batch order and crop/flip from ``seed``, attack starts from ``seed + 1``) come from
  generators on the training device, so no noise is copied per step (on CPU: the same draws as
  ever). Loss/accuracy totals stay on the device until the epoch ends; a non-finite loss stops
  training at once on CPU and at the end of its epoch on an accelerator (no host read per batch).
* ``amp`` stays CUDA-only (float16 autocast and a gradient scaler).

Per-epoch validation metrics come from an ``evaluate(model, val_split)`` callback that the caller
builds (the objectives live above this module); compression schemes plug in as
:class:`~dse.compress.hooks.TrainingHook` objects.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dse.compress.freeze import cached_weights
from dse.compress.hooks import TrainingHook
from dse.compress.warm_start import CLIP_PARAMETERS
from dse.data import Dataset, Split, iterate_batches, random_crop_flip
from dse.recipe import METHODS, Recipe, default_eval_attack, default_recipe
from dse.robust.attacks import fgsm, pgd
from dse.robust.fold import FoldedBatchNorm, fold_batchnorm, frozen_batch_statistics
from dse.robust.free import FreePerturbation
from dse.robust.trades import trades_adversary

__all__ = [
    "EpochCallback",
    "EpochEvaluator",
    "METHODS",
    "Recipe",
    "default_eval_attack",
    "default_recipe",
    "resolve_device",
    "seed_everything",
    "train",
]

logger = logging.getLogger(__name__)

#: Called after every epoch with that epoch's metrics; the study runner hooks Ray Tune's report here.
EpochCallback = Callable[[dict[str, float]], None]
#: ``evaluate(model, val_split, epoch) -> {name: value}``: the per-epoch validation metrics (reported
#: with a ``val_`` prefix). The model is in train mode when called; the evaluator restores any mode it changes.
EpochEvaluator = Callable[[nn.Module, Split, int], dict[str, float]]


def resolve_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (model init and any unseeded randomness)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _lr_lambda(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if recipe.schedule == "step":
            epoch_frac = step / total
            return recipe.gamma ** sum(epoch_frac >= m for m in recipe.milestones)
        return 1.0

    return factor


def _attack_precision(recipe: Recipe, x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """The autocast the training attack crafts under: none for float32, else bfloat16 on ``x``'s device."""
    if recipe.attack_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def _attack_view(
    model: nn.Module, folded: FoldedBatchNorm | None, recipe: Recipe, x: torch.Tensor
) -> Iterator[tuple[nn.Module, str]]:
    """The module the training attack on ``x`` runs on, and the BatchNorm mode it runs in.

    ``batch``: the model, each step normalizing with the attacked batch's statistics. ``eval`` and
    ``frozen_batch`` (the clean batch's statistics, held fixed for the attack's steps): BatchNorm
    is a frozen affine map, folded into the convolutions when ``folded`` is given.
    """
    if recipe.attack_bn == "batch":
        yield model, "batch"
        return
    plain = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: hooks go on the module itself
    frozen = frozen_batch_statistics(plain, x) if recipe.attack_bn == "frozen_batch" else contextlib.nullcontext()
    with frozen:
        yield (folded.refresh() if folded is not None else model), "eval"


#: ``run(module, bn, steps, start)``: a multi-step training attack (PGD, TRADES) on ``module`` in
#: BatchNorm mode ``bn``, ``steps`` steps from ``start`` (``None``: its own start)
_Run = Callable[[nn.Module, str, int, "torch.Tensor | None"], torch.Tensor]


def _multi_step(run: _Run, model: nn.Module, folded: FoldedBatchNorm | None, recipe: Recipe, x: torch.Tensor) -> torch.Tensor:
    """A multi-step training attack: its first steps on :func:`_attack_view`, its last
    ``recipe.attack_batch_steps`` on the model with batch statistics, continuing from there."""
    steps, last = recipe.train_attack().steps, recipe.attack_batch_steps
    # the weights stay as they are for the attack's steps: quantized once (dse.compress.freeze)
    with _attack_precision(recipe, x), cached_weights(model), \
            _attack_view(model, folded, recipe, x) as (attacker, bn):
        x_adv = run(attacker, bn, steps - last, None)
    if last:
        with _attack_precision(recipe, x), cached_weights(model):
            x_adv = run(model, "batch", last, x_adv)
    return x_adv


def _adversarial_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    generator: torch.Generator,
    *,
    x_free: torch.Tensor | None = None,
    folded: FoldedBatchNorm | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one batch and the logits its accuracy is read from (``x_free``: free AT's ``x + delta``;
    ``folded``: the model's BatchNorm-folded view for attacks with frozen statistics)."""
    attack = recipe.train_attack()
    if recipe.method == "natural" or recipe.adv_weight == 0.0:
        logits = model(x)
        return F.cross_entropy(logits, y), logits
    if recipe.method == "free":
        if x_free is None:
            raise ValueError("method free needs x_free, the FreePerturbation's inputs for this pass")
        logits = model(x_free)
        return F.cross_entropy(logits, y), logits
    if recipe.method == "trades":
        x_adv = _multi_step(
            lambda net, bn, steps, start: trades_adversary(
                net, x, eps=attack.eps, step_size=attack.step_size, steps=steps, norm=attack.norm,
                generator=generator, bn=bn, start=start,
            ),
            model, folded, recipe, x,
        )
        logits = model(x)
        logits_adv = model(x_adv)
        # log_target=True: differentiating p * log(p) through a softmax target gives log(0) = -inf
        # (and NaN weights) as soon as a probability underflows; log-probabilities stay finite.
        kl = F.kl_div(
            F.log_softmax(logits_adv, dim=1), F.log_softmax(logits, dim=1), reduction="batchmean", log_target=True
        )
        return F.cross_entropy(logits, y) + recipe.trades_beta * kl, logits_adv

    def craft(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        if recipe.method == "fast_at":
            with _attack_precision(recipe, xs), cached_weights(model), \
                    _attack_view(model, folded, recipe, xs) as (attacker, bn):
                alpha = recipe.fast_at_alpha or 1.25 * attack.eps
                return fgsm(
                    attacker, xs, ys, eps=attack.eps, norm=attack.norm, random_start=True, alpha=alpha,
                    generator=generator, bn=bn,
                )
        return _multi_step(
            lambda net, bn, steps, start: pgd(
                net, xs, ys, eps=attack.eps, step_size=attack.step_size, steps=steps, norm=attack.norm,
                loss=attack.loss, restarts=1, random_start=attack.random_start, generator=generator, bn=bn,
                start=start,
            ),
            model, folded, recipe, xs,
        )

    w = recipe.adv_weight
    if recipe.mix_mode == "batch":
        n_adv = round(w * x.shape[0])
        x_mixed = torch.cat([craft(x[:n_adv], y[:n_adv]), x[n_adv:]]) if n_adv > 0 else x
        logits = model(x_mixed)
        return F.cross_entropy(logits, y), logits
    x_adv = craft(x, y)
    logits_adv = model(x_adv)
    loss = F.cross_entropy(logits_adv, y)
    if w < 1.0:
        loss = w * loss + (1.0 - w) * F.cross_entropy(model(x), y)
    return loss, logits_adv


def train(
    model: nn.Module,
    dataset: Dataset,
    recipe: Recipe,
    *,
    evaluate: EpochEvaluator | None = None,
    callback: EpochCallback | None = None,
    device: torch.device | str | None = None,
    hooks: Sequence[TrainingHook] = (),
) -> list[dict[str, float]]:
    """Trains ``model`` in place and returns the per-epoch metrics.

    Every ``recipe.eval_every`` epochs (and after the last), when the data set has a validation
    split, ``evaluate(model, val, epoch)`` scores the model; its metrics join the epoch's with a ``val_``
    prefix (e.g. ``val_robust_acc``). Each epoch's metrics then go to ``callback``.

    Args:
        model: The model, inputs in [0, 1].
        dataset: Train, validation and test splits.
        recipe: Method, optimizer, schedule, training attack.
        evaluate: Per-epoch validation metrics; ``None`` for none. It receives the whole
            validation split; ``recipe.eval_samples`` is for the evaluator's builder to apply.
        callback: Called with each epoch's metrics.
        device: Where to train (default: CUDA when present, else CPU).
        hooks: Compression hooks (pruning, INQ; see :func:`dse.compress.keys.training_hooks`): their
            ``penalty()`` (unless ``None``) is added to the loss, ``after_step()`` runs after each
            optimizer step, ``on_epoch_end(epoch)`` after each epoch and ``finalize()`` after the last.

    Returns:
        One dict of metrics per epoch.
    """
    device = resolve_device(str(device) if device is not None else None)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    train_split = dataset.train.to(device)
    val_split = dataset.val.to(device) if dataset.val is not None else None
    # On the training device, so noise is drawn where it is used (a CPU run draws exactly as before).
    batch_gen = torch.Generator(device=device).manual_seed(recipe.seed)
    attack_gen = torch.Generator(device=device).manual_seed(recipe.seed + 1)
    replays = recipe.free_replays if recipe.method == "free" else 1
    free = None
    if recipe.method == "free":
        free = FreePerturbation(eps=recipe.train_attack().eps, norm=recipe.train_attack().norm)
    net = torch.compile(model) if recipe.compile else model
    # attacks with frozen BatchNorm statistics run on a folded view (refreshed per batch; uncompiled)
    attacks = recipe.method in ("pgd_at", "trades", "fast_at") and recipe.adv_weight > 0
    folded = fold_batchnorm(model) if attacks and recipe.attack_bn != "batch" and recipe.attack_fold_bn else None
    steps_per_epoch = math.ceil(len(train_split) / recipe.batch_size) * replays  # optimizer steps
    decay, no_decay, clips = [], [], []
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in CLIP_PARAMETERS:
            clips.append(p)  # quantizers' clipping levels: their own learning rate and decay (recipe.quant)
        else:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if clips:
        groups.append({"params": clips, "weight_decay": recipe.quant.clip_weight_decay, "lr": recipe.lr * recipe.quant.clip_lr_mult})
    if recipe.optimizer == "adam":  # binary/multi-bit networks (XNOR, ABC-Net, Bi-Real): their STE gradients are
        # orders of magnitude smaller than a float net's (bench/quant_diagnosis.py), which Adam's scaling absorbs
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))
    else:
        optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(recipe, steps_per_epoch))
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, float]] = []
    for epoch in range(1, recipe.epochs + 1):
        start = time.perf_counter()
        model.train()
        # totals stay on the device (float64 where it has it: the same sums as Python floats), read once below
        total_loss = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        seen = 0
        for x, y in iterate_batches(train_split, recipe.batch_size, shuffle=True, generator=batch_gen):
            if dataset.spec.augment:
                x = random_crop_flip(x, generator=batch_gen)
            x = x.contiguous(memory_format=memory_format)
            for _ in range(replays):
                x_free = free.inputs(x) if free is not None else None
                with torch.autocast(device.type, enabled=use_amp):
                    loss, logits = _adversarial_loss(net, x, y, recipe, attack_gen, x_free=x_free, folded=folded)
                    for hook in hooks:
                        term = hook.penalty()
                        if term is not None:
                            loss = loss + term
                nonfinite |= ~torch.isfinite(loss.detach())
                if device.type == "cpu" and nonfinite:  # free on CPU; an accelerator's flag is read per epoch
                    raise FloatingPointError(f"training diverged at epoch {epoch}: loss is {loss.item()}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if free is not None and x_free is not None:
                    free.update(x, x_free)
                if recipe.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                for hook in hooks:
                    hook.after_step()
                total_loss += loss.detach().to(total_loss.dtype) * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
        if nonfinite:
            raise FloatingPointError(f"training diverged at epoch {epoch}: a batch's loss was not finite")
        for hook in hooks:
            hook.on_epoch_end(epoch)
            if epoch == recipe.epochs:
                hook.finalize()
        metrics: dict[str, float] = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": total_loss.item() / seen,
            "train_acc": correct.item() / seen,
            "epoch_seconds": time.perf_counter() - start,
        }
        due = recipe.eval_every and (epoch % recipe.eval_every == 0 or epoch == recipe.epochs)
        if evaluate is not None and val_split is not None and due:
            scores = evaluate(model, val_split, epoch)
            metrics.update({f"val_{k}": v for k, v in scores.items()})
        history.append(metrics)
        logger.info(
            "epoch %d/%d %s",
            epoch,
            recipe.epochs,
            " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"),
        )
        if callback is not None:
            callback(metrics)
    model.eval()
    return history
