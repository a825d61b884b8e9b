"""The attack kernel: the pieces every attack, curve and check in :mod:`dse.robust` is built from.

(A little over 400 lines long on purpose: each shared piece lives here once, rather than a copy
per attack module.)

Conventions (torchattacks / AutoAttack):

* inputs live in ``[0, 1]``; the model takes ``[0, 1]`` inputs and returns logits ``(N, C)``;
* gradients are taken with :func:`torch.autograd.grad` with respect to the (clamped) adversarial
  input itself, so no ``.grad`` is left on the model's parameters;
* the model runs in eval mode during an attack (:func:`attack_mode`) and every submodule's
  train/eval flag is restored afterwards, also when the model raises;
* randomness comes only from an optional :class:`torch.Generator`.

Also here: the argument checks (:func:`check_int`, :func:`check_choice`, :func:`check_nonneg`...)
that raise :class:`~dse.errors.SpecError` naming the bad field, and :func:`fmt_fraction`, which
writes a radius as ``k/255`` where it is one.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dse.errors import SpecError

__all__ = [
    "BN_MODES",
    "LOSSES",
    "NORMS",
    "ascend",
    "ascent_step",
    "attack_loss",
    "attack_mode",
    "check_bool",
    "check_choice",
    "check_int",
    "check_nonneg",
    "check_positive",
    "check_threat",
    "fmt_eps",
    "fmt_fraction",
    "grad_and_logits",
    "input_grad",
    "loss_objective",
    "model_logits",
    "noise",
    "parse_float",
    "prepare",
    "project",
    "random_delta",
    "random_init",
]

#: Threat models: elementwise ``linf`` ball or per-sample ``l2`` ball.
NORMS: tuple[str, ...] = ("linf", "l2")
#: Losses an attack can maximize (:func:`attack_loss`).
LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")
#: BatchNorm handling during an attack (:func:`attack_mode`).
BN_MODES: tuple[str, ...] = ("eval", "batch")

# Inputs may exceed [0, 1] by this much (float round-off in data pipelines).
_INPUT_RANGE_TOL = 1e-6
# Tolerance (in units of 1/255) for describing a value as k/255.
_FRACTION_TOL = 1e-4


# --------------------------------------------------------------------------- argument checks


def parse_float(field: str, value: Any) -> float:
    """Return ``value`` as a finite float; real numbers and strings like ``"0.03"`` or ``"8/255"``.

    Raises:
        SpecError: Naming ``field``, on anything else.
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


def check_nonneg(field: str, value: Any) -> float:
    """:func:`parse_float`, and ``>= 0``."""
    out = parse_float(field, value)
    if out < 0:
        raise SpecError(f"{field} must be >= 0, got {value!r}")
    return out


def check_positive(field: str, value: Any) -> float:
    """:func:`parse_float`, and ``> 0``."""
    out = check_nonneg(field, value)
    if out <= 0:
        raise SpecError(f"{field} must be > 0, got {value!r}")
    return out


def check_int(field: str, value: Any, minimum: int | None) -> int:
    """Return ``value`` as an int (bools rejected), at least ``minimum`` unless that is ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bound = "" if minimum is None else f" >= {minimum}"
        raise SpecError(f"{field} must be an integer{bound}, got {value!r}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise SpecError(f"{field} must be >= {minimum}, got {out}")
    return out


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; the error lists them."""
    if not isinstance(value, str) or value not in choices:
        raise SpecError(f"unknown {field} {value!r} (expected one of: {', '.join(choices)})")
    return value


def check_bool(field: str, value: Any) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise SpecError(f"{field} must be true or false, got {value!r}")
    return value


def check_threat(eps: Any, norm: Any) -> tuple[float, str]:
    """A threat model: ``eps >= 0`` and ``norm`` in :data:`NORMS`."""
    return check_nonneg("eps", eps), check_choice("norm", norm, NORMS)


# --------------------------------------------------------------------------- formatting


def fmt_fraction(value: float) -> str:
    """Format ``value`` as ``k/255`` when it is (close to) one, else with ``%g``."""
    if value > 0:
        k = value * 255.0
        if abs(k - round(k)) < _FRACTION_TOL:
            return f"{round(k)}/255"
    return f"{value:g}"


def fmt_eps(value: float) -> str:
    """:func:`fmt_fraction` followed by the decimal value when it is a fraction: ``8/255 (0.0314)``."""
    frac = fmt_fraction(value)
    return f"{frac} ({value:.4f})" if "/" in frac else frac


