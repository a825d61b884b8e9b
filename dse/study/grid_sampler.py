"""The grid sampler of ``listed`` campaigns: every entry trained once, across resumes and drivers.

Optuna's ``GridSampler`` records a ``grid_id`` (an index into its grid shuffled with the seed) on
each trial and counts an entry as visited by that id. dse gives a resumed driver a new seed (so a
resumed sampler does not replay its first proposals), so the same id names a different entry in
the new driver: a resume then skipped entries and proposed running ones again and again. It also
counts a trial that was interrupted (whose candidate dse queues again) or that gave way to another
driver's (never trained) as visited. This sampler decides by the entry's *values*: recorded as the
``grid_entry`` system attribute when it is chosen, or read from the trial's params (older trials,
enqueued retries), with dse's states: an entry is done when a trial of it completed, was stopped
early, was refused by a constraint or failed for a reason of its own; it is taken while a trial of
it runs or waits in the queue.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dse.study.drivers import own_failure

__all__ = ["GAVE_WAY", "ListedGridSampler"]

#: User attribute of a trial that gave its budget slot to another driver's (see
#: ``dse.study.searcher``): its candidate was never trained, so its grid entry stays open.
GAVE_WAY = "gave_way"


class ListedGridSampler(optuna.samplers.GridSampler):
    """Optuna's ``GridSampler`` with entries identified by value (see the module docstring), and
    without its ``study.stop()`` once the grid is covered: dse asks and tells outside
    ``study.optimize`` (where ``stop`` raises), and the study's budget ends it.

    Args:
        search_space: Parameter name -> values; every combination is one entry.
        seed: Seeds the order of an unordered grid.
        ordered: Visit the entries in their listed order (trial k trains entry k of a ``listed``
            space while none has been skipped), so a campaign's first rows land first; otherwise
            in the seed's shuffled order.
    """

    def __init__(self, search_space: Mapping[str, list[Any]], *, seed: int | None = None, ordered: bool = False) -> None:
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered: expected true or false, got {ordered!r}")
        super().__init__(search_space, seed=seed)
        self._ordered = ordered
        if ordered:  # Optuna keeps its grid shuffled in ``_all_grids``; the order test fails if that changes
            self._all_grids = list(itertools.product(*self._search_space.values()))
        self._index = {tuple(entry): i for i, entry in enumerate(self._all_grids)}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return  # an enqueued trial (a retry) brings its own values
        open_ = self._get_unvisited_grid_ids(study)
        if not open_:  # every entry done: a repeat, which dse reuses instead of training
            open_ = list(range(self._n_min_trials))
        if self._ordered:
            grid_id = min(open_)
        elif trial.number in open_:  # Optuna's order: trial k takes entry k of the shuffled grid
            grid_id = trial.number
        else:
            grid_id = int(self._rng.rng.choice(open_))
        storage = study._storage
        storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)
        storage.set_trial_system_attr(trial._trial_id, "grid_entry", list(self._all_grids[grid_id]))

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        """Entries no trial has done or taken; when none is left, the taken ones (Optuna's rule)."""
        done, taken, _ = self._settled(study)
        all_ = set(range(self._n_min_trials))
        return sorted(all_ - done - taken) or sorted(all_ - done)

    def covered(self, study: optuna.Study) -> bool:
        """Whether every entry is done or taken (running, or queued) and no queued trial waits:
        then anything proposed would repeat an entry, and dse stops asking (its running trials
        finish; an entry whose trial fails for a reason of its own waits for ``--retry-failed``)."""
        done, taken, waiting = self._settled(study)
        return not waiting and len(done | taken) >= self._n_min_trials

    def _settled(self, study: optuna.Study) -> tuple[set[int], set[int], bool]:
        """The entries done, the entries taken (running or queued) by the study's trials, and
        whether any trial waits in the queue (a grid entry's or not)."""
        done: set[int] = set()
        taken: set[int] = set()
        waiting = False
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            waiting = waiting or t.state == TrialState.WAITING
            i = self._entry(t)
            if i is None:
                continue
            if t.state in (TrialState.RUNNING, TrialState.WAITING):
                taken.add(i)
            elif _done(t):
                done.add(i)
        return done, taken, waiting

    def _entry(self, t: FrozenTrial) -> int | None:
        """The grid entry ``t`` trains (None: not one of this grid's)."""
        names = self._param_names
        for values in (t.system_attrs.get("grid_entry"), t.params, t.system_attrs.get("fixed_params")):
            if isinstance(values, Mapping):
                if not all(n in values for n in names):
                    continue
                values = [values[n] for n in names]
            if isinstance(values, (list, tuple)):
                try:
                    return self._index.get(tuple(values))
                except TypeError:  # an unhashable value: not an entry of this grid
                    return None
        return None

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _done(t: FrozenTrial) -> bool:
    """Whether a finished trial settles its entry: not when it was interrupted (its candidate is
    queued again) or gave way to another driver's trial."""
    if t.state == TrialState.FAIL:
        return own_failure(t)
    if t.state == TrialState.PRUNED:
        return not t.user_attrs.get(GAVE_WAY)
    return t.state == TrialState.COMPLETE
