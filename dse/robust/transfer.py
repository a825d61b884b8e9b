"""Transferability of adversarial examples between models (seed 002 Alg. 3, seed 003 Table III).

For every *source* model, adversarial examples are crafted on it with a white-box attack; then
every *target* model (the source included) classifies those examples with no further attack.
The result is a square matrix whose diagonal holds the white-box accuracies and whose
off-diagonal cells measure how well the source's examples transfer (seed 003, Table III),
together with the vulnerability ``V = (clean_acc - adv_acc) / clean_acc`` of seed 003, eq. 7.

Typical use::

    result = transfer_matrix({"natural": m1, "pgd_at": m2}, ds.test, attack=AttackConfig(), max_samples=512)
    result["acc"][0][1]  # accuracy of "pgd_at" on the examples crafted on "natural"

The result is a plain JSON-serializable dict; plotting it is left to the report code.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dse.data import Split
from dse.errors import SpecError
from dse.robust.attacks import AttackConfig, run_attack
from dse.robust.evaluate import AttackFn, first_samples, model_device, predict, transfer_predictions
from dse.robust.kernel import attack_mode, check_int

__all__ = ["transfer_matrix", "vulnerability"]

# Samples run through every model before any attack to compare their class counts.
_PROBE_SAMPLES = 2


def vulnerability(clean_acc: float, adv_acc: float) -> float | None:
    """Relative accuracy drop under attack (seed 003, eq. 7).

    ``V = (clean_acc - adv_acc) / clean_acc``: 0 means the attack costs nothing, 1 means every
    correctly classified sample is lost. It is negative when the adversarial examples are
    classified *better* than the clean ones (possible for transferred examples).

    Args:
        clean_acc: Accuracy on clean inputs, a fraction in ``[0, 1]``.
        adv_acc: Accuracy on adversarial inputs, a fraction in ``[0, 1]``.

    Returns:
        The vulnerability, or ``None`` when ``clean_acc == 0`` (undefined).

    Raises:
        SpecError: If either argument is not a finite number in ``[0, 1]`` (the message names it).
    """
    clean = _check_fraction("clean_acc", clean_acc)
    adv = _check_fraction("adv_acc", adv_acc)
    if clean == 0:
        return None
    return (clean - adv) / clean


def transfer_matrix(
    models: Mapping[str, nn.Module],
    data: Split,
    *,
    attack: AttackConfig,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of every model on adversarial examples crafted on every model.

    The first ``max_samples`` samples of ``data`` (all when ``None``) are visited in order in
    batches of ``batch_size``. For each source model, ``attack`` runs white-box on it, batch by
    batch, drawing its random starts from a CPU generator seeded with ``seed`` (a fresh one per
    source, so a row depends neither on the other models nor on their order, and the diagonal
    equals what :func:`~dse.robust.attacks.run_attack` gives on the same batches with that seed). Every
    target then classifies the source's examples with no further attack.

    Accuracies are plain accuracies on the given inputs (fraction of samples whose argmax equals
    the label); unlike the ``robust_acc`` objective they do not also require the clean sample to
    be classified correctly, as is usual for transfer tables.

    Each model runs in eval mode on its own device (that of its first parameter or buffer; the
    inputs are moved there); every submodule's train/eval flag is restored afterwards, also when
    something raises.

    Args:
        models: Model name -> classifier taking ``[0, 1]`` inputs and returning logits ``(N, C)``,
            in the order of the rows and columns. A sequence of ``(name, model)`` pairs is accepted too.
        data: The samples to attack (e.g. a test split), labels in ``[0, C)``.
        attack: The white-box attack run on each source.
        batch_size: Samples per batch (>= 1).
        max_samples: Use at most this many samples (the first ones); ``None`` for all.
        seed: Seeds the attack's random starts.

    Returns:
        A JSON-serializable dict; rows are sources (the model the examples were crafted on),
        columns are targets (the model evaluated), both in the order of ``models``::

            {
                "kind": "transfer",
                "attack": attack.describe(),
                "samples": n,                       # samples evaluated
                "models": [name, ...],              # M names
                "clean_acc": [a_j, ...],            # M clean accuracies
                "acc": [[acc_ij, ...], ...],        # M x M; acc[i][j] = accuracy of target j on
                                                    # examples crafted on source i; diagonal = white-box
                "vulnerability": [[v_ij, ...], ...] # M x M; (clean_acc[j] - acc[i][j]) / clean_acc[j],
                                                    # None where clean_acc[j] == 0
            }

    Raises:
        SpecError: On no models, an empty, non-string or repeated name, a value that is not an
            ``nn.Module``, models that disagree on the number of classes or do not return
            ``(N, C)`` logits (all naming ``models``); a ``data`` that is not a non-empty
            :class:`~dse.data.Split` or has labels outside ``[0, C)``; or a bad ``attack``,
            ``batch_size``, ``max_samples`` or ``seed``.
    """
    pairs = _check_models(models)
    if not isinstance(data, Split):
        raise SpecError(f"data must be a Split, got {type(data).__name__}")
    if not isinstance(attack, AttackConfig):
        raise SpecError(f"attack must be an AttackConfig, got {type(attack).__name__}")
    batch_size = check_int("batch_size", batch_size, 1)
    if max_samples is not None:
        max_samples = check_int("max_samples", max_samples, 1)
    seed = check_int("seed", seed, None)
    data = first_samples(data, max_samples)
    n = len(data)
    if n == 0:
        raise SpecError("data has no samples")

    names = [name for name, _ in pairs]
    nets = [model for _, model in pairs]
    devices = [model_device(model) for model in nets]
    m = len(nets)
    with contextlib.ExitStack() as stack:
        for model in nets:
            stack.enter_context(attack_mode(model))
        _check_classes(names, nets, devices, data)
    clean_acc = [predict(target, data, batch_size=batch_size).natural_acc() for target in nets]
    acc = [
        [p.adv_acc() for p in transfer_predictions(source, nets, data, _attack_on(source, attack, seed),
                                                   batch_size=batch_size, clean=False)]
        for source in nets
    ]
    vuln = [[vulnerability(clean_acc[j], acc[i][j]) for j in range(m)] for i in range(m)]
    return {
        "kind": "transfer",
        "attack": attack.describe(),
        "samples": n,
        "models": names,
        "clean_acc": clean_acc,
        "acc": acc,
        "vulnerability": vuln,
    }


