"""Syne Tune's MOASHA as a stopping rule for simulated studies (``bench/syne_tune_moasha.py``)."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip(
    "syne_tune",
    reason="syne-tune is a benchmark-only extra "
    "(pip install --no-deps -c constraints.txt syne-tune dill sortedcontainers)",
)

from dse.study.config import load_study_config  # noqa: E402
from dse.study.simulate import simulate_study  # noqa: E402
from search_spaces.replay import load_table  # noqa: E402
from tests.conftest import load_bench

st = load_bench("syne_tune_moasha")

N, EPOCHS = 12, 9
SEARCHER_FACTORY = "syne_tune.optimizer.schedulers.searchers.searcher_factory"


@contextlib.contextmanager
def _importable(implementation: str):
    """Makes ``implementation``'s MOASHA class importable. The current one's module imports the
    searcher factory, which needs the BORE/BoTorch extras (xgboost, botorch); where they are
    missing, it is imported with a stand-in factory (MOASHA uses none of it), and every Syne Tune
    module imported that way is dropped afterwards, so nothing else sees the stand-in."""
    if implementation == "legacy":
        yield implementation
        return
    try:
        st.moasha_class("current")
    except ImportError:
        pass
    else:
        yield implementation
        return
    before = set(sys.modules)
    stub = types.ModuleType(SEARCHER_FACTORY)
    stub.searcher_dict = {}
    sys.modules[SEARCHER_FACTORY] = stub
    try:
        st.moasha_class("current")
        yield implementation
    finally:
        for name in set(sys.modules) - before | {SEARCHER_FACTORY}:
            if name.startswith("syne_tune."):
                sys.modules.pop(name, None)


@pytest.fixture(params=["legacy", "current"])
def implementation(request):
    """Both MOASHA classes (see :func:`_importable`)."""
    with _importable(request.param):
        yield request.param


def _rungs(rule) -> list[float]:
    brackets = getattr(rule.scheduler, "brackets", None) or rule.scheduler._brackets
    return sorted(m for m, _ in getattr(brackets[0], "rungs", None) or brackets[0]._rungs)


def _trial_info(rule) -> dict:
    info = getattr(rule.scheduler, "trial_info", None)
    return rule.scheduler._trial_info if info is None else info


def _robust(number: int, epoch: int) -> float:
    """Separated curves: a higher trial number is better at every epoch (0.05 apart)."""
    return 0.10 + 0.05 * number + 0.005 * epoch


def _bops(number: int) -> float:
    """A higher trial number is also cheaper: trial i dominates trial j whenever i > j."""
    return 1e6 * (20 - number)


def write_study(tmp_path: Path) -> Path:
    """A replay table of N trials x EPOCHS epochs with the curves above, and a study file on it."""
    table = tmp_path / "table"
    table.mkdir()
    pd.DataFrame({
        "number": range(N),
        "state": "COMPLETE",
        "robust_acc": [_robust(i, EPOCHS) for i in range(N)],
        "bops": [_bops(i) for i in range(N)],
        "natural_acc": [_robust(i, EPOCHS) + 0.3 for i in range(N)],
        "duration_s": [EPOCHS * 10.0 + 5.0] * N,
    }).to_csv(table / "trials.csv", index=False)
    pd.DataFrame([
        {"number": i, "epoch": e, "epoch_seconds": 10.0,
         "val_robust_acc": _robust(i, e), "val_natural_acc": _robust(i, e) + 0.3}
        for i in range(N) for e in range(1, EPOCHS + 1)
    ]).to_csv(table / "epochs.csv", index=False)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "synthetic",
        "space": {"name": "replay", "options": {"table": str(table)}},
        "objectives": ["robust_acc", "bops"],
        "scheduler": {"name": "mo_asha", "min_epochs": 1, "reduction_factor": 3},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": N},
        "output_dir": str(tmp_path / "out"),
    }))
    return path


@pytest.fixture()
def study_path(tmp_path: Path) -> Path:
    return write_study(tmp_path)


def _curves(config) -> dict[int, list[dict[str, float]]]:
    """Each trial's per-epoch results as the replayed trial reports them (``free_bops`` included)."""
    table = load_table(config.space.options["table"])
    return {i: table.curve(i, free={"free_bops": _bops(i)}) for i in range(N)}


