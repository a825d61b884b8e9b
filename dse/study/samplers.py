"""Samplers written for design spaces: Pareto local search and multi-objective regularized evolution.

Why own samplers: Optuna's built-ins treat a candidate as a flat vector (NSGA-II's uniform
crossover, TPE's per-parameter densities), while architecture spaces reward local moves: on
NAS-Bench-201 a handful of operations decide most of the accuracy, and the research record (White
et al. 2021, "Local search is state of the art for NAS benchmarks"; Real et al. 2019, regularized
evolution) finds mutation of good candidates, one key at a time, very strong there. Both samplers
here are Optuna samplers, so the runner, storage, constraints and resume work unchanged:

* :class:`ParetoLocalSearchSampler` mutates one key of a member of the current (feasible) Pareto
  front, preferring members whose neighbourhood is least explored; when every neighbour of the
  front is scored it walks down to the next front, then mutates two keys.
* :class:`RegularizedEvolutionSampler` keeps the last ``population_size`` scored trials (old ones
  age out), picks the best of a random tournament by non-dominated rank and crowding distance,
  and mutates one key.

Both read the structure of the space from Optuna's distributions: categorical keys move to another
choice, stepped and integer keys to a neighbouring value, continuous keys by a Gaussian step of
``sigma`` of their range (in log space for log keys). Conditional keys (compression bit-widths that
exist only for some quantization modes) are inherited from the parent when the child has them too,
otherwise sampled at random. A candidate already scored (or running) is never proposed again while
an unscored neighbour exists. Infeasible trials (any constraint value > 0) rank behind every
feasible one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState

from dse.study.pareto import non_dominated_mask

__all__ = [
    "ParetoLocalSearchSampler",
    "RegularizedEvolutionSampler",
    "crowding_distance",
    "mutate",
    "params_key",
    "non_dominated_ranks",
]

#: A filter of proposals: params -> True when the candidate may be proposed (e.g. a params <= N
#: constraint on a free objective, computed without training).
ParamsFilter = Callable[[Mapping[str, Any]], bool]


def non_dominated_ranks(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rank 0 for the non-dominated rows, 1 for the front after removing them, and so on."""
    values = np.asarray(values, dtype=float)
    ranks = np.full(len(values), -1, dtype=int)
    left = np.arange(len(values))
    rank = 0
    while left.size:
        mask = non_dominated_mask(values[left], directions)
        if not mask.any():  # rows with NaN never reach a front: rank them last
            ranks[left] = rank
            break
        ranks[left[mask]] = rank
        left = left[~mask]
        rank += 1
    return ranks


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row within its set (boundary rows get infinity)."""
    values = np.asarray(values, dtype=float)
    n, m = values.shape if values.ndim == 2 else (len(values), 0)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(values[:, j], kind="stable")
        col = values[order, j]
        span = col[-1] - col[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def _neighbour(value: Any, dist: BaseDistribution, rng: np.random.RandomState, sigma: float) -> Any:
    """One local move of ``value`` inside ``dist`` (never the same value when another exists)."""
    if isinstance(dist, CategoricalDistribution):
        others = [c for c in dist.choices if c != value]
        return others[rng.randint(len(others))] if others else value
    if isinstance(dist, IntDistribution) or (isinstance(dist, FloatDistribution) and dist.step is not None):
        step = dist.step if dist.step is not None else 1
        if isinstance(dist, IntDistribution) and dist.log:
            grid = sorted({int(round(v)) for v in np.geomspace(dist.low, dist.high, num=32)})
        else:
            count = int(round((dist.high - dist.low) / step)) + 1
            grid = [dist.low + i * step for i in range(count)]
        if len(grid) < 2:
            return value
        i = int(np.argmin([abs(g - value) for g in grid]))
        j = i + (1 if rng.rand() < 0.5 else -1)
        j = min(max(j, 0), len(grid) - 1)
        if j == i:
            j = i + 1 if i == 0 else i - 1
        out = grid[j]
        return int(out) if isinstance(dist, IntDistribution) else float(out)
    if isinstance(dist, FloatDistribution):
        if dist.low == dist.high:
            return value
        if dist.log:
            lo, hi, x = math.log(dist.low), math.log(dist.high), math.log(value)
            return float(math.exp(min(max(x + rng.normal(0.0, sigma * (hi - lo)), lo), hi)))
        return float(min(max(value + rng.normal(0.0, sigma * (dist.high - dist.low)), dist.low), dist.high))
    raise TypeError(f"unsupported distribution {dist!r}")


def mutate(
    params: Mapping[str, Any],
    space: Mapping[str, BaseDistribution],
    rng: np.random.RandomState,
    *,
    n_keys: int = 1,
    sigma: float = 0.15,
) -> dict[str, Any]:
    """A copy of ``params`` with ``n_keys`` keys of ``space`` moved to a neighbouring value.

    Keys whose distribution has a single value are never picked.
    """
    movable = [k for k, d in space.items() if k in params and not d.single()]
    child = dict(params)
    if not movable:
        return child
    for key in rng.choice(movable, size=min(n_keys, len(movable)), replace=False):
        child[str(key)] = _neighbour(params[str(key)], space[str(key)], rng, sigma)
    return child


def _inside(value: Any, dist: BaseDistribution) -> bool:
    """Whether ``value`` is a value of ``dist`` (a conditional key inherited from a parent)."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, (IntDistribution, FloatDistribution)) and isinstance(value, (int, float)):
        return dist.low <= value <= dist.high
    return False


