"""Several drivers on one study: the budget counted in the storage, heartbeats, and recovery of trials whose driver is gone.

The Optuna storage is the single source of truth. Every driver (``dse run`` / ``dse resume``, on
this machine or another one sharing the storage URL):

* counts the budget across drivers (:func:`budget_used`: finished trials plus trials some live
  driver is training), so two drivers of a 10-trial study train 10 candidates between them;
* marks each trial it trains with ``driver`` (its id) and records an Optuna heartbeat for it every
  ``execution.heartbeat_interval`` seconds (:class:`Heartbeat`);
* treats a RUNNING trial whose heartbeat is older than the grace period as interrupted (its driver
  was killed): :func:`recover_interrupted` marks it failed and queues its candidate again, once,
  whichever driver gets there first. A live driver's trials are never touched.

Optuna's own ``fail_stale_trials`` fails stale trials but does not queue them again, so the stale
list comes from the storage's ``_get_stale_trial_ids`` (the query Optuna uses; there is no public
accessor) and the rest is done here.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable

import optuna
from optuna.trial import TrialState

from dse.study.claims import candidate_key

__all__ = [
    "INTERRUPTED",
    "Heartbeat",
    "budget_used",
    "driver_id",
    "finished_trials",
    "own_failure",
    "recover_interrupted",
    "release",
    "retried",
    "retry_failed",
    "trial_counts",
]

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the driver stopped before the trial finished"


def driver_id() -> str:
    """This driver's id, recorded on the trials it trains (host, process, random suffix)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def own_failure(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that failed for a reason of its own: FAIL, and not marked interrupted (whose
    candidate is queued again by :func:`recover_interrupted` / :func:`release`)."""
    return t.state == TrialState.FAIL and t.user_attrs.get("error") != INTERRUPTED


def retried(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials whose candidate a later trial trains again (its ``retry_of``)."""
    return {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Complete, repeats, stopped, rejected, failed (not retried), retried (failed, then queued
    again by :func:`retry_failed`), running and claimed (being trained) trials."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    own_failures = [t for t in trials if own_failure(t)]
    distinct_pruned = [t for t in trials if t.state == TrialState.PRUNED and "duplicate_of" not in t.user_attrs and "rejected" not in t.user_attrs]
    return {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "duplicates": sum(t.state == TrialState.COMPLETE and "duplicate_of" in t.user_attrs for t in trials),
        "stopped": len(distinct_pruned),
        "rejected": sum(t.state == TrialState.PRUNED and "rejected" in t.user_attrs for t in trials),
        "epochs_saved": sum(int(t.user_attrs.get("epochs_saved", 0)) for t in distinct_pruned),
        "failed": sum(t.number not in again for t in own_failures),
        "retried": sum(t.number in again for t in own_failures),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "claimed": sum(t.state == TrialState.RUNNING and "driver" in t.user_attrs and "waits_for" not in t.user_attrs for t in trials),
    }


def finished_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: complete or stopped early (not a repeat of another
    candidate), or failed for a reason of their own."""
    c = trial_counts(study)
    return c["complete"] - c["duplicates"] + c["stopped"] + c["failed"]


def budget_used(study: optuna.Study) -> int:
    """Finished trials plus the trials some driver is training now (the budget every driver shares)."""
    c = trial_counts(study)
    return c["complete"] - c["duplicates"] + c["stopped"] + c["failed"] + c["claimed"]


def _driver_gone(driver: object) -> bool:
    """True when ``driver`` (see :func:`driver_id`) ran on this host in a process that has ended."""
    if not isinstance(driver, str) or driver.count(":") != 2:
        return False
    host, pid, _ = driver.split(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a live process of another user
        return False
    return False


def _stale(study: optuna.Study, grace: float) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials whose driver is gone: a driver process of this host that has ended, a
    heartbeat older than ``grace`` seconds, or (trials of a driver that never recorded one) started
    more than ``grace`` seconds ago."""
    storage = _heartbeat_storage(study)
    stale_ids: set[int] = set()
    with_heartbeat: set[int] = set()
    if storage is not None:
        stale_ids = set(storage._get_stale_trial_ids(study._study_id))
        with_heartbeat = set(_ids_with_heartbeat(storage, study))
    now = datetime.datetime.now()
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t._trial_id in stale_ids or _driver_gone(t.user_attrs.get("driver")):
            out.append(t)
        elif t._trial_id not in with_heartbeat and t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace:
            out.append(t)
    return out


def _heartbeat_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage when its heartbeats are on (Optuna wraps it in a cache and has no
    public accessor for either)."""
    storage = getattr(study._storage, "_backend", study._storage)
    if isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval is not None:
        return storage
    return None


def _ids_with_heartbeat(storage: optuna.storages.RDBStorage, study: optuna.Study) -> Iterable[int]:
    from optuna.storages._rdb import models

    with storage.scoped_session() as session:
        rows = (session.query(models.TrialHeartbeatModel.trial_id)
                .join(models.TrialModel, models.TrialModel.trial_id == models.TrialHeartbeatModel.trial_id)
                .filter(models.TrialModel.study_id == study._study_id).all())
    return [r[0] for r in rows]


def recover_interrupted(study: optuna.Study, *, grace: float = 0.0) -> int:
    """Marks RUNNING trials whose driver is gone (see :func:`_stale`; ``grace=0``: every RUNNING
    trial without a fresh heartbeat) as failed (``interrupted``) and queues their candidates again,
    so nothing completed is lost or repeated and nothing interrupted is dropped. A trial another
    driver recovers first is left to it. Returns how many this call recovered."""
    n = sum(_interrupt(study, t) for t in _stale(study, grace))
    if n:
        logger.warning("marked %d interrupted trial(s) as failed and queued their candidates again", n)
    return n


def retry_failed(study: optuna.Study) -> int:
    """Queues again the candidate of each trial that failed for a reason of its own (not an
    interrupted one: those are queued already) and was not retried yet, once per candidate and
    only when no trial has it complete, running or queued: ``dse resume --retry-failed``, after
    failures that were not the candidate's fault (a Ray worker lost, memory, a bug fixed since).
    The failed trials stay in the storage with their error; they no longer count against the
    budget, their retries do. Returns how many candidates were queued."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    held = {candidate_key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
    n = 0
    for t in trials:
        if (not own_failure(t) or t.number in again or not t.params
                or {"waits_for", "duplicate_of"} & t.user_attrs.keys() or candidate_key(t.params) in held):
            continue
        _queue_again(study, t)
        held.add(candidate_key(t.params))
        n += 1
    if n:
        logger.warning("queued the candidates of %d failed trial(s) again (--retry-failed)", n)
    return n


def _queue_again(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    """Queues ``t``'s candidate again, the new trial naming ``t`` in ``retry_of``."""
    study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)


def release(study: optuna.Study, trial_ids: Iterable[int]) -> int:
    """At a driver's end (a wall-time stop, Ctrl-C): its trials still RUNNING are marked
    interrupted and their candidates queued again, so none is left RUNNING in the storage."""
    ids = set(trial_ids)
    n = sum(_interrupt(study, t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t._trial_id in ids)
    if n:
        logger.info("%d unfinished trial(s) of this run queued again for `dse resume`", n)
    return n


def _interrupt(study: optuna.Study, t: optuna.trial.FrozenTrial) -> bool:
    """FAIL ``t`` as interrupted and queue its candidate again; False when another driver got there first."""
    try:
        study._storage.set_trial_user_attr(t._trial_id, "error", INTERRUPTED)
        if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:  # another driver recovered (or finished) it
        return False
    if t.params and "waits_for" not in t.user_attrs:  # a repeat waiting for another trial: that one is queued
        _queue_again(study, t)
    return True


class Heartbeat:
    """A daemon thread that records a heartbeat for each trial ``live()`` returns, every
    ``interval`` seconds, and recovers trials of drivers that are gone (grace ``grace`` seconds).

    Use as a context manager around the driver's run.
    """

    def __init__(self, study: optuna.Study, live: Callable[[], Iterable[int]], *, interval: float, grace: float) -> None:
        self.study, self.live, self.interval, self.grace = study, live, interval, grace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dse-heartbeat", daemon=True)

    def beat(self) -> None:
        """Records a heartbeat for every live trial now."""
        storage = _heartbeat_storage(self.study)
        if storage is None:
            return
        for trial_id in list(self.live()):
            storage.record_heartbeat(trial_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                recover_interrupted(self.study, grace=self.grace)
            except Exception:  # noqa: BLE001 - a storage hiccup must not kill the driver; the next beat retries
                logger.exception("heartbeat failed (retrying in %s s)", self.interval)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
