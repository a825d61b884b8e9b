"""Pareto maths: dominance against brute force, exact hypervolume, history, knee and best trial."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dse.study.pareto import (
    best_trial,
    default_reference,
    hypervolume,
    hypervolume_history,
    knee_point,
    non_dominated_mask,
    pareto_front,
    pareto_mask,
)

# --------------------------------------------------------------------------------------------
# Brute-force references
# --------------------------------------------------------------------------------------------


def brute_non_dominated(values: np.ndarray, directions) -> np.ndarray:
    """The textbook O(n^2) definition, one pair at a time."""
    n, m = values.shape
    out = np.zeros(n, dtype=bool)
    better_eq = [(lambda a, b: a >= b) if d == "maximize" else (lambda a, b: a <= b) for d in directions]
    strictly = [(lambda a, b: a > b) if d == "maximize" else (lambda a, b: a < b) for d in directions]
    for i in range(n):
        if np.isnan(values[i]).any():
            continue
        dominated = False
        for j in range(n):
            if j == i or np.isnan(values[j]).any():
                continue
            if all(better_eq[k](values[j, k], values[i, k]) for k in range(m)) and any(
                strictly[k](values[j, k], values[i, k]) for k in range(m)
            ):
                dominated = True
                break
        out[i] = not dominated
    return out


def brute_hypervolume(values: np.ndarray, directions, reference) -> float:
    """Inclusion-exclusion over all subsets (exact; small n only)."""
    loss = np.where(np.array(directions) == "maximize", -values, values)
    ref = np.where(np.array(directions) == "maximize", -np.asarray(reference, float), np.asarray(reference, float))
    loss = loss[(loss <= ref).all(axis=1)]
    total = 0.0
    for r in range(1, len(loss) + 1):
        for subset in itertools.combinations(range(len(loss)), r):
            corner = loss[list(subset)].max(axis=0)
            total += (-1) ** (r + 1) * np.prod(ref - corner)
    return float(total)


def grid_hypervolume(points: np.ndarray, reference) -> float:
    """Counts unit cells dominated by integer points (minimization)."""
    ref = np.asarray(reference, dtype=int)
    lo = points.min(axis=0).astype(int)
    count = 0
    for cell in itertools.product(*[range(lo[k], ref[k]) for k in range(len(ref))]):
        c = np.array(cell)
        if ((points <= c).all(axis=1)).any():
            count += 1
    return float(count)


def random_directions(rng, m):
    return [str(d) for d in rng.choice(["maximize", "minimize"], size=m)]


# --------------------------------------------------------------------------------------------
# non_dominated_mask
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("m", [2, 3, 4])
def test_non_dominated_matches_brute_force(seed, m):
    rng = np.random.default_rng(100 * seed + m)
    n = int(rng.integers(1, 60))
    # few distinct levels: many ties; plus exact duplicates and NaN rows
    values = rng.integers(0, 5, size=(n, m)).astype(float)
    values = np.vstack([values, values[: n // 3]])
    values[rng.random(len(values)) < 0.1, int(rng.integers(m))] = np.nan
    directions = random_directions(rng, m)
    got = non_dominated_mask(values, directions)
    assert got.dtype == bool and got.shape == (len(values),)
    np.testing.assert_array_equal(got, brute_non_dominated(values, directions))


def test_non_dominated_continuous_values_large():
    rng = np.random.default_rng(7)
    values = rng.normal(size=(700, 3))  # more than one chunk
    directions = ["maximize", "minimize", "maximize"]
    np.testing.assert_array_equal(non_dominated_mask(values, directions), brute_non_dominated(values, directions))


def test_duplicates_of_front_point_all_kept_and_nan_never():
    values = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [0.5, 0.5], [np.nan, 5.0], [9.0, np.nan]])
    mask = non_dominated_mask(values, ["maximize", "maximize"])
    assert mask.tolist() == [True, True, True, False, False, False]


def test_non_dominated_edge_cases():
    assert non_dominated_mask(np.empty((0, 2)), ["maximize", "minimize"]).shape == (0,)
    assert non_dominated_mask(np.array([[3.0, 4.0]]), ["min", "MAX"]).tolist() == [True]
    with pytest.raises(ValueError):
        non_dominated_mask(np.zeros((3, 2)), ["up", "down"])
    with pytest.raises(ValueError):
        non_dominated_mask(np.zeros((3, 2)), ["maximize"])


# --------------------------------------------------------------------------------------------
# Fronts of a trials table
# --------------------------------------------------------------------------------------------

OBJ2 = [{"name": "robust_acc", "direction": "maximize"}, {"name": "params", "direction": "minimize"}]


def small_trials() -> pd.DataFrame:
    rows = [
        # number, state, feasible, robust_acc, params
        (0, "COMPLETE", True, 0.40, 300_000.0),
        (1, "COMPLETE", True, 0.30, 100_000.0),
        (2, "COMPLETE", True, 0.25, 200_000.0),  # dominated by 1
        (3, "COMPLETE", False, 0.90, 50_000.0),  # infeasible: dominates all, never on the front
        (4, "FAIL", True, np.nan, np.nan),
        (5, "RUNNING", True, np.nan, np.nan),
        (6, "COMPLETE", True, 0.50, 600_000.0),
        (7, "COMPLETE", True, 0.40, 300_000.0),  # duplicate of 0: on the front too
        (8, "PRUNED", True, 0.99, 1.0),  # not complete: never on the front
        (9, "COMPLETE", True, 0.35, 400_000.0),  # dominated by 0
    ]
    df = pd.DataFrame(rows, columns=["number", "state", "feasible", "robust_acc", "params"])
    df["constraint_violation"] = np.where(df["feasible"], 0.0, 1.0)
    return df


def test_pareto_mask_and_front():
    trials = small_trials()
    mask = pareto_mask(trials, OBJ2)
    assert mask.index.equals(trials.index) and mask.dtype == bool
    assert trials.loc[mask, "number"].tolist() == [0, 1, 6, 7]
    front = pareto_front(trials, OBJ2)
    assert front["number"].tolist() == [0, 1, 6, 7]
    assert set(front.columns) == set(trials.columns)


def test_infeasible_and_failed_never_on_front_random():
    rng = np.random.default_rng(3)
    for _ in range(10):
        n = 40
        trials = pd.DataFrame(
            {
                "number": np.arange(n),
                "state": rng.choice(["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "RUNNING", "WAITING"], size=n),
                "feasible": rng.random(n) < 0.7,
                "a": rng.random(n),
                "b": rng.random(n),
            }
        )
        trials.loc[trials["state"] != "COMPLETE", ["a", "b"]] = np.nan
        mask = pareto_mask(trials, [{"name": "a", "direction": "maximize"}, {"name": "b", "direction": "maximize"}])
        assert not mask[~trials["feasible"]].any()
        assert not mask[trials["state"] != "COMPLETE"].any()
        ok = (trials["state"] == "COMPLETE") & trials["feasible"]
        expected = brute_non_dominated(trials.loc[ok, ["a", "b"]].to_numpy(), ["maximize", "maximize"])
        assert mask[ok].tolist() == expected.tolist()


def test_front_of_empty_or_all_failed_table():
    trials = pd.DataFrame({"number": [0, 1], "state": ["FAIL", "RUNNING"], "feasible": [True, True],
                           "robust_acc": [np.nan, np.nan], "params": [np.nan, np.nan]})
    assert pareto_front(trials, OBJ2).empty
    assert not pareto_mask(trials.iloc[:0], OBJ2).any()


# --------------------------------------------------------------------------------------------
# Hypervolume
# --------------------------------------------------------------------------------------------


def test_hypervolume_2d_rectangle_union():
    # minimization, ref (4, 4): a staircase of slabs 3x1 + 2x1 + 1x1 = 6
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(pts, ["minimize", "minimize"], [4.0, 4.0]) == pytest.approx(6.0)
    # the same points in maximization form
    assert hypervolume(-pts, ["maximize", "maximize"], [-4.0, -4.0]) == pytest.approx(6.0)
    # mixed: accuracy up, params down
    vals = np.array([[0.5, 100.0], [0.8, 300.0]])
    # boxes [0, .5]x[100, 400] (150) U [0, .8]x[300, 400] (80) overlap [0,.5]x[300,400] (50)
    assert hypervolume(vals, ["maximize", "minimize"], [0.0, 400.0]) == pytest.approx(180.0)


def test_hypervolume_3d_boxes():
    ref = [2.0, 2.0, 2.0]
    assert hypervolume(np.array([[0.0, 0.0, 0.0]]), ["minimize"] * 3, ref) == pytest.approx(8.0)
    # two unit-ish boxes: [0,2]x[1,2]x[1,2] (2) U [1,2]x[0,2]x[0,2] (4), overlap [1,2]x[1,2]x[1,2] (1)
    pts = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert hypervolume(pts, ["minimize"] * 3, ref) == pytest.approx(5.0)
    # a dominated point and a duplicate change nothing
    more = np.vstack([pts, [[1.5, 1.5, 1.5]], pts[:1]])
    assert hypervolume(more, ["minimize"] * 3, ref) == pytest.approx(5.0)


def test_hypervolume_ignores_points_beyond_reference_and_nan():
    pts = np.array([[1.0, 1.0], [5.0, 0.0], [np.nan, 0.0]])
    assert hypervolume(pts, ["minimize", "minimize"], [2.0, 2.0]) == pytest.approx(1.0)
    assert hypervolume(np.empty((0, 2)), ["minimize", "minimize"], [2.0, 2.0]) == 0.0
    assert hypervolume(np.array([[3.0, 3.0]]), ["minimize", "minimize"], [2.0, 2.0]) == 0.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(seed, m):
    rng = np.random.default_rng(10 * seed + m)
    n = int(rng.integers(1, 8))
    values = rng.random((n, m))
    if n > 2:
        values[-1] = values[0]  # a duplicate
    directions = random_directions(rng, m)
    reference = np.where(np.array(directions) == "maximize", 0.0, 1.0)
    expected = brute_hypervolume(values, directions, reference)
    assert hypervolume(values, directions, reference) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_matches_grid_count(m):
    rng = np.random.default_rng(m)
    pts = rng.integers(0, 6, size=(10, m)).astype(float)
    ref = [6.0] * m
    expected = grid_hypervolume(pts, ref)
    assert hypervolume(pts, ["minimize"] * m, ref) == pytest.approx(expected)


def test_hypervolume_single_objective():
    assert hypervolume(np.array([[0.3], [0.7]]), ["maximize"], [0.0]) == pytest.approx(0.7)


def test_default_reference():
    trials = small_trials()
    ref = default_reference(trials, OBJ2)
    assert ref[0] == 0.0  # an accuracy in [0, 1] that is maximized
    feasible_params = [300_000, 100_000, 200_000, 600_000, 300_000, 400_000]
    lo, hi = min(feasible_params), max(feasible_params)
    assert ref[1] == pytest.approx(hi + 0.1 * (hi - lo))
    # a maximized objective outside [0, 1]: worst minus 10% of the range
    t = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE"] * 2, "feasible": [True] * 2, "x": [10.0, 20.0]})
    assert default_reference(t, [{"name": "x", "direction": "maximize"}])[0] == pytest.approx(9.0)
    # constant column: 10% of |worst|
    t["x"] = 5.0
    assert default_reference(t, [{"name": "x", "direction": "minimize"}])[0] == pytest.approx(5.5)


def test_hypervolume_history_non_decreasing_and_aligned():
    rng = np.random.default_rng(11)
    n = 50
    trials = pd.DataFrame(
        {
            "number": rng.permutation(n),
            "state": rng.choice(["COMPLETE", "COMPLETE", "FAIL", "RUNNING"], size=n),
            "feasible": rng.random(n) < 0.8,
            "robust_acc": rng.random(n) * 0.5,
            "params": rng.random(n) * 1e6,
            "macs": rng.random(n) * 1e7,
        }
    )
    trials.loc[trials["state"] != "COMPLETE", ["robust_acc", "params", "macs"]] = np.nan
    for objectives in (OBJ2, OBJ2 + [{"name": "macs", "direction": "minimize"}]):
        ref = default_reference(trials, objectives)
        hist = hypervolume_history(trials, objectives, ref)
        assert list(hist.columns) == ["number", "hypervolume"]
        assert hist["number"].tolist() == list(range(n))
        assert (np.diff(hist["hypervolume"].to_numpy()) >= -1e-9).all()
        # the last value is the hypervolume of all COMPLETE feasible trials
        ok = (trials["state"] == "COMPLETE") & trials["feasible"]
        names = [o["name"] for o in objectives]
        final = hypervolume(trials.loc[ok, names].to_numpy(), [o["direction"] for o in objectives], ref)
        assert hist["hypervolume"].iloc[-1] == pytest.approx(final)
        # infeasible / failed trials never change the value
        changed = hist.set_index("number")["hypervolume"].diff().fillna(hist["hypervolume"].iloc[0]) > 0
        bad = trials.loc[~ok, "number"]
        assert not changed.loc[bad].any()
    assert hypervolume_history(trials.iloc[:0], OBJ2, [0.0, 1.0]).empty


# --------------------------------------------------------------------------------------------
# Knee point and best trial
# --------------------------------------------------------------------------------------------


def test_knee_point_hand_made_front():
    # robust_acc (max) vs params (min): normalized scores (acc, params)
    #   trial 10: (0, 1) -> dist 1;  trial 11: (0.8, 0.8) -> 0.283;  trial 12: (1, 0) -> 1
    #   trial 13: (0.9, 0.5) -> 0.51
    front = pd.DataFrame(
        {
            "number": [10, 11, 12, 13],
            "robust_acc": [0.30, 0.38, 0.40, 0.39],
            "params": [100.0, 180.0, 500.0, 300.0],
        }
    )
    assert knee_point(front, OBJ2) == 11


def test_knee_point_tie_goes_to_lowest_number():
    front = pd.DataFrame({"number": [7, 3, 5], "a": [1.0, 0.0, 0.5], "b": [0.0, 1.0, 0.5]})
    objectives = [{"name": "a", "direction": "maximize"}, {"name": "b", "direction": "maximize"}]
    # 7 and 3 are symmetric (distance 1); 5 at (0.5, 0.5) is closer
    assert knee_point(front, objectives) == 5
    assert knee_point(front[front["number"] != 5], objectives) == 3
    with pytest.raises(ValueError):
        knee_point(front.iloc[:0], objectives)


def test_best_trial():
    trials = small_trials()
    assert best_trial(trials, "robust_acc", "maximize") == 6  # infeasible 3 and pruned 8 excluded
    assert best_trial(trials, "params", "minimize") == 1
    assert best_trial(trials, {"name": "params", "direction": "minimize"}) == 1
    tie = pd.DataFrame({"number": [4, 2, 9], "state": ["COMPLETE"] * 3, "feasible": [True] * 3, "x": [1.0, 1.0, 0.0]})
    assert best_trial(tie, "x", "maximize") == 2
    with pytest.raises(ValueError):
        best_trial(trials[trials["state"] == "FAIL"], "params", "minimize")


def test_a_reused_repeat_is_never_a_second_front_member():
    from dse.study.pareto import pareto_mask

    trials = pd.DataFrame({
        "number": [0, 1, 2, 3],
        "state": ["COMPLETE"] * 4,
        "feasible": [True] * 4,
        "duplicate_of": [np.nan, np.nan, 0, np.nan],
        "acc": [0.9, 0.5, 0.9, 0.4],
        "size": [10.0, 1.0, 10.0, 5.0],
    })
    mask = pareto_mask(trials, [{"name": "acc", "direction": "maximize"}, {"name": "size", "direction": "minimize"}])
    assert mask.tolist() == [True, True, False, False]
