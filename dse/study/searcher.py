"""The ask/tell Ray Tune searcher: an Optuna study proposes candidates, Ray Tune runs them.

Why not Ray's ``OptunaSearch``: it cannot hand constraints to the sampler, stores only objective
values in the Optuna trial (the candidate, further metrics and per-epoch history stay in Ray's
results), and wants an ``RDBStorage`` object rather than a URL. This searcher is a thin adapter
instead: ``study.ask()`` plus the define-by-run space give a candidate; Ray Tune runs it;
``study.tell()`` records values, constraint values, metrics, history and failures in the Optuna
storage, so ``optuna-dashboard STORAGE`` shows the study and ``dse resume`` can continue it.
Trials the early-stopping scheduler stopped are told PRUNED (never COMPLETE, so never on a front).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from dse.study.claims import CandidateClaims
from dse.study.config import StudyConfig
from dse.study.drivers import budget_used, finished_trials
from dse.study.grid_sampler import GAVE_WAY, ListedGridSampler
from dse.study.scheduling import MultiObjectiveASHA

__all__ = ["HISTORY_KEYS", "MASKING_ATTRS", "MAX_REPEATED_ASKS", "STOP_ATTRS", "constraint_breaches", "history_row", "known_metrics", "precheck_values", "record_constraints", "searcher_class"]

logger = logging.getLogger(__name__)

#: How often in a row the sampler may propose already-scored candidates before the space counts as exhausted.
MAX_REPEATED_ASKS = 50
#: How many candidates in a row may break a constraint on a free objective before the feasible space counts as exhausted.
MAX_REFUSALS = 500
#: Trial attributes that the gradient-masking checks and suites leave (copied to reused repeats).
MASKING_ATTRS = ("masking_flags", "masking_checks", "suite_per_attack")
#: Trial attributes of a trial stopped early (copied to reused repeats).
STOP_ATTRS = ("stopped_at_epoch", "rung_values", "epochs_saved", "free_values")
#: Per-epoch keys kept in a trial's history, besides every ``val_*`` (validation, ladder, timing).
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "epoch_seconds")


def known_metrics(config: StudyConfig) -> list[str]:
    """The study's objectives and constrained metrics that are known before training: params, MACs,
    BOPS, size of a trained space; ``nb201_params`` of a tabular cell."""
    from objectives import FREE_OBJECTIVES

    names = list(dict.fromkeys([*config.objective_names(), *(c.metric for c in config.constraints)]))
    if config.is_tabular:
        return [] if config.is_replay or config.lookup is None else [n for n in names if n == "nb201_params"]
    return [n for n in names if n in FREE_OBJECTIVES]


def precheck_values(config: StudyConfig, candidate: dict[str, Any], metrics: list[str] | None = None) -> dict[str, float]:
    """``metrics`` of ``candidate`` that are known before training, computed now (default: the
    constrained ones). Empty when none is asked for or known."""
    known = known_metrics(config)
    wanted = sorted({c.metric for c in config.constraints} if metrics is None else set(metrics))
    wanted = [m for m in wanted if m in known]
    if not wanted:
        return {}
    if config.is_tabular:
        from objectives import evaluate_lookup

        return evaluate_lookup(candidate, wanted, root=config.lookup.root, dataset=config.lookup.dataset)
    from dse.data import dataset_spec
    from dse.epoch_eval import free_objectives
    from dse.pipeline import build_for

    spec = dataset_spec(config.data.dataset)
    return free_objectives(build_for(candidate, spec), spec, wanted)


def constraint_breaches(config: StudyConfig, values: dict[str, float]) -> str | None:
    """Why ``values`` break the study's constraints, in one line (None: they do not)."""
    broken = []
    for con in config.constraints:
        if con.metric in values and any(v > 0 for v in con.violations(values[con.metric])):
            broken.append(f"{con.metric} = {values[con.metric]:.6g} breaks {con.describe()}")
    return "; ".join(broken) or None


def record_constraints(study: optuna.Study, trial: optuna.Trial, values: list[float]) -> None:
    """Records a trial's constraint values (each <= 0 when met) where every Optuna sampler and
    optuna-dashboard read them: the ``constraints`` list system attribute. (Optuna 5's
    ``Trial.set_constraint`` writes one ``constraints:NAME`` key each, which samplers read but
    optuna-dashboard 0.21 does not; the names live in the ``constraint_names`` user attribute.)"""
    study._storage.set_trial_system_attr(trial._trial_id, "constraints", [float(v) for v in values])


