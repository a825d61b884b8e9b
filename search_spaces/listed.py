"""Listed: the candidates written out in the study file, one per trial (with ``sampler: grid``,
each exactly once; with ``options: {ordered: true}`` in the file's order, else in a seeded shuffle).
For campaigns that compare hand-picked configurations (a precision table, a paper's rows) as
resumable studies.

Example study section::

    space:
      name: listed
      options:
        candidates:
          - {arch: mobilenet_tiny, width_mult: 0.35, expand_ratio: 6}
          - {arch: mobilenet_tiny, width_mult: 0.35, expand_ratio: 6, quant: fixed, weight_bits: 2, act_bits: 2}
    sampler: {name: grid, options: {ordered: true}}
"""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ListedOptions", "listed", "listed_grid"]


class ListedOptions(BaseModel):
    """Options of the listed space: the candidates (flat keys, as a candidate file holds them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: list[dict[str, Any]] = Field(min_length=1)


def listed(trial: optuna.Trial, *, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate at the index the trial suggests (parameter ``entry``)."""
    entry = trial.suggest_categorical("entry", list(range(len(candidates))))
    return dict(candidates[entry])


def listed_grid(options: dict[str, Any]) -> dict[str, list[Any]]:
    """The grid of the listed space, for Optuna's ``GridSampler``: every entry once."""
    return {"entry": list(range(len(options.get("candidates", []))))}
