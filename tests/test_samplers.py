"""dse's own samplers (Pareto local search, regularized evolution, the forest surrogate) on small synthetic spaces:
plain Optuna ask/tell, no Ray, no training."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from dse.study.samplers import (
    ParetoLocalSearchSampler,
    RegularizedEvolutionSampler,
    crowding_distance,
    mutate,
    non_dominated_ranks,
)
from dse.study.pareto import hypervolume
from dse.study.storage import make_sampler
from dse.study.surrogate import SurrogateSampler, encode

optuna.logging.set_verbosity(optuna.logging.WARNING)
SAMPLERS = [ParetoLocalSearchSampler, RegularizedEvolutionSampler, SurrogateSampler]


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    ops = [trial.suggest_categorical(f"e{i}", ["a", "b", "c", "d"]) for i in range(4)]
    mode = trial.suggest_categorical("mode", ["fp", "fixed"])
    bits = trial.suggest_int("bits", 2, 8) if mode == "fixed" else 32  # a conditional key
    good = sum(op == "a" for op in ops) + 0.5 * sum(op == "b" for op in ops)
    return good + 0.01 * bits, -float(bits) - sum(op == "c" for op in ops)


@pytest.mark.parametrize("cls", SAMPLERS)
def test_never_repeats_a_candidate_and_beats_random(cls):
    def run(sampler):
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
        study.optimize(_objective, n_trials=60)
        return study

    study = run(cls(seed=0, n_startup_trials=8))
    keys = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(keys)) == len(keys), "no candidate is proposed twice while unscored neighbours exist"
    assert any("bits" in t.params for t in study.trials) and any("bits" not in t.params for t in study.trials)
    best = max(t.values[0] for t in study.trials)
    best_random = np.median([max(t.values[0] for t in run(optuna.samplers.RandomSampler(seed=s)).trials) for s in range(5)])
    assert best >= best_random


@pytest.mark.parametrize("cls", SAMPLERS)
def test_infeasible_trials_are_not_parents(cls):
    """A constraint that only the 'd'-free candidates meet: children of feasible parents dominate the search."""

    def constrained(trial):
        values = _objective(trial)
        trial.set_constraint("no_d", float(sum(trial.params[f"e{i}"] == "d" for i in range(4))))
        return values

    study = optuna.create_study(directions=["maximize", "maximize"], sampler=cls(seed=1, n_startup_trials=8))
    study.optimize(constrained, n_trials=50)
    late = study.trials[25:]
    feasible_share = np.mean([all(v <= 0 for v in t.constraints.values()) for t in late])
    early = study.trials[:8]
    assert feasible_share > np.mean([all(v <= 0 for v in t.constraints.values()) for t in early])
    assert feasible_share >= 0.5


def test_params_filter_keeps_proposals_out():
    sampler = ParetoLocalSearchSampler(seed=0, n_startup_trials=5, params_filter=lambda p: p.get("e0") != "a")
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    study.optimize(_objective, n_trials=40)
    searched = study.trials[5:]
    # proposals after the random start come from the filtered mutation (or random when exhausted)
    assert sum(t.params["e0"] == "a" for t in searched) <= 0.35 * len(searched)


def test_mutate_moves_one_key_to_a_neighbour():
    rng = np.random.RandomState(0)
    space = {
        "op": CategoricalDistribution(["a", "b", "c"]),
        "w": FloatDistribution(0.1, 1.0, step=0.1),
        "n": IntDistribution(1, 8),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "fixed": CategoricalDistribution(["x"]),
    }
    params = {"op": "a", "w": 0.5, "n": 4, "lr": 1e-2, "fixed": "x"}
    for _ in range(200):
        child = mutate(params, space, rng)
        changed = [k for k in params if child[k] != params[k]]
        assert len(changed) == 1 and changed[0] != "fixed"
        key = changed[0]
        if key == "w":
            assert child["w"] == pytest.approx(0.4) or child["w"] == pytest.approx(0.6)
        if key == "n":
            assert abs(child["n"] - 4) == 1
        if key == "lr":
            assert 1e-4 <= child["lr"] <= 1e-1


def test_ranks_and_crowding_match_brute_force():
    rng = np.random.RandomState(3)
    values = rng.randint(0, 5, size=(30, 2)).astype(float)
    ranks = non_dominated_ranks(values, ["maximize", "maximize"])

    def dominates(a, b):
        return np.all(a >= b) and np.any(a > b)

    for i in range(len(values)):
        # rank r: dominated by some point of rank r-1, by none of rank >= r
        dominators = [ranks[j] for j in range(len(values)) if dominates(values[j], values[i])]
        assert ranks[i] == (max(dominators) + 1 if dominators else 0)
    dist = crowding_distance(np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]]))
    assert np.isinf(dist[0]) and np.isinf(dist[3]) and dist[1] == pytest.approx(dist[2]) == pytest.approx(4 / 3)


def test_surrogate_never_proposes_what_the_filter_refuses():
    sampler = SurrogateSampler(seed=0, n_startup_trials=5, random_fraction=0.0, params_filter=lambda p: p.get("e0") != "a")
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    study.optimize(_objective, n_trials=30)
    assert not any(t.params["e0"] == "a" for t in study.trials[5:])
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 30


def test_surrogate_uses_exact_free_values():
    """A cost that no model can learn from few trials (a random table over the grid), handed to the
    sampler as known before training: the sampler with it reaches a larger hypervolume."""
    table = np.random.RandomState(7).rand(4, 4, 4, 4)
    index = {c: i for i, c in enumerate("abcd")}

    def cost(params):
        return float(table[tuple(index[params[f"e{i}"]] for i in range(4))])

    def objective(trial):
        ops = [trial.suggest_categorical(f"e{i}", list("abcd")) for i in range(4)]
        return sum(op == "a" for op in ops) + 0.5 * sum(op == "b" for op in ops), cost(trial.params)

    calls = []

    def free(params):
        calls.append(params)
        return {1: cost(params)}

    def final_hv(free_values, seed):
        sampler = SurrogateSampler(seed=seed, n_startup_trials=8, free_values=free_values)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        study.optimize(objective, n_trials=30)
        values = np.array([t.values for t in study.trials])
        return hypervolume(values, ["maximize", "minimize"], [0.0, 1.0])

    with_free = np.median([final_hv(free, s) for s in range(3)])
    without = np.median([final_hv(None, s) for s in range(3)])
    assert calls and all(set(c) == {"e0", "e1", "e2", "e3"} for c in calls)
    assert with_free > without


def test_encode_is_one_hot_and_unit_interval():
    space = {"op": CategoricalDistribution(["a", "b"]), "n": IntDistribution(1, 5),
             "lr": FloatDistribution(1e-3, 1e-1, log=True)}
    codes = encode([{"op": "b", "n": 5, "lr": 1e-2}, {"op": "a", "n": 1, "lr": 1e-3}], space)
    # sorted keys: lr, n, op
    np.testing.assert_allclose(codes, [[0.5, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])


@pytest.mark.parametrize("name", ["pls", "rea", "surrogate"])
def test_study_files_can_name_them(name, tmp_path):
    from dse.study.config import StudyConfig

    config = StudyConfig.model_validate({
        "name": "s", "data": {"dataset": "digits"}, "space": {"name": "mobilenet_tiny"},
        "objectives": [{"name": "natural_acc", "direction": "maximize"}, {"name": "params", "direction": "minimize"}],
        "sampler": {"name": name, "seed": 0, "options": {"n_startup_trials": 4}},
    })
    assert isinstance(make_sampler(config), (ParetoLocalSearchSampler, RegularizedEvolutionSampler, SurrogateSampler))


@pytest.mark.parametrize("ordered", [True, False])
def test_grid_sampler_ordered_option_visits_the_listed_order(ordered):
    """``ordered: true`` gives trial k entry k (campaign rows land in the file's order); Optuna's own
    order is a seeded shuffle."""
    from dse.study.sampler_registry import build_sampler

    entries = list(range(8))
    sampler = build_sampler("grid", seed=0, options={"ordered": ordered}, grid={"entry": entries})
    study = optuna.create_study(sampler=sampler, directions=["maximize", "maximize"])
    seen = []
    for _ in entries:
        trial = study.ask()
        seen.append(trial.suggest_categorical("entry", entries))
        study.tell(trial, [0.0, 0.0])
    assert sorted(seen) == entries
    assert (seen == entries) is ordered


def _grid_trial(study, entries, state, **user_attrs):
    trial = study.ask()
    value = trial.suggest_categorical("entry", entries)
    for k, v in user_attrs.items():
        trial.set_user_attr(k, v)
    if state == optuna.trial.TrialState.COMPLETE:
        study.tell(trial, [0.0, 0.0])
    elif state != optuna.trial.TrialState.RUNNING:
        study.tell(trial, state=state)
    return value


@pytest.mark.parametrize("ordered", [True, False])
def test_a_resumed_grid_trains_exactly_the_entries_left(ordered):
    """A resumed driver's sampler has another seed (so another shuffle of Optuna's grid): entries
    are still told apart by value, so the resumed one proposes each entry left exactly once. An
    interrupted trial's entry and a given-way trial's entry stay open; a failed one, a stopped one
    and one refused by a constraint are done; a queued retry and a running trial hold theirs."""
    from dse.study.drivers import INTERRUPTED
    from dse.study.grid_sampler import GAVE_WAY
    from dse.study.sampler_registry import build_sampler

    entries = list(range(10))
    states = optuna.trial.TrialState
    study = optuna.create_study(sampler=build_sampler("grid", seed=0, options={"ordered": ordered}, grid={"entry": entries}),
                                directions=["maximize", "maximize"])
    done = {_grid_trial(study, entries, states.COMPLETE), _grid_trial(study, entries, states.FAIL, error="nan loss"),
            _grid_trial(study, entries, states.PRUNED, stopped_at_epoch=1),
            _grid_trial(study, entries, states.PRUNED, rejected="params = 9e6 breaks params <= 1e6 (known before training)")}
    held = {_grid_trial(study, entries, states.RUNNING)}
    reopened = {_grid_trial(study, entries, states.FAIL, error=INTERRUPTED),
                _grid_trial(study, entries, states.PRUNED, rejected="the budget was filled", **{GAVE_WAY: True})}
    queued = next(e for e in entries if e not in done | reopened | held)
    study.enqueue_trial({"entry": queued})
    held.add(queued)
    assert len(done) == 4
    study.sampler = build_sampler("grid", seed=123, options={"ordered": ordered}, grid={"entry": entries})
    retry = study.ask()
    assert retry.suggest_categorical("entry", entries) == queued, "the queued retry runs first"
    left = sorted(set(entries) - done - held)
    assert reopened <= set(left)
    assert not study.sampler.covered(study), "entries are left"
    proposed = [_grid_trial(study, entries, states.COMPLETE) for _ in left]
    assert sorted(proposed) == left, f"proposed {proposed}, left {left}"
    if ordered:
        assert proposed == left
    assert study.sampler.covered(study), "every entry done or running: dse stops asking"
    study.enqueue_trial({"entry": proposed[0]})
    assert not study.sampler.covered(study), "a queued trial still waits to be asked for"
    assert _grid_trial(study, entries, states.COMPLETE) == proposed[0]
    again = _grid_trial(study, entries, states.COMPLETE)
    assert again in held, "once every entry is done or taken, a taken one is proposed (dse reuses its result)"


def test_grid_sampler_ordered_option_must_be_a_boolean():
    from dse.errors import SpecError
    from dse.study.sampler_registry import build_sampler

    with pytest.raises(SpecError, match="ordered"):
        build_sampler("grid", seed=0, options={"ordered": "yes"}, grid={"entry": [0, 1]})
