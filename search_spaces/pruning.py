"""Pruning knobs: scheme and ratio (seeds 002 and 003), define-by-run."""

from __future__ import annotations

from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field

from search_spaces.quantization import parse_options

__all__ = ["PruningOptions", "pruning", "suggest_pruning"]


class PruningOptions(BaseModel):
    """Options of the pruning space (study file ``space.options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schemes: list[Literal["none", "irregular", "funnel", "structured", "admm", "dns"]] = Field(
        default_factory=lambda: ["irregular", "funnel", "structured"], min_length=1
    )
    ratio_low: float = Field(0.3, gt=0.0, lt=1.0)
    ratio_high: float = Field(0.9, gt=0.0, lt=1.0)
    ratio_step: float | None = Field(0.1, gt=0.0)
    base: dict[str, Any] = Field(default_factory=lambda: {"arch": "resnet20"})

    def model_post_init(self, _: Any) -> None:
        if self.ratio_low > self.ratio_high:
            raise ValueError(f"ratio_low {self.ratio_low} > ratio_high {self.ratio_high}")


def suggest_pruning(trial: optuna.Trial, opts: PruningOptions) -> dict[str, Any]:
    """The compression keys of one pruning choice (no ratio when the scheme is none)."""
    scheme = trial.suggest_categorical("prune_scheme", list(opts.schemes))
    if scheme == "none":
        return {}
    ratio = trial.suggest_float("prune_ratio", opts.ratio_low, opts.ratio_high, step=opts.ratio_step)
    return {"prune_scheme": scheme, "prune_ratio": round(ratio, 6)}


def pruning(trial: optuna.Trial, **options: Any) -> dict[str, Any]:
    """Suggests a pruning scheme and ratio for a fixed base architecture (default ResNet-20)."""
    from dse.models import validate_candidate

    opts = parse_options(PruningOptions, options, "space pruning")
    return validate_candidate({**opts.base, **suggest_pruning(trial, opts)}, where="search space").model_dump()