def params_key(params: Mapping[str, Any]) -> tuple:
    """A hashable identity of a candidate's params (to tell scored candidates from new ones)."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class _MutationSampler(optuna.samplers.BaseSampler):
    """What both samplers share: random start, parent choice (subclass), mutation, inheritance."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 10,
        sigma: float = 0.15,
        max_tries: int = 64,
        params_filter: ParamsFilter | None = None,
    ) -> None:
        if n_startup_trials < 1:
            raise ValueError(f"n_startup_trials must be >= 1, got {n_startup_trials}")
        if not 0 < sigma <= 1:
            raise ValueError(f"sigma must be in (0, 1], got {sigma}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._space = IntersectionSearchSpace()
        self._n_startup = n_startup_trials
        self._sigma = sigma
        self._max_tries = max_tries
        self._filter = params_filter
        self._parents: dict[int, dict[str, Any]] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {k: d for k, d in self._space.calculate(study).items() if not d.single()}

    # -------------------------------------------------------------------------- parent choice

    def _scored(self, study: optuna.Study, all_trials: Sequence[FrozenTrial]) -> tuple[list[FrozenTrial], np.ndarray]:
        """Complete trials, and their sort key columns (infeasible, rank, -crowding): feasible
        fronts first, infeasible trials after them by total violation."""
        trials = [t for t in all_trials if t.state == TrialState.COMPLETE]
        if not trials:
            return [], np.empty((0, 3))
        directions = [d.name.lower() for d in study.directions]
        values = np.array([t.values for t in trials], dtype=float)
        violation = np.array([sum(max(v, 0.0) for v in t.constraints.values()) for t in trials])
        ranks = np.zeros(len(trials))
        crowd = np.zeros(len(trials))
        feasible = violation <= 0
        if feasible.any():
            ranks[feasible] = non_dominated_ranks(values[feasible], directions)
            for r in np.unique(ranks[feasible]):
                sel = np.flatnonzero(feasible & (ranks == r))
                crowd[sel] = crowding_distance(values[sel])
        ranks[~feasible] = violation[~feasible]
        return trials, np.column_stack([~feasible, ranks, -crowd]).astype(float)

    def _parent_order(self, trials: list[FrozenTrial], keys: np.ndarray, study: optuna.Study) -> list[FrozenTrial]:
        raise NotImplementedError

    def _used(self, parent: FrozenTrial) -> None:
        """Called with the parent of each proposal."""

    # ------------------------------------------------------------------------------ sampling

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        all_trials = study.get_trials(deepcopy=False)  # one storage read per proposal
        trials, keys = self._scored(study, all_trials)
        if len(trials) < self._n_startup:
            return {}
        seen = {
            params_key({k: v for k, v in t.params.items() if k in search_space})
            for t in all_trials
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        }
        parents = self._parent_order(trials, keys, study)
        for n_keys in (1, 2, 3):
            for parent in parents:
                base = {k: parent.params[k] for k in search_space if k in parent.params}
                if len(base) < len(search_space):
                    continue
                for _ in range(self._max_tries):
                    child = mutate(base, search_space, self._rng, n_keys=n_keys, sigma=self._sigma)
                    if params_key(child) in seen or (self._filter is not None and not self._filter(child)):
                        continue
                    self._parents[trial.number] = dict(parent.params)
                    self._used(parent)
                    return child
        return {}  # every neighbourhood explored: fall back to random sampling

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        parent = self._parents.get(trial.number)
        if parent is not None and param_name in parent and _inside(parent[param_name], param_distribution):
            return parent[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._parents.pop(trial.number, None)


class ParetoLocalSearchSampler(_MutationSampler):
    """Pareto local search: mutate one key of a front member, least-explored members first.

    Args:
        seed: Seed of the sampler's random numbers.
        n_startup_trials: Random trials before the search starts.
        sigma: Step of a continuous key, as a fraction of its range.
        max_tries: Mutations tried per parent before the next parent is taken.
        params_filter: Proposals for which it returns False are never made (constraints on free
            objectives, checked before a trial is spent).
        scalarized_fraction: Share of proposals whose parent is the best trial under a random
            Tchebycheff weighting of the normalized objectives (reaches every part of the front,
            extremes included) rather than the least-explored front member.
        random_fraction: Share of proposals drawn at random (restarts into other basins).
    """

    def __init__(self, *, scalarized_fraction: float = 0.5, random_fraction: float = 0.1, **kwargs: Any) -> None:
        for name, value in (("scalarized_fraction", scalarized_fraction), ("random_fraction", random_fraction)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        super().__init__(**kwargs)
        self._children: dict[int, int] = {}
        self._scalarized = scalarized_fraction
        self._random_share = random_fraction

    def _parent_order(self, trials: list[FrozenTrial], keys: np.ndarray, study: optuna.Study) -> list[FrozenTrial]:
        if self._rng.rand() < self._random_share:
            return []
        jitter = self._rng.rand(len(trials))
        if self._rng.rand() < self._scalarized:
            loss = np.array([t.values for t in trials], dtype=float)
            loss *= np.array([-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
            span = loss.max(axis=0) - loss.min(axis=0)
            norm = (loss - loss.min(axis=0)) / np.where(span > 0, span, 1.0)
            weights = self._rng.dirichlet(np.ones(loss.shape[1]))
            score = (norm * weights).max(axis=1)
            return [trials[i] for i in np.lexsort((jitter, score, keys[:, 0]))]
        explored = np.array([self._children.get(t.number, 0) for t in trials])
        # fronts in order; inside a front, the least-explored member first, random among equals
        return [trials[i] for i in np.lexsort((jitter, explored, keys[:, 1], keys[:, 0]))]

    def _used(self, parent: FrozenTrial) -> None:
        self._children[parent.number] = self._children.get(parent.number, 0) + 1


class RegularizedEvolutionSampler(_MutationSampler):
    """Multi-objective regularized evolution: tournaments over the last ``population_size`` trials.

    Args:
        population_size: Scored trials that stay in the population (older ones age out).
        tournament_size: Trials drawn per tournament; the best by (rank, crowding) is the parent.
        **kwargs: ``seed``, ``n_startup_trials``, ``sigma``, ``max_tries``, ``params_filter``, as for
            :class:`ParetoLocalSearchSampler`.
    """

    def __init__(self, *, population_size: int = 30, tournament_size: int = 8, **kwargs: Any) -> None:
        if population_size < 2 or not 1 <= tournament_size <= population_size:
            raise ValueError(
                f"need population_size >= 2 and 1 <= tournament_size <= population_size, got {population_size}, {tournament_size}"
            )
        super().__init__(**kwargs)
        self._population = population_size
        self._tournament = tournament_size

    def _parent_order(self, trials: list[FrozenTrial], keys: np.ndarray, study: optuna.Study) -> list[FrozenTrial]:
        recent = np.argsort([t.number for t in trials])[-self._population :]
        drawn = self._rng.choice(recent, size=min(self._tournament, len(recent)), replace=False)
        winner = drawn[np.lexsort((keys[drawn, 2], keys[drawn, 1], keys[drawn, 0]))[0]]
        rest = recent[np.lexsort((keys[recent, 2], keys[recent, 1], keys[recent, 0]))]
        return [trials[winner], *(trials[i] for i in rest if i != winner)]
