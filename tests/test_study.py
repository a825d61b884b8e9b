"""Study files, the Optuna + Ray Tune runner, resume after SIGINT/SIGKILL, tables, export."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

import dse

from dse import SpecError
from dse.study.config import load_study_config
from tests.conftest import SYNTHETIC_OPS, kill_session, synthetic_nb201_table
from dse.study.pareto import non_dominated_mask

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("**/*.yaml"))  # campaigns/ included

TINY_DIGITS = {
    "name": "tiny",
    "data": {"dataset": "digits", "subset": 150, "val_fraction": 0.3},
    "space": {"name": "mobilenet_tiny", "options": {"width_mult": [0.1, 0.15, 0.2, 0.25, 0.35], "expand_ratio": [1, 2]}},
    "objectives": [{"name": "robust_acc"}, {"name": "params"}],
    "metrics": ["natural_acc"],
    "sampler": {"name": "random", "seed": 0},
    "budget": {"n_trials": 3},
    "recipe": {"method": "pgd_at", "epochs": 1, "batch_size": 50, "attack": {"name": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 1}, "eval_samples": 20},
    "eval": {"attack": {"steps": 2}, "max_samples": 30, "checks": False},
    "execution": {"concurrency": 2, "cpus_per_trial": 1},
}


def _write(tmp_path: Path, data: dict, name: str = "study.yaml") -> Path:
    data = {**data, "output_dir": str(tmp_path / "out")}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _nb201_study(tmp_path: Path, **changes) -> Path:
    """A tabular study over the synthetic table (looked up, nothing trained)."""
    data = {
        "name": "nb",
        "space": {"name": "nb201", "options": {"ops": SYNTHETIC_OPS}},
        "objectives": ["nb201_clean_acc", "nb201_pgd_acc_2"],
        "metrics": ["nb201_pgd_acc_8"],
        "sampler": {"name": "nsga2", "seed": 1, "options": {"population_size": 6}},
        "budget": {"n_trials": 8},
        "lookup": {"root": str(synthetic_nb201_table(tmp_path / "nb201"))},
        "execution": {"concurrency": 2},
        **changes,
    }
    return _write(tmp_path, data)


@pytest.fixture(scope="module", autouse=True)
def _ray_shutdown():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------- study files
@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_shipped_studies_validate(path):
    config = load_study_config(path)
    assert 2 <= len(config.objectives) <= 4
    assert config.storage_url().startswith("sqlite:///") or config.storage


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"objectives": ["robust_acc"]}, "objectives"),
        ({"objectives": ["robust_acc", "params", "macs", "lipschitz", "natural_acc"]}, "objectives"),
        ({"objectives": ["robust_acc", "accuracy"]}, "unknown objective 'accuracy'"),
        ({"objectives": [{"name": "robust_acc", "direction": "minimize"}, "params"]}, "robust_acc is to maximize"),
        ({"constraints": [{"metric": "bops", "max": 1}]}, "constraints.0.metric"),
        ({"constraints": [{"metric": "params"}]}, "needs max or min"),
        ({"sampler": {"name": "cmaes"}}, "sampler.name"),
        ({"budget": {"n_trials": 0}}, "budget.n_trials"),
        ({"budget": {"wall_time": "soon"}}, "budget.wall_time"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"space": {"name": "darts"}}, "unknown space 'darts'"),
        ({"recipe": {"method": "mart"}}, "recipe: method"),
        ({"recipe": {"epochs": 0}}, "recipe: epochs"),
        ({"eval": {"attack": {"norm": "l7"}}}, "eval"),
        ({"objectives": ["robust_acc", "nb201_clean_acc"]}, "cannot be mixed"),
        ({"name": "bad name!"}, "name"),
        ({"constraints": [{"metric": "natural_acc", "min": float("nan")}]}, "min must be a finite number"),
        ({"constraints": [{"metric": "natural_acc", "max": float("inf")}]}, "max must be a finite number"),
        ({"budget": {"wall_time": float("nan")}}, "budget.wall_time"),
        ({"sampler": {"name": "nsga2", "options": {"population_size": 0}}}, "sampler.options"),
        ({"sampler": {"name": "tpe", "options": {"n_startup": 3}}}, "sampler.options"),
        ({"storage": "sqlite//nope"}, "storage"),
        ({"storage": "nosuchdb://u@h/db"}, "storage"),
        ({"eval": {"max_samples": 0}}, "max_samples"),
        ({"eval": {"batch_size": -1}}, "batch_size"),
        ({"scheduler": {"name": "hyperband"}}, "scheduler.name"),
        ({"scheduler": {"name": "mo_asha", "min_epochs": 5}}, "scheduler.min_epochs"),
        ({"scheduler": {"name": "mo_asha", "rung_eval": {"steps": [0]}}}, "scheduler.rung_eval.steps"),
        ({"scheduler": {"name": "mo_asha", "rung_eval": {"steps": [2], "samples": [10, 20]}}}, "scheduler.rung_eval"),
    ],
)
def test_bad_study_files_name_the_field(tmp_path, change, fragment):
    path = _write(tmp_path, {**TINY_DIGITS, **change})
    with pytest.raises(SpecError) as info:
        load_study_config(path)
    message = str(info.value)
    assert fragment in message and "\n" not in message and "study.yaml" in message


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    path = _write(tmp_path, TINY_DIGITS)
    data = yaml.safe_load(path.read_text())
    data["output_dir"] = str(tmp_path / "taken" / "out")
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="output_dir: .*taken is a file"):
        load_study_config(path)


@pytest.mark.parametrize("command", [["resume"], ["report"], ["export", "--pick", "knee", "-o", "x.yaml"], ["rescore"]])
def test_commands_on_a_study_never_run_say_so_and_create_nothing(tmp_path, capsys, command):
    from dse.cli import main

    path = _write(tmp_path, TINY_DIGITS)
    argv = [command[0], str(path), *command[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "start it with `dse run`" in err and len([l for l in err.splitlines() if l.startswith("dse: error:")]) == 1
    assert not (tmp_path / "out" / "study.db").exists() and not (tmp_path / "x.yaml").exists()


def test_cli_rejects_bad_study_with_exit_2(tmp_path, capsys):
    from dse.cli import main

    path = _write(tmp_path, {**TINY_DIGITS, "budget": {"n_trials": -1}})
    assert main(["run", str(path)]) == 2
    assert "budget.n_trials" in capsys.readouterr().err


# ---------------------------------------------------------------- running
def test_tabular_study_through_ray_tune(tmp_path):
    from dse.study.runner import run_study
    from dse.study.tables import load_tables

    config = load_study_config(_nb201_study(tmp_path, constraints=[{"metric": "nb201_clean_acc", "min": 0.85}]))
    outcome = run_study(config, show_progress=False)
    assert outcome["complete"] == 8 and outcome["failed"] == 0
    trials, epochs, meta = load_tables(config)
    assert len(trials) == 8 and epochs.empty
    table = pd.read_csv(outcome["table"])
    done = table[table["state"] == "COMPLETE"]
    # The table's Pareto set is the non-dominated set of the complete, feasible rows.
    feasible = done[done["feasible"]]
    mask = non_dominated_mask(feasible[["nb201_clean_acc", "nb201_pgd_acc_2"]].to_numpy(), ["maximize", "maximize"])
    assert set(table.loc[table["pareto"], "number"]) == set(feasible["number"][mask])
    # With a constraint, infeasible trials never reach the front.
    assert not table.loc[table["pareto"] & ~table["feasible"]].shape[0]
    assert (table.loc[~table["feasible"], "nb201_clean_acc"] < 0.85).all()
    # Everything landed in the Optuna storage too (what optuna-dashboard shows).
    study = optuna.load_study(study_name="nb", storage=config.storage_url())
    t = study.trials[0]
    assert t.user_attrs["candidate"]["arch"] == "nb201" and "nb201_pgd_acc_8" in t.user_attrs["metrics"]
    assert len(study.trials[0].values) == 2


def test_failing_trials_are_recorded_and_the_study_goes_on_and_resume_can_retry_them(tmp_path, capsys):
    from dse.cli import main
    from dse.study.runner import run_study

    path = _nb201_study(tmp_path, lookup={"root": str(tmp_path / "missing")}, budget={"n_trials": 3})
    config = load_study_config(path)
    outcome = run_study(config, show_progress=False)
    assert outcome["failed"] == 3 and outcome["complete"] == 0
    table = pd.read_csv(outcome["table"])
    assert table["error"].str.contains("missing").all()
    failed = {json.dumps(t.params, sort_keys=True) for t in optuna.load_study(study_name=config.name, storage=config.storage_url()).trials}
    assert len(failed) == 3
    # failures count against the budget: a plain resume has nothing to run
    assert run_study(config, resume=True, show_progress=False)["failed"] == 3
    # the cause is fixed (the table appears): a plain resume still runs nothing, and says how to retry
    synthetic_nb201_table(tmp_path / "missing")
    assert main(["resume", str(path), "--no-report", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])["failed"] == 3
    assert f"dse resume {path} --retry-failed" in out.err
    # --retry-failed trains exactly those candidates again, once
    assert main(["resume", str(path), "--retry-failed", "--no-report", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["complete"], result["failed"], result["retried"], result["repeats"]) == (3, 0, 3, 0), result
    trials = optuna.load_study(study_name=config.name, storage=config.storage_url()).trials
    retries = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {json.dumps(t.params, sort_keys=True) for t in retries} == failed
    assert sorted(t.user_attrs["retry_of"] for t in retries) == [0, 1, 2]
    assert len(trials) == 6, "the failed trials stay in the storage beside their retries"
    # nothing left to retry, and the budget is whole
    assert main(["resume", str(path), "--retry-failed", "--no-report", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["complete"], again["retried"]) == (3, 3) and len(optuna.load_study(study_name=config.name, storage=config.storage_url()).trials) == 6


def test_training_study_through_ray_tune_then_export_and_train(tmp_path, capsys):
    """A few real (tiny) adversarial-training trials through Ray Tune on the CPU."""
    from dse.cli import main

    # with the checks (every one; Square on fewer queries than the default: it is tested in tests/test_suites.py)
    path = _write(tmp_path, {**TINY_DIGITS, "eval": {"attack": {"steps": 2}, "max_samples": 30, "checks": {"square_queries": 100}}})
    assert main(["run", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["complete"] == 3, result
    assert Path(result["report"]).is_file()
    epochs = pd.read_csv(result["epochs"])
    assert set(epochs["number"]) == {0, 1, 2} and "val_robust_acc" in epochs
    table = pd.read_csv(result["table"])
    assert table["measurement"].str.contains("PGD-2").all()
    assert all(Path(p).is_file() for p in table["checkpoint"])
    exported = tmp_path / "picked.yaml"
    assert main(["export", str(path), "--pick", "best:robust_acc", "-o", str(exported), "--json"]) == 0
    capsys.readouterr()
    assert main(["train", str(exported), "-o", str(tmp_path / "full.pt"), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    picked = yaml.safe_load(exported.read_text())
    assert trained["candidate"]["width_mult"] == picked["width_mult"] and trained["epochs"] == 1
    # Every scored trial went through the gradient-masking checks; the flags reach the table and exports.
    assert table["masking_flags"].notna().all()
    assert isinstance(picked["source"]["masking_flags"], list)
    # Self-contained: checkpoint, resolved recipe and eval, versions, repeat status, which recipe it holds.
    source = picked["source"]
    assert Path(source["checkpoint"]).is_file() and source["repeat_of"] is None
    assert source["dse_version"] == dse.__version__ and source["torch_version"].startswith("2.")
    assert "search recipe" in source["recipe"] and picked["recipe"]["epochs"] == 1 and "lr" in picked["recipe"]
    assert picked["eval"]["attack"]["steps"] == 2
    full = tmp_path / "full.yaml"
    assert main(["export", str(path), "--pick", "best:robust_acc", "-o", str(full), "--full"]) == 0
    held = yaml.safe_load(full.read_text())
    assert "full training" in held["source"]["recipe"] and held["recipe"]["epochs"] == 20
    assert held["recipe"]["attack"] == picked["recipe"]["attack"], "full training keeps the study's adversarial settings"


def test_full_training_export_keeps_the_quantized_training_recipe(tmp_path):
    """A warm start (or any ``quant`` recipe choice) the search trained with carries into full training."""
    from dse.study.export import resolved_recipe

    path = _write(tmp_path, {**TINY_DIGITS, "recipe": {**TINY_DIGITS["recipe"], "epochs": 5,
                                                       "quant": {"warm_start_epochs": 3, "clip_grad": "lsq"}}})
    config = load_study_config(path)
    search, full = resolved_recipe(config), resolved_recipe(config, full=True)
    assert (search["epochs"], full["epochs"]) == (5, 20)
    assert full["quant"] == search["quant"] and full["quant"]["warm_start_epochs"] == 3 and full["quant"]["clip_grad"] == "lsq"


def test_a_listed_study_with_the_grid_sampler_trains_each_entry_once(tmp_path):
    """The campaign form (studies/campaigns/): listed candidates, each trained exactly once; a budget
    larger than the list ends when every entry is done (no repeats proposed)."""
    from dse.study.runner import run_study

    entries = [{"arch": "mobilenet_tiny", "width_mult": 0.1, "expand_ratio": 1},
               {"arch": "mobilenet_tiny", "width_mult": 0.1, "expand_ratio": 1, "quant": "fixed", "weight_bits": 2, "act_bits": 2,
                "per_channel": True},
               {"arch": "mobilenet_tiny", "width_mult": 0.1, "expand_ratio": 1, "quant": "mbn", "weight_bases": 2, "act_bases": 1,
                "depthwise_bits": 8}]
    path = _write(tmp_path, {**TINY_DIGITS, "space": {"name": "listed", "options": {"candidates": entries}},
                             "budget": {"n_trials": 5},
                             "sampler": {"name": "grid", "seed": 0}, "recipe": {**TINY_DIGITS["recipe"], "method": "natural",
                             "epochs": 2, "quant": {"warm_start_epochs": 1}}})
    outcome = run_study(load_study_config(path), show_progress=False)
    assert outcome["complete"] == 3 and outcome["repeats"] == 0 and outcome["failed"] == 0
    trained = [t.user_attrs["candidate"] for t in optuna.load_study(study_name="tiny", storage=outcome["storage"]).get_trials()]
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    assert sorted(map(key, trained)) == sorted(map(key, entries))


def test_rescore_the_front_with_the_standard_suite(tmp_path, capsys):
    """dse rescore: the front's checkpoints re-scored, drops and flags recorded, the report shows them."""
    pytest.importorskip("torchattacks", reason="torchattacks is installed with --no-deps (see README)")
    from dse.cli import main

    study = {**TINY_DIGITS, "budget": {"n_trials": 2}, "eval": {**TINY_DIGITS["eval"], "checks": {"square_queries": 100}}}
    path = _write(tmp_path, study)
    assert main(["run", str(path), "--no-report", "--json"]) == 0
    capsys.readouterr()
    assert main(["rescore", str(path), "--suite", "standard", "--trials", "0,1", "--eval-samples", "20", "--cascade", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["number"]: r for r in result["trials"]}
    assert set(rows) == {0, 1}
    for r in rows.values():
        assert set(r["per_attack"]) == {"pgd-50x5", "apgd-ce", "apgd-t"}
        assert r["robust_acc"] <= min(r["per_attack"].values())
        assert r["drop"] == pytest.approx(r["search_robust_acc"] - r["robust_acc"])
    saved = json.loads(Path(result["path"]).read_text())
    assert saved["transfer"]["models"] == ["trial 0", "trial 1"]
    assert all("eps_curve" in t and "step_size_curve" in t for t in saved["trials"])
    from dse.study.tables import load_tables

    trials, _, meta = load_tables(load_study_config(path))
    assert trials.set_index("number").loc[0, "rescore.standard.robust_acc"] == pytest.approx(rows[0]["robust_acc"])
    assert meta["rescore"][0]["suite"] == "standard"
    html = Path(result["report"]).read_text()
    assert "Robustness re-score" in html
    for slug in ("rescore", "eps_curves_standard", "step_curves_standard", "transfer_standard"):
        assert f'id="dse-{slug}"' in html, slug


def test_repeated_candidates_reuse_results_and_an_exhausted_space_ends_the_study(tmp_path):
    from dse.study.runner import run_study
    from dse.study.searcher import MAX_REPEATED_ASKS

    config = load_study_config(
        _nb201_study(tmp_path, space={"name": "nb201", "options": {"ops": ["nor_conv_3x3"]}}, budget={"n_trials": 3})
    )
    outcome = run_study(config, show_progress=False)
    assert outcome["complete"] == 1 and outcome["repeats"] == MAX_REPEATED_ASKS
    assert outcome["pareto"] == 1, "repeats of a front point do not enlarge the Pareto set"
    table = pd.read_csv(outcome["table"])
    repeats = table[table["duplicate_of"].notna()]
    assert (repeats["duplicate_of"] == 0).all()
    assert (repeats["nb201_clean_acc"] == table.loc[0, "nb201_clean_acc"]).all()


def test_run_refuses_an_existing_study_and_resume_with_nothing_left(tmp_path):
    from dse.study.runner import run_study

    config = load_study_config(_nb201_study(tmp_path, budget={"n_trials": 2}))
    run_study(config, show_progress=False)
    with pytest.raises(SpecError, match="dse resume"):
        run_study(config, show_progress=False)
    outcome = run_study(config, resume=True, show_progress=False)
    assert outcome["complete"] == 2


@pytest.mark.parametrize("failures", [1, 9], ids=["lost_the_race_once", "keeps_failing"])
def test_a_driver_that_loses_the_schema_race_retries_and_a_broken_storage_fails_in_one_line(tmp_path, monkeypatch, failures):
    """PostgreSQL answers a driver that checked for Optuna's tables just before another created them
    with ``relation "studies" already exists`` (a ProgrammingError): that driver must retry and open
    the study; a storage that keeps failing ends in a one-line SpecError naming it."""
    import sqlalchemy.exc

    from dse.study.storage import open_study

    real, calls = optuna.storages.RDBStorage, []

    class Racing(real):
        def __init__(self, url: str, **kwargs) -> None:
            calls.append(url)
            if len(calls) <= failures:
                real(url, **kwargs)  # the winner made the schema meanwhile
                raise sqlalchemy.exc.ProgrammingError("CREATE TABLE studies", {}, Exception('relation "studies" already exists'))
            super().__init__(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    monkeypatch.setattr("dse.study.schema_race.time.sleep", lambda _s: None)
    config = load_study_config(_nb201_study(tmp_path))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    if failures == 1:
        assert open_study(config, url).study_name == "nb" and len(calls) == 2
    else:
        with pytest.raises(SpecError, match=r'cannot be opened as an Optuna study database \(relation "studies" already exists\)'):
            open_study(config, url)
        assert len(calls) == 5, "a bounded number of tries"


def _study_is_ready(db: Path, name: str) -> bool:
    """Whether the driver has finished creating the storage schema and the study.

    Read through a read-only sqlite3 connection: opening the storage with Optuna while the
    driver is still creating it makes both race to insert the schema version row.
    """
    if not db.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            version = conn.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0]
            studies = conn.execute("SELECT COUNT(*) FROM studies WHERE study_name = ?", (name,)).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet, or the database is locked
        return False
    return version == 1 and studies == 1


def _complete_trials(storage: str) -> dict[int, tuple]:
    if not _study_is_ready(Path(storage.removeprefix("sqlite:///")), "tiny"):
        return {}
    try:
        study = optuna.load_study(study_name="tiny", storage=storage)
    except KeyError:
        return {}
    return {
        t.number: (tuple(t.values), json.dumps(t.params, sort_keys=True))
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if "duplicate_of" not in t.user_attrs
    }


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_after_the_driver_is_killed(tmp_path, sig):
    import ray

    ray.shutdown()  # the driver runs its own Ray instance; this process needs none
    study = {**TINY_DIGITS, "budget": {"n_trials": 6}, "execution": {"concurrency": 1, "cpus_per_trial": 1}}
    path = _write(tmp_path, study)
    storage = f"sqlite:///{(tmp_path / 'out' / 'study.db').resolve()}"
    exe = str(Path(sys.executable).parent / "dse")
    proc = subprocess.Popen([exe, "run", str(path), "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    try:
        while len(_complete_trials(storage)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no trial completed in time"
            time.sleep(0.5)
        before = _complete_trials(storage)
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
        kill_session(proc.pid)  # the driver's Ray processes, not other Ray instances on the machine
    before = {**before, **_complete_trials(storage)}  # a trial may finish while the driver stops
    assert 2 <= len(before) < 6
    done = subprocess.run([exe, "resume", str(path), "--no-report"], capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    after = _complete_trials(storage)
    assert len(after) == 6, "the budget counts finished distinct trials: exactly 6 complete, none repeated"
    candidates = [json.loads(p) for _, p in after.values()]
    assert len({json.dumps(c, sort_keys=True) for c in candidates}) == 6, "no candidate was trained twice"
    for number, record in before.items():
        assert after[number] == record, "a completed trial was lost or changed"
    study_obj = optuna.load_study(study_name="tiny", storage=storage)
    for t in study_obj.trials:
        if "retry_of" in t.user_attrs:
            assert t.user_attrs["retry_of"] not in before, "a completed trial was run again"


def _sampler_params():
    from dse.study.sampler_registry import SAMPLER_NAMES

    in_ci = ("pls", "surrogate")  # the rest take ~10 s each: -m slow
    tabular = [n for n in SAMPLER_NAMES if n != "grid"]  # grid: only the listed space (tests/test_search_spaces.py)
    return [name if name in in_ci else pytest.param(name, marks=pytest.mark.slow) for name in tabular]


def test_the_study_schema_and_the_sampler_registry_agree():
    from dse.study.config import SAMPLERS
    from dse.study.sampler_registry import DEFAULT_SAMPLER, SAMPLER_NAMES

    assert SAMPLERS == SAMPLER_NAMES
    assert DEFAULT_SAMPLER in SAMPLER_NAMES
    from dse.study.config import SamplerConfig

    assert SamplerConfig().name == DEFAULT_SAMPLER


@pytest.mark.parametrize("sampler", _sampler_params())
def test_every_sampler_runs_the_tabular_study_under_a_free_constraint_and_resumes(tmp_path, sampler):
    """Each registered sampler through the runner: a constraint on nb201_params (known before
    anything is looked up) is never broken by a scored trial, and a resumed study adds to it."""
    from dse.models.nb201 import make_cell, nb201_params
    from dse.study.config import SAMPLERS
    from dse.study.runner import run_study

    assert sampler in SAMPLERS
    limit = nb201_params(make_cell(["nor_conv_3x3"] * 3 + ["skip_connect"] * 3))
    options = {"nsga2": {"population_size": 4}, "nsga3": {"population_size": 4}, "gp": {"n_startup_trials": 3},
               "pls": {"n_startup_trials": 3}, "rea": {"n_startup_trials": 3},
               "surrogate": {"n_startup_trials": 3}}.get(sampler, {})
    path = _nb201_study(tmp_path, objectives=["nb201_clean_acc", "nb201_params"], metrics=[],
                        constraints=[{"metric": "nb201_params", "max": limit}],
                        sampler={"name": sampler, "seed": 0, "options": options}, budget={"n_trials": 4})
    config = load_study_config(path)
    first = run_study(config, show_progress=False)
    assert first["complete"] + first["failed"] == 4 and first["failed"] == 0
    second = run_study(config, n_trials=6, resume=True, show_progress=False)
    assert second["complete"] == 6
    study = optuna.load_study(study_name="nb", storage=config.storage_url())
    scored = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.user_attrs["metrics"]["nb201_params"] <= limit for t in scored)
    refused = [t for t in study.get_trials() if "rejected" in t.user_attrs]
    assert all("nb201_params" in t.user_attrs["rejected"] for t in refused)


def test_console_report_csv_and_storage_agree_on_distinct_trials_and_the_front(tmp_path, capsys):
    """One truth about repeats: a small space forces repeats; the console (JSON and the Pareto table),
    the report header, trials.csv and the Optuna storage count the same distinct complete trials and
    the same Pareto candidates, and Ray's and Optuna's banners stay off the console."""
    import re

    from dse.cli import main
    from dse.study.pareto import non_dominated_mask

    path = _nb201_study(tmp_path, space={"name": "nb201", "options": {"ops": SYNTHETIC_OPS[:2]}}, budget={"n_trials": 30},
                        sampler={"name": "random", "seed": 0})
    assert main(["run", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    console = captured.out + captured.err
    for banner in ("Configuration for experiment", "TensorBoard", "View detailed results", "A new study created"):
        assert banner not in console, banner
    assert result["repeats"] > 0, "the space is small enough to force repeats"
    table = pd.read_csv(result["table"])
    distinct = table[(table["state"] == "COMPLETE") & table["duplicate_of"].isna()]
    assert len(distinct) == result["complete"] and int(table["pareto"].sum()) == result["pareto"]
    assert table.loc[table["duplicate_of"].notna(), "pareto"].sum() == 0, "a repeat is never a second front member"
    study = optuna.load_study(study_name="nb", storage=load_study_config(path).storage_url())
    stored = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    assert len(stored) == result["complete"]
    values = np.array([t.values for t in stored])
    assert int(non_dominated_mask(values, ["maximize", "maximize"]).sum()) == result["pareto"]
    header = Path(result["report"]).read_text()
    assert re.search(rf"{result['complete']} complete distinct candidates", header)
    assert f"{result['pareto']} distinct candidates" in header
    assert "knee (recommended)" in captured.err
