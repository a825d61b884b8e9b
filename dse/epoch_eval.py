"""Per-epoch validation while a candidate trains: the callback :func:`dse.training.train` takes,
the attack-strength ladder of early stopping, and the objectives known before training.

* :func:`epoch_evaluator`: :data:`EPOCH_METRICS` on the validation split after each epoch
  (``val_NAME`` in the history), and the ladder's cheaper ones (``val_rung_NAME``);
* :class:`EvalLadder`, :func:`ladder_settings`: fewer attack steps and samples at low rungs;
* :func:`free_objectives`: params, MACs, BOPS and size of a built (untrained) model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch
from torch import nn

from dse.data import DataSpec, Split
from dse.training import EpochEvaluator, Recipe
from objectives import OBJECTIVES, EvalSettings, evaluate_objectives

__all__ = ["EPOCH_METRICS", "EvalLadder", "epoch_evaluator", "free_objectives", "ladder_settings"]

#: The objectives scored on validation samples after each epoch (``val_`` prefixed in the history).
EPOCH_METRICS = ("natural_acc", "robust_acc", "pert_instability")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalLadder:
    """Cheaper per-epoch evaluation at low rungs (the attack-strength ladder of early stopping).

    Args:
        settings: ``(last_epoch, settings)`` pairs, increasing: epochs up to ``last_epoch`` use
            ``settings`` (the first pair whose ``last_epoch`` is >= the epoch).
        replace_until: Epochs up to this one skip the full per-epoch evaluation (early stopping
            ranks on the ladder there); 0 measures both at every epoch (to build benchmark tables).
            Past the last pair, the last pair's settings go on being measured unless replacing.
    """

    settings: tuple[tuple[int, EvalSettings], ...]
    replace_until: int = 0

    def at(self, epoch: int) -> EvalSettings | None:
        """The ladder's settings at ``epoch`` (None: none measured)."""
        for last, settings in self.settings:
            if epoch <= last:
                return settings
        return None if self.replace_until else self.settings[-1][1]


def ladder_settings(settings: EvalSettings, steps: int, samples: int | None) -> EvalSettings:
    """``settings`` with ``steps`` attack steps (step size at least ``2.5 * eps / steps``) on at
    most ``samples`` samples."""
    attack = settings.attack
    step_size = max(attack.step_size, 2.5 * attack.eps / steps) if steps < attack.steps else attack.step_size
    attack = dataclasses.replace(attack, steps=steps, step_size=step_size)
    return dataclasses.replace(settings, attack=attack, max_samples=samples or settings.max_samples)


def epoch_evaluator(settings: EvalSettings, recipe: Recipe, *, ladder: EvalLadder | None = None) -> EpochEvaluator:
    """The per-epoch validation callback for :func:`dse.training.train`: :data:`EPOCH_METRICS` under
    ``settings``, on at most ``recipe.eval_samples`` samples, plus ``eval_seconds``. With a
    ``ladder``, the ladder's metrics come as ``rung_NAME`` (and ``rung_eval_seconds``,
    ``rung_eval_steps``)."""
    if recipe.eval_samples is not None:
        settings = dataclasses.replace(settings, max_samples=recipe.eval_samples)

    def evaluate(model: nn.Module, split: Split, epoch: int) -> dict[str, float]:
        out: dict[str, float] = {}
        cheap = ladder.at(epoch) if ladder is not None else None
        if cheap is not None:
            start = time.perf_counter()
            scores = evaluate_objectives(model, split, cheap, names=EPOCH_METRICS)
            out.update({f"rung_{k}": v for k, v in scores.items()})
            out["rung_eval_seconds"] = time.perf_counter() - start
            out["rung_eval_steps"] = float(cheap.attack.steps)
            out["rung_eval_samples"] = float(len(cheap.samples(split)))
        if ladder is None or epoch > ladder.replace_until:
            start = time.perf_counter()
            out.update(evaluate_objectives(model, split, settings, names=EPOCH_METRICS))
            out["eval_seconds"] = time.perf_counter() - start
            out["eval_samples"] = float(len(settings.samples(split)))
        return out

    return evaluate


def free_objectives(model: nn.Module, spec: DataSpec, names: Sequence[str]) -> dict[str, float]:
    """The objectives among ``names`` known before training (:data:`objectives.FREE_OBJECTIVES`),
    measured on the untrained ``model``."""
    from objectives import FREE_OBJECTIVES

    wanted = [n for n in names if n in FREE_OBJECTIVES]
    if not wanted:
        return {}
    probe = Split(x=torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size), y=torch.zeros(1, dtype=torch.long))
    return {n: float(OBJECTIVES[n](model, probe, EvalSettings())) for n in wanted}
