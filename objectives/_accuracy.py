"""Natural and robust accuracy (seed 000 eqs. 1-2) and perturbation instability (eq. 3).

All three read the predictions of :func:`dse.robust.evaluate.predict` (or of a suite, for an
ensemble), kept in the shared ``cache`` as ``{"clean", "adv", "y"}`` logits so that one set of
adversarial examples serves robust accuracy and instability.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dse.data import Split
from dse.robust.attacks import run_attack
from dse.robust.evaluate import Predictions, predict
from dse.robust.fold import fold_batchnorm
from objectives._base import EvalSettings

__all__ = ["natural_acc", "pert_instability", "predictions", "robust_acc"]


def predictions(
    model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Clean and adversarial logits of the evaluated samples, computed once per ``cache``.

    The model is evaluated in eval mode (through its BatchNorm-folded view where it has one: the
    same function at about half the cost of an attack step, :mod:`dse.robust.fold`); the caller's
    mode is restored.
    """
    if cache is not None and "logits" in cache:
        return cache["logits"]
    data = settings.samples(data)
    model = fold_batchnorm(model) or model
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
    generator = settings.generator()
    p = predict(
        model, data, lambda x, y: run_attack(model, x, y, settings.attack, generator=generator),
        batch_size=settings.batch_size,
    )
    result = {"clean": p.clean, "adv": p.adv, "y": p.y}
    if cache is not None:
        cache["logits"] = result
    return result


def _from_cache(p: dict[str, torch.Tensor]) -> Predictions:
    return Predictions(y=p["y"], clean=p["clean"], adv=p["adv"])


def natural_acc(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Fraction of clean samples classified correctly (eq. 1)."""
    if cache is not None and "logits" in cache:
        return _from_cache(cache["logits"]).natural_acc()
    return predict(model, settings.samples(data), batch_size=settings.batch_size).natural_acc()


def robust_acc(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Fraction of samples classified correctly both clean and under the evaluation attack (eq. 2)."""
    return _from_cache(predictions(model, data, settings, cache=cache)).robust_acc()


def pert_instability(
    model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
) -> float:
    """Mean KL(f(x) || f(x_adv)) between clean and adversarial predictive distributions (eq. 3).

    ``x_adv`` are the evaluation attack's examples (the same ones robust accuracy is measured on).
    """
    return _from_cache(predictions(model, data, settings, cache=cache)).instability()
