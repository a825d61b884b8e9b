"""Pareto maths over a study's trials table: dominance, fronts, hypervolume, knee point.

(Over 400 lines: one concept, the Pareto maths, with the docstrings the report and export rely on.)

Everything here is numpy / pandas (the hypervolume is ``moocore``'s) and works on the tidy trials table written by the study
runner (one row per Optuna trial with ``number``, ``state``, ``feasible`` and one float column
per objective). Objectives are given as ``{"name": ..., "direction": "maximize" | "minimize"}``
dicts, exactly as in a study's ``meta["objectives"]``.

Only trials that are ``COMPLETE`` *and* ``feasible`` (all constraints satisfied) and have a
value for every objective can be on the front or count towards the hypervolume. Failed,
running, pruned and infeasible trials never do.

Example:
    >>> objectives = [{"name": "robust_acc", "direction": "maximize"},
    ...               {"name": "params", "direction": "minimize"}]
    >>> front = pareto_front(trials, objectives)            # doctest: +SKIP
    >>> ref = default_reference(trials, objectives)         # doctest: +SKIP
    >>> hypervolume(front[["robust_acc", "params"]].to_numpy(), ["maximize", "minimize"], ref)
    ... # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import moocore
import numpy as np
import pandas as pd

__all__ = [
    "best_trial",
    "candidate_mask",
    "default_reference",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "non_dominated_mask",
    "objective_names",
    "objective_directions",
    "objective_values",
    "pareto_front",
    "pareto_mask",
    "to_minimization",
]

_DIRECTIONS = {
    "maximize": "maximize",
    "max": "maximize",
    "minimize": "minimize",
    "min": "minimize",
}

# Rows compared at once in the O(n^2) dominance check (bounds memory to ~chunk * n * m bools).
_CHUNK = 256


# --------------------------------------------------------------------------------------------
# Objective specs
# --------------------------------------------------------------------------------------------


def _direction(direction: Any) -> str:
    """Normalizes one direction (``"maximize"``/``"max"``/``"minimize"``/``"min"``, any case).

    Optuna's ``StudyDirection`` enum is accepted too (its name is used).
    """
    key = getattr(direction, "name", direction)
    key = str(key).strip().lower()
    if key not in _DIRECTIONS:
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    return _DIRECTIONS[key]


def _objective_spec(objectives: Sequence[Any]) -> tuple[list[str], list[str]]:
    """Splits objective specs into names and normalized directions.

    Args:
        objectives: Dicts with ``name`` and ``direction`` keys, or ``(name, direction)`` pairs.

    Returns:
        ``(names, directions)``.

    Raises:
        ValueError: If there is no objective or an entry is malformed.
    """
    names: list[str] = []
    directions: list[str] = []
    for obj in objectives:
        if isinstance(obj, Mapping):
            if "name" not in obj:
                raise ValueError(f"objective {obj!r} has no 'name'")
            name, direction = obj["name"], obj.get("direction", "maximize")
        else:
            name, direction = obj
        names.append(str(name))
        directions.append(_direction(direction))
    if not names:
        raise ValueError("at least one objective is needed")
    return names, directions


def objective_names(objectives: Sequence[Any]) -> list[str]:
    """Names of the objectives, in order.

    Args:
        objectives: Dicts with ``name`` and ``direction`` keys.

    Returns:
        The list of names.
    """
    return _objective_spec(objectives)[0]


def objective_directions(objectives: Sequence[Any]) -> list[str]:
    """Normalized directions (``"maximize"`` / ``"minimize"``) of the objectives, in order.

    Args:
        objectives: Dicts with ``name`` and ``direction`` keys.

    Returns:
        The list of directions.
    """
    return _objective_spec(objectives)[1]


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Converts objective values to minimization form (maximized columns are negated).

    Args:
        values: Array of shape ``(n, m)`` (or ``(m,)`` for a single point).
        directions: ``m`` directions.

    Returns:
        A float array of the same shape where smaller is better in every column.
    """
    arr = np.asarray(values, dtype=float)
    signs = np.array([-1.0 if _direction(d) == "maximize" else 1.0 for d in directions])
    if arr.shape[-1] != signs.size:
        raise ValueError(f"values have {arr.shape[-1]} columns but {signs.size} directions were given")
    return arr * signs


