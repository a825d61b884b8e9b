"""Robustness curves: accuracy against a growing radius and against PGD iterations.

Two diagnostics from the robustness-evaluation literature, returned as plain
JSON-serializable dicts (plotting lives in :mod:`dse.report`):

* :func:`eps_curve` -- "evaluation vs increasingly strong adversary" (seed 002,
  Algorithm 2): PGD with a fixed number of steps at a rising sequence of radii
  ``0 = eps_0 < eps_1 < ...``, stopping after the first radius whose robust
  accuracy falls below chance. A model whose accuracy does not reach chance
  at a large radius hints at gradient masking.
* :func:`step_size_curve` -- the worst-case PGD threat model (seed 004,
  section 4.1): robust accuracy after every PGD iteration for several step
  sizes, averaged over random starts, to pick the step size that hurts the
  model most and to check that the attack has converged.

Both put the model in eval mode during the attack (the caller's train/eval
flags are restored afterwards, also on error), run on the device of the model's
parameters with the data moved there batch by batch, and draw random starts
from seeded CPU generators so that results are repeatable and do not depend on
the device. Every adversarial iterate lies in the ``eps``-ball around the clean
input and in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dse.data import Split, iterate_batches
from dse.errors import SpecError
from dse.robust.evaluate import eps_sweep, first_samples, model_device
from dse.robust.kernel import (
    NORMS,
    ascent_step,
    attack_mode,
    check_choice,
    check_int,
    check_nonneg,
    check_positive,
    grad_and_logits,
    loss_objective,
    model_logits,
    prepare,
    project,
    random_init,
)

__all__ = [
    "DEFAULT_EPS",
    "eps_curve",
    "step_size_curve",
]

#: Automatic radius sequences of :func:`eps_curve` (doubling, after the unperturbed point 0).
DEFAULT_EPS: dict[str, tuple[float, ...]] = {
    "linf": (0.0, *(2**k / 255 for k in range(8))),
    "l2": (0.0, *(2.0**k for k in range(-3, 4))),
}


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #


def _check_split(data: Any) -> Split:
    if not isinstance(data, Split):
        raise SpecError(f"data must be a dse.data.Split, got {type(data).__name__}")
    return data


def _float_list(field: str, values: Any) -> list[float]:
    """Parse a non-empty list of non-negative numbers (``"8/255"`` strings allowed)."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise SpecError(f"{field} must be a list of numbers, got {type(values).__name__} {values!r}")
    out = [check_nonneg(f"{field}[{i}]", v) for i, v in enumerate(values)]
    if not out:
        raise SpecError(f"{field} must not be empty")
    return out


def _first_samples(data: Split, max_samples: Any) -> Split:
    """The first ``max_samples`` samples of ``data`` (all when ``None``); at least one."""
    if max_samples is not None:
        max_samples = check_int("max_samples", max_samples, 1)
    data = first_samples(data, max_samples)
    if len(data) == 0:
        raise SpecError("data must hold at least one sample")
    return data


