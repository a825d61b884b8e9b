"""The study runner: an Optuna multi-objective sampler drives Ray Tune trials.

Why a searcher of our own rather than Ray's ``OptunaSearch``: OptunaSearch cannot hand
constraints to the sampler, stores only objective values in the Optuna trial (the candidate,
further metrics and per-epoch history stay in Ray's results), and wants an ``RDBStorage``
object rather than a URL. The searcher built by :func:`_searcher_class` is a thin ask/tell
adapter instead (a Ray ``Searcher`` subclass made lazily, so importing this module does not
import Ray): ``study.ask()``
plus the define-by-run space give a candidate; Ray Tune runs it; ``study.tell()`` records
values, constraint values, metrics, history and failures in the Optuna storage, so
``optuna-dashboard STORAGE`` shows the study and ``dse resume`` can continue it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from dse.errors import SpecError
from dse.study.config import StudyConfig, eval_settings_for
from dse.study.storage import make_sampler, open_study

__all__ = ["StudyOutcome", "run_study"]

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the driver stopped before the trial finished"
#: How often in a row the sampler may propose already-scored candidates before the space counts as exhausted.
MAX_REPEATED_ASKS = 50
#: Trial attributes that the gradient-masking checks and suites leave (copied to reused repeats).
MASKING_ATTRS = ("masking_flags", "masking_checks", "suite_per_attack")


def _counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "duplicates": sum(t.state == TrialState.COMPLETE and "duplicate_of" in t.user_attrs for t in trials),
        "failed": sum(t.state == TrialState.FAIL and t.user_attrs.get("error") != INTERRUPTED for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
    }


def finished_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: complete (not a repeat of another candidate), or
    failed for a reason of their own."""
    c = _counts(study)
    return c["complete"] - c["duplicates"] + c["failed"]


