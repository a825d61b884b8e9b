"""Objectives: named measures with a direction, each a plain function of (model, data, settings).

Example:
    >>> from objectives import OBJECTIVES, EvalSettings, evaluate_objectives
    >>> sorted(OBJECTIVES)  # doctest: +NORMALIZE_WHITESPACE
    ['bops', 'compressed_bytes', 'latency_batch_ms', 'latency_ms', 'lipschitz', 'lipschitz_bound', 'macs', 'natural_acc', 'ort_latency_ms', 'params', 'pert_instability', 'robust_acc', 'size_bytes', 'sparsity']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from dse.compress.freeze import cached_weights
from dse.data import Split
from dse.errors import SpecError, did_you_mean
from dse.robust.config import AttackConfig
from dse.training import default_eval_attack
from objectives._accuracy import natural_acc, pert_instability, robust_acc
from objectives._base import EvalSettings, Objective
from objectives._compression import COMPRESSION_OBJECTIVES, latency_info
from objectives._cost import macs, params
from objectives._deploy import DEPLOY_OBJECTIVES
from objectives._lipschitz import lipschitz, lipschitz_bound

__all__ = [
    "COMPRESSION_OBJECTIVES",
    "FREE_OBJECTIVES",
    "OBJECTIVES",
    "EvalSettings",
    "Objective",
    "check_masking",
    "default_eval_settings",
    "eval_settings",
    "evaluate_lookup",
    "evaluate_objectives",
    "get_objective",
    "is_lookup_objective",
    "latency_info",
    "measurement",
    "metric_names",
    "objective_direction",
]

OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("natural_acc", "maximize", natural_acc, "accuracy on clean samples"),
        Objective("robust_acc", "maximize", robust_acc, "accuracy under the evaluation attack", needs_attack=True),
        Objective(
            "pert_instability",
            "minimize",
            pert_instability,
            "mean KL(f(x) || f(x_adv)) under the evaluation attack",
            needs_attack=True,
        ),
        Objective(
            "lipschitz",
            "minimize",
            lipschitz,
            "mean max ||f(x)-f(x')||_1 / ||x-x'||_inf over the eps-ball (logits), by 10-step ascent",
            needs_attack=True,
        ),
        Objective("lipschitz_bound", "minimize", lipschitz_bound, "log10 of seed 000 eq. 5"),
        Objective("params", "minimize", params, "conv + linear weights and linear bias", free=True),
        Objective("macs", "minimize", macs, "conv + linear multiply-accumulates per image", free=True),
    )
} | {
    name: dataclasses.replace(o, deterministic=not name.startswith("latency"), free=name in ("bops", "size_bytes"))
    for name, o in COMPRESSION_OBJECTIVES.items()
} | DEPLOY_OBJECTIVES

#: Objectives known before training (from the candidate's structure): early stopping ranks on them at every rung.
FREE_OBJECTIVES: tuple[str, ...] = tuple(name for name, o in OBJECTIVES.items() if o.free)


def get_objective(name: str) -> Objective:
    """Looks up an objective by name, with a one-line error listing the known ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise SpecError(f"objective: unknown {name!r}{did_you_mean(name, OBJECTIVES)} (known: {', '.join(sorted(OBJECTIVES))})") from None


def default_eval_settings(dataset: str, **overrides: Any) -> EvalSettings:
    """The default evaluation of a data set: PGD-20 at the data set's eps
    (:func:`dse.training.default_eval_attack`), with ``overrides`` of :class:`EvalSettings` fields."""
    return EvalSettings(attack=AttackConfig.from_dict(default_eval_attack(dataset)), **overrides)


def eval_settings(
    dataset: str,
    section: Mapping[str, Any] | None = None,
    *,
    attack: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
) -> EvalSettings:
    """The data set's default evaluation, updated by an ``eval`` section, then by overrides.

    Args:
        dataset: The data set whose default attack is the starting point.
        section: An ``eval`` section (candidate file, checkpoint or study file): ``attack`` fields
            and :class:`EvalSettings` fields.
        attack: Attack fields that override the section's (CLI flags).
        max_samples: Overrides ``max_samples`` when given.

    Raises:
        SpecError: An unknown key or a bad attack setting, named.
    """
    base = default_eval_settings(dataset).to_dict()
    fields = dict(section or {})
    attack_fields = {**base.pop("attack"), **(fields.pop("attack", None) or {}), **(attack or {})}
    unknown = set(fields) - set(base)
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(f"{key}: unknown key{did_you_mean(key, ['attack', *base])} (known: attack, {', '.join(base)})")
    merged = {**base, **fields}
    if max_samples is not None:
        merged["max_samples"] = max_samples
    return EvalSettings(attack=AttackConfig.from_dict(attack_fields), **merged)


