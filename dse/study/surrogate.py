"""A model-guided multi-objective sampler: a tree-ensemble surrogate and hypervolume improvement over a candidate pool.

Why own it: every trial of a dse study is an adversarial training, so the sampler should spend
milliseconds of modelling to save hours of trials. Optuna's GPSampler and BoTorch's qNEHVI model
candidates as flat continuous vectors with a Gaussian process (minutes per 100 trials here, and
poor on categorical architecture choices); TPE models each key on its own. Architecture spaces are
mostly categorical and small enough to enumerate (NAS-Bench-201: 15,625 cells), and tree
ensembles over one-hot codes are the surrogate the NAS literature found strong there (White et
al. 2021, "BANANAS"; "How powerful are performance predictors in NAS"). So this sampler:

1. encodes the candidates of the (intersection) search space: one-hot for categorical keys, the
   position in ``[0, 1]`` for numeric keys (log scale for log keys);
2. fits, per objective, a random forest to the complete feasible trials, in minimization form;
3. scores a pool of unscored candidates: the whole grid when it has at most ``max_enumerate``
   points, else ``pool_size`` random candidates plus one- and two-key mutations of front members;
   candidates a ``params_filter`` refuses (constraints on free objectives) never enter it;
4. proposes the pool member with the largest hypervolume improvement over the current front under
   an optimistic estimate (forest mean minus ``kappa`` times the spread of its trees), with exact
   values for the objectives that ``free_values`` can compute without training (params, MACs,
   BOPS, size), so expensive trials go only where the free objectives leave room on the front.

A share ``random_fraction`` of proposals is random (restarts). Keys outside the intersection space
(conditional compression keys) are sampled at random.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import moocore
import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState

from dse.study.pareto import non_dominated_mask
from dse.study.samplers import ParamsFilter, mutate, params_key

__all__ = ["FreeValues", "SurrogateSampler", "encode"]

#: Values of objectives known without training: params -> {objective index: value} (maximized or
#: minimized as the study says); indices it omits are modelled.
FreeValues = Callable[[Mapping[str, Any]], Mapping[int, float]]


#: At most this many non-dominated pool members get an exact hypervolume improvement per proposal.
_MAX_EXACT = 500


def _grid(dist: BaseDistribution) -> list[Any] | None:
    """Every value of a finite distribution, or None for a continuous one."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        count = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(count)]
    return None


def encode(rows: Sequence[Mapping[str, Any]], space: Mapping[str, BaseDistribution]) -> np.ndarray:
    """Rows of params as a float matrix: one-hot per categorical key, ``[0, 1]`` position per numeric key."""
    columns = []
    for key in sorted(space):
        dist = space[key]
        values = [row[key] for row in rows]
        if isinstance(dist, CategoricalDistribution):
            columns.append(np.array([[v == c for c in dist.choices] for v in values], dtype=float).reshape(len(rows), -1))
            continue
        lo, hi = float(dist.low), float(dist.high)
        x = np.array(values, dtype=float)
        if getattr(dist, "log", False):
            lo, hi, x = math.log(lo), math.log(hi), np.log(x)
        columns.append(((x - lo) / (hi - lo if hi > lo else 1.0)).reshape(-1, 1))
    return np.hstack(columns) if columns else np.zeros((len(rows), 0))


def _moves(rows: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
           space: Mapping[str, BaseDistribution]) -> np.ndarray:
    """Per row, the fewest keys in which it differs from any of ``targets``."""
    keys = sorted(space)
    ids: dict[tuple[str, str], int] = {}

    def level(row: Mapping[str, Any]) -> list[int]:
        return [ids.setdefault((k, repr(row[k])), len(ids)) for k in keys]

    a = np.array([level(r) for r in rows])
    b = np.array([level(r) for r in targets])
    return (a[:, None, :] != b[None, :, :]).sum(axis=2).min(axis=1)


