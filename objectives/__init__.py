"""Objectives: named measures with a direction, each a plain function of (model, data, settings).

Example:
    >>> from objectives import OBJECTIVES, EvalSettings, evaluate_objectives
    >>> sorted(OBJECTIVES)  # doctest: +NORMALIZE_WHITESPACE
    ['bops', 'compressed_bytes', 'latency_batch_ms', 'latency_ms', 'lipschitz', 'lipschitz_bound', 'macs', 'natural_acc', 'params', 'pert_instability', 'robust_acc', 'size_bytes', 'sparsity']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from torch import nn

from dse._errors import SpecError
from dse.data import Split
from objectives._accuracy import natural_acc, pert_instability, robust_acc
from objectives._base import EvalSettings, Objective
from objectives._compression import COMPRESSION_OBJECTIVES, latency_info
from objectives._cost import macs, params
from objectives._lipschitz import lipschitz, lipschitz_bound

__all__ = [
    "COMPRESSION_OBJECTIVES",
    "OBJECTIVES",
    "EvalSettings",
    "Objective",
    "evaluate_lookup",
    "evaluate_objectives",
    "get_objective",
    "is_lookup_objective",
    "latency_info",
    "measurement",
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
        Objective("params", "minimize", params, "conv + linear weights and linear bias"),
        Objective("macs", "minimize", macs, "conv + linear multiply-accumulates per image"),
    )
} | {
    name: dataclasses.replace(o, deterministic=not name.startswith("latency"))
    for name, o in COMPRESSION_OBJECTIVES.items()
}


def get_objective(name: str) -> Objective:
    """Looks up an objective by name, with a one-line error listing the known ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise SpecError(f"objective: unknown {name!r} (known: {', '.join(sorted(OBJECTIVES))})") from None


def measurement(settings: EvalSettings, data: Split) -> dict[str, Any]:
    """How the attack-based objectives were measured: attack, samples, Lipschitz norms."""
    return {
        "attack": settings.attack.describe(),
        "attack_config": settings.attack.to_dict(),
        "samples": len(settings.samples(data)),
        "lipschitz": (
            f"{settings.lipschitz_output_norm} on logits / linf on input, {settings.lipschitz_steps}-step ascent,"
            f" eps={settings.attack.eps:.4g}"
        ),
        "seed": settings.seed,
    }


def evaluate_objectives(
    model: nn.Module, data: Split, settings: EvalSettings, names: Iterable[str] | None = None
) -> dict[str, float]:
    """Evaluates the named objectives (all by default), sharing one set of adversarial examples."""
    cache: dict[str, Any] = {}
    selected = [get_objective(n) for n in (names if names is not None else OBJECTIVES)]
    return {o.name: o(model, data, settings, cache=cache) for o in selected}


def is_lookup_objective(name: str) -> bool:
    """True for tabular objectives read from published results (``nb201_*``), not measured."""
    from objectives._nb201 import NB201_METRICS

    return name in NB201_METRICS


def evaluate_lookup(candidate: dict[str, Any], names: Iterable[str], *, root: str, dataset: str) -> dict[str, float]:
    """Looks up tabular objectives of a candidate (no model, no training)."""
    from objectives._nb201 import evaluate_nb201

    return evaluate_nb201(candidate, list(names), root=root, dataset=dataset)
