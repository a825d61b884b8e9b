"""White-box adversarial attacks for evaluating and training robust classifiers.

Conventions follow torchattacks / AutoAttack:

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

Attacks: FGSM / FGSM-RS ("fast" adversarial training, Wong et al. 2020), BIM,
PGD with random restarts (Madry et al. 2018) and the TRADES inner maximization
(Zhang et al. 2019). Losses: cross entropy, the Carlini-Wagner margin and the
DLR loss (Croce & Hein 2020).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dse.errors import SpecError

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

NORMS: tuple[str, ...] = ("linf", "l2")
LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")
ATTACKS: tuple[str, ...] = ("fgsm", "bim", "pgd")

# Inputs may exceed [0, 1] by this much (float round-off in data pipelines).
_INPUT_RANGE_TOL = 1e-6
# Tolerance (in units of 1/255) for describing a value as k/255.
_FRACTION_TOL = 1e-4


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #


def _parse_float(field: str, value: Any) -> float:
    """Return ``value`` as a finite float or raise :class:`SpecError` naming ``field``.

    Accepts real numbers and strings such as ``"0.03"`` or ``"8/255"``.
    """
    if isinstance(value, bool):
        raise SpecError(f"{field} must be a number, got {value!r}")
    if isinstance(value, numbers.Real):
        out = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                out = float(num) / float(den)
            else:
                out = float(text)
        except (ValueError, ZeroDivisionError):
            raise SpecError(f"{field} must be a number or a fraction like '8/255', got {value!r}") from None
    else:
        raise SpecError(f"{field} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(out):
        raise SpecError(f"{field} must be finite, got {value!r}")
    return out


def _check_nonneg(field: str, value: Any) -> float:
    out = _parse_float(field, value)
    if out < 0:
        raise SpecError(f"{field} must be >= 0, got {value!r}")
    return out


def _check_int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{field} must be an integer >= {minimum}, got {value!r}")
    out = int(value)
    if out < minimum:
        raise SpecError(f"{field} must be >= {minimum}, got {out}")
    return out


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SpecError(f"unknown {field} {value!r} (expected one of: {', '.join(choices)})")
    return value


def _check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{field} must be true or false, got {value!r}")
    return value


def _fmt_fraction(value: float) -> str:
    """Format ``value`` as ``k/255`` when it is (close to) one, else with ``%g``."""
    if value > 0:
        k = value * 255.0
        if abs(k - round(k)) < _FRACTION_TOL:
            return f"{round(k)}/255"
    return f"{value:g}"


def _fmt_eps(value: float) -> str:
    frac = _fmt_fraction(value)
    return f"{frac} ({value:.4f})" if "/" in frac else frac


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """A serializable description of one attack, run with :func:`run_attack`.

    Attributes:
        name: ``"fgsm"``, ``"bim"`` or ``"pgd"``.
        norm: Threat model, ``"linf"`` or ``"l2"``.
        eps: Radius of the perturbation ball (inputs are in ``[0, 1]``).
            Strings like ``"8/255"`` are accepted and converted to float.
        step_size: Step size of BIM/PGD (ignored by FGSM, whose step is
            ``eps``, or ``1.25 * eps`` with a random start).
        steps: Number of iterations of BIM/PGD (must be >= 1; ignored by FGSM).
        restarts: Number of random restarts of PGD (ignored by FGSM and BIM).
        random_start: Start PGD at a uniformly random point of the ball; for
            FGSM this selects FGSM-RS (Wong et al. 2020). Ignored by BIM.
        loss: Loss maximized by the attack: ``"ce"``, ``"margin"`` or ``"dlr"``.
    """

    name: str = "pgd"
    norm: str = "linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"

    def __post_init__(self) -> None:
        """Validate every field; raise :class:`SpecError` naming the first bad one."""
        _check_choice("attack name", self.name, ATTACKS)
        _check_choice("norm", self.norm, NORMS)
        object.__setattr__(self, "eps", _check_nonneg("eps", self.eps))
        object.__setattr__(self, "step_size", _check_nonneg("step_size", self.step_size))
        object.__setattr__(self, "steps", _check_int("steps", self.steps, 1))
        object.__setattr__(self, "restarts", _check_int("restarts", self.restarts, 1))
        _check_bool("random_start", self.random_start)
        _check_choice("loss", self.loss, LOSSES)

    def describe(self) -> str:
        """Return a one-line human-readable description.

        Example: ``"PGD-20 linf eps=8/255 (0.0314) step=2/255 restarts=1 loss=ce random_start"``.
        """
        eps = _fmt_eps(self.eps)
        if self.name == "fgsm":
            if self.random_start:
                return (
                    f"FGSM-RS {self.norm} eps={eps} alpha={_fmt_fraction(1.25 * self.eps)} "
                    f"steps=1 loss={self.loss}"
                )
            return f"FGSM {self.norm} eps={eps} steps=1 loss={self.loss}"
        step = _fmt_fraction(self.step_size)
        if self.name == "bim":
            return f"BIM-{self.steps} {self.norm} eps={eps} step={step} loss={self.loss}"
        start = "random_start" if self.random_start else "no_random_start"
        return (
            f"PGD-{self.steps} {self.norm} eps={eps} step={step} "
            f"restarts={self.restarts} loss={self.loss} {start}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain JSON-serializable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttackConfig:
        """Build a config from a mapping; missing keys take their defaults.

        Raises:
            SpecError: On a non-mapping, an unknown key or an invalid value.
        """
        if not isinstance(d, Mapping):
            raise SpecError(f"attack config must be a mapping, got {type(d).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in allowed:
                raise SpecError(f"unknown attack config key {key!r} (allowed: {', '.join(allowed)})")
        return cls(**dict(d))


# --------------------------------------------------------------------------- #
# Losses
# --------------------------------------------------------------------------- #


def _other_max(logits: Tensor, y: Tensor) -> Tensor:
    """Largest logit among the classes other than ``y``, per sample."""
    mask = F.one_hot(y, num_classes=logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf")).amax(dim=1)


def attack_loss(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """Per-sample loss that an attack maximizes.

    Args:
        logits: Model outputs of shape ``(N, C)``.
        y: True labels of shape ``(N,)``.
        loss: ``"ce"`` (cross entropy), ``"margin"`` (Carlini-Wagner margin
            ``max_{j != y} z_j - z_y``) or ``"dlr"`` (Croce & Hein 2020:
            ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)``).

    Returns:
        A tensor of shape ``(N,)``; larger means "more adversarial".

    Raises:
        SpecError: On an unknown loss, or too few classes for it
            (margin needs 2, dlr needs 3).
        ValueError: On badly shaped ``logits`` / ``y``.
    """
    _check_choice("loss", loss, LOSSES)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if y.dim() != 1 or y.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(y.shape)}")
    num_classes = logits.shape[1]
    y = y.to(device=logits.device, dtype=torch.long)
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if num_classes < 2:
        raise SpecError(f"loss {loss!r} needs at least 2 classes, got {num_classes}")
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = _other_max(logits, y)
    if loss == "margin":
        return other - z_y
    if num_classes < 3:
        raise SpecError(f"loss 'dlr' needs at least 3 classes, got {num_classes}")
    top = logits.topk(3, dim=1).values
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


# --------------------------------------------------------------------------- #
# Internals shared by the attacks
# --------------------------------------------------------------------------- #


BN_MODES = ("eval", "batch")


@contextlib.contextmanager
def _attack_mode(model: nn.Module, bn: str = "eval") -> Iterator[None]:
    """Put ``model`` in eval mode with gradients enabled; restore every module's flag after.

    With ``bn="batch"`` the BatchNorm layers normalize with the statistics of the attacked batch
    (as in training) while their running statistics stay untouched (momentum 0, counter
    restored). Training-time attacks use it where running statistics lag behind the weights.
    """
    _check_choice("bn", bn, BN_MODES)
    modes = [(m, m.training) for m in model.modules()]
    saved_bn: list[tuple[nn.modules.batchnorm._BatchNorm, float | None, Tensor | None]] = []
    try:
        model.eval()
        if bn == "batch":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    counter = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
                    saved_bn.append((m, m.momentum, counter))
                    m.momentum = 0.0
                    m.training = True
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, momentum, counter in saved_bn:
            m.momentum = momentum
            if counter is not None:
                m.num_batches_tracked.copy_(counter)
        for module, training in modes:
            module.training = training


def _prepare(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validate shapes and range; return detached, autograd-usable copies."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be batched, shape (N, ...), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating point tensor, got {x.dtype}")
    with torch.inference_mode(False):
        x = x.detach().clone() if x.is_inference() else x.detach()
        if y is not None:
            if not isinstance(y, Tensor):
                raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            y = y.detach().to(device=x.device, dtype=torch.long)
            if y.is_inference():
                y = y.clone()
    if x.numel() > 0:
        lo, hi = float(x.min()), float(x.max())
        if lo < -_INPUT_RANGE_TOL or hi > 1 + _INPUT_RANGE_TOL:
            raise ValueError(f"attack inputs must lie in [0, 1], got range [{lo:.6g}, {hi:.6g}]")
    return x, y


def _per_sample_view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``x_adv`` onto the ``eps``-ball around ``x`` intersected with ``[0, 1]``."""
    if norm == "linf":
        delta = torch.clamp(x_adv - x, -eps, eps)
    else:
        delta = x_adv - x
        norms = delta.flatten(1).norm(p=2, dim=1)
        factor = torch.where(norms > eps, eps / norms.clamp_min(1e-12), torch.ones_like(norms))
        delta = delta * _per_sample_view(factor, x)
    # Since x is in [0, 1], clamping into the box only shrinks |delta| coordinatewise.
    return torch.clamp(x + delta, 0.0, 1.0)


