"""The study runner: an Optuna multi-objective sampler drives Ray Tune trials.

The searcher (:mod:`dse.study.searcher`) asks the Optuna study for candidates and tells it the
results; the scheduler (``fifo``, or ``mo_asha`` from :mod:`dse.study.scheduling`) decides after
each epoch whether a trial goes on. Everything lives in the Optuna storage, so ``dse resume``
continues a study after any stop: interrupted trials run again, finished and stopped ones do not,
and the early-stopping rungs are rebuilt from the recorded histories.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from dse.errors import SpecError
from dse.study.config import StudyConfig
from dse.study.scheduling import MultiObjectiveASHA, rung_vector
from dse.study.drivers import Heartbeat, budget_used, driver_id, finished_trials, recover_interrupted, release, retry_failed, trial_counts
from dse.study.searcher import searcher_class
from dse.study.summary import best_so_far, pareto_size
from dse.study.storage import make_sampler, open_study

__all__ = ["StudyOutcome", "finished_trials", "make_scheduler", "recover_interrupted", "run_study"]

logger = logging.getLogger(__name__)


class _Progress:
    """Trials done / running / failed and the Pareto-set size, on stderr (tqdm bar when a TTY)."""

    def __init__(self, study: optuna.Study, total: int, config: StudyConfig) -> None:
        import sys

        from tqdm import tqdm

        self.study, self.total, self.config = study, total, config
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=min(finished_trials(study), total), unit="trial", desc=study.study_name, dynamic_ncols=True)
        self.last = ""

    def update(self, note: str = "") -> None:
        if self.bar is None and note:  # without a TTY only finished trials are logged: skip the storage scan
            return
        c = trial_counts(self.study)
        done = c["complete"] - c["duplicates"] + c["stopped"] + c["failed"]
        status = f"running={c['running']} stopped={c['stopped']} failed={c['failed']} pareto={pareto_size(self.study)}"
        best = best_so_far(self.study, self.config)
        status += f"; {best}" if best else ""
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


class StudyOutcome(dict):
    """What a run ended with: distinct complete trials, repeats (reused results), trials stopped
    early and the epochs that saved, failed trials (and failed ones retried), the Pareto-set size, the storage and the table paths."""


def make_scheduler(config: StudyConfig, study: optuna.Study | None = None) -> MultiObjectiveASHA | None:
    """The study's early-stopping rule (None for ``fifo``), its rungs rebuilt from ``study``'s
    complete and stopped trials (so a resumed study ranks against everything seen before)."""
    sch = config.scheduler
    if sch.name != "mo_asha":
        return None
    core = MultiObjectiveASHA(rungs=config.rung_epochs(), reduction_factor=sch.reduction_factor, tie_break=sch.tie_break)
    if study is None:
        return core
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if "duplicate_of" in t.user_attrs:
            continue
        free = {f"free_{k}": v for k, v in t.user_attrs.get("free_values", {}).items()}
        for row in t.user_attrs.get("history", []):
            epoch = int(row.get("epoch", 0))
            if epoch in core.records:
                record = rung_vector(config, {**row, **free})
                if record is not None:
                    core.record(t.number, epoch, record)
        if t.state == TrialState.PRUNED and "stopped_at_epoch" in t.user_attrs:
            core.stopped[t.number] = (int(t.user_attrs["stopped_at_epoch"]), dict(t.user_attrs.get("rung_values", {})))
    return core


def _init_ray(config: StudyConfig, address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray Tune's new console output prints its experiment banner, results path and a TensorBoard
    # hint to stdout whatever the verbosity; the legacy reporter at verbose=0 prints nothing (dse's
    # own progress lines and Pareto table say what matters; -v sets RAY_AIR_NEW_OUTPUT=1 back)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
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
    retry: bool = False,
    show_progress: bool = True,
) -> StudyOutcome:
    """Runs (or resumes) a study until its budget of finished trials is reached.

    Args:
        config: The validated study file.
        n_trials: Overrides ``budget.n_trials`` (the total, counting trials already finished).
        storage: Overrides the storage URL.
        address: A Ray cluster address (``ray start --head`` prints it); default: local Ray.
        resume: Continue an existing study; without it, a study that already has trials is an error.
        retry: With ``resume``: queue again the candidates of trials that failed (see
            :func:`~dse.study.drivers.retry_failed`); their failures stop counting against the budget.
        show_progress: Show the progress bar.

    Returns:
        Counts of complete/failed trials, the Pareto-set size and the table paths.
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from dse.study.claims import CandidateClaims
    from dse.study.scheduling import ray_scheduler
    from dse.study.trial import run_trial
    from dse.study.tables import write_tables

    study = open_study(config, storage, create=not resume)
    existing = study.get_trials(deepcopy=False)
    if existing and not resume:
        raise SpecError(
            f"study {config.name!r} already has {len(existing)} trials in {storage or config.storage_url()}; "
            "continue it with `dse resume`, or change name/storage"
        )
    if not existing:
        study.set_user_attr("config", config.to_dict())
    else:
        study.sampler = make_sampler(config, seed_offset=len(existing))
    ex = config.execution
    recover_interrupted(study, grace=ex.grace())  # only trials whose driver is gone; live drivers keep theirs
    if retry:
        if not resume:
            raise SpecError("retrying failed trials needs an existing study: use it with `dse resume`")
        retry_failed(study)
    total = n_trials or config.budget.n_trials
    remaining = total - budget_used(study)
    out_dir = config.out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    if remaining > 0:
        _init_ray(config, address)
        progress = _Progress(study, total, config) if show_progress else None
        core = make_scheduler(config, study)
        # room for the trials other drivers hold now: if one of them dies, its candidate is queued
        # again and this driver takes it; the shared total stops asking at the budget either way
        cap = remaining + trial_counts(study)["claimed"]
        claims = CandidateClaims(storage or config.storage_url(), config.name)
        searcher = searcher_class()(study, config, cap, progress, core, total=total, driver=driver_id(), claims=claims)
        trainable = tune.with_resources(run_trial, {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=ex.concurrency),
                scheduler=ray_scheduler(core, config) if core is not None else None,
                num_samples=cap,
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
            with Heartbeat(study, searcher.live_trial_ids, interval=ex.heartbeat_interval, grace=ex.grace()):
                tuner.fit()
        finally:
            release(study, searcher.live_trial_ids())  # a wall-time stop leaves trials unfinished
            claims.close()
            if progress:
                progress.close()
    else:
        logger.info("study %s already has %d finished or running trials (budget %d): nothing to run", config.name, total - remaining, total)
    paths = write_tables(study, config)
    c = trial_counts(study)
    return StudyOutcome(
        complete=c["complete"] - c["duplicates"],
        repeats=c["duplicates"],
        stopped=c["stopped"],
        rejected=c["rejected"],
        epochs_saved=c["epochs_saved"],
        failed=c["failed"],
        retried=c["retried"],
        pareto=pareto_size(study),
        storage=storage or config.storage_url(),
        **paths,
    )