def recover_interrupted(study: optuna.Study) -> int:
    """Marks trials left RUNNING by a stopped driver as failed (``interrupted``) and queues their
    candidates again, so nothing completed is lost or repeated and nothing interrupted is dropped."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "error", INTERRUPTED)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        n += 1
    if n:
        logger.warning("marked %d interrupted trial(s) as failed and queued their candidates again", n)
    return n


def _pareto_size(study: optuna.Study) -> int:
    """Distinct candidates on the feasible front (reused repeats are not counted again)."""
    feasible = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "duplicate_of" not in t.user_attrs and all(v <= 0 for v in t.user_attrs.get("constraint_values", []))
    ]
    if not feasible:
        return 0
    from dse.study.pareto import non_dominated_mask
    import numpy as np

    values = np.array([t.values for t in feasible], dtype=float)
    return int(non_dominated_mask(values, [d.name.lower() for d in study.directions]).sum())


class _Progress:
    """Trials done / running / failed and the Pareto-set size, on stderr (tqdm bar when a TTY)."""

    def __init__(self, study: optuna.Study, total: int) -> None:
        import sys

        from tqdm import tqdm

        self.study, self.total = study, total
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=min(finished_trials(study), total), unit="trial", desc=study.study_name, dynamic_ncols=True)
        self.last = ""

    def update(self, note: str = "") -> None:
        if self.bar is None and note:  # without a TTY only finished trials are logged: skip the storage scan
            return
        c = _counts(self.study)
        done = c["complete"] - c["duplicates"] + c["failed"]
        status = f"running={c['running']} failed={c['failed']} pareto={_pareto_size(self.study)}"
        if self.bar is not None:
            self.bar.n = min(done, self.total)
            self.bar.set_postfix_str(status + (f" {note}" if note else ""))
            self.bar.refresh()
        elif status + str(done) != self.last:  # no TTY: one log line per finished trial
            self.last = status + str(done)
            logger.info("%s: %d/%d trials done, %s", self.study.study_name, done, self.total, status)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _searcher_class():
    """The ask/tell Ray Tune searcher class backed by an Optuna study, so constraints reach the sampler."""
    from ray.tune.search import Searcher

    from search_spaces import suggest

    class _AskTell(Searcher):
        def __init__(self, study: optuna.Study, config: StudyConfig, budget: int, progress: _Progress | None) -> None:
            super().__init__(metric=None, mode=None)
            self.study, self.config, self.budget, self.progress = study, config, budget, progress
            self.study_dict = config.to_dict()
            self.live: dict[str, optuna.Trial] = {}
            self.waiting: dict[str, list[optuna.Trial]] = {}
            self.asked = 0

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            if self.asked >= self.budget:
                return Searcher.FINISHED
            for _ in range(MAX_REPEATED_ASKS):
                trial = self.study.ask()
                try:
                    candidate = suggest(self.config.space.name, trial, self.config.space.options)
                    candidate = {**candidate, **self.config.space.fixed}
                except Exception as err:
                    self._fail(trial, f"search space: {type(err).__name__}: {err}")
                    raise
                trial.set_user_attr("candidate", candidate)
                previous = self._completed_with(candidate)
                running = next((tid for tid, t in self.live.items() if t.user_attrs.get("candidate") == candidate), None)
                if previous is not None:
                    self._tell_repeat(trial, previous)
                elif running is not None:  # the same candidate is being trained: take its result when it ends
                    self.waiting.setdefault(running, []).append(trial)
                else:
                    break
            else:
                logger.warning("the sampler proposed only already-scored candidates %d times: the space looks exhausted", MAX_REPEATED_ASKS)
                return Searcher.FINISHED
            self.live[trial_id] = trial
            self.asked += 1
            ckpt = None if self.config.is_tabular else str((self.config.out_dir() / "trials" / f"{trial.number:04d}.pt").resolve())
            if ckpt:
                trial.set_user_attr("checkpoint", ckpt)
            return {"candidate": candidate, "study": self.study_dict, "number": trial.number, "checkpoint": ckpt}

        def _completed_with(self, candidate: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if t.user_attrs.get("candidate") == candidate and "duplicate_of" not in t.user_attrs:
                    return t
            return None

        def _tell_repeat(self, trial: optuna.Trial, previous: optuna.trial.FrozenTrial) -> None:
            """A candidate already scored: reuse its result instead of training it again."""
            for key in ("metrics", "constraint_values", "measurement", "checkpoint", "history", "node", *MASKING_ATTRS):
                if key in previous.user_attrs:
                    trial.set_user_attr(key, previous.user_attrs[key])
            for key, value in previous.user_attrs.get("constraint_names", {}).items():
                trial.set_constraint(key, value)
            trial.set_user_attr("duplicate_of", previous.number)
            self.study.tell(trial, previous.values)
            logger.info("trial %d repeats trial %d's candidate: its result is reused", trial.number, previous.number)

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the state lives in the Optuna storage (``dse resume`` reads it)."""

        def restore(self, checkpoint_path: str) -> None:
            """See :meth:`save`."""

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            trial = self.live.get(trial_id)
            if trial is None or result.get("done_trial"):
                return
            keys = ("epoch", "lr", "train_loss", "train_acc", "epoch_seconds", "val_natural_acc", "val_robust_acc", "val_pert_instability")
            row = {k: float(result[k]) for k in keys if k in result}
            history = list(trial.user_attrs.get("history", [])) + [row]
            trial.set_user_attr("history", history)
            if self.progress:
                self.progress.update(f"#{trial.number} epoch {row.get('epoch', 0):.0f}")

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            trial = self.live.pop(trial_id, None)
            if trial is None:
                return
            if result and result.get("node"):
                trial.set_user_attr("node", str(result["node"]))
            if error or result is None or not result.get("done_trial"):
                reason = (result or {}).get("error") or "the Ray trial errored or stopped before reporting its result"
                self._fail(trial, reason, (result or {}).get("traceback"))
            elif result.get("error"):
                self._fail(trial, result["error"], result.get("traceback"))
            else:
                self._complete(trial, result)
            finished = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            for repeat in self.waiting.pop(trial_id, []):
                if finished.state == TrialState.COMPLETE:
                    self._tell_repeat(repeat, finished)
                else:
                    self._fail(repeat, f"repeats trial {trial.number}'s candidate, which failed: {finished.user_attrs.get('error')}")
            if self.progress:
                self.progress.update()

        def _fail(self, trial: optuna.Trial, reason: str, tb: str | None = None) -> None:
            logger.error("trial %d failed: %s", trial.number, reason)
            trial.set_user_attr("error", reason)
            if tb:
                trial.set_user_attr("traceback", tb[-4000:])
            self.study.tell(trial, state=TrialState.FAIL)

        def _complete(self, trial: optuna.Trial, result: dict[str, Any]) -> None:
            names = self.config.recorded_names()
            metrics = {n: float(result[n]) for n in names if n in result}
            values = [metrics.get(n, math.nan) for n in self.config.objective_names()]
            if any(not math.isfinite(v) for v in values):
                return self._fail(trial, f"objective values are not finite: {dict(zip(self.config.objective_names(), values))}")
            violations: list[float] = []
            names: dict[str, float] = {}
            for i, con in enumerate(self.config.constraints):
                for j, v in enumerate(con.violations(metrics[con.metric])):
                    names[f"{i}.{j}:{con.describe()}"] = v
                    trial.set_constraint(f"{i}.{j}:{con.describe()}", v)  # <= 0 means feasible
                    violations.append(v)
            trial.set_user_attr("constraint_names", names)
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("constraint_values", violations)
            trial.set_user_attr("measurement", str(result.get("measurement", "")))
            trial.set_user_attr("duration_s", float(result.get("duration_s", math.nan)))
            if "masking_checks" in result:
                checks = json.loads(result["masking_checks"])
                trial.set_user_attr("masking_flags", checks["masking_flags"])
                trial.set_user_attr("masking_checks", checks["checks"])
                if checks["masking_flags"]:
                    logger.warning("trial %d: gradient-masking checks failed: %s", trial.number, ", ".join(checks["masking_flags"]))
            if "suite_per_attack" in result:
                trial.set_user_attr("suite_per_attack", json.loads(result["suite_per_attack"]))
            self.study.tell(trial, values)

    return _AskTell