def _ascent_step(x_adv: Tensor, grad: Tensor, step: float, norm: str) -> Tensor:
    if norm == "linf":
        return x_adv + step * grad.sign()
    norms = grad.flatten(1).norm(p=2, dim=1)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    return x_adv + step * grad / _per_sample_view(norms, grad)


def _noise(kind: str, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform ``[0, 1)`` (``kind="rand"``) or standard normal noise shaped like ``x``.

    The noise is drawn on the generator's device and moved to ``x.device``.
    """
    device = generator.device if generator is not None else x.device
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    fn = torch.rand if kind == "rand" else torch.randn
    out = fn(x.shape, generator=generator, device=device, dtype=dtype)
    return out.to(device=x.device, dtype=x.dtype)


def _random_delta(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A random point of the ``eps``-ball: uniform cube for linf, uniform ball for l2."""
    if norm == "linf":
        return (2.0 * _noise("rand", x, generator) - 1.0) * eps
    direction = _noise("randn", x, generator)
    norms = direction.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    dim = x[0].numel()
    u = _noise("rand", x.new_empty(x.shape[0], 1), generator).squeeze(1)
    radius = eps * u.pow(1.0 / dim)
    return direction * _per_sample_view(radius / norms, x)


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model must return logits of shape ({x.shape[0]}, C), got {shape}")
    return out


def _input_grad(model: nn.Module, x_adv: Tensor, objective: Callable[[Tensor], Tensor]) -> Tensor:
    """Gradient of ``objective(model(x_adv))`` (a scalar) w.r.t. the input ``x_adv`` itself."""
    leaf = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        value = objective(_logits(model, leaf))
        if not value.requires_grad:
            raise ValueError(
                "model output is not differentiable w.r.t. its input (is grad disabled inside it?)"
            )
        (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad.detach()


def _loss_objective(y: Tensor, loss: str) -> Callable[[Tensor], Tensor]:
    # Sum over the batch so each sample's input gradient is independent of the others.
    return lambda logits: attack_loss(logits, y, loss).sum()


def _validate_common(eps: Any, norm: Any) -> tuple[float, str]:
    return _check_nonneg("eps", eps), _check_choice("norm", norm, NORMS)


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
) -> Tensor:
    if random_start:
        x_adv = _project(x + _random_delta(x, eps, norm, generator), x, eps, norm)
    else:
        x_adv = x.clone()
    return _ascend(model, x, x_adv, _loss_objective(y, loss), eps=eps, step_size=step_size, steps=steps, norm=norm)


def _ascend(
    model: nn.Module,
    x: Tensor,
    x_adv: Tensor,
    objective: Callable[[Tensor], Tensor],
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
) -> Tensor:
    """``steps`` ascent steps on ``objective`` from ``x_adv``, projected onto the ball around ``x`` and the box."""
    for _ in range(steps):
        grad = _input_grad(model, x_adv, objective)
        x_adv = _project(_ascent_step(x_adv, grad, step_size, norm), x, eps, norm)
    return x_adv.detach()


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
    eps, norm = _validate_common(eps, norm)
    _check_choice("loss", loss, LOSSES)
    _check_bool("random_start", random_start)
    if alpha is None:
        step = 1.25 * eps if random_start else eps
    else:
        step = _check_nonneg("alpha", alpha)
    x, y = _prepare(x, y)
    assert y is not None
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    with _attack_mode(model, bn):
        x0 = _project(x + _random_delta(x, eps, norm, generator), x, eps, norm) if random_start else x
        grad = _input_grad(model, x0, _loss_objective(y, loss))
        return _project(_ascent_step(x0, grad, step, norm), x, eps, norm).detach()


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

    Returns:
        Detached adversarial inputs inside the ``eps``-ball and ``[0, 1]``.

    Raises:
        SpecError: On an invalid eps, step_size, steps, norm, loss or restarts.
    """
    eps, norm = _validate_common(eps, norm)
    step_size = _check_nonneg("step_size", step_size)
    steps = _check_int("steps", steps, 1)
    restarts = _check_int("restarts", restarts, 1)
    _check_choice("loss", loss, LOSSES)
    _check_bool("random_start", random_start)
    x, y = _prepare(x, y)
    assert y is not None
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
    with _attack_mode(model, bn):
        if restarts == 1 or not random_start:
            return _pgd_once(model, x, y, **kwargs)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(restarts):
            idx = torch.nonzero(~fooled).squeeze(1)
            if idx.numel() == 0:
                break
            x_r = _pgd_once(model, x[idx], y[idx], **kwargs)
            with torch.no_grad():
                logits = _logits(model, x_r)
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

    Returns:
        Detached adversarial inputs inside the ``eps``-ball and ``[0, 1]``.

    Raises:
        SpecError: On an invalid eps, step_size, steps or norm.
    """
    eps, norm = _validate_common(eps, norm)
    step_size = _check_nonneg("step_size", step_size)
    steps = _check_int("steps", steps, 1)
    x, _ = _prepare(x, None)
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    with _attack_mode(model, bn):
        with torch.no_grad():
            p_natural = F.softmax(_logits(model, x), dim=1).detach()

        def objective(logits: Tensor) -> Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), p_natural, reduction="sum")

        x_adv = _project(x + 0.001 * _noise("randn", x, generator), x, eps, norm)
        return _ascend(model, x, x_adv, objective, eps=eps, step_size=step_size, steps=steps, norm=norm)


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
    eps, norm = _validate_common(eps, norm)
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
