"""Multi-objective early stopping: asynchronous successive halving whose rungs are epochs.

Why written here: Ray Tune's schedulers rank trials by one metric (ASHA with several objectives
marks stopped trials COMPLETE), Optuna has no multi-objective pruning, and Syne Tune's MOASHA runs
only under Syne Tune's own tuner. The rule is Schmucker et al.'s MO-ASHA (2021) in its stopping
form (Li et al. 2020's asynchronous ASHA, as Ray Tune runs it):

* rungs sit at ``min_epochs * reduction_factor**k`` epochs, below the recipe's last epoch;
* when a trial reports a rung epoch, its rung vector is recorded with every earlier trial's at
  that rung; all of them are ranked (feasible before infeasible; feasible ones by non-dominated
  sorting, ties inside a front broken by crowding distance or by hypervolume contribution;
  infeasible ones by total constraint violation) and the trial continues when its position is
  below ``ceil(n / reduction_factor)``;
* a rung vector holds each objective measured at that epoch (``val_*``, or the cheaper
  ``val_rung_*`` of the attack ladder when the trial measured it) and each objective known before
  training (``free_*``: params, MACs, BOPS, size). Objectives measured only at the end
  (Lipschitz estimates, latency) take no part in rungs.

:class:`MultiObjectiveASHA` is plain Python (tested against a brute-force ranking; the
non-dominated sorting and crowding distance are the samplers' own, :mod:`dse.study.samplers`);
:func:`ray_scheduler` wraps it as a Ray Tune ``TrialScheduler``, so it runs unchanged on a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dse.study.config import StudyConfig
from dse.study.samplers import crowding_distance, non_dominated_ranks

__all__ = [
    "MultiObjectiveASHA",
    "RungRecord",
    "on_epoch",
    "rank_order",
    "ray_scheduler",
    "rung_vector",
]

def _hv_contributions(loss: np.ndarray) -> np.ndarray:
    """Exclusive hypervolume contribution of each row of one front, objectives scaled to [0, 1]
    and the reference point at 1.1 (so boundary points contribute)."""
    import moocore

    lo, hi = loss.min(axis=0), loss.max(axis=0)
    scaled = (loss - lo) / np.where(hi > lo, hi - lo, 1.0)
    if loss.shape[0] == 1:
        return np.array([math.inf])
    return np.asarray(moocore.hv_contributions(scaled, ref=np.full(loss.shape[1], 1.1)), dtype=float)


def rank_order(loss: np.ndarray, violation: np.ndarray, *, tie_break: str = "crowding") -> np.ndarray:
    """Indices of the rows, best first.

    Args:
        loss: ``(n, m)`` objective values in minimization form.
        violation: ``(n,)`` total constraint violation (0 = feasible).
        tie_break: ``crowding`` or ``hypervolume``: the order inside one front (larger first);
            equal values keep their row order.

    Returns:
        A permutation of ``range(n)``: feasible rows by front, then tie-break; then infeasible
        rows by increasing violation.
    """
    loss = np.asarray(loss, dtype=float)
    violation = np.asarray(violation, dtype=float)
    n = loss.shape[0]
    feasible = np.flatnonzero(violation <= 0)
    infeasible = np.flatnonzero(violation > 0)
    keys: list[tuple[float, float, int]] = []
    if feasible.size:
        fronts = non_dominated_ranks(loss[feasible], ["minimize"] * loss.shape[1])
        for level in np.unique(fronts):
            members = feasible[fronts == level]
            if tie_break == "hypervolume":
                score = _hv_contributions(loss[members])
            elif tie_break == "crowding":
                score = crowding_distance(loss[members])
            else:
                raise ValueError(f"tie_break: unknown {tie_break!r} (known: crowding, hypervolume)")
            keys.extend((float(level), -float(s), int(i)) for s, i in zip(score, members))
    order = [i for _, _, i in sorted(keys)]
    order += [int(i) for i in infeasible[np.argsort(violation[infeasible], kind="stable")]]
    assert len(order) == n
    return np.asarray(order, dtype=int)


@dataclass(frozen=True)
class RungRecord:
    """What one trial showed at one rung: its rung vector (minimization form) and violation."""

    loss: tuple[float, ...]
    violation: float
    values: Mapping[str, float] = field(default_factory=dict)


class MultiObjectiveASHA:
    """The promotion rule, with its rung state.

    Args:
        rungs: Rung epochs, increasing.
        reduction_factor: ``eta``: a trial continues when in the top ``1/eta`` at its rung.
        tie_break: See :func:`rank_order`.
    """

    def __init__(self, *, rungs: Sequence[int], reduction_factor: int = 3, tie_break: str = "crowding") -> None:
        self.rungs = list(rungs)
        self.reduction_factor = reduction_factor
        self.tie_break = tie_break
        self.records: dict[int, dict[Any, RungRecord]] = {r: {} for r in self.rungs}
        #: Trials stopped by this scheduler: key -> (epoch, the rung's values).
        self.stopped: dict[Any, tuple[int, dict[str, float]]] = {}

    def record(self, key: Any, epoch: int, record: RungRecord) -> None:
        """Adds a trial's record at a rung without deciding (used to rebuild state on resume)."""
        self.records[epoch][key] = record

    def decide(self, key: Any, epoch: int, record: RungRecord) -> bool:
        """Records the trial at rung ``epoch`` and says whether it continues (non-rung epochs: True).

        A trial already stopped stays stopped; a trial's record at a rung is its first one.
        """
        if key in self.stopped:
            return False
        if epoch not in self.records:
            return True
        rung = self.records[epoch]
        rung.setdefault(key, record)
        keys = list(rung)
        order = rank_order(
            np.array([rung[k].loss for k in keys], dtype=float).reshape(len(keys), -1),
            np.array([rung[k].violation for k in keys], dtype=float),
            tie_break=self.tie_break,
        )
        position = int(np.flatnonzero(order == keys.index(key))[0])
        if position < math.ceil(len(keys) / self.reduction_factor):
            return True
        self.stopped[key] = (epoch, dict(rung[key].values))
        return False