def history_row(result: dict[str, Any]) -> dict[str, float]:
    """The part of one epoch's result that the trial's ``history`` keeps."""
    return {k: float(v) for k, v in result.items() if (k in HISTORY_KEYS or k.startswith("val_")) and v is not None}


def searcher_class():
    """The ask/tell Ray Tune searcher class backed by an Optuna study, so constraints reach the sampler.

    Made on first call (so importing this module does not import Ray). Its instances take the
    study, the config, the budget of trials to ask, an optional progress display, an optional
    :class:`~dse.study.scheduling.MultiObjectiveASHA` whose stopped trials it records as PRUNED,
    the study's total budget (shared with other drivers: asking stops once finished plus claimed
    trials in the storage reach it), this driver's id (recorded as ``driver`` on the trials it
    trains; see :mod:`dse.study.drivers`) and the study's :class:`~dse.study.claims.CandidateClaims`
    (None for an in-memory study with one driver).
    """
    from ray.tune.search import Searcher

    from search_spaces import suggest

    class _AskTell(Searcher):
        def __init__(self, study: optuna.Study, config: StudyConfig, budget: int, progress: Any = None,
                     scheduler: MultiObjectiveASHA | None = None, total: int | None = None, driver: str = "",
                     claims: CandidateClaims | None = None) -> None:
            super().__init__(metric=None, mode=None)
            self.study, self.config, self.budget, self.progress = study, config, budget, progress
            self.total, self.driver = total, driver
            self.scheduler = scheduler
            self.claims = claims
            self.study_dict = config.to_dict()
            self.live: dict[str, optuna.Trial] = {}
            self.waiting: dict[str, list[optuna.Trial]] = {}
            self.asked = 0

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            if self.asked >= self.budget or (self.total is not None and budget_used(self.study) >= self.total):
                return Searcher.FINISHED
            repeats = refusals = 0
            while True:
                if repeats and self.total is not None and budget_used(self.study) >= self.total:
                    return Searcher.FINISHED  # another driver's trials filled the budget while this one looked
                if isinstance(self.study.sampler, ListedGridSampler) and self.study.sampler.covered(self.study):
                    logger.info("every entry of the grid is done or being trained: nothing left to propose")
                    return Searcher.FINISHED
                with warnings.catch_warnings():  # heartbeats are recorded by dse.study.drivers.Heartbeat
                    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                    trial = self.study.ask()
                trial.set_user_attr("driver", self.driver)
                try:
                    candidate = suggest(self.config.space.name, trial, self.config.space.options)
                    candidate = {**candidate, **self.config.space.fixed}
                except Exception as err:
                    self._fail(trial, f"search space: {type(err).__name__}: {err}")
                    raise
                trial.set_user_attr("candidate", candidate)
                refused = self.precheck(candidate)
                if refused:
                    self._reject(trial, refused)
                    refusals += 1
                    if refusals >= MAX_REFUSALS:
                        logger.warning("the sampler proposed %d candidates in a row that break a constraint known before "
                                       "training: the feasible part of the space looks exhausted", MAX_REFUSALS)
                        return Searcher.FINISHED
                    continue
                previous = self._completed_with(candidate)
                owner = None if previous is not None else self._claim(trial, candidate)
                if owner is None and previous is None:
                    if not self._over_budget(trial):
                        break  # this trial holds the candidate's claim: it trains it
                    self._yield_to_budget(trial, candidate)
                    repeats += 1
                    continue
                if previous is None:
                    if owner.state in (TrialState.COMPLETE, TrialState.PRUNED):
                        previous = owner  # finished between the two looks
                if previous is not None:
                    self._tell_repeat(trial, previous)
                else:
                    own = next((tid for tid, t in self.live.items() if t.number == owner.number), None)
                    if own is not None:  # this driver trains it: take its result when it ends
                        trial.set_user_attr("waits_for", owner.number)
                        self.waiting.setdefault(own, []).append(trial)
                    else:  # another driver trains it: its result lives in that trial
                        trial.set_user_attr("duplicate_of", owner.number)
                        trial.set_user_attr("repeat_of_running", True)
                        self.study.tell(trial, state=TrialState.PRUNED)
                        logger.info("trial %d: trial %d of another driver trains this candidate", trial.number, owner.number)
                repeats += 1
                if repeats >= MAX_REPEATED_ASKS:
                    logger.warning("the sampler proposed only already-scored candidates %d times: the space looks exhausted", MAX_REPEATED_ASKS)
                    return Searcher.FINISHED
            self.live[trial_id] = trial
            self.asked += 1
            ckpt = None if self.config.is_tabular else str((self.config.out_dir() / "trials" / f"{trial.number:04d}.pt").resolve())
            if ckpt:
                trial.set_user_attr("checkpoint", ckpt)
            return {"candidate": candidate, "study": self.study_dict, "number": trial.number, "checkpoint": ckpt}

        def precheck(self, candidate: dict[str, Any]) -> str | None:
            """Why ``candidate`` breaks a constraint on an objective known before training (None: it
            does not, or no such constraint): checked before any trial is spent on it."""
            return constraint_breaches(self.config, precheck_values(self.config, candidate))

        def _reject(self, trial: optuna.Trial, reason: str) -> None:
            """Refused before training: PRUNED with ``rejected``; not counted against the budget."""
            trial.set_user_attr("rejected", f"{reason} (known before training)")
            self.study.tell(trial, state=TrialState.PRUNED)
            logger.info("trial %d refused before training: %s", trial.number, reason)

        def live_trial_ids(self) -> list[int]:
            """Storage ids of the trials this driver holds (training, or waiting for a repeat's original)."""
            held = [*self.live.values(), *(t for ts in self.waiting.values() for t in ts)]
            return [t._trial_id for t in held]

        def _over_budget(self, trial: optuna.Trial) -> bool:
            """Whether ``trial`` would train past the shared budget. Drivers check the budget before
            they ask, so two may ask the last slot at once; afterwards every open trial is visible,
            and the highest-numbered ones past the budget give way. Counted conservatively: a trial
            another driver has asked but not yet marked as its own counts as training, until it is
            marked or ``heartbeat_interval`` seconds old (then it is an orphan of a driver killed
            between ask and mark, which recovery fails after the grace period); while such a trial
            alone decides, this waits for it instead of giving way."""
            if self.total is None or self.claims is None:
                return False
            young = float(self.config.execution.heartbeat_interval)
            while True:
                now = datetime.datetime.now()
                open_, unmarked = [], False
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if "waits_for" in t.user_attrs:
                        continue
                    if "driver" not in t.user_attrs:
                        if t.datetime_start is None or (now - t.datetime_start).total_seconds() > young:
                            continue
                        unmarked = True
                    open_.append(t.number)
                open_.sort()
                excess = finished_trials(self.study) + len(open_) - self.total
                if excess <= 0 or trial.number not in open_[-excess:]:
                    return False
                if not unmarked:
                    return True
                time.sleep(0.2)

        def _yield_to_budget(self, trial: optuna.Trial, candidate: dict[str, Any]) -> None:
            """Gives the last budget slot to another driver's trial: PRUNED with ``rejected`` (not
            counted), its candidate's claim released."""
            assert self.claims is not None
            self.claims.release(candidate, trial.number)
            trial.set_user_attr("rejected", "the budget was filled by another driver's trials")
            trial.set_user_attr(GAVE_WAY, True)  # its candidate was not trained: a grid keeps the entry open
            self.study.tell(trial, state=TrialState.PRUNED)
            logger.info("trial %d gives way: the shared budget is full", trial.number)

        def _claim(self, trial: optuna.Trial, candidate: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
            """Claims ``candidate`` for ``trial`` (see :mod:`dse.study.claims`): None when ``trial``
            now holds it, else the running or finished trial that does. A claim held by a trial that
            failed or was interrupted passes to ``trial``."""
            while True:
                if self.claims is None:  # an in-memory study with one driver: this driver's trials only
                    number = next((t.number for t in self.live.values() if t.user_attrs.get("candidate") == candidate), None)
                else:
                    number = self.claims.claim(candidate, trial.number)
                if number is None:
                    return None
                owner = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
                if owner.state in (TrialState.RUNNING, TrialState.COMPLETE) or (
                        owner.state == TrialState.PRUNED and "rejected" not in owner.user_attrs):
                    return owner
                if self.claims.take_over(candidate, number, trial.number):
                    return None

        def _completed_with(self, candidate: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
                if t.user_attrs.get("candidate") == candidate and not {"duplicate_of", "rejected"} & t.user_attrs.keys():
                    return t
            return None

        def _tell_repeat(self, trial: optuna.Trial, previous: optuna.trial.FrozenTrial) -> None:
            """A candidate already scored (or stopped early): reuse its result instead of training it again."""
            for key in ("metrics", "constraint_values", "measurement", "checkpoint", "history", "node", *MASKING_ATTRS, *STOP_ATTRS):
                if key in previous.user_attrs:
                    trial.set_user_attr(key, previous.user_attrs[key])
            if previous.user_attrs.get("constraint_names"):
                record_constraints(self.study, trial, list(previous.user_attrs["constraint_names"].values()))
            trial.set_user_attr("duplicate_of", previous.number)
            if previous.state == TrialState.PRUNED:
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
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
            self._record_epoch(trial, result)

        def _record_epoch(self, trial: optuna.Trial, result: dict[str, Any]) -> None:
            """Appends one epoch's result to the trial's history (once per epoch)."""
            row = history_row(result)
            if any(r.get("epoch") == row.get("epoch") for r in trial.user_attrs.get("history", [])):
                return
            free = {k[len("free_"):]: float(v) for k, v in result.items() if k.startswith("free_")}
            if free and "free_values" not in trial.user_attrs:
                trial.set_user_attr("free_values", free)
            history = list(trial.user_attrs.get("history", [])) + [row]
            trial.set_user_attr("history", history)
            if self.progress:
                self.progress.update(f"#{trial.number} epoch {row.get('epoch', 0):.0f}")

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            trial = self.live.get(trial_id)
            if trial is None:
                return
            try:
                self._finish(trial_id, trial, result, error)
            except optuna.exceptions.UpdateFinishedTrialError:
                # this driver stalled past the grace period and another one recovered the trial as
                # interrupted (its candidate is queued again): nothing more to record here
                logger.warning("trial %d was recovered by another driver while this one ran it; its result is dropped", trial.number)
            finally:
                self.live.pop(trial_id, None)

        def _finish(self, trial_id: str, trial: optuna.Trial, result: dict[str, Any] | None, error: bool) -> None:
            if result and result.get("node"):
                trial.set_user_attr("node", str(result["node"]))
            stopped = self.scheduler.stopped.get(trial.number) if self.scheduler is not None else None
            if stopped is not None and not error:
                if result and "epoch" in result:  # Ray passes the stopping epoch here, not to on_trial_result
                    self._record_epoch(trial, result)
                self._prune(trial, *stopped)
            elif error or result is None or not result.get("done_trial"):
                reason = (result or {}).get("error") or "the Ray trial errored or stopped before reporting its result"
                self._fail(trial, reason, (result or {}).get("traceback"))
            elif result.get("error"):
                self._fail(trial, result["error"], result.get("traceback"))
            else:
                self._complete(trial, result)
            finished = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            for repeat in self.waiting.pop(trial_id, []):
                if finished.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    self._tell_repeat(repeat, finished)
                else:
                    self._fail(repeat, f"repeats trial {trial.number}'s candidate, which failed: {finished.user_attrs.get('error')}")
            if self.progress:
                self.progress.update()

        def _prune(self, trial: optuna.Trial, epoch: int, values: dict[str, float]) -> None:
            """A trial the scheduler stopped: PRUNED, with where it stopped and what it showed there."""
            trial.set_user_attr("stopped_at_epoch", int(epoch))
            trial.set_user_attr("rung_values", {k: float(v) for k, v in values.items()})
            trial.set_user_attr("epochs_saved", int(self.config.max_epochs() - epoch))
            logger.info("trial %d stopped at epoch %d (rung values %s)", trial.number, epoch,
                        ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
            self.study.tell(trial, state=TrialState.PRUNED)

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
                    violations.append(v)  # <= 0 means feasible
            if violations:
                record_constraints(self.study, trial, violations)
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