# --------------------------------------------------------------------------------------------
# Dominance and fronts
# --------------------------------------------------------------------------------------------


def non_dominated_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Exact Pareto (non-dominated) mask.

    Point ``a`` dominates point ``b`` when ``a`` is at least as good as ``b`` in every
    objective (``>=`` for maximize, ``<=`` for minimize) and strictly better in at least one.
    Duplicates of a non-dominated point are therefore all non-dominated. Rows containing NaN
    are never on the front and never dominate anything.

    Args:
        values: Array of shape ``(n, m)``.
        directions: ``m`` directions, ``"maximize"`` or ``"minimize"``.

    Returns:
        A boolean array of shape ``(n,)``, True for non-dominated rows.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"values must be 2-D (n, m), got shape {arr.shape}")
    n = arr.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    loss = to_minimization(arr, directions)
    valid = ~np.isnan(loss).any(axis=1)
    idx = np.flatnonzero(valid)
    pts = loss[idx]
    on_front = np.ones(idx.size, dtype=bool)
    for start in range(0, idx.size, _CHUNK):
        block = pts[start : start + _CHUNK]  # (b, m): candidates to test
        # other[j] dominates block[i]: all(other <= block) and any(other < block)
        weakly = (pts[None, :, :] <= block[:, None, :]).all(axis=2)
        strictly = (pts[None, :, :] < block[:, None, :]).any(axis=2)
        on_front[start : start + block.shape[0]] = ~(weakly & strictly).any(axis=1)
    mask[idx] = on_front
    return mask


def _feasible(trials: pd.DataFrame) -> pd.Series:
    """The ``feasible`` column as booleans (missing column or missing values: True / False)."""
    if "feasible" not in trials.columns:
        return pd.Series(True, index=trials.index)
    return trials["feasible"].map(lambda v: False if v is None or pd.isna(v) else bool(v)).astype(bool)


