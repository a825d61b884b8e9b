"""Values as written in free-form sections (``recipe``, ``eval``, ``sampler.options``): no NaN or
infinity anywhere, ``true``/``false`` only where a switch belongs, and (``recipe``, ``eval`` and
their ``attack``) only known keys, a misspelt one named with the key it likely meant.

YAML reads ``.nan``, ``.inf`` and ``true`` as values; a NaN passes every ``<``/``>`` range check
and pydantic (or ``float()``) reads ``lr: true`` as 1.0, so these sections are walked once when a
study or candidate file is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from dse.errors import SpecError, did_you_mean, refuse_bool_numbers, refuse_non_finite

__all__ = ["check_sections", "section_switches"]


@lru_cache(maxsize=1)
def section_switches() -> frozenset[str]:
    """The keys of ``recipe`` and ``eval`` sections (their attacks and checks included) that take
    true/false: the bool fields of the recipe, attack, evaluation and check settings."""
    from dse.robust.config import AttackConfig
    from dse.robust.masking import CheckSettings
    from dse.compress.warm_start import QuantRecipe
    from dse.training import Recipe
    from objectives import EvalSettings

    names = {name for model in (Recipe, QuantRecipe) for name, f in model.model_fields.items() if f.annotation is bool}
    for cls in (AttackConfig, CheckSettings, EvalSettings):
        names |= {f.name for f in dataclasses.fields(cls) if f.type in (bool, "bool")}
    return frozenset(names | {"checks"})  # eval.checks: false turns the checks off


@lru_cache(maxsize=1)
def _section_keys() -> dict[str, tuple[str, ...]]:
    """The keys that ``recipe`` and ``eval`` sections, and the ``attack`` inside each, may hold:
    the fields of the recipe, of the evaluation settings and of an attack."""
    from dse.robust.config import AttackConfig
    from dse.training import Recipe
    from objectives import EvalSettings

    return {
        "recipe": tuple(Recipe.model_fields),
        "eval": tuple(f.name for f in dataclasses.fields(EvalSettings)),
        "attack": tuple(f.name for f in dataclasses.fields(AttackConfig)),
    }


def _refuse_unknown_keys(section: Any, where: str, field: str) -> None:
    """Refuses a key of ``section`` (``recipe``, ``eval``, or the ``attack`` in one) that it cannot hold."""
    known = _section_keys().get(field.rpartition(".")[2])
    if known is None or not isinstance(section, Mapping):
        return  # not a mapping: the section's own validation says so
    for key in section:
        if key not in known:
            raise SpecError(": ".join(p for p in (where, f"{field}.{key}") if p) + f": unknown key{did_you_mean(key, known)}")
    if "attack" in known:
        _refuse_unknown_keys(section.get("attack"), where, f"{field}.attack")


def check_sections(sections: Mapping[str, Any], where: str) -> None:
    """Every section of ``sections`` (``{"recipe": {...}, "eval": {...}}``) holds finite numbers,
    booleans only for switches, and known keys only.

    Raises:
        SpecError: ``where: recipe.lr: must be a finite number, got nan`` (or ``... got true``, or
            ``where: recipe.epoch: unknown key (did you mean 'epochs'?)``).
    """
    for name, value in sections.items():
        _refuse_unknown_keys(value, where, name)
        refuse_non_finite(value, where, name)
        refuse_bool_numbers(value, where, name, section_switches())
