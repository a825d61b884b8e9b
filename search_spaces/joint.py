"""The joint space: MobileNet-tiny's width and expand ratio, quantization and pruning together,
with conditional parameters (bits only for fixed-point, bases only for multi-bit)."""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field

from search_spaces.mobilenet_tiny import mobilenet_tiny
from search_spaces.pruning import PruningOptions, suggest_pruning
from search_spaces.quantization import QuantizationOptions, parse_options, suggest_quantization

__all__ = ["JointOptions", "joint"]


class JointOptions(BaseModel):
    """Options: ``width_mult``/``expand_ratio`` as for ``mobilenet_tiny``, plus ``quantization``
    and ``pruning`` option blocks (their ``base`` is ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width_mult: Any = (0.35, 0.5, 0.75, 1.0)
    expand_ratio: list[int] = Field(default_factory=lambda: [2, 4, 6])
    quantization: QuantizationOptions = Field(default_factory=QuantizationOptions)
    pruning: PruningOptions = Field(default_factory=lambda: PruningOptions(schemes=["none", "irregular", "funnel"]))


def joint(trial: optuna.Trial, **options: Any) -> dict[str, Any]:
    """Suggests width, expand ratio, a quantization and a pruning for MobileNet-tiny."""
    from dse.models import validate_candidate

    opts = parse_options(JointOptions, options, "space joint")
    candidate = mobilenet_tiny(trial, width_mult=opts.width_mult, expand_ratio=opts.expand_ratio)
    candidate |= suggest_quantization(trial, opts.quantization)
    candidate |= suggest_pruning(trial, opts.pruning)
    return validate_candidate(candidate, where="search space").model_dump()
