"""The Python API (``import dse``): the quick start from a script, and each function's contract."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import dse

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, sys
    import dse

    study = sys.argv[1]
    outcome = dse.run_study(study)
    trials = dse.load_results(study)
    picked = dse.export(study, sys.argv[2])
    trained = dse.train(sys.argv[2], epochs=1, output=sys.argv[3])
    scored = dse.evaluate(trained["checkpoint"], suite="quick", max_samples=20, checks=False)
    print(json.dumps({
        "complete": outcome["complete"], "pareto": outcome["pareto"], "report": outcome["report"],
        "rows": len(trials), "distinct_rows": int(trials["duplicate_of"].isna().sum()), "pareto_rows": int(trials["pareto"].sum()), "picked": picked["trial"],
        "checkpoint": trained["checkpoint"], "robust_acc": scored["robust_acc"], "suite": scored["suite"],
    }))
''')


def _scaled_quickstart(tmp_path: Path, *, full: bool = False) -> Path:
    """studies/quickstart.yaml, its outputs under ``tmp_path``; scaled down unless ``full``."""
    data = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    data["output_dir"] = str(tmp_path / "out")
    if not full:
        data["data"]["subset"] = 200
        data["budget"] = {"n_trials": 2}
        data["recipe"].update(epochs=1, warmup_epochs=0, eval_samples=20)
        data["eval"] = {"attack": {"name": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 2}, "max_samples": 30, "checks": False}
        data["constraints"] = []
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run_script(tmp_path: Path, study: Path, timeout: float) -> dict:
    script = tmp_path / "notebook.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(study), str(tmp_path / "best.yaml"), str(tmp_path / "best.pt")],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(result: dict, tmp_path: Path, n_trials: int) -> None:
    # a sampler may propose a scored candidate again: a reused repeat, a row with duplicate_of, not in the budget
    assert result["complete"] == n_trials and result["distinct_rows"] == n_trials <= result["rows"]
    assert 1 <= result["pareto"] == result["pareto_rows"] <= n_trials
    assert Path(result["report"]).is_file() and Path(result["checkpoint"]) == tmp_path / "best.pt"
    assert (tmp_path / "best.yaml").is_file() and 0.0 <= result["robust_acc"] <= 1.0 and result["suite"] == "quick"


@pytest.mark.slow  # a fresh Python, Ray and two trainings (~1 min): the API's calls are covered in-process below
def test_the_quick_start_from_a_script_scaled_down(tmp_path):
    """The quick start's study file, scaled to 2 one-epoch trials on 200 images, run through the API."""
    import ray

    ray.shutdown()
    _check(_run_script(tmp_path, _scaled_quickstart(tmp_path), timeout=400), tmp_path, 2)


@pytest.mark.slow  # the real quick start: about 5 minutes on 2 cores
def test_the_quick_start_from_a_script(tmp_path):
    import ray

    ray.shutdown()
    _check(_run_script(tmp_path, _scaled_quickstart(tmp_path, full=True), timeout=1200), tmp_path, 12)


def test_the_api_is_exported_and_documented():
    for name in ("run_study", "load_results", "export", "train", "evaluate", "profile_candidate", "write_report", "load_study"):
        func = getattr(dse, name)
        assert name in dse.__all__ and func.__doc__ and func.__module__ == "dse.api"


def test_profile_and_bad_input_raise_the_commands_errors(tmp_path):
    result = dse.profile_candidate({"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2})
    assert result["params"] > 0 and result["macs"] > 0
    with pytest.raises(dse.SpecError):
        dse.profile_candidate({"arch": "mobilenet_tiny", "width_mult": -1})
    with pytest.raises(dse.DseError):
        dse.load_study(tmp_path / "missing.yaml")
    never_run = _scaled_quickstart(tmp_path)
    with pytest.raises(dse.SpecError, match="dse run"):
        dse.load_results(never_run)
    assert not (tmp_path / "out" / "study.db").exists(), "read-only calls create nothing"
