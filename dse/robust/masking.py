"""Gradient-masking checks: signs that a robust accuracy comes from a broken attack, not a robust model.

After Athalye, Carlini & Wagner (2018) and Carlini et al. (2019, "On evaluating adversarial
robustness"), whose checklist these follow, and AutoAttack's ``checks.py``. Each check compares
attacks that should order themselves one way on any honestly differentiable model:

* ``zero_or_nonfinite_gradients``: too many samples whose input gradient (of the margin loss, which
  does not saturate like cross entropy) is all zero or not finite;
* ``accuracy_rises_with_eps``: robust accuracy goes up as the ball grows;
* ``not_broken_at_large_eps``: accuracy stays above ``large_eps_max_acc`` at a large eps (0.5 for
  l_inf, half the box diagonal for l_2), where any honest first-order attack wins;
* ``more_iterations_raise_accuracy``: PGD with more steps and restarts scores higher than the
  evaluation attack;
* ``single_step_beats_iterative``: FGSM scores lower than the iterative evaluation attack;
* ``black_box_beats_white_box``: Square (queries only) scores lower than the best white-box attack;
* ``pgd_far_above_best_attack``: the PGD attacks (the evaluation attack and the stronger PGD, both on
  the evaluation loss) score more than ``attack_gap_max`` above the best white-box attack known
  for these samples (``white_box_acc``, e.g. a suite's APGD-T with its DLR loss): their loss is
  starved on this model, so a PGD-only robust accuracy (a search objective without a suite)
  overrates it. Croce & Hein (2020) found such gaps on defenses that masked gradients; on digits
  a 2-bit MobileNet-tiny read 0.630 under PGD-20 and 0.010 under APGD-T (Square: 0.070).

A candidate that trips any check gets its name in ``masking_flags``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dse.data import Split, iterate_batches
from dse.errors import SpecError
from dse.robust.attacks import AttackConfig, attack_loss, fgsm
from dse.robust.evaluate import Predictions, accuracy, eps_sweep, first_samples, model_device, pgd_attack
from dse.robust.kernel import attack_mode
from dse.robust.suites import describe_square, square_attack

__all__ = ["CHECKS", "CheckSettings", "input_gradient_stats", "masking_checks", "white_box_accuracy"]

#: Every flag a check can raise, in the order the checks run.
CHECKS: tuple[str, ...] = (
    "zero_or_nonfinite_gradients",
    "accuracy_rises_with_eps",
    "not_broken_at_large_eps",
    "more_iterations_raise_accuracy",
    "single_step_beats_iterative",
    "black_box_beats_white_box",
    "pgd_far_above_best_attack",
)


@dataclass(frozen=True, kw_only=True)
class CheckSettings:
    """How hard the checks look.

    Args:
        enabled: Run the checks at all (a study scores every candidate with them by default).
        samples: Evaluate the first this many samples.
        eps_multiples: Multiples of the threat model's eps for the monotonicity sweep.
        large_eps: The large eps; ``None``: 0.5 for l_inf, ``0.5 * sqrt(input size)`` for l_2.
        large_eps_max_acc: Highest accuracy allowed at the large eps.
        zero_grad_max: Highest fraction of samples allowed a zero or non-finite input gradient.
        tolerance: Margin (accuracy, absolute) before an ordering between attacks counts as broken.
        strong_steps: Steps of the stronger PGD (its step size is eps / 4).
        strong_restarts: Random restarts of the stronger PGD.
        square_queries: Queries of the black-box Square attack (0 skips that check).
        attack_gap_max: Largest margin (accuracy, absolute) allowed between the PGD attacks and
            the best white-box attack known from elsewhere (``white_box_acc``).
    """

    enabled: bool = True
    samples: int = 200
    eps_multiples: tuple[float, ...] = (1.0, 2.0, 4.0)
    large_eps: float | None = None
    large_eps_max_acc: float = 0.05
    zero_grad_max: float = 0.05
    tolerance: float = 0.03
    strong_steps: int = 50
    strong_restarts: int = 2
    square_queries: int = 1000
    attack_gap_max: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 1:
            raise SpecError(f"checks.samples: must be a positive integer, got {self.samples!r}")
        if not self.eps_multiples or any(not isinstance(m, (int, float)) or m <= 0 for m in self.eps_multiples):
            raise SpecError(f"checks.eps_multiples: must be positive numbers, got {self.eps_multiples!r}")
        object.__setattr__(self, "eps_multiples", tuple(sorted(float(m) for m in self.eps_multiples)))
        for name in ("large_eps_max_acc", "zero_grad_max", "tolerance", "attack_gap_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise SpecError(f"checks.{name}: must be in [0, 1], got {value!r}")
        if self.large_eps is not None and (not isinstance(self.large_eps, (int, float)) or self.large_eps <= 0):
            raise SpecError(f"checks.large_eps: must be positive, got {self.large_eps!r}")
        for name in ("strong_steps", "strong_restarts"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SpecError(f"checks.{name}: must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.square_queries, int) or self.square_queries < 0:
            raise SpecError(f"checks.square_queries: must be a non-negative integer, got {self.square_queries!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | bool | None) -> CheckSettings:
        """From a study/candidate ``eval.checks`` value: a mapping, or ``false`` to disable."""
        if data is None or data is True:
            return cls()
        if data is False:
            return cls(enabled=False)
        if not isinstance(data, dict):
            raise SpecError(f"checks: must be a mapping or a boolean, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise SpecError(f"checks.{unknown[0]}: unknown key (known: {', '.join(_FIELDS)})")
        known = dict(data)
        if "eps_multiples" in known:
            known["eps_multiples"] = tuple(known["eps_multiples"])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML)."""
        d = asdict(self)
        d["eps_multiples"] = list(self.eps_multiples)
        return d


