"""Quantization knobs, define-by-run with conditional parameters: bit-widths only for
fixed-point, bases only for multi-bit networks (seed 004)."""

from __future__ import annotations

from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dse.errors import SpecError
from dse.errors import one_line_error

__all__ = ["QuantizationOptions", "quantization", "suggest_quantization"]

Bits = list[int]


class QuantizationOptions(BaseModel):
    """Options of the quantization space (study file ``space.options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modes: list[Literal["none", "fixed", "mbn", "pow2"]] = Field(default_factory=lambda: ["fixed", "mbn"], min_length=1)
    weight_bits: list[int] = Field(default_factory=lambda: [2, 4, 8], min_length=1)
    act_bits: list[int] = Field(default_factory=lambda: [2, 4, 8], min_length=1)
    weight_bases: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    act_bases: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    first_last_bits: Literal[8, 32] = 8
    #: one weight scale per output channel for fixed and multi-bit candidates (a fixed choice of the
    #: study, not searched; BOPS are unchanged, size counts the extra scales)
    per_channel: bool = False
    base: dict[str, Any] = Field(default_factory=lambda: {"arch": "resnet20"})

    def model_post_init(self, _: Any) -> None:
        for name in ("weight_bits", "act_bits", "weight_bases", "act_bases"):
            for v in getattr(self, name):
                if not 1 <= v <= 8:
                    raise ValueError(f"{name}: {v} is outside 1..8")
        if "pow2" in self.modes and min(self.weight_bits) < 2:
            raise ValueError("weight_bits: pow2 needs 2..8 bits")


def parse_options(model: type[BaseModel], options: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(options)
    except (ValidationError, ValueError) as err:
        message = one_line_error(err, where=where, model=model) if isinstance(err, ValidationError) else f"{where}: {err}"
        raise SpecError(message) from err


def suggest_quantization(trial: optuna.Trial, opts: QuantizationOptions) -> dict[str, Any]:
    """The compression keys of one quantization choice."""
    mode = trial.suggest_categorical("quant", list(opts.modes))
    keys: dict[str, Any] = {"quant": mode}
    if mode in ("fixed", "pow2"):
        keys["weight_bits"] = trial.suggest_categorical("weight_bits", list(opts.weight_bits))
    if mode == "fixed":
        keys["act_bits"] = trial.suggest_categorical("act_bits", list(opts.act_bits))
    if mode == "mbn":
        keys["weight_bases"] = trial.suggest_categorical("weight_bases", list(opts.weight_bases))
        keys["act_bases"] = trial.suggest_categorical("act_bases", list(opts.act_bases))
    if mode != "none" and opts.first_last_bits != 8:
        keys["first_last_bits"] = opts.first_last_bits
    if mode in ("fixed", "mbn") and opts.per_channel:
        keys["per_channel"] = True
    return keys


def quantization(trial: optuna.Trial, **options: Any) -> dict[str, Any]:
    """Suggests a quantization of a fixed base architecture (``base``, default ResNet-20).

    Args:
        trial: The Optuna trial.
        **options: See :class:`QuantizationOptions`.
    """
    from dse.models import validate_candidate

    opts = parse_options(QuantizationOptions, options, "space quantization")
    candidate = {**opts.base, **suggest_quantization(trial, opts)}
    return validate_candidate(candidate, where="search space").model_dump()