class SurrogateSampler(optuna.samplers.BaseSampler):
    """Proposes the candidate with the largest optimistic hypervolume improvement under a forest surrogate.

    Args:
        seed: Seed of the sampler's random numbers (forests included).
        n_startup_trials: Random trials before the surrogate is used.
        n_trees: Trees per objective's forest.
        kappa: Optimism: the estimate is the forest mean minus ``kappa`` times its trees' spread.
        pool_size: Random candidates (and as many mutations of front members) scored per proposal
            when the space is too large to enumerate.
        max_enumerate: Spaces of at most this many finite combinations are scored whole.
        shortlist: Pool members (best by estimated improvement) whose free objectives are computed.
        random_fraction: Share of proposals drawn at random.
        params_filter: Proposals for which it returns False are never made.
        free_values: Objectives known without training (see :data:`FreeValues`).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 10,
        n_trees: int = 32,
        kappa: float = 1.0,
        pool_size: int = 1000,
        max_enumerate: int = 20000,
        shortlist: int = 64,
        random_fraction: float = 0.05,
        scalarized_fraction: float = 0.5,
        local_fraction: float = 0.5,
        params_filter: ParamsFilter | None = None,
        free_values: FreeValues | None = None,
    ) -> None:
        for name, value, low in (("n_startup_trials", n_startup_trials, 1), ("n_trees", n_trees, 1),
                                 ("pool_size", pool_size, 1), ("max_enumerate", max_enumerate, 0), ("shortlist", shortlist, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not math.isfinite(kappa) or kappa < 0:
            raise ValueError(f"kappa must be finite and >= 0, got {kappa}")
        if not 0 <= random_fraction <= 1:
            raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
        self._seed = seed
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._space = IntersectionSearchSpace()
        self._n_startup, self._n_trees, self._kappa = n_startup_trials, n_trees, kappa
        self._pool_size, self._max_enumerate, self._shortlist = pool_size, max_enumerate, shortlist
        self._random_share = random_fraction
        self._scalarized = scalarized_fraction
        self._local = local_fraction
        self._children: dict[tuple, int] = {}
        self._filter, self._free = params_filter, free_values
        self._grid_cache: tuple[tuple, list[dict[str, Any]], np.ndarray] | None = None
        self._allowed: dict[tuple, bool] = {}
        self._free_cache: dict[tuple, Mapping[int, float]] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {k: d for k, d in self._space.calculate(study).items() if not d.single()}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    # ----------------------------------------------------------------------------- the pool

    def _allowed_params(self, params: Mapping[str, Any]) -> bool:
        if self._filter is None:
            return True
        key = params_key(params)
        if key not in self._allowed:
            self._allowed[key] = bool(self._filter(params))
        return self._allowed[key]

    def _pool(self, space: Mapping[str, BaseDistribution], front: Sequence[Mapping[str, Any]],
              seen: set[tuple]) -> tuple[list[dict[str, Any]], np.ndarray]:
        grids = {k: _grid(d) for k, d in space.items()}
        size = math.prod(len(g) for g in grids.values()) if all(g is not None for g in grids.values()) else None
        if size is not None and size <= self._max_enumerate:
            cache_key = tuple(sorted((k, repr(d)) for k, d in space.items()))
            if self._grid_cache is None or self._grid_cache[0] != cache_key:
                keys = sorted(space)
                rows = [dict(zip(keys, combo)) for combo in itertools.product(*(grids[k] for k in keys))]
                rows = [r for r in rows if self._allowed_params(r)]
                self._grid_cache = (cache_key, rows, encode(rows, space))
            _, rows, codes = self._grid_cache
            keep = np.array([params_key(r) not in seen for r in rows], dtype=bool)
            return [r for r, k in zip(rows, keep) if k], codes[keep]
        rows: dict[tuple, dict[str, Any]] = {}
        draws = [{k: self._random_value(d) for k, d in space.items()} for _ in range(self._pool_size)]
        for parent in front:
            base = {k: parent[k] for k in space}
            for n_keys in (1, 1, 2):
                draws.extend(mutate(base, space, self._rng, n_keys=n_keys) for _ in range(max(self._pool_size // max(len(front), 1) // 3, 1)))
        for row in draws:
            key = params_key(row)
            if key not in seen and key not in rows and self._allowed_params(row):
                rows[key] = row
        listed = list(rows.values())
        return listed, encode(listed, space)

    def _random_value(self, dist: BaseDistribution) -> Any:
        grid = _grid(dist)
        if grid is not None:
            return grid[self._rng.randint(len(grid))]
        lo, hi = float(dist.low), float(dist.high)
        if dist.log:
            return float(math.exp(self._rng.uniform(math.log(lo), math.log(hi))))
        return float(self._rng.uniform(lo, hi))

    # --------------------------------------------------------------------------- proposal

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        all_trials = study.get_trials(deepcopy=False)
        done = [t for t in all_trials if t.state == TrialState.COMPLETE and all(k in t.params for k in search_space)]
        feasible = [t for t in done if all(v <= 0 for v in t.constraints.values())] if done else []
        if len(done) < self._n_startup or len(feasible) < 2 or self._rng.rand() < self._random_share:
            return {}
        seen = {params_key({k: t.params[k] for k in search_space if k in t.params}) for t in all_trials
                if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
        signs = np.array([-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
        loss = np.array([t.values for t in feasible], dtype=float) * signs
        on_front = non_dominated_mask(loss, ["minimize"] * loss.shape[1])
        front_params = [{k: t.params[k] for k in search_space} for t, m in zip(feasible, on_front) if m]
        pool, codes = self._pool(search_space, front_params, seen)
        if not pool:
            return {}
        if self._rng.rand() < self._local:
            # model-guided local search: only candidates one key (else two) away from a front member
            # around the front member whose neighbourhood was proposed from least (Pareto local search)
            counts = np.array([self._children.get(params_key(p), 0) for p in front_params], dtype=float)
            counts += self._rng.rand(len(counts)) * 0.5
            parent = front_params[int(np.argmin(counts))]
            self._children[params_key(parent)] = self._children.get(params_key(parent), 0) + 1
            moves = _moves(pool, [parent], search_space)
            for radius in (1, 2):
                near = np.flatnonzero(moves <= radius)
                if near.size:
                    pool, codes = [pool[i] for i in near], codes[near]
                    break
        x = encode([{k: t.params[k] for k in search_space} for t in feasible], search_space)
        estimate = self._estimate(x, loss, codes)
        span = loss.max(axis=0) - loss.min(axis=0)
        span = np.where(span > 0, span, 1.0)
        reference = loss.max(axis=0) + 0.1 * span
        front = loss[on_front]
        if self._rng.rand() < self._scalarized:
            # a random Tchebycheff weighting of the normalized estimates (ParEGO's scalarization):
            # reaches the extremes of the front, which hypervolume improvement under-explores
            weights = self._rng.dirichlet(np.ones(loss.shape[1]))

            def score(points: np.ndarray) -> np.ndarray:
                return -((points - loss.min(axis=0)) / span * weights).max(axis=1)
        else:
            def score(points: np.ndarray) -> np.ndarray:
                return self._improvement(points, front, reference)
        gain = score(estimate)
        best = np.argsort(-gain, kind="stable")[: self._shortlist]
        if self._free is not None:
            exact = estimate[best].copy()
            for row, i in enumerate(best):
                key = params_key(pool[i])
                if key not in self._free_cache:
                    self._free_cache[key] = dict(self._free(pool[i]))
                for j, value in self._free_cache[key].items():
                    exact[row, j] = value * signs[j]
            best = best[np.argsort(-score(exact), kind="stable")]
        return dict(pool[int(best[0])])

    def _estimate(self, x: np.ndarray, loss: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Optimistic loss estimates of the pool: per objective, forest mean minus ``kappa`` tree spreads."""
        from sklearn.ensemble import RandomForestRegressor  # imported here: only this sampler needs scikit-learn

        out = np.empty((len(codes), loss.shape[1]))
        for j in range(loss.shape[1]):
            forest = RandomForestRegressor(n_estimators=self._n_trees, min_samples_leaf=1, max_features=0.5,
                                           random_state=self._rng.randint(2**31 - 1), n_jobs=1)
            forest.fit(x, loss[:, j])
            per_tree = np.stack([tree.predict(codes) for tree in forest.estimators_])
            out[:, j] = per_tree.mean(axis=0) - self._kappa * per_tree.std(axis=0)
        return out

    @staticmethod
    def _improvement(points: np.ndarray, front: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Hypervolume each point adds to ``front`` (minimization); points it dominates-or-equals add 0.

        A point dominated by the front gets minus its distance to the front's dominated region (the
        smallest step that would make it non-dominated), so the least-dominated point still wins
        when nothing improves.
        """
        base = moocore.hypervolume(front, ref=reference)
        # how far each point is inside the dominated region: max over front members of min over objectives
        slack = np.max(np.min(points[:, None, :] - front[None, :, :], axis=2), axis=1)
        gain = -np.maximum(slack, 0.0)
        candidates = np.flatnonzero(slack < 0)
        if len(candidates) > _MAX_EXACT:  # the deepest outside the dominated region first
            candidates = candidates[np.argsort(slack[candidates], kind="stable")[:_MAX_EXACT]]
            gain[np.setdiff1d(np.flatnonzero(slack < 0), candidates)] = 0.0
        for i in candidates:
            gain[i] = moocore.hypervolume(np.vstack([front, np.minimum(points[i], reference)]), ref=reference) - base
        return gain
