"""What one Ray Tune trial runs: build the candidate, train it, score it, report.

Kept apart from the driver so that Ray workers import only what a trial needs.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["eval_ladder", "evaluate_candidate", "replay_ladder", "run_trial"]

logger = logging.getLogger(__name__)


def evaluate_candidate(candidate: dict[str, Any], study: dict[str, Any], report, checkpoint: Path | None = None) -> dict[str, Any]:
    """Trains and scores one candidate (or looks it up, for tabular studies).

    Args:
        candidate: The candidate spec.
        study: The study config as plain data (``StudyConfig.to_dict()``).
        report: Called with each epoch's metrics.
        checkpoint: Where to save the trained model (None: not saved).

    Returns:
        Every objective and recorded metric, plus ``measurement`` (how it was measured).
    """
    from dse.study.config import StudyConfig, eval_settings_for

    config = StudyConfig.model_validate(study)
    names = config.recorded_names()
    if config.is_replay:
        from search_spaces.replay import load_table

        table = load_table(config.space.options["table"])
        return table.replay(candidate, names, report, ladder=replay_ladder(config), time_scale=float(config.space.options.get("time_scale", 0.0)))
    if config.is_tabular:
        from objectives import evaluate_lookup

        assert config.lookup is not None
        scores = evaluate_lookup(candidate, names, root=config.lookup.root, dataset=config.lookup.dataset)
        return {**scores, "measurement": f"published results ({config.lookup.dataset}, Jung et al. 2023)"}

    from dse.checkpoint import save_checkpoint
    from dse.pipeline import cached_dataset, train_candidate
    from dse.training import default_recipe, resolve_device
    from objectives import FREE_OBJECTIVES, check_masking, evaluate_objectives, measurement

    data = config.data
    dataset = cached_dataset(data.dataset, data.root, data.subset, data.val_fraction, data.seed)
    recipe = default_recipe(data.dataset, **config.recipe)
    settings = eval_settings_for(config)
    device = resolve_device()
    model, history = train_candidate(
        candidate, dataset, recipe, settings=settings, device=device, callback=report,
        ladder=eval_ladder(config, settings), free=[n for n in names if n in FREE_OBJECTIVES],
    )
    val = dataset.val.to(device)
    cache: dict[str, Any] = {}
    scores = evaluate_objectives(model, val, settings, names, cache=cache)
    extra: dict[str, Any] = {}
    if settings.checks.enabled:
        checks = check_masking(model, val, settings, cache=cache)
        extra = {"masking_flags": ";".join(checks["masking_flags"]), "masking_checks": json.dumps(checks, default=float)}
    if "suite" in cache:
        extra["suite_per_attack"] = json.dumps({k: v["robust_acc"] for k, v in cache["suite"]["per_attack"].items()})
    if checkpoint is not None:
        save_checkpoint(
            checkpoint, model, candidate=candidate, data=data.model_dump(), recipe=recipe.model_dump(mode="json"),
            eval=settings.to_dict(), history=history, metrics=dict(scores),
            masking=json.loads(extra["masking_checks"]) if "masking_checks" in extra else None,
        )
    m = measurement(settings, val)
    return {**scores, **extra, "measurement": f"{m['attack']} on {m['samples']} validation samples (seed {m['seed']})"}


def eval_ladder(config, settings):
    """The study's attack-strength ladder as :class:`dse.pipeline.EvalLadder` (None without one)."""
    from dse.epoch_eval import EvalLadder, ladder_settings

    rung_eval = config.scheduler.rung_eval
    if rung_eval is None:
        return None
    rungs = config.rung_epochs() or [config.max_epochs()]
    samples = rung_eval.samples or [None] * len(rung_eval.steps)
    pairs = tuple((rungs[min(i, len(rungs) - 1)], ladder_settings(settings, s, n)) for i, (s, n) in enumerate(zip(rung_eval.steps, samples)))
    replace_until = pairs[-1][0] if config.scheduler.name == "mo_asha" else 0
    return EvalLadder(settings=pairs, replace_until=replace_until)


def replay_ladder(config) -> int | None:
    """For a replayed study: the last epoch at which the table's ladder columns stand in for the
    full per-epoch ones (None: the ladder is not used)."""
    rung_eval = config.scheduler.rung_eval
    if rung_eval is None or config.scheduler.name != "mo_asha":
        return None
    rungs = config.rung_epochs()
    return rungs[min(len(rung_eval.steps), len(rungs)) - 1]


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: reports every epoch, then a final result with ``done_trial``.

    An exception is reported as ``error`` (type, message and traceback) so that the searcher
    records the trial as failed with its reason; the study goes on.
    """
    import ray
    from ray import tune

    start = time.perf_counter()
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    checkpoint = Path(config["checkpoint"]) if config.get("checkpoint") else None

    def report(metrics: dict[str, float]) -> None:
        tune.report({**metrics, "done_trial": 0})

    try:
        scores = evaluate_candidate(config["candidate"], config["study"], report, checkpoint)
    except Exception as err:  # recorded as the trial's failure reason by the searcher, never dropped
        tune.report({"done_trial": 1, "node": node, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})
        return
    tune.report({**scores, "done_trial": 1, "node": node, "duration_s": time.perf_counter() - start})
