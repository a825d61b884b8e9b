"""Re-score a finished study's Pareto set with a stronger attack suite.

A search scores thousands of candidates with a cheap attack (PGD-20); the front it ends with is only
as trustworthy as that attack. ``dse rescore STUDY.yaml --suite standard`` loads every front point's
checkpoint, evaluates it with the suite (worst case per sample), runs the gradient-masking checks,
the eps and step-size curves and the transfer matrix between the front points, and records:

* in the study storage (study user attribute ``rescore``): per trial and suite, the re-scored robust
  accuracy, its drop from the search's figure, the per-attack accuracies and the masking flags (the
  trials table, the report and exports read them from there);
* in ``runs/NAME/rescore-SUITE.json``: all of it, curves and transfer matrix included.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from dse.errors import SpecError
from dse.io import atomic_write_text
from dse.study.config import StudyConfig, eval_settings_for
from dse.study.storage import open_study
from dse.study.tables import rescore_path, trials_frame

__all__ = ["rescore_study"]

logger = logging.getLogger(__name__)


def _front_numbers(study, config: StudyConfig) -> list[int]:
    from dse.study.pareto import pareto_mask

    trials = trials_frame(study, config)
    if not len(trials):
        return []
    mask = pareto_mask(trials, config.objective_specs()).to_numpy()
    if "duplicate_of" in trials.columns:  # repeats reuse an earlier trial's model: score it once
        mask &= trials["duplicate_of"].isna().to_numpy()
    return [int(n) for n in trials.loc[mask, "number"]]


def rescore_study(
    config: StudyConfig,
    *,
    suite: str = "standard",
    storage: str | None = None,
    trials: list[int] | None = None,
    split: str = "val",
    cascade: bool = False,
    checks: bool = True,
    curves: bool = True,
    transfer: bool = True,
    max_samples: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Re-scores the Pareto set (or ``trials``) of a study with ``suite``.

    Args:
        config: The study.
        suite: ``quick``, ``standard`` or ``full`` (see :mod:`dse.robust.suites`).
        storage: Storage URL overriding the study file's.
        trials: Trial numbers to re-score (default: the Pareto set of complete, feasible trials).
        split: ``val`` (the samples the search selected on) or ``test``.
        cascade: Run each attack only on samples still robust.
        checks: Run the gradient-masking checks.
        curves: Compute the eps and step-size curves per trial.
        transfer: Compute the transfer matrix between the re-scored models (two or more).
        max_samples: Attack at most this many samples (default: the study's ``eval.max_samples``).
        device: Torch device (default: CUDA when present).

    Returns:
        ``{"suite", "split", "path", "trials": [{number, robust_acc, search_robust_acc, drop,
        per_attack, masking_flags, ...}], "transfer": ...}``.

    Raises:
        SpecError: A tabular study (nothing to attack), an unknown trial or a trial without checkpoint.
    """
    from dse.pipeline import cached_dataset, model_from_checkpoint, split_of
    from dse.robust.robustness import robustness_report
    from dse.training import resolve_device

    if config.is_tabular:
        raise SpecError(f"{config.name}: a lookup study has no models to attack")
    if split not in ("val", "test"):
        raise SpecError(f"split: must be val or test, got {split!r}")
    study = open_study(config, storage, create=False)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    numbers = trials if trials is not None else _front_numbers(study, config)
    if not numbers:
        raise SpecError(f"{config.name}: no complete trial to re-score")
    data = config.data
    dataset = cached_dataset(data.dataset, data.root, data.subset, data.val_fraction, data.seed)
    samples = split_of(dataset, split)
    settings = eval_settings_for(config)
    changes: dict[str, Any] = {"suite": suite, "cascade": cascade}
    if max_samples is not None:
        changes["max_samples"] = max_samples
    settings = dataclasses.replace(settings, **changes)
    dev = resolve_device(device)
    samples = samples.to(dev)
    rows: list[dict[str, Any]] = []
    models: dict[str, torch.nn.Module] = {}
    for number in numbers:
        trial = by_number.get(number)
        if trial is None:
            raise SpecError(f"trials: no trial {number} in study {config.name}")
        path = trial.user_attrs.get("checkpoint")
        if not path or not Path(path).is_file():
            raise SpecError(f"trials: trial {number} has no checkpoint ({path or 'none recorded'})")
        model, payload = model_from_checkpoint(path, device=dev)
        logger.info("re-scoring trial %d with the %s suite (%d of %d)", number, suite, len(rows) + 1, len(numbers))
        report = robustness_report(model, samples, settings, curves=curves, checks=checks)
        search = trial.user_attrs.get("metrics", {}).get("robust_acc")
        rows.append({
            "number": number,
            "candidate": trial.user_attrs.get("candidate", payload["candidate"]),
            "checkpoint": path,
            "search_robust_acc": search,
            "search_measurement": trial.user_attrs.get("measurement"),
            "drop": (search - report["robust_acc"]) if search is not None else None,
            **report,
        })
        models[f"trial {number}"] = model
    result: dict[str, Any] = {"study": config.name, "suite": suite, "split": split, "trials": rows}
    if transfer and len(models) >= 2:
        from dse.robust.transfer import transfer_matrix

        result["transfer"] = transfer_matrix(models, samples, attack=settings.attack, batch_size=settings.batch_size,
                                             max_samples=settings.max_samples, seed=settings.seed)
    path = rescore_path(config, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1, default=float) + "\n")
    summary = dict(study.user_attrs.get("rescore", {}))
    summary[suite] = {
        str(r["number"]): {
            "robust_acc": r["robust_acc"], "drop": r["drop"], "per_attack": r["per_attack"],
            "masking_flags": r["masking_flags"], "measurement": r["measurement"], "split": split,
        }
        for r in rows
    }
    study.set_user_attr("rescore", summary)
    flagged = [r["number"] for r in rows if r["masking_flags"]]
    if flagged:
        logger.warning("gradient-masking checks failed for trials %s", flagged)
    return {
        "suite": suite,
        "split": split,
        "path": str(path),
        "trials": [
            {k: r[k] for k in ("number", "search_robust_acc", "robust_acc", "drop", "per_attack", "masking_flags")}
            for r in rows
        ],
        "transfer": result.get("transfer"),
    }
