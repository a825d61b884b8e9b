"""The serializable description of one attack (:class:`AttackConfig`), as studies and recipes store it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dse.errors import SpecError
from dse.robust.kernel import LOSSES, NORMS, check_bool, check_choice, check_int, check_nonneg, fmt_eps, fmt_fraction

__all__ = ["ATTACKS", "AttackConfig"]

#: Attacks an :class:`AttackConfig` can name.
ATTACKS: tuple[str, ...] = ("fgsm", "bim", "pgd")


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """A serializable description of one attack, run with :func:`dse.robust.attacks.run_attack`.

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
        check_choice("attack name", self.name, ATTACKS)
        check_choice("norm", self.norm, NORMS)
        object.__setattr__(self, "eps", check_nonneg("eps", self.eps))
        object.__setattr__(self, "step_size", check_nonneg("step_size", self.step_size))
        object.__setattr__(self, "steps", check_int("steps", self.steps, 1))
        object.__setattr__(self, "restarts", check_int("restarts", self.restarts, 1))
        check_bool("random_start", self.random_start)
        check_choice("loss", self.loss, LOSSES)

    def describe(self) -> str:
        """Return a one-line human-readable description.

        Example: ``"PGD-20 linf eps=8/255 (0.0314) step=2/255 restarts=1 loss=ce random_start"``.
        """
        eps = fmt_eps(self.eps)
        if self.name == "fgsm":
            if self.random_start:
                return (
                    f"FGSM-RS {self.norm} eps={eps} alpha={fmt_fraction(1.25 * self.eps)} "
                    f"steps=1 loss={self.loss}"
                )
            return f"FGSM {self.norm} eps={eps} steps=1 loss={self.loss}"
        step = fmt_fraction(self.step_size)
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
