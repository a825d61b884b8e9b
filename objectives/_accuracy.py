"""Natural and robust accuracy (seed 000 eqs. 1-2) and perturbation instability (eq. 3)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dse.robust.attacks import run_attack
from dse.data import iterate_batches, Split
from objectives._base import EvalSettings

__all__ = ["natural_acc", "pert_instability", "predictions", "robust_acc"]


@torch.no_grad()
def _eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def predictions(
    model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Clean and adversarial logits of the evaluated samples, computed once per ``cache``.

    The model is evaluated in eval mode; the caller's mode is restored.
    """
    if cache is not None and "logits" in cache:
        return cache["logits"]
    data = settings.samples(data)
    if settings.uses_suite:
        from dse.robust.suites import evaluate_suite

        outcome = evaluate_suite(
            model, data, suite=settings.suite, attack=settings.attack, batch_size=settings.batch_size,
            seed=settings.seed, cascade=settings.cascade,
        )
        tensors = outcome.pop("_tensors")
        result = {"clean": tensors["clean_logits"], "adv": tensors["adv_logits"], "y": tensors["y"],
                  "robust": tensors["robust"]}
        if cache is not None:
            cache["logits"] = result
            cache["suite"] = outcome
        return result
    device = next(model.parameters()).device
    generator = settings.generator()
    was_training = model.training
    clean, adv = [], []
    try:
        model.eval()
        for x, y in iterate_batches(data, settings.batch_size, shuffle=False):
            x, y = x.to(device), y.to(device)
            clean.append(_eval_logits(model, x).float().cpu())
            x_adv = run_attack(model, x, y, settings.attack, generator=generator)
            adv.append(_eval_logits(model, x_adv).float().cpu())
    finally:
        model.train(was_training)
    result = {"clean": torch.cat(clean), "adv": torch.cat(adv), "y": data.y.cpu()}
    if cache is not None:
        cache["logits"] = result
    return result


@torch.no_grad()
def natural_acc(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Fraction of clean samples classified correctly (eq. 1)."""
    if cache is not None and "logits" in cache:
        p = cache["logits"]
        return (p["clean"].argmax(1) == p["y"]).sum().item() / len(p["y"])
    data = settings.samples(data)
    device = next(model.parameters()).device
    was_training = model.training
    correct = 0
    try:
        model.eval()
        for x, y in iterate_batches(data, settings.batch_size, shuffle=False):
            correct += (_eval_logits(model, x.to(device)).argmax(1).cpu() == y).sum().item()
    finally:
        model.train(was_training)
    return correct / len(data)


def robust_acc(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Fraction of samples classified correctly both clean and under the evaluation attack (eq. 2)."""
    p = predictions(model, data, settings, cache=cache)
    robust = (p["clean"].argmax(1) == p["y"]) & (p["adv"].argmax(1) == p["y"])
    return robust.sum().item() / len(p["y"])


def pert_instability(
    model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
) -> float:
    """Mean KL(f(x) || f(x_adv)) between clean and adversarial predictive distributions (eq. 3).

    ``x_adv`` are the evaluation attack's examples (the same ones robust accuracy is measured on).
    """
    p = predictions(model, data, settings, cache=cache)
    log_p_clean = F.log_softmax(p["clean"].double(), dim=1)
    log_p_adv = F.log_softmax(p["adv"].double(), dim=1)
    kl = (log_p_clean.exp() * (log_p_clean - log_p_adv)).sum(dim=1)
    return kl.mean().item()
