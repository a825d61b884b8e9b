"""MobileNet-tiny's width multiplier and expand ratio (seed 000's two knobs), define-by-run.

Example:
    >>> import optuna
    >>> study = optuna.create_study(directions=["maximize", "minimize"])
    >>> trial = study.ask()
    >>> spec = mobilenet_tiny(trial, width_mult=[0.35, 0.65, 1.0], expand_ratio=[6, 10])
    >>> spec["arch"]
    'mobilenet_tiny'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from dse.errors import SpecError
from dse.models import validate_candidate
from dse.models import EXPANDABLE_STAGES, MAX_WIDTH_MULT, MIN_WIDTH_MULT, NUM_STAGES

__all__ = ["mobilenet_tiny"]

WidthOption = Sequence[float] | dict[str, float]


def _suggest_width(trial: optuna.Trial, name: str, option: WidthOption) -> float:
    if isinstance(option, dict):
        unknown = set(option) - {"low", "high", "step"}
        if unknown or not {"low", "high"} <= set(option):
            raise SpecError(f"search space: width_mult: a range needs low and high (and optional step), got {sorted(option)}")
        low, high = float(option["low"]), float(option["high"])
        if not MIN_WIDTH_MULT <= low <= high <= MAX_WIDTH_MULT:
            raise SpecError(f"search space: width_mult: range [{low}, {high}] is outside [{MIN_WIDTH_MULT}, {MAX_WIDTH_MULT}]")
        step = option.get("step")
        return trial.suggest_float(name, low, high, step=float(step) if step else None)
    choices = [float(v) for v in option]
    if not choices:
        raise SpecError("search space: width_mult: needs at least one choice")
    return float(trial.suggest_categorical(name, choices))


def mobilenet_tiny(
    trial: optuna.Trial,
    *,
    width_mult: WidthOption = (0.35, 0.5, 0.65, 0.75, 1.0),
    expand_ratio: Sequence[int] = (2, 3, 4, 6, 8, 10),
    per_stage: bool = False,
) -> dict[str, Any]:
    """Suggests one MobileNet-tiny candidate.

    Args:
        trial: The Optuna trial.
        width_mult: Choices (a list) or a range ``{low, high, step}``.
        expand_ratio: Integer choices.
        per_stage: Suggest one width per stage (7) and one expand ratio per middle stage (5).

    Returns:
        A validated candidate spec (plain data).

    Raises:
        SpecError: Bad options, named.
    """
    ratios = [int(v) for v in expand_ratio]
    if not ratios:
        raise SpecError("search space: expand_ratio: needs at least one choice")
    if per_stage:
        widths: float | list[float] = [_suggest_width(trial, f"width_mult_{i}", width_mult) for i in range(NUM_STAGES)]
        expands: int | list[int] = [
            int(trial.suggest_categorical(f"expand_ratio_{i}", ratios)) for i in EXPANDABLE_STAGES
        ]
    else:
        widths = _suggest_width(trial, "width_mult", width_mult)
        expands = int(trial.suggest_categorical("expand_ratio", ratios))
    candidate = {"arch": "mobilenet_tiny", "width_mult": widths, "expand_ratio": expands}
    return validate_candidate(candidate, where="search space").model_dump()
