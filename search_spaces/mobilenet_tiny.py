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

import math
from collections.abc import Sequence
from typing import Any

import optuna

from dse.errors import SpecError
from dse.models import validate_candidate
from dse.models import EXPANDABLE_STAGES, MAX_WIDTH_MULT, MIN_WIDTH_MULT, NUM_STAGES

__all__ = ["check_expand_option", "check_width_option", "mobilenet_tiny"]

WidthOption = Sequence[float] | dict[str, float]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_values(field: str, values: list[Any]) -> None:
    """Each value is a valid ``field`` of a MobileNet-tiny candidate (its bounds live in the model)."""
    for value in values:
        validate_candidate({"arch": "mobilenet_tiny", field: value}, where="space.options")


def check_width_option(option: Any) -> None:
    """``width_mult`` choices (a non-empty list of numbers) or a range ``{low, high, step}``, every
    value within MobileNet-tiny's bounds, checked without a trial.

    Raises:
        SpecError: ``space.options.width_mult: ...``, one line.
    """
    where = "space.options.width_mult"
    if isinstance(option, dict):
        unknown = set(option) - {"low", "high", "step"}
        if unknown or not {"low", "high"} <= set(option):
            raise SpecError(f"{where}: a range needs low and high (and optional step), got {sorted(option)}")
        bad = next((k for k in ("low", "high", "step") if k in option and option[k] is not None and not _number(option[k])), None)
        if bad:
            raise SpecError(f"{where}: {bad}: expected a finite number, got {option[bad]!r}")
        low, high, step = float(option["low"]), float(option["high"]), option.get("step")
        if low > high:
            raise SpecError(f"{where}: low {low} > high {high}")
        if not MIN_WIDTH_MULT <= low <= high <= MAX_WIDTH_MULT:
            raise SpecError(f"{where}: range [{low}, {high}] is outside [{MIN_WIDTH_MULT}, {MAX_WIDTH_MULT}]")
        if step is not None and not step > 0:
            raise SpecError(f"{where}: step: expected a number > 0, got {step}")
        return
    if isinstance(option, (str, bytes)) or not isinstance(option, (list, tuple)):
        raise SpecError(f"{where}: expected a list of choices or a range {{low, high, step}}, got {option!r}")
    if not option:
        raise SpecError(f"{where}: needs at least one choice")
    bad = next((v for v in option if not _number(v)), None)
    if bad is not None or any(v is None for v in option):
        raise SpecError(f"{where}: expected finite numbers, got {bad!r}")
    _check_values("width_mult", list(option))


def check_expand_option(option: Any) -> None:
    """``expand_ratio`` choices: a non-empty list of whole numbers within MobileNet-tiny's bounds.

    Raises:
        SpecError: ``space.options.expand_ratio: ...``, one line.
    """
    where = "space.options.expand_ratio"
    if isinstance(option, (str, bytes)) or not isinstance(option, (list, tuple)):
        raise SpecError(f"{where}: expected a list of whole numbers, got {option!r}")
    if not option:
        raise SpecError(f"{where}: needs at least one choice")
    bad = next((v for v in option if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None or any(v is None for v in option):
        raise SpecError(f"{where}: expected whole numbers, got {bad!r}")
    _check_values("expand_ratio", list(option))


def _suggest_width(trial: optuna.Trial, name: str, option: WidthOption) -> float:
    """One width from choices or a range (``option`` already checked by :func:`check_width_option`)."""
    if isinstance(option, dict):
        step = option.get("step")
        return trial.suggest_float(name, float(option["low"]), float(option["high"]), step=float(step) if step else None)
    return float(trial.suggest_categorical(name, [float(v) for v in option]))


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
    check_width_option(width_mult)
    check_expand_option(expand_ratio)
    if not isinstance(per_stage, bool):
        raise SpecError(f"space.options.per_stage: expected true or false, got {per_stage!r}")
    ratios = [int(v) for v in expand_ratio]
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