# ----------------------------------------------------------------------- study-facing helpers
def _rung_value(result: Mapping[str, Any], name: str) -> float | None:
    for key in (f"val_rung_{name}", f"val_{name}", f"free_{name}"):
        if key in result and result[key] is not None and math.isfinite(float(result[key])):
            return float(result[key])
    return None


def rung_vector(config: StudyConfig, result: Mapping[str, Any]) -> RungRecord | None:
    """A trial's rung record from one epoch's result (None when a ranked objective is missing).

    The ladder's ``val_rung_*`` wins over ``val_*`` when both were measured. Constraints whose
    metric is measured per epoch or free count; others are judged only at the end.
    """
    from dse.study.pareto import to_minimization

    names = config.rung_metric_names()
    values: dict[str, float] = {}
    for name in names:
        value = _rung_value(result, name)
        if value is None:
            return None
        values[name] = value
    directions = [d for n, d in zip(config.objective_names(), config.directions()) if n in names]
    loss = to_minimization(np.array([values[n] for n in names]), directions)
    violation = 0.0
    for con in config.constraints:
        value = _rung_value(result, con.metric)
        if value is not None:
            violation += sum(max(0.0, v) for v in con.violations(value))
            values.setdefault(con.metric, value)
    return RungRecord(loss=tuple(float(v) for v in loss), violation=violation, values=values)


def on_epoch(core: MultiObjectiveASHA, config: StudyConfig, number: int, result: Mapping[str, Any]) -> bool:
    """The scheduler's decision after one epoch's result of trial ``number``: True to continue.

    Raises:
        ValueError: A rung epoch's result lacks an objective the rungs rank on.
    """
    epoch = int(result["epoch"])
    record = rung_vector(config, result)
    if record is None:
        if epoch in core.records:
            raise ValueError(f"trial {number}: epoch {epoch} is a rung but its result lacks one of {config.rung_metric_names()}")
        return True
    return core.decide(number, epoch, record)


def ray_scheduler(core: MultiObjectiveASHA, config: StudyConfig):
    """``core`` as a Ray Tune ``TrialScheduler``: STOP when the rule says so, else CONTINUE.

    Trials are keyed by their Optuna trial number (``config["number"]``), so the searcher can
    record a stopped trial as PRUNED and ``dse resume`` can rebuild the rungs from the storage.
    """
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class _MOASHA(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            if result.get("done_trial") or "epoch" not in result:
                return TrialScheduler.CONTINUE
            keep = on_epoch(core, config, int(trial.config["number"]), result)
            return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP

        def debug_string(self) -> str:
            return f"MO-ASHA: rungs {core.rungs}, {len(core.stopped)} stopped"

    return _MOASHA()
