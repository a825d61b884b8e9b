"""What an objective is, and the settings every objective reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dse.attacks import AttackConfig
from dse.data import Split

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
    """

    attack: AttackConfig = field(default_factory=AttackConfig)
    lipschitz_steps: int = 10
    lipschitz_step_size: float | None = None
    lipschitz_output_norm: Literal["l1", "l2", "linf"] = "l1"
    batch_size: int = 256
    max_samples: int | None = None
    seed: int = 0

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalSettings:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        attack = AttackConfig.from_dict(data.pop("attack", {}))
        return cls(attack=attack, **data)

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
    """

    name: str
    direction: Literal["maximize", "minimize"]
    fn: ObjectiveFn
    description: str
    needs_attack: bool = False
    deterministic: bool = True

    def __call__(
        self, model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None
    ) -> float:
        return self.fn(model, data, settings, cache=cache)