_FIELDS = tuple(CheckSettings.__dataclass_fields__)


def input_gradient_stats(model: nn.Module, data: Split, *, batch_size: int = 256) -> dict[str, float]:
    """Fractions of samples whose margin-loss input gradient is all zero, or has a non-finite entry.

    The margin loss ``max_{j != y} z_j - z_y`` is used rather than cross entropy because a confident,
    honest model can underflow the cross-entropy gradient to exactly zero in float32.
    """
    device = model_device(model)
    zero = nonfinite = 0
    with attack_mode(model):
        for x, y in iterate_batches(data, batch_size, shuffle=False):
            x = x.to(device).clone().requires_grad_(True)
            loss = attack_loss(model(x).float(), y.to(device), "margin").sum()
            (grad,) = torch.autograd.grad(loss, x)
            flat = grad.reshape(grad.shape[0], -1)
            bad = ~torch.isfinite(flat).all(dim=1)
            nonfinite += int(bad.sum())
            zero += int(((flat == 0).all(dim=1) & ~bad).sum())
    n = len(data)
    return {"zero_fraction": zero / n, "nonfinite_fraction": nonfinite / n}


def white_box_accuracy(predictions: Predictions | None, samples: int) -> float | None:
    """Robust accuracy of the first ``samples`` samples from an earlier white-box evaluation, if it covered them.

    The black-box check of :func:`masking_checks` compares Square against it (``white_box_acc``).

    Returns:
        ``None`` without predictions, or when they hold fewer than ``samples`` samples.
    """
    if predictions is None or len(predictions.y) < samples:
        return None
    return predictions.robust()[:samples].float().mean().item()


def _large_eps(settings: CheckSettings, attack: AttackConfig, data: Split) -> float:
    if settings.large_eps is not None:
        return float(settings.large_eps)
    if attack.norm == "linf":
        return 0.5
    return 0.5 * math.sqrt(data.x[0].numel())


