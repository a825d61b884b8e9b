"""Several drivers on one study, as real processes: the budget is shared, each candidate is trained
once, and a driver's running trials are recovered only when that driver is gone.

The study replays a synthetic learning-curve table with a sleep per epoch (``time_scale``), so
trials take seconds without training anything.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from dse.study.config import load_study_config
from dse.study.drivers import budget_used, finished_trials, recover_interrupted
from dse.study.storage import open_study
from tests.conftest import assert_each_candidate_once, kill_session, learning_curve_table, trained_trials

BUDGET = 8
DSE = str(Path(sys.executable).parent / "dse")


def _study(tmp_path: Path, *, time_scale: float = 0.04, **changes) -> Path:
    data = {
        "name": "two",
        "space": {"name": "replay", "options": {"table": str(learning_curve_table(tmp_path / "table")), "time_scale": time_scale}},
        "objectives": [{"name": "robust_acc"}, {"name": "bops"}],
        "metrics": ["natural_acc"],
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": BUDGET},
        "execution": {"concurrency": 1, "cpus_per_trial": 1, "num_cpus": 1, "heartbeat_interval": 1, "grace_period": 5},
        "output_dir": str(tmp_path / "out"),
        **changes,
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([DSE, *args, "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_session(proc.pid)
    return proc.returncode, err


def _trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    config = load_study_config(path)
    return optuna.load_study(study_name=config.name, storage=config.storage_url()).get_trials()


def _wait_for_complete(path: Path, n: int, proc: subprocess.Popen, deadline: float) -> None:
    db = Path(load_study_config(path).storage_url().removeprefix("sqlite:///"))
    while True:
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else "driver exited"
        assert time.time() < deadline, "no trial completed in time"
        if db.is_file():
            try:
                if len(trained_trials(_trials(path))) >= n:
                    return
            except (KeyError, Exception):  # noqa: BLE001 - the schema may still be being created
                pass
        time.sleep(0.5)


def test_resume_beside_a_live_driver_shares_the_work(tmp_path):
    import ray

    ray.shutdown()
    path = _study(tmp_path)
    first = _start("run", str(path))
    second = None
    try:
        _wait_for_complete(path, 1, first, time.time() + 180)
        second = _start("resume", str(path))
        rc2, err2 = _finish(second)
        rc1, err1 = _finish(first)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                kill_session(proc.pid)
    assert rc1 == 0, err1[-2000:]
    assert rc2 == 0, err2[-2000:]
    trained = assert_each_candidate_once(_trials(path), BUDGET)
    drivers = {t.user_attrs["driver"] for t in trained}
    assert len(drivers) == 2, "both drivers trained candidates"


@pytest.mark.slow  # ~50 s of two Ray drivers: CI runs the resume-beside-a-live-driver test instead
def test_two_runs_started_together_train_each_candidate_once(tmp_path):
    import ray

    ray.shutdown()
    path = _study(tmp_path)
    procs = [_start("run", str(path)), _start("run", str(path))]
    results = [_finish(p) for p in procs]
    for rc, err in results:
        # either both cooperate, or the later one is refused because the study already has trials
        assert rc == 0 or (rc == 2 and "dse resume" in err and len(err.strip().splitlines()) == 1), err[-2000:]
    assert_each_candidate_once(_trials(path), BUDGET)


def test_a_killed_drivers_trial_is_recovered_and_a_live_ones_is_not(tmp_path):
    """In-process: a RUNNING trial claimed by a process that no longer exists is recovered at once;
    one whose driver is alive (this process) and beating is left alone, and counts in the budget."""
    config = load_study_config(_study(tmp_path))
    study = open_study(config)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    import os
    import socket

    gone = study.ask({"x": optuna.distributions.CategoricalDistribution(["a", "b"])})
    gone.set_user_attr("driver", f"{socket.gethostname()}:{int(dead.stdout)}:abcdef")
    alive = study.ask({"x": optuna.distributions.CategoricalDistribution(["a", "b"])})
    alive.set_user_attr("driver", f"{socket.gethostname()}:{os.getpid()}:abcdef")
    study._storage.record_heartbeat(alive._trial_id)  # the cached storage forwards it
    assert budget_used(study) == 2 and finished_trials(study) == 0
    assert recover_interrupted(study, grace=config.execution.grace()) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states[gone.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in waiting] == [gone.number], "the interrupted candidate is queued again"
    assert budget_used(study) == 1


def test_a_released_repeat_waiting_for_its_original_is_not_queued_again(tmp_path):
    """At a driver's end, a trial training a candidate is queued again; a repeat that only waited
    for it is not (it was queued once per ask: 50 copies of one candidate after a stop)."""
    from dse.study.drivers import release

    config = load_study_config(_study(tmp_path))
    study = open_study(config)
    dist = {"x": optuna.distributions.CategoricalDistribution(["a", "b"])}
    original = study.ask(dist)
    repeat = study.ask(dist)
    repeat.set_user_attr("waits_for", original.number)
    assert release(study, [original._trial_id, repeat._trial_id]) == 2
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in waiting] == [original.number]


def test_an_orphan_of_a_driver_killed_between_ask_and_mark_and_a_refused_trial_leave_the_budget_whole(tmp_path):
    """A driver killed right after ``study.ask()`` leaves a RUNNING trial with no driver mark and
    no heartbeat: the resumed driver waits ``heartbeat_interval`` for it to be marked, then trains
    the whole budget without giving way (it gave way, asked again and gave way again, refusing
    candidates it never trained). A candidate whose earlier trial was refused (given way, or broke
    a constraint) is trained when proposed again, not "reused" from a trial that holds no result."""
    from dse.study.runner import run_study
    from search_spaces.replay import load_table

    execution = {"concurrency": 1, "cpus_per_trial": 1, "num_cpus": 1, "heartbeat_interval": 2, "grace_period": 600}
    path = _study(tmp_path, time_scale=0.0, execution=execution)  # the orphan is not recovered during the test
    config = load_study_config(path)
    run_study(config, n_trials=3, show_progress=False)
    study = open_study(config)
    choices = load_table(config.space.options["table"]).candidates()
    done = {t.user_attrs["candidate"]["replay"] for t in study.get_trials()}
    refused = next(c for c in choices if c not in done)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, params={"replay": refused},
        distributions={"replay": optuna.distributions.CategoricalDistribution(choices)},
        user_attrs={"candidate": {"replay": refused}, "rejected": "the budget was filled by another driver's trials"}))
    refused_number = study.get_trials()[-1].number
    orphan = study.ask()
    study.enqueue_trial({"replay": refused})
    run_study(config, resume=True, show_progress=False)
    trials = _trials(path)
    trained = trained_trials(trials)
    assert len(trained) == BUDGET
    assert len({t.user_attrs["candidate"]["replay"] for t in trained}) == BUDGET, "a candidate was trained twice"
    assert refused in {t.user_attrs["candidate"]["replay"] for t in trained}, "the refused trial's candidate was never trained"
    assert [t.number for t in trials if "rejected" in t.user_attrs] == [refused_number], "the resumed driver gave way"
    assert next(t for t in trials if t.number == orphan.number).state == optuna.trial.TrialState.RUNNING


@pytest.mark.slow  # CI runs the SIGKILL-and-resume test of test_study.py (real training) instead
def test_a_driver_killed_mid_trial_is_recovered_by_resume(tmp_path):
    import ray

    ray.shutdown()
    path = _study(tmp_path, time_scale=0.04)
    first = _start("run", str(path))
    try:
        _wait_for_complete(path, 2, first, time.time() + 180)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        kill_session(first.pid)
    rc, err = _finish(_start("resume", str(path)))
    assert rc == 0, err[-2000:]
    trials = _trials(path)
    trained = trained_trials(trials)
    assert len(trained) == BUDGET
    assert len({json.dumps(t.user_attrs["candidate"], sort_keys=True) for t in trained}) == BUDGET
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]


@pytest.fixture(scope="module", autouse=True)
def _ray_shutdown():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