# --------------------------------------------------------------------------- helpers


def _attack_on(source: nn.Module, attack: AttackConfig, seed: int) -> AttackFn:
    """``attack`` white-box on ``source``, its random starts from a fresh CPU generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return lambda x, y: run_attack(source, x, y, attack, generator=generator)


def _check_fraction(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(f"{field} must be a number in [0, 1], got {value!r}")
    out = float(value)
    if not math.isfinite(out) or not 0.0 <= out <= 1.0:
        raise SpecError(f"{field} must be a number in [0, 1], got {value!r}")
    return out


def _check_models(models: Any) -> list[tuple[str, nn.Module]]:
    """``models`` as ``(name, model)`` pairs, validated."""
    if isinstance(models, Mapping):
        items = list(models.items())
    elif isinstance(models, (list, tuple)):
        items = list(models)
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise SpecError(f"models must be a mapping of name -> model or (name, model) pairs, got {item!r}")
    else:
        raise SpecError(f"models must be a mapping of name -> model, got {type(models).__name__}")
    if not items:
        raise SpecError("models must hold at least one model, got none")
    seen: set[str] = set()
    for name, model in items:
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"models: names must be non-empty strings, got {name!r}")
        if name in seen:
            raise SpecError(f"models: name {name!r} appears more than once")
        seen.add(name)
        if not isinstance(model, nn.Module):
            raise SpecError(f"models: {name!r} must be an nn.Module, got {type(model).__name__}")
    return items


def _check_classes(names: list[str], nets: list[nn.Module], devices: list[torch.device], data: Split) -> None:
    """Run a probe batch through every model; all must return ``(N, C)`` logits with one ``C``."""
    k = min(len(data), _PROBE_SAMPLES)
    counts: list[int] = []
    with torch.no_grad():
        for name, model, device in zip(names, nets, devices):
            out = model(data.x[:k].to(device))
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != k:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise SpecError(f"models: {name!r} must return logits of shape ({k}, C), got {shape}")
            counts.append(int(out.shape[1]))
    if len(set(counts)) > 1:
        listing = ", ".join(f"{name}={c}" for name, c in zip(names, counts))
        raise SpecError(f"models must all predict the same number of classes, got {listing}")
    lo, hi = int(data.y.min()), int(data.y.max())
    if lo < 0 or hi >= counts[0]:
        raise SpecError(f"data labels must lie in [0, {counts[0]}) for these models, got range [{lo}, {hi}]")