def test_available_and_arguments(study_path, implementation):
    assert st.available() is None
    config = load_study_config(study_path)
    rule = st.SyneTuneMOASHARule(config=config, implementation=implementation)
    sch = rule.scheduler
    assert rule.implementation == {"current": st.CURRENT, "legacy": st.LEGACY}[implementation]
    assert f"{type(sch).__module__}.{type(sch).__qualname__}" == rule.implementation
    assert rule.metrics == ["robust_acc", "bops"] and sch.metric_names() == ["robust_acc", "bops"]
    if implementation == "current":  # one do_minimize for all metrics: robust_acc is fed negated
        assert sch.metric_mode() == "min" and rule.signs == {"robust_acc": -1.0, "bops": 1.0}
    else:
        assert sch.metric_mode() == ["max", "min"] and rule.signs == {"robust_acc": 1.0, "bops": 1.0}
    assert _rungs(rule) == [1, 3, 9]  # dse's rungs plus max_t, where Syne Tune stops every trial
    assert config.rung_epochs() == [1, 3]


def test_dominated_trials_stop_at_the_first_rung_and_the_best_continues(study_path, implementation):
    config = load_study_config(study_path)
    curves = _curves(config)
    rule = st.SyneTuneMOASHARule(config=config, implementation=implementation)
    # Best first: every later trial is dominated by all before it, ranks last of n >= 2 -> STOP.
    assert rule(11, curves[11][0]) is True
    for i in range(10, -1, -1):
        assert rule(i, curves[i][0]) is False, i
    assert sorted(rule.stopped) == list(range(11))
    epoch, values = rule.stopped[0]
    assert epoch == 1 and values == pytest.approx({"robust_acc": _robust(0, 1), "bops": _bops(0)})
    assert rule(3, curves[3][1]) is False  # a stopped trial stays stopped
    for i in range(11):
        rule.done(i)
    # The best trial trains to the end: alone at rung 3, and at max_t Syne Tune's STOP means "done".
    assert all(rule(11, row) for row in curves[11][1:])
    assert 11 not in rule.stopped
    rule.done(11)
    assert _trial_info(rule) == {}


def test_improving_newcomers_continue_and_the_shipped_priority_misranks(study_path, implementation):
    config = load_study_config(study_path)
    curves = _curves(config)
    rule = st.SyneTuneMOASHARule(config=config, implementation=implementation)
    assert all(rule(i, curves[i][0]) for i in range(4))  # each newcomer is the best so far
    # Arrival 10, 9, 8 and then 11, which dominates all three.
    for shipped, best_continues in ((False, True), (True, False)):
        rule = st.SyneTuneMOASHARule(config=config, shipped_priority=shipped, implementation=implementation)
        assert [rule(i, curves[i][0]) for i in (10, 9, 8)] == [True, False, False]
        # As shipped, the bracket reads nondominated_sort's order [3, 0, 1, 2] as priorities, so
        # the newcomer (row 3) gets "rank" 2/4 > 1/3 and is stopped.
        assert rule(11, curves[11][0]) is best_continues, shipped


def test_rule_leaves_the_global_numpy_generator_alone(study_path):
    config = load_study_config(study_path)
    curves = _curves(config)
    rule = st.SyneTuneMOASHARule(config=config)
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    rule(0, curves[0][0])  # adds the trial: MOASHA draws its bracket from numpy's global generator
    assert np.random.random() == expected


def test_simulated_study_prunes_and_saves_epochs(study_path, implementation):
    config = load_study_config(study_path)
    rule = st.SyneTuneMOASHARule(config=config, implementation=implementation)
    sim = simulate_study(config, workers=2, rule=rule)
    states = {number: state for _, _, number, state in sim.events}
    assert len(states) == N
    assert {n for n, s in states.items() if s == "PRUNED"} == set(rule.stopped) != set()
    assert sorted(set(states.values())) == ["COMPLETE", "PRUNED"]
    assert _trial_info(rule) == {}  # every trial was told it ended
    fifo = simulate_study(load_study_config(study_path, overrides={"scheduler": {"name": "fifo"}}), workers=2)
    assert len(fifo.events) == N
    assert sim.epochs < fifo.epochs


def test_current_and_legacy_classes_decide_alike(study_path):
    config = load_study_config(study_path)
    events = {}
    for implementation in ("legacy", "current"):
        with _importable(implementation):
            rule = st.SyneTuneMOASHARule(config=config, implementation=implementation)
            events[implementation] = (simulate_study(config, workers=3, rule=rule).events, dict(rule.stopped))
    assert events["legacy"] == events["current"]