class StudyOutcome(dict):
    """What a run ended with: distinct complete trials, repeats (reused results), failed trials,
    the Pareto-set size, the storage and the table paths."""


def _init_ray(config: StudyConfig, address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if ray.is_initialized():
        return
    address = address or config.execution.address
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=config.execution.num_cpus or os.cpu_count(), **kwargs)


def run_study(
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    address: str | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> StudyOutcome:
    """Runs (or resumes) a study until its budget of finished trials is reached.

    Args:
        config: The validated study file.
        n_trials: Overrides ``budget.n_trials`` (the total, counting trials already finished).
        storage: Overrides the storage URL.
        address: A Ray cluster address (``ray start --head`` prints it); default: local Ray.
        resume: Continue an existing study; without it, a study that already has trials is an error.
        show_progress: Show the progress bar.

    Returns:
        Counts of complete/failed trials, the Pareto-set size and the table paths.
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from dse.study.trial import run_trial
    from dse.study.tables import write_tables

    study = open_study(config, storage)
    existing = study.get_trials(deepcopy=False)
    if existing and not resume:
        raise SpecError(
            f"study {config.name!r} already has {len(existing)} trials in {storage or config.storage_url()}; "
            "continue it with `dse resume`, or change name/storage"
        )
    if not existing:
        study.set_user_attr("config", config.to_dict())
    recover_interrupted(study)
    total = n_trials or config.budget.n_trials
    remaining = total - finished_trials(study)
    out_dir = config.out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    if remaining > 0:
        _init_ray(config, address)
        progress = _Progress(study, total) if show_progress else None
        searcher = _searcher_class()(study, config, remaining, progress)
        ex = config.execution
        trainable = tune.with_resources(run_trial, {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=ex.concurrency),
                num_samples=remaining,
                time_budget_s=config.budget.wall_time,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str((out_dir / "ray").resolve()),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            ),
        )
        try:
            tuner.fit()
        finally:
            if progress:
                progress.close()
    else:
        logger.info("study %s already has %d finished trials (budget %d): nothing to run", config.name, total - remaining, total)
    paths = write_tables(study, config)
    c = _counts(study)
    return StudyOutcome(
        complete=c["complete"] - c["duplicates"],
        repeats=c["duplicates"],
        failed=c["failed"],
        pareto=_pareto_size(study),
        storage=storage or config.storage_url(),
        **paths,
    )
