"""Exporting a chosen trial as a candidate file that ``dse train`` takes as it is."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dse.errors import SpecError
from dse.io import atomic_write_text
from dse.study.config import StudyConfig
from dse.study.pareto import best_trial, knee_point, pareto_front
from dse.study.tables import load_tables, mark_pareto

logger = logging.getLogger(__name__)

__all__ = ["choose_trial", "export_candidate", "export_trial"]


def choose_trial(trials: pd.DataFrame, config: StudyConfig, *, trial: int | None = None, pick: str | None = None) -> int:
    """The trial number named by ``--trial N``, ``--pick knee`` or ``--pick best:OBJECTIVE``."""
    objectives = config.objective_specs()
    done = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
    if done.empty:
        raise SpecError(f"study {config.name!r} has no completed trial to export")
    if trial is not None:
        row = trials[trials["number"] == trial]
        if len(row) and row["state"].iloc[0] == "PRUNED":
            epoch = row["stopped_at_epoch"].iloc[0] if "stopped_at_epoch" in row else None
            raise SpecError(f"--trial {trial}: stopped early (PRUNED at epoch {epoch}); only completed trials can be exported")
        if trial not in set(done["number"]):
            raise SpecError(f"--trial {trial}: no completed trial with that number (completed: {sorted(done['number'])[:20]})")
        return int(trial)
    if pick == "knee":
        front = pareto_front(trials, objectives)
        if front.empty:
            raise SpecError("--pick knee: no feasible trial on the Pareto front")
        return int(knee_point(front, objectives))
    if pick and pick.startswith("best:"):
        name = pick.removeprefix("best:")
        recorded = config.recorded_names()
        if name not in recorded:
            raise SpecError(f"--pick best:{name}: not an objective or metric of this study ({', '.join(recorded)})")
        return int(best_trial(trials, name, config.direction_of(name)))
    raise SpecError(f"--pick {pick!r}: expected knee or best:OBJECTIVE")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


#: Recipe fields of the study that a full-training recipe keeps (how to train adversarially, and
#: how quantized candidates are trained: a warm start the search relied on must not vanish);
#: epochs, schedule and batch size come from the data set's full recipe.
_KEPT_FOR_FULL = (
    "method", "attack", "adv_weight", "mix_mode", "trades_beta", "fast_at_alpha", "free_replays", "attack_bn",
    "attack_batch_steps", "channels_last", "admm_retrain_fraction", "quant",
)


def resolved_recipe(config: StudyConfig, *, full: bool = False) -> dict[str, Any]:
    """Every recipe field, resolved: the study's search recipe over the data set's defaults, or
    (``full``) the data set's full-training recipe keeping the study's adversarial settings."""
    from dse.training import default_recipe

    fields = dict(config.recipe)
    if full:
        fields = {k: v for k, v in fields.items() if k in _KEPT_FOR_FULL}
    return default_recipe(config.data.dataset, **fields).model_dump(mode="json")


def export_candidate(
    trials: pd.DataFrame, config: StudyConfig, number: int, path: str | os.PathLike[str], *, storage: str,
    full: bool = False,
) -> dict[str, Any]:
    """Writes trial ``number``'s candidate with the data, fully resolved recipe and eval sections,
    and a ``source`` section saying where it came from (study, trial, repeat status, checkpoint,
    scores and how they were measured, dse and torch versions, which recipe the file holds)."""
    import torch

    from dse.version import VERSION
    from objectives import eval_settings

    row = trials.loc[trials["number"] == number].iloc[0]
    candidate = json.loads(row["candidate"])
    scores = {n: float(row[n]) for n in config.recorded_names() if n in row and not math.isnan(float(row[n]))}
    content: dict[str, Any] = dict(candidate)
    if not config.is_tabular:
        content["data"] = config.data.model_dump()
        content["recipe"] = resolved_recipe(config, full=full)
        content["eval"] = eval_settings(config.data.dataset, dict(config.eval or {})).to_dict()
    repeat_of = row.get("duplicate_of")
    checkpoint = row.get("checkpoint")
    content["source"] = {
        "study": config.name,
        "storage": storage,
        "trial": int(number),
        "repeat_of": None if _missing(repeat_of) else int(repeat_of),
        "pareto": bool(row.get("pareto", False)),
        "feasible": bool(row["feasible"]),
        "scores": scores,
        "measurement": row.get("measurement"),
        "checkpoint": None if _missing(checkpoint) or not checkpoint else str(checkpoint),
        "recipe": "none (tabular)" if config.is_tabular else (
            f"full training ({config.data.dataset}'s full recipe, the study's adversarial settings)" if full
            else "the study's search recipe (short); export with --full for full training"),
        "dse_version": VERSION,
        "torch_version": str(torch.__version__),
    }
    flags = row.get("masking_flags")
    if isinstance(flags, str):
        content["source"]["masking_flags"] = [f for f in flags.split(";") if f and f != "none"]
    rescored = {
        col.split(".")[1]: float(row[col]) for col in row.index
        if col.startswith("rescore.") and col.endswith(".robust_acc") and not _missing(row[col])
    }
    for suite in rescored:
        content["source"].setdefault("rescore", {})[suite] = {
            "robust_acc": rescored[suite],
            "masking_flags": [f for f in str(row.get(f"rescore.{suite}.masking_flags") or "").split(";") if f and f != "none"],
        }
    if content["source"].get("masking_flags") or any(r["masking_flags"] for r in content["source"].get("rescore", {}).values()):
        logger.warning("trial %d: gradient masking suspected; its robust accuracy may be overstated", number)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    how = (
        "a lookup-table candidate (published results), not trainable"
        if config.is_tabular
        else f"{'full-training' if full else 'search'} recipe; train it with: dse train {out.name}"
    )
    atomic_write_text(out, f"# exported from study {config.name} trial {number}; {how}\n" + yaml.safe_dump(content, sort_keys=False))
    return content


def export_trial(
    config: StudyConfig,
    path: str | os.PathLike[str],
    *,
    storage: str | None = None,
    trial: int | None = None,
    pick: str | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Writes the candidate file of trial ``trial`` or of the ``pick`` (``knee``, ``best:OBJECTIVE``);
    ``full`` swaps the study's short search recipe for the data set's full-training recipe.

    Returns:
        ``{"trial", "output", "scores", "repeat_of", "checkpoint", "recipe"}``.
    """
    trials, _, meta = load_tables(config, storage)
    number = choose_trial(mark_pareto(trials, config), config, trial=trial, pick=pick)
    content = export_candidate(trials, config, number, path, storage=meta["storage"], full=full)
    source = content["source"]
    return {"trial": number, "output": str(path), "scores": source["scores"], "repeat_of": source["repeat_of"],
            "checkpoint": source["checkpoint"], "recipe": source["recipe"]}
