"""White-box adversarial attacks for evaluating and training robust classifiers.

Conventions follow torchattacks / AutoAttack (see :mod:`dse.robust.kernel`, which holds the shared
pieces):

* inputs live in ``[0, 1]``; the model takes ``[0, 1]`` inputs (any
  normalization lives inside the model) and returns logits of shape ``(N, C)``;
* gradients are taken with :func:`torch.autograd.grad` with respect to the
  (clamped) adversarial input itself, so no ``.grad`` is ever left on the
  model's parameters and saturated pixels still receive a gradient;
* the model is switched to eval mode for the attack and every submodule's
  train/eval flag is restored afterwards, also when the model raises;
* randomness comes only from an optional :class:`torch.Generator`, so attacks
  are deterministic when seeded;
* every returned tensor is detached, lies inside the ``eps``-ball around ``x``
  (``linf``: elementwise, ``l2``: per sample) and inside the ``[0, 1]`` box.

Attacks: FGSM / FGSM-RS ("fast" adversarial training, Wong et al. 2020), BIM and
PGD with random restarts (Madry et al. 2018), dispatched from an
:class:`~dse.robust.config.AttackConfig` by :func:`run_attack`. The TRADES inner
maximization (Zhang et al. 2019) lives in :mod:`dse.robust.trades`; it, the config
and :func:`~dse.robust.kernel.attack_loss` (cross entropy, Carlini-Wagner margin,
DLR) are re-exported here, the import place of every attack.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dse.errors import SpecError
from dse.robust.config import ATTACKS, AttackConfig
from dse.robust.kernel import (
    BN_MODES,
    LOSSES,
    NORMS,
    ascend,
    ascent_step,
    attack_loss,
    attack_mode,
    check_bool,
    check_choice,
    check_int,
    check_nonneg,
    check_start,
    check_threat,
    input_grad,
    loss_objective,
    model_logits,
    prepare,
    project,
    random_init,
)
from dse.robust.trades import trades_adversary

__all__ = [
    "ATTACKS",
    "BN_MODES",
    "LOSSES",
    "NORMS",
    "AttackConfig",
    "attack_loss",
    "bim",
    "check_attack_bounds",
    "fgsm",
    "pgd",
    "run_attack",
    "trades_adversary",
]


def _pgd_once(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
    loss: str,
    random_start: bool,
    generator: torch.Generator | None,
    start: Tensor | None = None,
) -> Tensor:
    if start is not None:
        x_adv = start
    else:
        x_adv = random_init(x, eps, norm, generator) if random_start else x.clone()
    return ascend(model, x, x_adv, loss_objective(y, loss), eps=eps, step_size=step_size, steps=steps, norm=norm)


# --------------------------------------------------------------------------- #
# Public attacks
# --------------------------------------------------------------------------- #


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    random_start: bool = False,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
    bn: str = "eval",
) -> Tensor:
    """Fast gradient (sign) method, optionally with a random start (FGSM-RS).

    Without a random start this is FGSM (Goodfellow et al. 2015): one step of
    size ``alpha`` (default ``eps``) from ``x``. With ``random_start=True`` it is
    the "fast" adversarial training attack of Wong et al. (2020): start at
    ``x + U(-eps, eps)`` (a uniform point of the l2 ball for ``l2``), take one
    step of size ``alpha`` (default ``1.25 * eps``) and project back.

    Args:
        model: Classifier taking ``[0, 1]`` inputs and returning logits.
        x: Clean inputs in ``[0, 1]``, shape ``(N, ...)``.
        y: True labels, shape ``(N,)``.
        eps: Perturbation radius (>= 0).
        norm: ``"linf"`` (sign step) or ``"l2"`` (normalized gradient step).
        loss: Loss to maximize, see :func:`attack_loss`.
        random_start: Start from a random point of the ball (FGSM-RS).
        alpha: Step size; see above for the default.
        generator: Source of randomness for the random start.
        bn: ``"eval"`` (running statistics) or ``"batch"`` (the batch's statistics, running ones untouched).

    Returns:
        Detached adversarial inputs inside the ``eps``-ball and ``[0, 1]``.

    Raises:
        SpecError: On an invalid eps, norm, loss or alpha.
    """
    eps, norm = check_threat(eps, norm)
    check_choice("loss", loss, LOSSES)
    check_bool("random_start", random_start)
    if alpha is None:
        step = 1.25 * eps if random_start else eps
    else:
        step = check_nonneg("alpha", alpha)
    x, y = prepare(x, y)
    assert y is not None
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    with attack_mode(model, bn):
        x0 = random_init(x, eps, norm, generator) if random_start else x
        grad = input_grad(model, x0, loss_objective(y, loss))
        return project(ascent_step(x0, grad, step, norm), x, eps, norm).detach()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    loss: str = "ce",
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    bn: str = "eval",
    start: Tensor | None = None,
) -> Tensor:
    """Projected gradient descent (Madry et al. 2018) with random restarts.

    Each iteration takes a sign-gradient step (``linf``) or a normalized
    gradient step (``l2``) on the summed per-sample loss, then projects onto
    the ``eps``-ball and ``[0, 1]``. Each restart returns its last iterate.
    With ``restarts > 1`` a sample keeps the result of the first restart that
    misclassifies it (later restarts only attack the still-robust samples);
    samples that are never misclassified keep the restart with the highest loss.
    Without a random start all restarts would coincide, so only one is run.

    Args:
        model: Classifier taking ``[0, 1]`` inputs and returning logits.
        x: Clean inputs in ``[0, 1]``, shape ``(N, ...)``.
        y: True labels, shape ``(N,)``.
        eps: Perturbation radius (>= 0); ``eps == 0`` returns ``x.clone()``.
        step_size: Step size per iteration (>= 0).
        steps: Number of iterations (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        loss: Loss to maximize, see :func:`attack_loss`.
        restarts: Number of random restarts (>= 1).
        random_start: Start each restart at a uniformly random point of the ball.
        generator: Source of randomness for the random starts.
        bn: ``"eval"`` (running statistics) or ``"batch"`` (the batch's statistics, running ones untouched).
        start: Continue from these inputs (projected onto the ball and box) instead of ``x`` or a
            random point: one run, ``random_start`` unused (training runs an attack's first steps
            in one BatchNorm mode and its last ones in another this way).

    Returns:
        Detached adversarial inputs inside the ``eps``-ball and ``[0, 1]``.

    Raises:
        SpecError: On an invalid eps, step_size, steps, norm, loss, restarts or start, or a
            ``start`` with ``restarts > 1``.
    """
    eps, norm = check_threat(eps, norm)
    step_size = check_nonneg("step_size", step_size)
    steps = check_int("steps", steps, 1)
    restarts = check_int("restarts", restarts, 1)
    check_choice("loss", loss, LOSSES)
    check_bool("random_start", random_start)
    x, y = prepare(x, y)
    assert y is not None
    x_start = check_start(start, x, eps, norm)
    if x_start is not None and restarts > 1:
        raise SpecError("restarts: an attack continued from a start point runs once (restarts 1)")
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    kwargs: dict[str, Any] = {
        "eps": eps,
        "step_size": step_size,
        "steps": steps,
        "norm": norm,
        "loss": loss,
        "random_start": random_start,
        "generator": generator,
    }
    with attack_mode(model, bn):
        if restarts == 1 or not random_start:
            return _pgd_once(model, x, y, start=x_start, **kwargs)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(restarts):
            idx = torch.nonzero(~fooled).squeeze(1)
            if idx.numel() == 0:
                break
            x_r = _pgd_once(model, x[idx], y[idx], **kwargs)
            with torch.no_grad():
                logits = model_logits(model, x_r)
                loss_r = attack_loss(logits, y[idx], loss).float()
                mis = logits.argmax(dim=1) != y[idx]
            take = mis | (loss_r > best_loss[idx])
            best[idx[take]] = x_r[take]
            best_loss[idx[take]] = loss_r[take]
            fooled[idx[mis]] = True
        return best.detach()


def bim(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Basic iterative method (Kurakin et al. 2017): PGD from ``x``, no random start, one run.

    Args:
        model: Classifier taking ``[0, 1]`` inputs and returning logits.
        x: Clean inputs in ``[0, 1]``, shape ``(N, ...)``.
        y: True labels, shape ``(N,)``.
        eps: Perturbation radius (>= 0).
        step_size: Step size per iteration (>= 0).
        steps: Number of iterations (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        loss: Loss to maximize, see :func:`attack_loss`.
        generator: Unused (BIM is deterministic); accepted for a uniform signature.

    Returns:
        Detached adversarial inputs inside the ``eps``-ball and ``[0, 1]``.

    Raises:
        SpecError: On an invalid eps, step_size, steps, norm or loss.
    """
    return pgd(
        model,
        x,
        y,
        eps=eps,
        step_size=step_size,
        steps=steps,
        norm=norm,
        loss=loss,
        restarts=1,
        random_start=False,
        generator=generator,
    )


def run_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: AttackConfig,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the attack described by ``config``.

    ``fgsm`` uses ``eps``, ``norm``, ``loss`` and ``random_start`` (FGSM-RS with
    the default step ``1.25 * eps``); ``bim`` ignores ``restarts`` and
    ``random_start``; ``pgd`` uses every field.

    Args:
        model: Classifier taking ``[0, 1]`` inputs and returning logits.
        x: Clean inputs in ``[0, 1]``, shape ``(N, ...)``.
        y: True labels, shape ``(N,)``.
        config: The attack to run.
        generator: Source of randomness (random starts).

    Returns:
        Detached adversarial inputs inside the ``eps``-ball and ``[0, 1]``.

    Raises:
        SpecError: If ``config`` is not an :class:`AttackConfig`.
    """
    if not isinstance(config, AttackConfig):
        raise SpecError(f"attack config must be an AttackConfig, got {type(config).__name__}")
    if config.name == "fgsm":
        return fgsm(
            model,
            x,
            y,
            eps=config.eps,
            norm=config.norm,
            loss=config.loss,
            random_start=config.random_start,
            generator=generator,
        )
    if config.name == "bim":
        return bim(
            model,
            x,
            y,
            eps=config.eps,
            step_size=config.step_size,
            steps=config.steps,
            norm=config.norm,
            loss=config.loss,
            generator=generator,
        )
    return pgd(
        model,
        x,
        y,
        eps=config.eps,
        step_size=config.step_size,
        steps=config.steps,
        norm=config.norm,
        loss=config.loss,
        restarts=config.restarts,
        random_start=config.random_start,
        generator=generator,
    )


def check_attack_bounds(x: Tensor, x_adv: Tensor, *, eps: float, norm: str, atol: float = 1e-6) -> None:
    """Check that ``x_adv`` lies in the ``eps``-ball around ``x`` and in ``[0, 1]``.

    Args:
        x: Clean inputs, shape ``(N, ...)``.
        x_adv: Adversarial inputs, same shape.
        eps: Ball radius (>= 0).
        norm: ``"linf"`` (elementwise) or ``"l2"`` (per sample).
        atol: Absolute tolerance for both checks.

    Raises:
        SpecError: On an invalid eps or norm.
        ValueError: With a message naming the worst sample if a check fails,
            or on mismatched shapes / non-finite values.
    """
    eps, norm = check_threat(eps, norm)
    if x.shape != x_adv.shape:
        raise ValueError(f"x_adv shape {tuple(x_adv.shape)} != x shape {tuple(x.shape)}")
    if x.numel() == 0:
        return
    x = x.detach().to(torch.float64)
    x_adv = x_adv.detach().to(device=x.device, dtype=torch.float64)
    if not bool(torch.isfinite(x_adv).all()):
        raise ValueError("x_adv contains non-finite values")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < -atol or hi > 1 + atol:
        raise ValueError(f"x_adv leaves the [0, 1] box: range [{lo:.6g}, {hi:.6g}]")
    delta = (x_adv - x).reshape(x.shape[0], -1) if x.dim() > 0 else (x_adv - x).reshape(1, -1)
    if norm == "linf":
        dist = delta.abs().amax(dim=1)
    else:
        dist = delta.norm(p=2, dim=1)
    worst = int(dist.argmax())
    if float(dist[worst]) > eps + atol:
        raise ValueError(
            f"x_adv leaves the {norm} ball: sample {worst} is at distance "
            f"{float(dist[worst]):.6g} > eps={eps:.6g}"
        )
