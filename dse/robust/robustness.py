"""One robustness evaluation of a trained model: suite, masking checks and, optionally, curves.

``dse eval --suite`` and ``dse rescore`` both call :func:`robustness_report`; its result is plain
JSON (what ``--json`` prints and what is written beside the checkpoint).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dse.compress.freeze import cached_weights
from dse.data import Split
from dse.robust.curves import eps_curve, step_size_curve
from dse.robust.evaluate import Predictions
from dse.robust.fold import fold_batchnorm
from dse.robust.masking import masking_checks, white_box_accuracy
from dse.robust.suites import evaluate_suite

__all__ = ["robustness_report"]


def robustness_report(
    model: nn.Module,
    data: Split,
    settings: Any,
    *,
    curves: bool = False,
    checks: bool = True,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores ``model`` with ``settings.suite`` (worst case per sample) and runs the masking checks.

    Args:
        model: The classifier (inputs in ``[0, 1]``), on its device; its train/eval mode is restored.
            It is attacked in eval mode, through its BatchNorm-folded view where it has one
            (:func:`dse.robust.fold.fold_batchnorm`: the same function, up to float rounding).
        data: Evaluation samples; ``settings.max_samples`` of them are attacked.
        settings: :class:`objectives.EvalSettings` (attack = threat model, suite, checks, seed).
        curves: Also compute the eps curve (seed 002 Alg. 2) and the step-size convergence curves
            (seed 004 sec. 4.1) on the first ``min(checks.samples, max_samples)`` samples.
        checks: Run the gradient-masking checks (``settings.checks``; ignored when they are disabled).
        cache: Filled with the clean and worst-case logits (``"logits"``), which
            :func:`objectives.evaluate_objectives` then reuses for robust accuracy and instability.

    Returns:
        ``suite``, ``measurement``, ``samples``, ``natural_acc``, ``robust_acc`` (worst case over the
        suite), ``per_attack`` (``{attack: robust_acc}``), ``attacks`` (descriptions and timings),
        ``masking_flags`` (empty when every check passes), ``checks``, and with ``curves``,
        ``eps_curve`` and ``step_size_curve``.
    """
    with cached_weights(model):  # the weights stay as they are: quantized once, not per forward
        return _report(model, data, settings, curves=curves, checks=checks, cache=cache)


def _report(model: nn.Module, data: Split, settings: Any, *, curves: bool, checks: bool,
            cache: dict[str, Any] | None) -> dict[str, Any]:
    suite = settings.suite or "quick"
    # Attacks run in eval mode, where BatchNorm is an affine map: folded into the convolutions, the
    # same function costs about half (dse.robust.fold); every figure below is measured on it.
    model = fold_batchnorm(model) or model
    outcome = evaluate_suite(
        model, settings.samples(data), suite=suite, attack=settings.attack, batch_size=settings.batch_size,
        seed=settings.seed, cascade=settings.cascade,
    )
    tensors = outcome.pop("_tensors")
    logits = {"clean": tensors["clean_logits"], "adv": tensors["adv_logits"], "y": tensors["y"]}
    if cache is not None:
        cache["logits"] = logits
    result: dict[str, Any] = {
        "suite": outcome["suite"],
        "measurement": outcome["measurement"],
        "mode": outcome["mode"],
        "samples": outcome["samples"],
        "natural_acc": outcome["natural_acc"],
        "robust_acc": outcome["robust_acc"],
        "per_attack": {name: entry["robust_acc"] for name, entry in outcome["per_attack"].items()},
        "attacks": outcome["per_attack"],
        "masking_flags": [],
        "checks": {},
    }
    if checks and settings.checks.enabled:
        evaluated = settings.samples(data)  # never more samples than the evaluation itself attacks
        white_box = white_box_accuracy(Predictions(**logits), min(settings.checks.samples, len(evaluated)))
        report = masking_checks(
            model, evaluated, attack=settings.attack, settings=settings.checks, white_box_acc=white_box,
            batch_size=settings.batch_size, seed=settings.seed,
        )
        result["masking_flags"] = report["masking_flags"]
        result["checks"] = report["checks"]
        result["checks_samples"] = report["samples"]
    if curves:
        num_classes = int(tensors["clean_logits"].shape[1])
        samples = min(settings.checks.samples, len(settings.samples(data)))
        result["eps_curve"] = eps_curve(
            model, data, norm=settings.attack.norm, steps=settings.attack.steps, num_classes=num_classes,
            batch_size=settings.batch_size, max_samples=samples, seed=settings.seed,
        )
        result["step_size_curve"] = step_size_curve(
            model, data, eps=settings.attack.eps, norm=settings.attack.norm, iterations=max(settings.attack.steps, 20),
            runs=3, batch_size=settings.batch_size, max_samples=samples, seed=settings.seed,
        )
    return result
