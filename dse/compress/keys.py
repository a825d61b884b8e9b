"""Compression candidate keys (quantization and pruning): validation, applying them, their training hooks.

The keys are flat, so ``--set`` flags and study files share them::

    quant: none | fixed | mbn | pow2
    weight_bits, act_bits          # fixed (1..8), pow2 (weight_bits 2..8, act_bits optional)
    weight_bases, act_bases        # mbn (1..8); XNOR-Net is mbn with 1 and 1
    first_last_bits: 8 | 32        # first conv and last linear: 8-bit or full precision
    per_channel: bool              # fixed/mbn: one weight scale per output channel (default false)
    depthwise_bits: 1..8           # depthwise convs fixed point with at least these bits (default: as the body)
    prune_scheme: none | irregular | funnel | structured | admm | dns
    prune_ratio: [0, 1)

Impossible combinations (bases with fixed-point, bits with multi-bit, 0 bases, 9 bits, a
pruning ratio of 1.0 or a ratio without a scheme) are rejected when the candidate is read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from dse.compress.hooks import INQHook, TrainingHook
from dse.compress.orthogonal import OrthogonalRegularizer
from dse.compress.pruner import ADMM_RETRAIN_FRACTION, make_pruner
from dse.compress.pruning import attach_masks
from dse.compress.quant import QuantSpec, quantize_model
from dse.compress.warm_start import QuantRecipe, QuantWarmStart
from dse.errors import SpecError

__all__ = ["COMPRESSION_KEYS", "CompressionConfig", "TrainingHook", "apply_compression", "training_hooks"]


class CompressionConfig(BaseModel):
    """The compression part of a candidate (defaults: no quantization, no pruning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quant: Literal["none", "fixed", "mbn", "pow2"] = "none"
    weight_bits: int | None = Field(None, ge=1, le=8)
    act_bits: int | None = Field(None, ge=1, le=8)
    weight_bases: int | None = Field(None, ge=1, le=8)
    act_bases: int | None = Field(None, ge=1, le=8)
    first_last_bits: Literal[8, 32] = 8
    per_channel: bool = False
    depthwise_bits: int | None = Field(None, ge=1, le=8)
    prune_scheme: Literal["none", "irregular", "funnel", "structured", "admm", "dns"] = "none"
    prune_ratio: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _combinations(self) -> CompressionConfig:
        bits = {"weight_bits": self.weight_bits, "act_bits": self.act_bits}
        bases = {"weight_bases": self.weight_bases, "act_bases": self.act_bases}
        if self.quant in ("none", "fixed", "pow2"):
            for key, value in bases.items():
                if value is not None:
                    raise ValueError(f"{key} is for quant: mbn, not quant: {self.quant}")
        if self.quant in ("none", "mbn"):
            for key, value in bits.items():
                if value is not None:
                    raise ValueError(f"{key} is for quant: fixed or pow2, not quant: {self.quant}")
        if self.quant == "fixed" and (self.weight_bits is None or self.act_bits is None):
            raise ValueError("quant: fixed needs weight_bits and act_bits")
        if self.quant == "mbn" and (self.weight_bases is None or self.act_bases is None):
            raise ValueError("quant: mbn needs weight_bases and act_bases (1 and 1 is XNOR-Net)")
        if self.quant == "pow2" and (self.weight_bits is None or self.weight_bits < 2):
            raise ValueError("quant: pow2 needs weight_bits of 2..8")
        if self.quant not in ("fixed", "mbn") and (self.per_channel or self.depthwise_bits is not None):
            raise ValueError("per_channel and depthwise_bits are for quant: fixed or mbn")
        if self.prune_scheme == "none" and self.prune_ratio > 0:
            raise ValueError("prune_ratio needs a prune_scheme")
        if self.prune_scheme != "none" and self.prune_ratio == 0:
            raise ValueError(f"prune_scheme {self.prune_scheme} needs a prune_ratio in (0, 1)")
        return self

    def quant_spec(self) -> QuantSpec:
        """The :class:`dse.compress.quant.QuantSpec` of this candidate."""
        return QuantSpec(
            mode=self.quant,
            weight_bits=self.weight_bits,
            act_bits=self.act_bits,
            weight_bases=self.weight_bases,
            act_bases=self.act_bases,
            first_last_bits=self.first_last_bits,
            per_channel=self.per_channel,
            depthwise_bits=self.depthwise_bits,
        )


COMPRESSION_KEYS = frozenset(CompressionConfig.model_fields)


def apply_compression(model: nn.Module, config: CompressionConfig) -> nn.Module:
    """Quantizes the model's layers and attaches pruning masks, as the candidate says."""
    if config.quant != "none":
        quantize_model(model, config.quant_spec())
    if config.prune_scheme != "none":
        attach_masks(model)
    return model


def training_hooks(
    model: nn.Module, config: CompressionConfig, epochs: int, *, quant_recipe: QuantRecipe | None = None,
    data: Any = None, batch_size: int = 128, admm_retrain_fraction: float = ADMM_RETRAIN_FRACTION,
) -> list[TrainingHook]:
    """Hooks that pruning (gradual, ADMM, DNS), INQ, the quantized warm start and the orthogonal
    regulariser need during training.

    Args:
        model: The compressed model.
        config: The candidate's compression keys.
        epochs: Training epochs.
        quant_recipe: The recipe's ``quant`` section (fixed and multi-bit candidates); ``None``:
            none of its steps.
        data: The training split (calibration and BatchNorm re-estimation batches).
        batch_size: The recipe's batch size.
        admm_retrain_fraction: The recipe's share of epochs retrained with fixed masks after
            ADMM's hard prune.
    """
    hooks: list[TrainingHook] = []
    if quant_recipe is not None and config.quant in ("fixed", "mbn") and data is not None:
        if quant_recipe.warm_start_epochs >= epochs:
            raise SpecError(f"recipe: quant: warm_start_epochs ({quant_recipe.warm_start_epochs}) must be below epochs ({epochs})")
        hooks.append(QuantWarmStart(model, recipe=quant_recipe, data=data, batch_size=batch_size))
    if config.quant == "pow2":
        hooks.append(INQHook(model, epochs))
    if quant_recipe is not None and config.quant != "none" and quant_recipe.orthogonal_reg > 0:
        hooks.append(OrthogonalRegularizer(model, beta=quant_recipe.orthogonal_reg))
    if config.prune_scheme != "none":
        pruner = make_pruner(model, config.prune_scheme, config.prune_ratio, epochs,
                             admm_retrain_fraction=admm_retrain_fraction)
        if pruner is not None:
            hooks.append(pruner)
    return hooks