# --------------------------------------------------------------------------- losses


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
        SpecError: On an unknown loss, or too few classes for it (margin needs 2, dlr needs 3).
        ValueError: On badly shaped ``logits`` / ``y``.
    """
    check_choice("loss", loss, LOSSES)
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


def loss_objective(y: Tensor, loss: str) -> Callable[[Tensor], Tensor]:
    """``logits -> attack_loss(logits, y, loss).sum()``: the scalar an ascent step differentiates.

    Summing over the batch keeps each sample's input gradient independent of the others.
    """
    return lambda out: attack_loss(out, y, loss).sum()


# --------------------------------------------------------------------------- model mode and inputs


@contextlib.contextmanager
def attack_mode(model: nn.Module, bn: str = "eval") -> Iterator[None]:
    """Put ``model`` in eval mode with gradients enabled; restore every module's flag after.

    With ``bn="batch"`` the BatchNorm layers normalize with the statistics of the attacked batch
    (as in training) while their running statistics stay untouched (momentum 0, counter
    restored). Training-time attacks use it where running statistics lag behind the weights.

    Raises:
        SpecError: On an unknown ``bn``.
    """
    check_choice("bn", bn, BN_MODES)
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


def prepare(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validate an attack's inputs; return detached, autograd-usable copies (labels as int64).

    Raises:
        TypeError: When ``x`` or ``y`` is not a tensor.
        ValueError: On an unbatched or non-float ``x``, mismatched ``y``, or ``x`` outside ``[0, 1]``.
    """
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
        lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one host read (a device sync), not two
        if lo < -_INPUT_RANGE_TOL or hi > 1 + _INPUT_RANGE_TOL:
            raise ValueError(f"attack inputs must lie in [0, 1], got range [{lo:.6g}, {hi:.6g}]")
    return x, y


def model_logits(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)``, checked to be logits of shape ``(N, C)``."""
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model must return logits of shape ({x.shape[0]}, C), got {shape}")
    return out


# --------------------------------------------------------------------------- geometry


def _per_sample_view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
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


def ascent_step(x_adv: Tensor, grad: Tensor, step: float, norm: str) -> Tensor:
    """One ascent step: ``step * sign(grad)`` (``linf``) or ``step * grad / ||grad||_2`` (``l2``), unprojected."""
    if norm == "linf":
        return x_adv + step * grad.sign()
    norms = grad.flatten(1).norm(p=2, dim=1)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    return x_adv + step * grad / _per_sample_view(norms, grad)


def noise(kind: str, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform ``[0, 1)`` (``kind="rand"``) or standard normal noise shaped like ``x``.

    The noise is drawn on the generator's device and moved to ``x.device``, so a CPU generator
    gives the same attack on every device.
    """
    device = generator.device if generator is not None else x.device
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    fn = torch.rand if kind == "rand" else torch.randn
    out = fn(x.shape, generator=generator, device=device, dtype=dtype)
    return out.to(device=x.device, dtype=x.dtype)


def random_delta(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A random point of the ``eps``-ball: uniform cube for linf, uniform ball for l2."""
    if norm == "linf":
        return (2.0 * noise("rand", x, generator) - 1.0) * eps
    direction = noise("randn", x, generator)
    norms = direction.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    dim = x[0].numel()
    u = noise("rand", x.new_empty(x.shape[0], 1), generator).squeeze(1)
    radius = eps * u.pow(1.0 / dim)
    return direction * _per_sample_view(radius / norms, x)


def random_init(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """The random start of FGSM-RS and PGD: ``x`` plus :func:`random_delta`, projected into ball and box."""
    return project(x + random_delta(x, eps, norm, generator), x, eps, norm)


# --------------------------------------------------------------------------- gradients and ascent


def grad_and_logits(model: nn.Module, x_adv: Tensor, objective: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Gradient of ``objective(model(x_adv))`` (a scalar) w.r.t. ``x_adv`` itself, and the (detached) logits.

    Raises:
        ValueError: When the model's output does not depend differentiably on its input.
    """
    leaf = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model_logits(model, leaf)
        value = objective(out)
        if not value.requires_grad:
            raise ValueError(
                "model output is not differentiable w.r.t. its input (is grad disabled inside it?)"
            )
        (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
    return (torch.zeros_like(leaf) if grad is None else grad.detach()), out.detach()


def input_grad(model: nn.Module, x_adv: Tensor, objective: Callable[[Tensor], Tensor]) -> Tensor:
    """Gradient of ``objective(model(x_adv))`` (a scalar) w.r.t. the input ``x_adv`` itself."""
    return grad_and_logits(model, x_adv, objective)[0]


def check_start(start: Tensor | None, x: Tensor, eps: float, norm: str) -> Tensor | None:
    """An attack's given starting point, detached and projected onto ``x``'s ball and the box.

    Raises:
        SpecError: When ``start`` is not a tensor of ``x``'s shape.
    """
    if start is None:
        return None
    if not isinstance(start, Tensor) or start.shape != x.shape:
        shape = tuple(start.shape) if isinstance(start, Tensor) else type(start).__name__
        raise SpecError(f"start: expected a tensor of the inputs' shape {tuple(x.shape)}, got {shape}")
    return project(start.detach().to(device=x.device, dtype=x.dtype), x, eps, norm)


def ascend(
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
    """``steps`` ascent steps on ``objective`` from ``x_adv``, each projected onto the ball around ``x`` and the box."""
    for _ in range(steps):
        grad = input_grad(model, x_adv, objective)
        x_adv = project(ascent_step(x_adv, grad, step_size, norm), x, eps, norm)
    return x_adv.detach()