def objective_values(trials: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """Objective columns as a float ``(n, m)`` array (NaN where a column is missing)."""
    cols = []
    for name in names:
        if name in trials.columns:
            cols.append(pd.to_numeric(trials[name], errors="coerce").to_numpy(dtype=float))
        else:
            cols.append(np.full(len(trials), np.nan))
    if not cols:
        return np.empty((len(trials), 0))
    return np.column_stack(cols)


def candidate_mask(trials: pd.DataFrame, objectives: Sequence[Any]) -> pd.Series:
    """Trials eligible for the front: ``COMPLETE``, feasible, a value for every objective, and not
    a reused repeat of another trial's candidate (``duplicate_of`` set): each candidate counts once.

    Args:
        trials: The trials table.
        objectives: Objective specs (dicts with ``name`` and ``direction``).

    Returns:
        A boolean Series aligned with ``trials``.
    """
    names, _ = _objective_spec(objectives)
    if len(trials) == 0:
        return pd.Series(False, index=trials.index, dtype=bool)
    complete = trials["state"].astype(str).str.upper().eq("COMPLETE") if "state" in trials else True
    values = objective_values(trials, names)
    has_values = ~np.isnan(values).any(axis=1)
    original = trials["duplicate_of"].isna().to_numpy() if "duplicate_of" in trials else True
    return pd.Series(np.asarray(complete & _feasible(trials)) & has_values & original, index=trials.index, dtype=bool)


def pareto_mask(trials: pd.DataFrame, objectives: Sequence[Any]) -> pd.Series:
    """Boolean Series aligned with ``trials``: True for trials on the Pareto front.

    Only ``COMPLETE`` and feasible trials are candidates; infeasible, failed, running and
    pruned trials are always False (an infeasible trial never dominates a feasible one).

    Args:
        trials: The trials table.
        objectives: Objective specs (dicts with ``name`` and ``direction``).

    Returns:
        The mask.
    """
    names, directions = _objective_spec(objectives)
    cand = candidate_mask(trials, objectives).to_numpy()
    out = np.zeros(len(trials), dtype=bool)
    if cand.any():
        values = objective_values(trials, names)[cand]
        out[np.flatnonzero(cand)] = non_dominated_mask(values, directions)
    return pd.Series(out, index=trials.index, dtype=bool)


def pareto_front(trials: pd.DataFrame, objectives: Sequence[Any]) -> pd.DataFrame:
    """Rows of the trials on the Pareto front (``COMPLETE`` and feasible trials only).

    Args:
        trials: The trials table.
        objectives: Objective specs (dicts with ``name`` and ``direction``).

    Returns:
        A copy of the Pareto rows, ordered by trial ``number``.
    """
    front = trials.loc[pareto_mask(trials, objectives)].copy()
    if "number" in front.columns:
        front = front.sort_values("number", kind="stable")
    return front


# --------------------------------------------------------------------------------------------
# Hypervolume
# --------------------------------------------------------------------------------------------


def _hv_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimization-form points by ``moocore.hypervolume``; points that do not
    weakly dominate ``ref`` and NaN rows are ignored."""
    points = np.asarray(points, dtype=float).reshape(-1, ref.size)
    points = points[~np.isnan(points).any(axis=1)]
    points = points[(points <= ref).all(axis=1)]
    if points.shape[0] == 0:
        return 0.0
    if not np.all(np.isfinite(ref)):
        return float("inf")
    return float(moocore.hypervolume(points, ref=ref))


def hypervolume(
    values: np.ndarray,
    directions: Sequence[str],
    reference: Sequence[float] | np.ndarray,
) -> float:
    """Exact hypervolume dominated by ``values`` and bounded by ``reference``.

    Works for any number of objectives (computed by ``moocore.hypervolume``: exact, O(n log n)
    in 2-D and 3-D). Points that do not weakly dominate the reference contribute nothing; NaN rows are ignored.

    Args:
        values: Array of shape ``(n, m)`` in the objectives' own units.
        directions: ``m`` directions, ``"maximize"`` or ``"minimize"``.
        reference: Reference point of length ``m`` in the same units (worse than the front).

    Returns:
        The hypervolume (0.0 when no point dominates the reference).
    """
    arr = np.asarray(values, dtype=float)
    ref = np.asarray(reference, dtype=float).reshape(-1)
    if arr.size == 0:
        return 0.0
    arr = arr.reshape(-1, ref.size)
    if len(directions) != ref.size:
        raise ValueError(f"{len(directions)} directions for a {ref.size}-D reference point")
    return _hv_min(to_minimization(arr, directions), to_minimization(ref, directions))


def default_reference(trials: pd.DataFrame, objectives: Sequence[Any]) -> np.ndarray:
    """A reference point for the hypervolume, in the objectives' own units.

    Per objective, over the ``COMPLETE`` feasible trials (all ``COMPLETE`` trials when none is
    feasible):

    * a maximized objective whose observed values all lie in ``[0, 1]`` (an accuracy) gets 0;
    * otherwise the worst observed value worsened by 10% of the observed range
      (``min - 0.1 * (max - min)`` for maximize, ``max + 0.1 * (max - min)`` for minimize);
      when the range is 0 the margin is 10% of ``|worst|`` (1.0 when that is 0 too);
    * with no observed value at all: 0.

    Args:
        trials: The trials table.
        objectives: Objective specs (dicts with ``name`` and ``direction``).

    Returns:
        A float array with one entry per objective.
    """
    names, directions = _objective_spec(objectives)
    values = objective_values(trials, names)
    cand = candidate_mask(trials, objectives).to_numpy()
    if not cand.any() and len(trials) and "state" in trials:
        cand = trials["state"].astype(str).str.upper().eq("COMPLETE").to_numpy()
    ref = np.zeros(len(names))
    for k, direction in enumerate(directions):
        col = values[cand, k] if len(trials) else np.empty(0)
        col = col[np.isfinite(col)]
        if col.size == 0:
            continue
        lo, hi = float(col.min()), float(col.max())
        if direction == "maximize" and lo >= 0.0 and hi <= 1.0:
            ref[k] = 0.0
            continue
        worst = lo if direction == "maximize" else hi
        margin = 0.1 * (hi - lo)
        if margin == 0.0:
            margin = 0.1 * abs(worst) or 1.0
        ref[k] = worst - margin if direction == "maximize" else worst + margin
    return ref


def hypervolume_history(
    trials: pd.DataFrame,
    objectives: Sequence[Any],
    reference: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Hypervolume of the feasible front found so far, after each trial (by ``number``).

    Every trial gets a row; only ``COMPLETE`` feasible trials change the value, so the
    series is non-decreasing.

    Args:
        trials: The trials table.
        objectives: Objective specs (dicts with ``name`` and ``direction``).
        reference: Reference point in the objectives' units; ``default_reference`` if None.

    Returns:
        A DataFrame with columns ``number`` and ``hypervolume``.
    """
    names, directions = _objective_spec(objectives)
    if reference is None:
        reference = default_reference(trials, objectives)
    ref = to_minimization(np.asarray(reference, dtype=float).reshape(-1), directions)
    if len(trials) == 0:
        return pd.DataFrame({"number": pd.Series(dtype=int), "hypervolume": pd.Series(dtype=float)})
    order = np.argsort(trials["number"].to_numpy(), kind="stable")
    numbers = trials["number"].to_numpy()[order]
    cand = candidate_mask(trials, objectives).to_numpy()[order]
    loss = to_minimization(objective_values(trials, names)[order], directions)

    front = np.empty((0, len(names)))
    hv = 0.0
    out = np.zeros(len(numbers))
    for i in range(len(numbers)):
        p = loss[i]
        if cand[i] and np.all(p <= ref) and not (front <= p).all(axis=1).any():  # the front grows
            front = np.vstack([front[~(p <= front).all(axis=1)], p])
            hv = _hv_min(front, ref)
        out[i] = hv
    return pd.DataFrame({"number": numbers.astype(int), "hypervolume": out})


# --------------------------------------------------------------------------------------------
# Picking one trial
# --------------------------------------------------------------------------------------------


def knee_point(front: pd.DataFrame, objectives: Sequence[Any]) -> int:
    """Trial number of the knee of a front: the point closest to the normalized ideal.

    Each objective is scaled to ``[0, 1]`` over the front (best = 1, worst = 0; an objective
    that is constant over the front scores 1 everywhere); the point with the smallest
    Euclidean distance to ``(1, ..., 1)`` wins, ties going to the lowest trial number.

    Args:
        front: Rows of the Pareto front (e.g. from :func:`pareto_front`), with ``number``.
        objectives: Objective specs (dicts with ``name`` and ``direction``).

    Returns:
        The knee's trial number.

    Raises:
        ValueError: If the front has no row with values for every objective.
    """
    names, directions = _objective_spec(objectives)
    values = objective_values(front, names)
    ok = ~np.isnan(values).any(axis=1)
    if not ok.any():
        raise ValueError("knee_point needs a non-empty front")
    values = values[ok]
    numbers = front["number"].to_numpy()[ok]
    lo, hi = values.min(axis=0), values.max(axis=0)
    span = hi - lo
    scores = np.ones_like(values)
    for k, direction in enumerate(directions):
        if span[k] > 0:
            frac = (values[:, k] - lo[k]) / span[k]
            scores[:, k] = frac if direction == "maximize" else 1.0 - frac
    dist = np.sqrt(((1.0 - scores) ** 2).sum(axis=1))
    dist = np.round(dist, 12)  # float noise must not decide a tie
    best = np.lexsort((numbers, dist))[0]
    return int(numbers[best])


def best_trial(trials: pd.DataFrame, objective: str | Mapping[str, Any], direction: str | None = None) -> int:
    """Number of the best ``COMPLETE`` feasible trial for one objective (ties: lowest number).

    Args:
        trials: The trials table.
        objective: Column name, or an objective dict (its ``direction`` is used when
            ``direction`` is None).
        direction: ``"maximize"`` or ``"minimize"``.

    Returns:
        The trial number.

    Raises:
        ValueError: If no ``COMPLETE`` feasible trial has a value for the objective.
    """
    if isinstance(objective, Mapping):
        direction = direction or objective.get("direction")
        objective = objective["name"]
    if direction is None:
        raise ValueError("best_trial needs a direction")
    spec = [{"name": objective, "direction": direction}]
    cand = candidate_mask(trials, spec).to_numpy()
    if not cand.any():
        raise ValueError(f"no COMPLETE feasible trial has a value for {objective!r}")
    values = objective_values(trials, [objective])[cand, 0]
    numbers = trials["number"].to_numpy()[cand]
    key = -values if _direction(direction) == "maximize" else values
    return int(numbers[np.lexsort((numbers, key))[0]])