def masking_checks(
    model: nn.Module,
    data: Split,
    *,
    attack: AttackConfig,
    settings: CheckSettings | None = None,
    white_box_acc: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Runs every check on the first ``settings.samples`` samples of ``data``.

    Args:
        model: Classifier taking ``[0, 1]`` inputs; its train/eval mode is restored.
        data: Evaluation samples.
        attack: The evaluation attack (threat model and the "weak" iterative attack).
        settings: Thresholds and budgets; defaults to :class:`CheckSettings`.
        white_box_acc: Best white-box robust accuracy known for these samples (e.g. from a suite);
            the black-box check compares against the lower of it and the checks' own attacks, and
            ``pgd_far_above_best_attack`` (run only when it is given) the PGD attacks against it.
        batch_size: Samples per batch.
        seed: Seeds the random starts and Square.

    Returns:
        ``{"masking_flags": [...], "checks": {name: {"passed": bool, ...figures}}, "samples": n,
        "settings": ...}``; ``masking_flags`` is empty when every check passes.
    """
    settings = settings or CheckSettings()
    if not settings.enabled:
        return {"masking_flags": [], "checks": {}, "samples": 0, "settings": settings.to_dict()}
    data = first_samples(data, settings.samples)
    tol = settings.tolerance
    ratio = attack.step_size / attack.eps if attack.eps > 0 else 0.25

    def robust_acc(attack_fn) -> float:
        return accuracy(model, data, attack_fn, batch_size=batch_size)

    def pgd_with(steps: int, restarts: int = 1, step_ratio: float = ratio):
        return pgd_attack(model, eps=attack.eps, step_ratio=step_ratio, steps=steps, norm=attack.norm,
                          loss=attack.loss, restarts=restarts, seed=seed)

    checks: dict[str, dict[str, Any]] = {}
    grads = input_gradient_stats(model, data, batch_size=batch_size)
    bad = grads["zero_fraction"] + grads["nonfinite_fraction"]
    checks["zero_or_nonfinite_gradients"] = {"passed": bad <= settings.zero_grad_max, **grads, "max": settings.zero_grad_max}

    large = _large_eps(settings, attack, data)
    eps_values = [0.0] + [m * attack.eps for m in settings.eps_multiples if m * attack.eps < large] + [large]
    curve = eps_sweep(model, data, eps_values, norm=attack.norm, steps=attack.steps, step_ratio=ratio, loss=attack.loss,
                      batch_size=batch_size, seed=seed)
    accs = [point["acc"] for point in curve]
    rises = [(eps_values[i], eps_values[i + 1]) for i in range(len(accs) - 1) if accs[i + 1] > accs[i] + tol]
    checks["accuracy_rises_with_eps"] = {"passed": not rises, "curve": curve, "rises": rises}
    checks["not_broken_at_large_eps"] = {"passed": accs[-1] <= settings.large_eps_max_acc, "eps": large, "acc": accs[-1],
                                         "max": settings.large_eps_max_acc}

    weak = accs[eps_values.index(attack.eps)] if attack.eps in eps_values else robust_acc(pgd_with(attack.steps))
    strong = robust_acc(pgd_with(settings.strong_steps, settings.strong_restarts, 0.25))
    checks["more_iterations_raise_accuracy"] = {
        "passed": strong <= weak + tol, "weak": weak, "strong": strong,
        "weak_attack": f"PGD-{attack.steps}", "strong_attack": f"PGD-{settings.strong_steps}x{settings.strong_restarts}",
    }
    single = robust_acc(lambda x, y: fgsm(model, x, y, eps=attack.eps, norm=attack.norm))
    checks["single_step_beats_iterative"] = {"passed": single >= min(weak, strong) - tol, "fgsm": single,
                                             "iterative": min(weak, strong)}
    if settings.square_queries > 0:
        run = square_attack(settings.square_queries)
        square = robust_acc(lambda x, y: run(model, x, y, attack=attack, seed=seed))
        best_white = min(weak, strong, single, white_box_acc if white_box_acc is not None else 1.0)
        checks["black_box_beats_white_box"] = {
            "passed": square >= best_white - tol, "square": square, "white_box": best_white,
            "square_attack": describe_square(attack, settings.square_queries),
        }
    if white_box_acc is not None:
        pgd_best = min(weak, strong)
        checks["pgd_far_above_best_attack"] = {
            "passed": pgd_best <= white_box_acc + settings.attack_gap_max, "pgd": pgd_best, "best_attack": white_box_acc,
            "max_gap": settings.attack_gap_max,
        }
    flags = [name for name in CHECKS if name in checks and not checks[name]["passed"]]
    return {"masking_flags": flags, "checks": checks, "samples": len(data), "settings": settings.to_dict(), "seed": seed}
