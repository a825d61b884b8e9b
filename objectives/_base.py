"""What an objective is, and the settings every objective reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dse.data import Split
from dse.errors import SpecError
from dse.robust.attacks import AttackConfig
from dse.robust.masking import CheckSettings
from dse.robust.suites import describe_suite, suite_attacks

__all__ = ["EvalSettings", "Objective", "ObjectiveFn"]

#: ``fn(model, data, settings, cache=...) -> float``; ``cache`` is a dict shared by the objectives of
#: one evaluation so that, e.g., robust accuracy and instability reuse one set of adversarial examples.
ObjectiveFn = Callable[..., float]


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """How objectives are measured.

    Args:
        attack: The evaluation attack (robust accuracy and perturbation instability use its examples).
        lipschitz_steps: Ascent steps of the empirical Lipschitz estimate (eq. 6).
        lipschitz_step_size: Step size of that ascent; ``None`` means ``attack.eps / 4``.
        lipschitz_output_norm: Norm on the logits difference (``l1``, ``l2`` or ``linf``).
        batch_size: Evaluation batch size.
        max_samples: Evaluate on at most this many samples (the first ones of the split); ``None`` for all.
        seed: Seeds the random starts, so an evaluation is repeatable.
        suite: ``None`` or ``quick``: robust accuracy under ``attack`` alone; ``standard``, ``full`` or a
            list of attack names: the worst case per sample over that ensemble (:mod:`dse.robust.suites`), in
            ``attack``'s threat model.
        cascade: Run each attack of a suite only on the samples still robust (faster; per-attack
            figures become cumulative).
        checks: Gradient-masking checks run for every scored candidate (:mod:`dse.robust.masking`).
    """

    attack: AttackConfig = field(default_factory=AttackConfig)
    lipschitz_steps: int = 10
    lipschitz_step_size: float | None = None
    lipschitz_output_norm: Literal["l1", "l2", "linf"] = "l1"
    batch_size: int = 256
    max_samples: int | None = None
    seed: int = 0
    suite: str | tuple[str, ...] | None = None
    cascade: bool = False
    checks: CheckSettings = field(default_factory=CheckSettings)

    def __post_init__(self) -> None:
        """Normalize ``checks`` and ``suite``; raise :class:`SpecError` on a bad one."""
        if isinstance(self.checks, (dict, bool)) or self.checks is None:
            object.__setattr__(self, "checks", CheckSettings.from_dict(self.checks))
        if not isinstance(self.checks, CheckSettings):
            raise SpecError(f"checks: must be a mapping or a boolean, got {type(self.checks).__name__}")
        if self.suite is not None:
            if not isinstance(self.suite, str):
                if not isinstance(self.suite, (list, tuple)):
                    raise SpecError(f"suite: must be a suite name or a list of attacks, got {self.suite!r}")
                object.__setattr__(self, "suite", tuple(self.suite))
            suite_attacks(self.suite)
        if not isinstance(self.cascade, bool):
            raise SpecError(f"cascade: must be true or false, got {self.cascade!r}")
        for name in ("max_samples", "batch_size", "lipschitz_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SpecError(f"{name}: must be a whole number >= 1, got {value!r}")

    @property
    def uses_suite(self) -> bool:
        """True when robust accuracy comes from an ensemble rather than the single attack."""
        return self.suite is not None and self.suite != "quick"

    def describe_attack(self) -> str:
        """One line: the attack, or the suite, behind robust accuracy."""
        if not self.uses_suite:
            return self.attack.describe()
        return describe_suite(self.suite, self.attack)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/YAML)."""
        return {
            "attack": self.attack.to_dict(),
            "lipschitz_steps": self.lipschitz_steps,
            "lipschitz_step_size": self.lipschitz_step_size,
            "lipschitz_output_norm": self.lipschitz_output_norm,
            "batch_size": self.batch_size,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "suite": list(self.suite) if isinstance(self.suite, tuple) else self.suite,
            "cascade": self.cascade,
            "checks": self.checks.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalSettings:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        attack = AttackConfig.from_dict(data.pop("attack", {}))
        checks = CheckSettings.from_dict(data.pop("checks", None))
        return cls(attack=attack, checks=checks, **data)

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed``."""
        return torch.Generator().manual_seed(self.seed)

    def samples(self, data: Split) -> Split:
        """The part of ``data`` that is evaluated."""
        if self.max_samples is None or self.max_samples >= len(data):
            return data
        return Split(x=data.x[: self.max_samples], y=data.y[: self.max_samples])


@dataclass(frozen=True)
class Objective:
    """A named measure with a direction.

    Args:
        name: Registry key and result key (``natural_acc``...).
        direction: ``maximize`` or ``minimize``.
        fn: ``fn(model, data, settings, cache=None) -> float``.
        description: One line for reports, saying how it is measured.
        needs_attack: True if it runs an attack (so it is costly).
        deterministic: False for measured quantities (latency) that vary between runs.
        free: True when the value follows from the candidate's structure alone (params, MACs,
            BOPS, bit-packed size): known before training, so early stopping ranks on it from epoch 1.
        extra: The pip extra it needs (``onnx``), or None. Such an objective is measured only
            when named (a study's objectives or metrics), never when every objective is evaluated
            (``dse train``, ``dse eval``), so the core install works without the extra.
    """

    name: str
    direction: Literal["maximize", "minimize"]
    fn: ObjectiveFn
    description: str
    needs_attack: bool = False
    deterministic: bool = True
    free: bool = False
    extra: str | None = None

    def __call__(
        self, model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
    ) -> float:
        return self.fn(model, data, settings, cache=cache)
