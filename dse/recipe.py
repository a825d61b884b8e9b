"""What a candidate's training is: the :class:`Recipe` (every field a recipe file or CLI flag can
set) and each data set's defaults. :mod:`dse.training` carries a recipe out.

How a training attack treats BatchNorm (``attack_bn``):

* ``batch``: at every attack step BatchNorm normalizes with the attacked batch's statistics, as
  the training forward pass does (Madry et al.'s and Rice et al.'s code craft in train mode), the
  gradient flowing through them; running statistics are left untouched.
* ``frozen_batch``: the clean batch's statistics, held fixed over the attack's steps
  (:func:`dse.robust.fold.frozen_batch_statistics`): the current weights' statistics, as with
  ``batch``, but BatchNorm is then a frozen affine map, and with ``attack_fold_bn: true``
  (default) it is folded into the convolutions for the attack passes (:mod:`dse.robust.fold`): an
  attack step of MobileNet-tiny W=0.35 E=6 costs less than half.
* ``eval``: the running statistics (TRADES' reference code). It attacks a different function
  whenever the running statistics lag behind the weights: on digits, MobileNet-tiny's late 1x1
  feature maps made 20 epochs of PGD-AT collapse to 0.575 natural accuracy that way, against 0.93
  with batch statistics.

``attack_batch_steps: N`` (with ``frozen_batch`` or ``eval``) runs the last ``N`` steps of a PGD or
TRADES training attack in ``batch`` mode, continuing from where the frozen, folded steps ended.
For PGD-AT, all-``frozen_batch`` is a weaker training attack than all-``batch`` (digits, 3 seeds:
0.838 +- 0.014 robust against 0.862 +- 0.008; re-reading each step's statistics without their
gradient gave 0.836 +- 0.013 and no speed-up), so the gradient through the statistics matters;
finishing with 3 ``batch`` steps recovers it (0.858 +- 0.007) at 2.2x the plain loop's step speed.
For TRADES, all-``frozen_batch`` was the stronger recipe. The defaults per method are
:data:`METHOD_DEFAULTS`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from dse.compress.pruner import ADMM_RETRAIN_FRACTION
from dse.compress.warm_start import QuantRecipe
from dse.errors import SpecError, one_line_error
from dse.robust.config import AttackConfig

__all__ = ["METHODS", "METHOD_DEFAULTS", "Recipe", "default_eval_attack", "default_recipe"]

METHODS = ("natural", "pgd_at", "trades", "fast_at", "free")

#: How the training attack treats BatchNorm when a recipe does not set ``attack_bn`` (a recipe that
#: sets it gets ``attack_batch_steps: 0`` unless it sets that too). Measured on digits (MobileNet-tiny
#: W=0.35 E=6, 20 epochs, standard suite on 360 test images, 3 seeds, no masking flag) and by
#: ``bench/train_throughput.py`` (PGD-10 / TRADES-10 steps, batch 128, against a plain loop):
#:
#: * ``pgd_at``: ``frozen_batch`` with the last 3 steps in ``batch`` mode: 0.858 +- 0.007 robust
#:   against 0.862 +- 0.008 all-``batch`` and 0.838 +- 0.014 all-``frozen_batch``; 2.2x the plain
#:   loop's step against 1.4x. ``attack_batch_steps`` is capped at the attack's steps - 1.
#: * ``trades``: ``frozen_batch``: 0.850 +- 0.006 against 0.827 +- 0.015 with ``batch``; 1.7x the
#:   plain loop (TRADES' reference code crafts with fixed statistics too: eval mode) against 1.0x.
#: * ``fast_at`` (one step: folding does not pay for the statistics pass), ``natural``, ``free``
#:   (no separate attack pass): ``batch``.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "pgd_at": {"attack_bn": "frozen_batch", "attack_batch_steps": 3},
    "trades": {"attack_bn": "frozen_batch"},
}


class Recipe(BaseModel):
    """How a candidate is trained. Every field can come from a recipe file or a CLI flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["natural", "pgd_at", "trades", "fast_at", "free"] = "pgd_at"
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    optimizer: Literal["sgd", "adam"] = "sgd"
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)
    attack: dict[str, Any] = Field(default_factory=lambda: {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10})
    trades_beta: float = Field(6.0, ge=0)
    fast_at_alpha: float | None = Field(None, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    adv_weight: float = Field(1.0, ge=0, le=1)
    mix_mode: Literal["loss", "batch"] = "loss"
    seed: int = 0
    eval_every: int = Field(1, ge=0)
    eval_samples: int | None = Field(512, ge=1)
    attack_bn: Literal["eval", "batch", "frozen_batch"] = "batch"  # unless METHOD_DEFAULTS says otherwise
    attack_fold_bn: bool = True
    attack_batch_steps: int = Field(0, ge=0)
    channels_last: bool = True
    amp: bool = False
    free_replays: int = Field(4, ge=1)
    attack_dtype: Literal["float32", "bfloat16"] = "float32"
    compile: bool = False
    quant: QuantRecipe = Field(default_factory=QuantRecipe)
    admm_retrain_fraction: float = Field(ADMM_RETRAIN_FRACTION, ge=0, lt=1)  # prune_scheme admm: masked retraining after the hard prune

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        """Fills the fields a recipe leaves out whose default depends on its method
        (:data:`METHOD_DEFAULTS`)."""
        if isinstance(data, dict) and "attack_bn" not in data:
            method = data.get("method", cls.model_fields["method"].default)
            defaults = dict(METHOD_DEFAULTS.get(method, {}))
            if defaults.get("attack_batch_steps") and "attack_batch_steps" not in data:
                attack = data.get("attack", cls.model_fields["attack"].default_factory())  # type: ignore[misc]
                steps = attack.get("steps", AttackConfig.steps) if isinstance(attack, dict) else None
                if isinstance(steps, int) and not isinstance(steps, bool):
                    defaults["attack_batch_steps"] = max(0, min(defaults["attack_batch_steps"], steps - 1))
            data = {**defaults, **data}
        return data

    @field_validator("milestones")
    @classmethod
    def _check_milestones(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m < 1 for m in value) or list(value) != sorted(value):
            raise ValueError("milestones are increasing fractions of the epochs in (0, 1)")
        return value

    @field_validator("attack_dtype")
    @classmethod
    def _check_attack_dtype(cls, value: str, info: ValidationInfo) -> str:
        if value != "float32" and info.data.get("method") == "free":
            raise ValueError("method free crafts in its training pass, which stays float32 (use pgd_at, trades or fast_at)")
        return value

    @field_validator("attack")
    @classmethod
    def _check_attack(cls, value: dict[str, Any]) -> dict[str, Any]:
        AttackConfig.from_dict(value)
        return value

    @field_validator("attack_batch_steps")
    @classmethod
    def _check_attack_batch_steps(cls, value: int, info: ValidationInfo) -> int:
        if value == 0:
            return value
        if info.data.get("method") not in ("pgd_at", "trades"):
            raise ValueError("applies to the multi-step training attacks of methods pgd_at and trades")
        if info.data.get("attack_bn") == "batch":
            raise ValueError("with attack_bn batch every step already uses batch statistics (set attack_bn frozen_batch or eval)")
        steps = AttackConfig.from_dict(info.data["attack"]).steps if "attack" in info.data else None
        if steps is not None and value >= steps:
            raise ValueError(f"must be below the training attack's steps ({steps}); use attack_bn batch for all of them")
        return value

    def train_attack(self) -> AttackConfig:
        """The training attack (kept apart from the evaluation attack)."""
        return AttackConfig.from_dict(self.attack)

    @classmethod
    def parse(cls, data: dict[str, Any], *, where: str = "recipe") -> Recipe:
        """Validates a mapping, raising a one-line :class:`SpecError` naming the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise SpecError(one_line_error(err, where=where)) from err
        except SpecError as err:
            raise SpecError(f"{where}: attack: {err}") from err


#: Per-dataset defaults. digits: a 2-epoch warmup and gradient-norm clipping at 2 keep small-batch
#: training of MobileNet-tiny on 8x8 inputs stable (TRADES with beta 6 diverged without them);
#: on the CIFAR-10 subset, 2 TRADES epochs reached 0.180 test accuracy with them and 0.087 without.
#: 8x8 images, eps 0.1 (about 25/255; digits pixels take 17 levels, so
#: 8/255 is below one grey level and means nothing there). CIFAR: seed 000's settings.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {
        "recipe": {
            "method": "pgd_at",
            "epochs": 20,
            "warmup_epochs": 2,
            "grad_clip": 2.0,
            "batch_size": 64,
            "lr": 0.05,
            "weight_decay": 5e-4,
            "attack": {"name": "pgd", "eps": 0.1, "step_size": 0.025, "steps": 7},
        },
        "eval": {"name": "pgd", "eps": 0.1, "step_size": 0.025, "steps": 20},
    },
    "cifar10": {
        "recipe": {
            "method": "trades",
            "epochs": 100,
            "warmup_epochs": 1,
            "grad_clip": 2.0,
            "batch_size": 128,
            "lr": 0.1,
            "weight_decay": 5e-4,
            "attack": {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10},
        },
        "eval": {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 20},
    },
}
_DEFAULTS["cifar100"] = _DEFAULTS["cifar10"]


def default_recipe(dataset: str, **overrides: Any) -> Recipe:
    """The default recipe of a data set, with ``overrides`` applied."""
    return Recipe.parse({**_DEFAULTS[dataset]["recipe"], **overrides})


def default_eval_attack(dataset: str) -> dict[str, Any]:
    """The data set's default evaluation attack (PGD-20 at the data set's eps), as plain fields.

    ``objectives.EvalSettings(attack=AttackConfig.from_dict(default_eval_attack(name)))`` is the
    data set's default evaluation.
    """
    return dict(_DEFAULTS[dataset]["eval"])
