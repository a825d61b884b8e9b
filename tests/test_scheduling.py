"""Multi-objective early stopping: the promotion rule against a brute-force ranking, and the rule
inside real studies (replayed tables through Ray Tune): stopped trials are PRUNED, never on the
front, the export or the report's front; resume after SIGKILL loses and repeats nothing."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from dse import SpecError
from dse.study.config import load_study_config
from tests.conftest import kill_session, learning_curve_table
from dse.study.samplers import crowding_distance
from dse.study.scheduling import MultiObjectiveASHA, RungRecord, rank_order

EXE = Path(sys.executable).parent


# ------------------------------------------------------------------ brute force, written apart
def _dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def _brute_levels(points: list[tuple]) -> list[int]:
    """Front level by its definition: level 0 = dominated by nobody; level k = dominated only by
    points of levels < k (computed by peeling with a pairwise dominance test)."""
    level = [-1] * len(points)
    k = 0
    while -1 in level:
        left = [i for i in range(len(points)) if level[i] == -1]
        front = [i for i in left if not any(_dominates(points[j], points[i]) for j in left if j != i)]
        for i in front:
            level[i] = k
        k += 1
    return level


def _brute_crowding(points: list[tuple]) -> list[float]:
    n, m = len(points), len(points[0])
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for j in range(m):
        order = sorted(range(n), key=lambda i: points[i][j])
        lo, hi = points[order[0]][j], points[order[-1]][j]
        dist[order[0]] = dist[order[-1]] = math.inf
        for a in range(1, n - 1):
            if hi > lo:
                dist[order[a]] += (points[order[a + 1]][j] - points[order[a - 1]][j]) / (hi - lo)
    return dist


def _brute_keep(points: list[tuple], violations: list[float], key: int, eta: int) -> bool:
    """Whether ``key`` is in the top ceil(n/eta): it is ahead of a point when feasible against
    infeasible, less violating, on a lower front, or on the same front with larger crowding."""
    feasible = [i for i, v in enumerate(violations) if v <= 0]
    levels = dict(zip(feasible, _brute_levels([points[i] for i in feasible]))) if feasible else {}
    crowd: dict[int, float] = {}
    for lv in set(levels.values()):
        members = [i for i in feasible if levels[i] == lv]
        crowd.update(zip(members, _brute_crowding([points[i] for i in members])))

    def ahead(a: int, b: int) -> bool:  # a strictly ahead of b
        fa, fb = violations[a] <= 0, violations[b] <= 0
        if fa != fb:
            return fa
        if not fa:
            return violations[a] < violations[b] or (violations[a] == violations[b] and a < b)
        if levels[a] != levels[b]:
            return levels[a] < levels[b]
        if crowd[a] != crowd[b]:
            return crowd[a] > crowd[b]
        return a < b

    position = sum(ahead(other, key) for other in range(len(points)) if other != key)
    return position < math.ceil(len(points) / eta)


@pytest.mark.parametrize("seed", range(12))
def test_promotions_equal_a_brute_force_non_dominated_ranking(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 4))
    eta = int(rng.integers(2, 4))
    core = MultiObjectiveASHA(rungs=[1, 3], reduction_factor=eta)
    seen: list[tuple] = []
    viol: list[float] = []
    decisions = []
    for key in range(int(rng.integers(4, 14))):
        point = tuple(float(v) for v in rng.integers(0, 5, m))  # small integers: ties and dominance
        violation = float(rng.choice([0.0, 0.0, 0.0, 0.5, 1.0]))
        seen.append(point)
        viol.append(violation)
        keep = core.decide(key, 1, RungRecord(loss=point, violation=violation))
        decisions.append(keep)
        assert keep == _brute_keep(seen, viol, key, eta), (seen, viol, key)
    assert core.decide(99, 2, RungRecord(loss=(0.0,) * m, violation=0.0)), "epochs between rungs never stop a trial"
    stopped = [k for k, keep in enumerate(decisions) if not keep]
    for key in stopped:
        assert core.stopped[key][0] == 1
        assert not core.decide(key, 3, RungRecord(loss=(-9.0,) * m, violation=0.0)), "a stopped trial stays stopped"


def test_infeasible_trials_rank_behind_every_feasible_one():
    loss = np.array([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0], [9.0, 9.0]])
    order = rank_order(loss, np.array([0.3, 0.0, 0.1, 0.0]))
    assert order.tolist() == [1, 3, 2, 0], "feasible by front ((5,5) dominates (9,9)), then infeasible by violation"


def test_tie_breaks_inside_a_front():
    # one front of four points; the two extremes are boundary points (crowding inf)
    front = np.array([[0.0, 10.0], [1.0, 6.0], [5.0, 5.0], [10.0, 0.0]])
    crowd = crowding_distance(front)
    # (1, 6): (5-0)/10 + (10-5)/10 = 1.0; (5, 5): (10-1)/10 + (6-0)/10 = 1.5
    assert math.isinf(crowd[0]) and math.isinf(crowd[3]) and crowd[1] == pytest.approx(1.0) and crowd[2] == pytest.approx(1.5)
    assert rank_order(front, np.zeros(4), tie_break="crowding").tolist()[2:] == [2, 1]
    # exclusive hypervolume on the [0, 1]-scaled front, reference (1.1, 1.1): (0.1, 0.6) owns 0.4 x 0.4 = 0.16,
    # (0.5, 0.5) 0.5 x 0.1 = 0.05, (1, 0) 0.1 x 0.5 = 0.05, (0, 1) 0.1 x 0.1 = 0.01
    hv_order = rank_order(front, np.zeros(4), tie_break="hypervolume").tolist()
    assert hv_order[0] == 1 and hv_order[-1] == 0 and set(hv_order[1:3]) == {2, 3}


# ------------------------------------------------------------------ replayed studies, Ray Tune
def _replay_study(tmp_path: Path, **changes) -> Path:
    data = {
        "name": "rp",
        "space": {"name": "replay", "options": {"table": str(learning_curve_table(tmp_path / "table"))}},
        "objectives": [{"name": "robust_acc"}, {"name": "bops"}],
        "metrics": ["natural_acc"],
        "sampler": {"name": "random", "seed": 0},
        "scheduler": {"name": "mo_asha", "min_epochs": 1, "reduction_factor": 3},
        "budget": {"n_trials": 12},
        "execution": {"concurrency": 2},
        "output_dir": str(tmp_path / "out"),
        **changes,
    }
    path = tmp_path / "rp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module", autouse=True)
def _ray_shutdown():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_replay_returns_exactly_the_tables_values(tmp_path):
    from dse.study.runner import run_study
    from dse.study.tables import load_tables

    config = load_study_config(_replay_study(tmp_path, scheduler={"name": "fifo"}, budget={"n_trials": 5}))
    run_study(config, show_progress=False)
    trials, epochs, _ = load_tables(config)
    table_trials = pd.read_csv(tmp_path / "table" / "trials.csv").set_index("number")
    table_epochs = pd.read_csv(tmp_path / "table" / "epochs.csv")
    done = trials[(trials["state"] == "COMPLETE") & trials["duplicate_of"].isna()]
    assert len(done) == 5
    for _, row in done.iterrows():
        recorded = json.loads(row["candidate"])["replay"]
        for name in ("robust_acc", "bops", "natural_acc"):
            assert row[name] == table_trials.loc[recorded, name]
        mine = epochs[epochs["number"] == row["number"]].sort_values("epoch")
        theirs = table_epochs[table_epochs["number"] == recorded].sort_values("epoch")
        for column in ("epoch", "epoch_seconds", "val_robust_acc", "val_natural_acc"):
            assert mine[column].tolist() == theirs[column].tolist()
        assert "val_rung_robust_acc" not in mine.columns or mine["val_rung_robust_acc"].isna().all(), "fifo without a ladder replays no ladder columns"


def test_stopped_trials_are_pruned_and_never_on_the_front_or_exported(tmp_path):
    from dse.study.export import export_trial
    from dse.study.runner import run_study
    from dse.study.tables import load_tables, mark_pareto

    config = load_study_config(_replay_study(tmp_path))
    outcome = run_study(config, show_progress=False)
    trials = mark_pareto(load_tables(config)[0], config)
    pruned = trials[trials["state"] == "PRUNED"]
    assert outcome["stopped"] == int(pruned["duplicate_of"].isna().sum()) > 0
    assert outcome["complete"] + outcome["stopped"] + outcome["failed"] == 12
    assert outcome["epochs_saved"] == int((9 - pruned[pruned["duplicate_of"].isna()]["stopped_at_epoch"]).sum())
    assert pruned["stopped_at_epoch"].isin([1, 3]).all()
    distinct = pruned[pruned["duplicate_of"].isna()]
    assert (distinct["epochs_trained"] == distinct["stopped_at_epoch"]).all(), "the stopping epoch is in the history"
    from dse.study.runner import make_scheduler

    study_for_rungs = optuna.load_study(study_name="rp", storage=config.storage_url())
    core = make_scheduler(config, study_for_rungs)
    for _, row in distinct.iterrows():
        assert int(row["number"]) in core.records[int(row["stopped_at_epoch"])], "resume rebuilds every rung record"
        assert int(row["number"]) in core.stopped
    assert not pruned["pareto"].any() and trials.loc[trials["pareto"], "state"].eq("COMPLETE").all()
    study = optuna.load_study(study_name="rp", storage=config.storage_url())
    best = {t.number for t in study.best_trials}
    assert best.isdisjoint(set(pruned["number"])), "Optuna's own best_trials never hold a stopped trial"
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert t.user_attrs["rung_values"] and t.user_attrs["stopped_at_epoch"] in (1, 3)
    with pytest.raises(SpecError, match="stopped early"):
        export_trial(config, tmp_path / "x.yaml", trial=int(pruned["number"].iloc[0]))
    for pick in ("knee", "best:robust_acc", "best:bops"):
        assert export_trial(config, tmp_path / "x.yaml", pick=pick)["trial"] not in set(pruned["number"])


def test_ladder_ranks_on_the_cheap_attack_and_fifo_records_both(tmp_path):
    from dse.study.runner import run_study
    from dse.study.tables import load_tables

    config = load_study_config(_replay_study(tmp_path, scheduler={"name": "mo_asha", "rung_eval": {"steps": [2]}}))
    run_study(config, show_progress=False)
    _, epochs, _ = load_tables(config)
    first = epochs[epochs["epoch"] == 1]
    later = epochs[epochs["epoch"] > 1]
    assert first["val_rung_robust_acc"].notna().all() and first["val_robust_acc"].isna().all()
    assert later["val_robust_acc"].notna().all()


def test_bad_scheduler_sections_are_refused(tmp_path):
    with pytest.raises(SpecError, match="min_epochs"):
        load_study_config(_replay_study(tmp_path, scheduler={"name": "mo_asha", "min_epochs": 9}))
    with pytest.raises(SpecError, match="rung_eval"):
        load_study_config(_replay_study(tmp_path, scheduler={"name": "mo_asha", "rung_eval": {"steps": [2, 3, 4]}}))
    with pytest.raises(SpecError, match="reduction_factor"):
        load_study_config(_replay_study(tmp_path, scheduler={"name": "mo_asha", "reduction_factor": 1}))
    with pytest.raises(SpecError, match="no recorded 'lipschitz'"):
        load_study_config(_replay_study(tmp_path, metrics=["lipschitz"]))


def _states(storage: str) -> dict[int, tuple]:
    try:
        study = optuna.load_study(study_name="rp", storage=storage)
    except (KeyError, Exception):  # storage still being created by the driver
        return {}
    return {t.number: (t.state.name, t.user_attrs.get("candidate", {}).get("replay"), t.user_attrs.get("stopped_at_epoch"),
                       tuple(t.values) if t.values else None, "duplicate_of" in t.user_attrs)
            for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")}


def test_resume_after_sigkill_mid_rung_loses_and_repeats_nothing(tmp_path):
    import ray

    ray.shutdown()
    path = _replay_study(tmp_path, budget={"n_trials": 14}, space={"name": "replay", "options": {"table": str(learning_curve_table(tmp_path / "table")), "time_scale": 0.01}})
    storage = load_study_config(path).storage_url()
    proc = subprocess.Popen([str(EXE / "dse"), "run", str(path), "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 180
    try:
        while True:
            states = _states(storage)
            if sum(s[0] == "PRUNED" for s in states.values()) >= 2 and any(s[0] == "COMPLETE" for s in states.values()):
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no trial was stopped in time"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
        kill_session(proc.pid)  # the driver's Ray processes, not other Ray instances on the machine
    before = _states(storage)
    assert len(before) < 14
    done = subprocess.run([str(EXE / "dse"), "resume", str(path), "--no-report"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    after = _states(storage)
    for number, record in before.items():
        assert after[number] == record, "a finished or stopped trial was lost or changed"
    distinct = [s for s in after.values() if not s[4]]
    assert len(distinct) == 14, "the budget counts complete plus stopped distinct trials"
    assert len({s[1] for s in distinct}) == len(distinct), "no candidate was trained twice"


def test_simulated_clock_decides_as_the_ray_run_does(tmp_path):
    """One worker: the simulator and Ray Tune see the same results in the same order, so the same
    trials stop at the same rungs and the same candidates complete."""
    from dse.study.runner import run_study
    from dse.study.simulate import simulate_study

    config = load_study_config(_replay_study(tmp_path, execution={"concurrency": 1}))
    sim = simulate_study(config, workers=1)
    run_study(config, show_progress=False)
    real = optuna.load_study(study_name="rp", storage=config.storage_url())

    def outcome(study):
        return sorted((t.number, t.state.name, t.user_attrs["candidate"]["replay"], t.user_attrs.get("stopped_at_epoch"))
                      for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED"))

    assert outcome(sim.study) == outcome(real)
    assert sim.epochs == sum(len(t.user_attrs.get("history", [])) for t in real.get_trials() if "duplicate_of" not in t.user_attrs)
    fifo = simulate_study(load_study_config(_replay_study(tmp_path, scheduler={"name": "fifo"})), workers=2)
    assert fifo.epochs == 9 * 12 > sim.epochs


def test_constraints_on_free_objectives_refuse_candidates_before_training(tmp_path):
    """A ``params <= ...`` constraint is checked when the candidate is proposed: no trial trains a
    candidate that breaks it, and refused proposals do not count against the budget."""
    from dse.study.runner import run_study
    from dse.study.searcher import precheck_values
    from dse.study.tables import load_tables

    study = {
        "name": "pre", "data": {"dataset": "digits", "subset": 120, "val_fraction": 0.3},
        "space": {"name": "mobilenet_tiny", "options": {"width_mult": [0.1, 0.2, 1.0], "expand_ratio": [1, 2, 6]}},
        "objectives": [{"name": "robust_acc"}, {"name": "params"}],
        "constraints": [{"metric": "params", "max": 100000}],
        "sampler": {"name": "random", "seed": 0}, "budget": {"n_trials": 3},
        "recipe": {"method": "natural", "epochs": 1, "batch_size": 60, "eval_samples": 10},
        "eval": {"attack": {"steps": 1}, "max_samples": 10, "checks": False},
        "execution": {"concurrency": 2}, "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump(study))
    config = load_study_config(path)
    small = precheck_values(config, {"arch": "mobilenet_tiny", "width_mult": 0.1, "expand_ratio": 1})["params"]
    big = precheck_values(config, {"arch": "mobilenet_tiny", "width_mult": 1.0, "expand_ratio": 6})["params"]
    assert small < 100000 < big
    outcome = run_study(config, show_progress=False)
    trials = load_tables(config)[0]
    trained = trials[trials["state"] == "COMPLETE"]
    refused = trials[trials["rejected"].notna()]
    assert outcome["complete"] == 3 and outcome["rejected"] == len(refused) > 0
    assert (trained["params"] <= 100000).all() and (refused["state"] == "PRUNED").all()
    assert refused["rejected"].str.contains("params = .* breaks params <= 100000", regex=True).all()
    assert trials.loc[trials["state"] == "COMPLETE", "epochs_trained"].gt(0).all() and refused["epochs_trained"].eq(0).all()


def test_rank_free_false_leaves_free_objectives_out_of_rungs_but_not_constraints(tmp_path):
    from dse.study.scheduling import rung_vector

    ranked = load_study_config(_replay_study(tmp_path))
    assert ranked.rung_metric_names() == ["robust_acc", "bops"]
    plain = load_study_config(_replay_study(tmp_path, scheduler={"name": "mo_asha", "rank_free": False},
                                            constraints=[{"metric": "bops", "max": 2.5e6}]))
    assert plain.rung_metric_names() == ["robust_acc"]
    record = rung_vector(plain, {"epoch": 1, "val_robust_acc": 0.4, "free_bops": 3e6})
    assert record.loss == (-0.4,) and record.violation == pytest.approx(0.5e6)


def test_optuna_sees_the_objective_names(tmp_path):
    from dse.study.storage import open_study

    config = load_study_config(_replay_study(tmp_path))
    assert open_study(config).metric_names == ["robust_acc", "bops"]
