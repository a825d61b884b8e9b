"""The TRADES inner maximization (Zhang et al. 2019): the adversary of TRADES training.

It needs no labels: it maximizes the KL divergence between the model's predictions on the clean
and on the perturbed input. Built from :mod:`dse.robust.kernel`; re-exported by
:mod:`dse.robust.attacks`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dse.robust.kernel import (
    ascend,
    attack_mode,
    check_int,
    check_nonneg,
    check_start,
    check_threat,
    model_logits,
    noise,
    prepare,
    project,
)

__all__ = ["trades_adversary"]


def trades_adversary(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    generator: torch.Generator | None = None,
    bn: str = "eval",
    start: Tensor | None = None,
) -> Tensor:
    """TRADES inner maximization (Zhang et al. 2019).

    Starts at ``x + 0.001 * N(0, 1)`` (projected into the ball and box) and
    maximizes ``KL(softmax(f(x)) || softmax(f(x_adv)))``, computed as
    ``F.kl_div(log_softmax(f(x_adv)), softmax(f(x)), reduction="sum")``, with
    sign-gradient steps (``linf``) or normalized-gradient steps (``l2``; the
    reference implementation uses an SGD optimizer there), projecting each step.
    No labels are needed.

    Args:
        model: Classifier taking ``[0, 1]`` inputs and returning logits.
        x: Clean inputs in ``[0, 1]``, shape ``(N, ...)``.
        eps: Perturbation radius (>= 0); ``eps == 0`` returns ``x.clone()``.
        step_size: Step size per iteration (>= 0).
        steps: Number of iterations (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        generator: Source of randomness for the initial noise.
        bn: ``"eval"`` (running statistics) or ``"batch"`` (the batch's statistics, running ones untouched).
        start: Continue from these inputs (projected onto the ball and box) instead of the noisy start.

    Returns:
        Detached adversarial inputs inside the ``eps``-ball and ``[0, 1]``.

    Raises:
        SpecError: On an invalid eps, step_size, steps, norm or start.
    """
    eps, norm = check_threat(eps, norm)
    step_size = check_nonneg("step_size", step_size)
    steps = check_int("steps", steps, 1)
    x, _ = prepare(x, None)
    x_start = check_start(start, x, eps, norm)
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    with attack_mode(model, bn):
        with torch.no_grad():
            p_natural = F.softmax(model_logits(model, x), dim=1).detach()

        def objective(logits: Tensor) -> Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), p_natural, reduction="sum")

        x_adv = x_start if x_start is not None else project(x + 0.001 * noise("randn", x, generator), x, eps, norm)
        return ascend(model, x, x_adv, objective, eps=eps, step_size=step_size, steps=steps, norm=norm)
