"""Values as written in free-form sections (``recipe``, ``eval``, ``sampler.options``): no NaN or
infinity anywhere, and ``true``/``false`` only where a switch belongs.

YAML reads ``.nan``, ``.inf`` and ``true`` as values; a NaN passes every ``<``/``>`` range check
and pydantic (or ``float()``) reads ``lr: true`` as 1.0, so these sections are walked once when a
study or candidate file is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from dse.errors import refuse_bool_numbers, refuse_non_finite

__all__ = ["check_sections", "section_switches"]


@lru_cache(maxsize=1)
def section_switches() -> frozenset[str]:
    """The keys of ``recipe`` and ``eval`` sections (their attacks and checks included) that take
    true/false: the bool fields of the recipe, attack, evaluation and check settings."""
    from dse.robust.config import AttackConfig
    from dse.robust.masking import CheckSettings
    from dse.training import Recipe
    from objectives import EvalSettings

    names = {name for name, f in Recipe.model_fields.items() if f.annotation is bool}
    for cls in (AttackConfig, CheckSettings, EvalSettings):
        names |= {f.name for f in dataclasses.fields(cls) if f.type in (bool, "bool")}
    return frozenset(names | {"checks"})  # eval.checks: false turns the checks off


def check_sections(sections: Mapping[str, Any], where: str) -> None:
    """Every section of ``sections`` (``{"recipe": {...}, "eval": {...}}``) holds finite numbers,
    and booleans only for switches.

    Raises:
        SpecError: ``where: recipe.lr: must be a finite number, got nan`` (or ``... got true``).
    """
    for name, value in sections.items():
        refuse_non_finite(value, where, name)
        refuse_bool_numbers(value, where, name, section_switches())