def measurement(settings: EvalSettings, data: Split) -> dict[str, Any]:
    """How the attack-based objectives were measured: attack, samples, Lipschitz norms."""
    return {
        "attack": settings.describe_attack(),
        "attack_config": settings.attack.to_dict(),
        "suite": list(settings.suite) if isinstance(settings.suite, tuple) else settings.suite,
        "samples": len(settings.samples(data)),
        "lipschitz": (
            f"{settings.lipschitz_output_norm} on logits / linf on input, {settings.lipschitz_steps}-step ascent,"
            f" eps={settings.attack.eps:.4g}"
        ),
        "seed": settings.seed,
    }


def evaluate_objectives(
    model: nn.Module,
    data: Split,
    settings: EvalSettings,
    names: Iterable[str] | None = None,
    *,
    cache: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Evaluates the named objectives (by default all but those needing an extra, such as
    ``ort_latency_ms``), sharing one set of adversarial examples.

    ``cache`` (optional, a dict) keeps the clean and adversarial logits, and a suite's per-attack
    results under ``"suite"``, for the caller.
    """
    cache = {} if cache is None else cache
    if names is None:  # every objective that needs no extra (see Objective.extra)
        names = [n for n, o in OBJECTIVES.items() if o.extra is None]
    selected = [get_objective(n) for n in names]
    with cached_weights(model):  # the weights stay as they are: quantized once, not per forward
        return {o.name: o(model, data, settings, cache=cache) for o in selected}


def check_masking(
    model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Runs the gradient-masking checks of ``settings.checks`` on ``data`` (see :mod:`dse.robust.masking`).

    When ``cache`` holds the robust-accuracy evaluation of at least as many samples, its worst-case
    white-box accuracy on the checked samples joins the black-box comparison.
    """
    from dse.robust.fold import fold_batchnorm
    from dse.robust.masking import masking_checks

    data = settings.samples(data)  # never more samples than the evaluation itself attacks
    white_box = None
    logits = (cache or {}).get("logits")
    k = min(settings.checks.samples, len(data))
    if logits is not None and len(logits["y"]) >= k:
        robust = (logits["clean"].argmax(1) == logits["y"]) & (logits["adv"].argmax(1) == logits["y"])
        white_box = robust[:k].float().mean().item()
    with cached_weights(model):  # the weights stay as they are: quantized once, not per forward
        return masking_checks(  # on the BatchNorm-folded view, as the evaluation itself (the same function)
            fold_batchnorm(model) or model, data, attack=settings.attack, settings=settings.checks,
            white_box_acc=white_box, batch_size=settings.batch_size, seed=settings.seed,
        )


def objective_direction(name: str) -> str:
    """The natural direction of a measured or tabular objective (unknown names: ``maximize``)."""
    if name in OBJECTIVES:
        return OBJECTIVES[name].direction
    from objectives._nb201 import NB201_METRICS

    return NB201_METRICS[name].direction if name in NB201_METRICS else "maximize"


def metric_names() -> list[str]:
    """Every objective or metric name a study may use: the measured ones, then the tabular ``nb201_*`` ones."""
    from objectives._nb201 import NB201_METRICS

    return [*OBJECTIVES, *NB201_METRICS]


def is_lookup_objective(name: str) -> bool:
    """True for tabular objectives read from published results (``nb201_*``), not measured."""
    from objectives._nb201 import NB201_METRICS

    return name in NB201_METRICS


def evaluate_lookup(candidate: dict[str, Any], names: Iterable[str], *, root: str, dataset: str) -> dict[str, float]:
    """Looks up tabular objectives of a candidate (no model, no training)."""
    from objectives._nb201 import evaluate_nb201

    return evaluate_nb201(candidate, list(names), root=root, dataset=dataset)