def _batches(data: Split, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield validated ``(x, y)`` batches of ``data`` in order, moved to ``device``."""
    for xb, yb in iterate_batches(data, batch_size, shuffle=False):
        x, y = prepare(xb.to(device), yb.to(device))
        assert y is not None
        yield x, y


# --------------------------------------------------------------------------- #
# Accuracy against a growing radius
# --------------------------------------------------------------------------- #


def _eps_sequence(eps: Any, norm: str, max_points: int) -> list[float]:
    if eps is None:
        return list(DEFAULT_EPS[norm][:max_points])
    values = _float_list("eps", eps)
    for prev, cur in zip(values, values[1:]):
        if cur <= prev:
            raise SpecError(f"eps must be strictly increasing, got {values}")
    if values[0] > 0:
        values.insert(0, 0.0)
    return values


def eps_curve(
    model: nn.Module,
    data: Split,
    *,
    eps: Sequence[float] | None = None,
    norm: str = "linf",
    steps: int = 100,
    step_ratio: float = 0.25,
    num_classes: int,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
    max_points: int = 12,
) -> dict[str, Any]:
    """Robust accuracy under PGD at a rising sequence of radii (seed 002, Algorithm 2).

    At each radius ``eps_i`` the attack is PGD with ``steps`` iterations of step
    size ``step_ratio * eps_i``, one uniformly random start and the cross-entropy
    loss (:func:`dse.robust.attacks.pgd`; the last iterate is scored). The point
    ``eps_0 = 0`` is the clean accuracy. The robust accuracy is
    ``c_i = #correct on x_adv / |D|``. The sweep stops after the first radius
    whose accuracy is strictly below chance (``1 / num_classes``); larger radii
    are not attacked. The random starts are drawn from a CPU generator that is
    re-seeded with ``seed`` at every radius, so a point does not depend on the
    radii before it and a repeated call gives the same curve.

    Args:
        model: Classifier taking ``[0, 1]`` inputs and returning logits.
        data: Samples to attack (images in ``[0, 1]``).
        eps: Radii, strictly increasing and ``>= 0`` (``"8/255"`` strings are
            accepted); ``0`` is prepended when missing. ``None`` uses
            :data:`DEFAULT_EPS` for ``norm`` (linf: 0, 1/255, 2/255, ..., 128/255;
            l2: 0, 0.125, ..., 8), cut to its first ``max_points`` radii.
        norm: Threat model, ``"linf"`` or ``"l2"``.
        steps: PGD iterations per radius (>= 1).
        step_ratio: PGD step size as a fraction of the radius (> 0).
        num_classes: Number of classes (>= 2); chance accuracy is ``1 / num_classes``.
        batch_size: Samples attacked at once (>= 1).
        max_samples: Use only the first ``max_samples`` samples of ``data``.
        seed: Seed of the random starts (>= 0).
        max_points: Largest number of radii of the automatic sequence (>= 2);
            ignored when ``eps`` is given.

    Returns:
        ``{"kind": "eps_curve", "attack": "PGD-<steps> <norm> step=<ratio>*eps
        restarts=1 loss=ce", "norm", "steps", "samples", "chance", "points":
        [{"eps", "acc"}, ...], "below_chance_at"}``, where ``points`` holds the
        radii actually attacked and ``below_chance_at`` is the radius that
        stopped the sweep (``None`` when accuracy stayed at or above chance).

    Raises:
        SpecError: On an invalid argument (the message names it) or empty data.
    """
    norm = check_choice("norm", norm, NORMS)
    steps = check_int("steps", steps, 1)
    step_ratio = check_positive("step_ratio", step_ratio)
    num_classes = check_int("num_classes", num_classes, 2)
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    max_points = check_int("max_points", max_points, 2)
    radii = _eps_sequence(eps, norm, max_points)
    data = _first_samples(_check_split(data), max_samples)
    n = len(data)
    chance = 1.0 / num_classes
    points = eps_sweep(model, data, radii, norm=norm, steps=steps, step_ratio=step_ratio, loss="ce",
                       batch_size=batch_size, seed=seed, require_clean=False, stop_below=chance)
    below_chance_at = points[-1]["eps"] if points[-1]["acc"] < chance else None
    return {
        "kind": "eps_curve",
        "attack": f"PGD-{steps} {norm} step={step_ratio:g}*eps restarts=1 loss=ce",
        "norm": norm,
        "steps": steps,
        "samples": n,
        "chance": chance,
        "points": points,
        "below_chance_at": below_chance_at,
    }


# --------------------------------------------------------------------------- #
# Accuracy against PGD iterations for several step sizes
# --------------------------------------------------------------------------- #


def _pgd_trace(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    iterations: int,
    norm: str,
    generator: torch.Generator | None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Run PGD (CE loss, one random start) and yield ``(x_adv, misclassified)`` for t = 0..iterations.

    ``t = 0`` is the random start. One forward pass per iterate serves both the
    misclassification mask and the gradient of the next step. Must run inside
    :func:`dse.robust.kernel.attack_mode` (gradients enabled). ``x`` and ``y`` must
    come from :func:`dse.robust.kernel.prepare`.
    """
    objective = loss_objective(y, "ce")
    x_adv = random_init(x, eps, norm, generator).detach()
    for _ in range(iterations):
        grad, out = grad_and_logits(model, x_adv, objective)
        yield x_adv, out.argmax(dim=1) != y
        x_adv = project(ascent_step(x_adv, grad, step_size, norm), x, eps, norm).detach()
    with torch.no_grad():
        wrong = model_logits(model, x_adv).argmax(dim=1) != y
    yield x_adv, wrong


def _worst_index(robust: Sequence[Sequence[int]]) -> int:
    """Index of the curve with the fewest robust samples at the end.

    Ties: the curve that reaches its final count at the earliest iteration, then the first one.
    """

    def rank(r: int) -> tuple[int, int, int]:
        final = robust[r][-1]
        reached = next(t for t, c in enumerate(robust[r]) if c == final)
        return final, reached, r

    return min(range(len(robust)), key=rank)


def _run_seeds(seed: int, runs: int) -> list[int]:
    """Independent seeds for the random starts of each run (the same for every step size)."""
    master = torch.Generator().manual_seed(seed)
    return [int(s) for s in torch.randint(0, 2**62, (runs,), generator=master)]


def step_size_curve(
    model: nn.Module,
    data: Split,
    *,
    eps: float,
    norm: str = "linf",
    step_ratios: Sequence[float] = (0.05, 0.25, 0.5),
    iterations: int = 50,
    runs: int = 5,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Robust accuracy after each PGD iteration for several step sizes (seed 004, section 4.1).

    For each step size ``alpha = ratio * eps`` PGD (cross-entropy loss, sign
    steps for linf, normalized steps for l2) starts at a uniformly random point
    of the ball and runs ``iterations`` steps; this is repeated ``runs`` times
    with different random starts. Run ``k`` uses the same random starts for
    every step size, so the curves differ only by the step size.

    Semantics ("best so far", i.e. the worst case for the model): within a run a
    sample counts as broken at iteration ``t`` if any iterate ``0..t``
    misclassifies it, so each run's accuracy is non-increasing in ``t``.
    ``t = 0`` is the random start itself (the clean input is not an iterate).
    ``mean_acc[t]`` averages the runs' accuracies (the paper averages five
    runs); ``worst_acc[t]`` counts a sample as broken when it is broken at ``t``
    in any run, so ``worst_acc <= mean_acc``.

    The worst-case step size is the one with the lowest final ``mean_acc``;
    ties go to the one that reaches its final value in fewer iterations, then
    to the first in ``step_ratios``.

    Args:
        model: Classifier taking ``[0, 1]`` inputs and returning logits.
        data: Samples to attack (images in ``[0, 1]``).
        eps: Radius of the threat model (> 0; ``"8/255"`` strings accepted).
        norm: Threat model, ``"linf"`` or ``"l2"``.
        step_ratios: Step sizes as fractions of ``eps`` (> 0, distinct, kept in order).
        iterations: PGD iterations per run (>= 1).
        runs: Random starts per step size (>= 1).
        batch_size: Samples attacked at once (>= 1).
        max_samples: Use only the first ``max_samples`` samples of ``data``.
        seed: Seed of the random starts (>= 0).

    Returns:
        ``{"kind": "step_size_curve", "eps", "norm", "iterations", "runs",
        "samples", "curves": [{"step_ratio", "step_size", "mean_acc",
        "worst_acc"}, ...], "worst_step_ratio", "worst_step_size",
        "worst_final_acc"}`` where ``mean_acc`` and ``worst_acc`` hold
        ``iterations + 1`` floats (t = 0..iterations) and ``curves`` follows
        the order of ``step_ratios``.

    Raises:
        SpecError: On an invalid argument (the message names it) or empty data.
    """
    eps = check_positive("eps", eps)
    norm = check_choice("norm", norm, NORMS)
    ratios = _float_list("step_ratios", step_ratios)
    for i, ratio in enumerate(ratios):
        if ratio <= 0:
            raise SpecError(f"step_ratios[{i}] must be > 0, got {ratio!r}")
    if len(set(ratios)) != len(ratios):
        raise SpecError(f"step_ratios must be distinct, got {ratios}")
    iterations = check_int("iterations", iterations, 1)
    runs = check_int("runs", runs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    data = _first_samples(_check_split(data), max_samples)
    n = len(data)
    device = model_device(model)

    run_seeds = _run_seeds(seed, runs)
    # One generator per (step size, run); batches are visited in order, so each stays in sync.
    generators = [[torch.Generator().manual_seed(s) for s in run_seeds] for _ in ratios]
    # robust[r][t]: samples not yet broken at iteration t, summed over the runs.
    robust = [[0] * (iterations + 1) for _ in ratios]
    # robust_all[r][t]: samples not broken at iteration t in any run.
    robust_all = [[0] * (iterations + 1) for _ in ratios]
    with attack_mode(model):
        for x, y in _batches(data, batch_size, device):
            for r, ratio in enumerate(ratios):
                broken_any = torch.zeros(iterations + 1, x.shape[0], dtype=torch.bool, device=device)
                for k in range(runs):
                    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=device)
                    trace = _pgd_trace(
                        model,
                        x,
                        y,
                        eps=eps,
                        step_size=ratio * eps,
                        iterations=iterations,
                        norm=norm,
                        generator=generators[r][k],
                    )
                    for t, (_, wrong) in enumerate(trace):
                        broken |= wrong
                        broken_any[t] |= broken
                        robust[r][t] += int((~broken).sum())
                for t in range(iterations + 1):
                    robust_all[r][t] += int((~broken_any[t]).sum())

    curves: list[dict[str, Any]] = []
    for r, ratio in enumerate(ratios):
        curves.append(
            {
                "step_ratio": ratio,
                "step_size": ratio * eps,
                "mean_acc": [c / (runs * n) for c in robust[r]],
                "worst_acc": [c / n for c in robust_all[r]],
            }
        )

    worst = _worst_index(robust)
    return {
        "kind": "step_size_curve",
        "eps": eps,
        "norm": norm,
        "iterations": iterations,
        "runs": runs,
        "samples": n,
        "curves": curves,
        "worst_step_ratio": ratios[worst],
        "worst_step_size": ratios[worst] * eps,
        "worst_final_acc": curves[worst]["mean_acc"][-1],
    }
