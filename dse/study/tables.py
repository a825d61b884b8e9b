"""The study as tidy tables: one row per trial, one row per (trial, epoch); CSV and Parquet."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from dse.io import atomic_write
from dse.study.config import StudyConfig
from dse.study.pareto import pareto_mask
from dse.study.storage import open_study

__all__ = ["epochs_frame", "load_rescores", "load_tables", "mark_pareto", "report_meta", "rescore_path", "table_path", "trials_frame", "write_tables"]


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _flags(flags: list[str]) -> str:
    """Masking flags as one cell: ``"none"`` when every check passed (an empty cell means not checked)."""
    return ";".join(flags) if flags else "none"


def trials_frame(study: optuna.Study, config: StudyConfig) -> pd.DataFrame:
    """One row per trial: number, state, feasibility, objectives and metrics, candidate keys, error."""
    names = config.recorded_names()
    rescores = study.user_attrs.get("rescore", {})
    rows = []
    for t in study.get_trials(deepcopy=False):
        metrics = t.user_attrs.get("metrics", {})
        violations = t.user_attrs.get("constraint_values", [])
        violation = float(sum(max(0.0, v) for v in violations))
        candidate = t.user_attrs.get("candidate", {})
        start = t.datetime_start
        duration = t.user_attrs.get("duration_s")
        if (duration is None or not math.isfinite(duration)) and t.datetime_complete and start:
            duration = (t.datetime_complete - start).total_seconds()
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "feasible": t.state == TrialState.COMPLETE and violation == 0.0,
            "constraint_violation": violation,
            "error": t.user_attrs.get("error"),
            "duration_s": duration if duration is not None else math.nan,
            "datetime_start": start.isoformat() if start else None,
            "candidate": json.dumps(candidate, sort_keys=False),
            "measurement": t.user_attrs.get("measurement"),
            "checkpoint": t.user_attrs.get("checkpoint"),
            "node": t.user_attrs.get("node"),
            "duplicate_of": t.user_attrs.get("duplicate_of"),
            "masking_flags": _flags(t.user_attrs["masking_flags"]) if "masking_flags" in t.user_attrs else None,
            "stopped_at_epoch": t.user_attrs.get("stopped_at_epoch"),
            "rejected": t.user_attrs.get("rejected"),
            "epochs_trained": len(t.user_attrs.get("history", [])) if "duplicate_of" not in t.user_attrs else 0,
        }
        for name, value in t.user_attrs.get("rung_values", {}).items():
            row[f"rung.{name}"] = value
        for name, value in t.user_attrs.get("suite_per_attack", {}).items():
            row[f"attack.{name}"] = value
        for suite, scored in rescores.items():
            if str(t.number) in scored:
                row[f"rescore.{suite}.robust_acc"] = scored[str(t.number)]["robust_acc"]
                row[f"rescore.{suite}.drop"] = scored[str(t.number)]["drop"]
                row[f"rescore.{suite}.masking_flags"] = _flags(scored[str(t.number)]["masking_flags"])
        for name in names:
            row[name] = float(metrics[name]) if name in metrics else math.nan
        for key, value in candidate.items():
            row[f"cand.{key}"] = _cell(value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["number", "state", "feasible", "constraint_violation", "error", "candidate", *names])
    return frame


def epochs_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per (trial, epoch) with the per-epoch metrics the trial reported."""
    rows = [
        {"number": t.number, **row}
        for t in study.get_trials(deepcopy=False)
        for row in t.user_attrs.get("history", [])
    ]
    return pd.DataFrame(rows, columns=None if rows else ["number", "epoch"])


def rescore_path(config: StudyConfig, suite: str) -> Path:
    """Where :func:`rescore_study` writes its JSON for ``suite``."""
    return config.out_dir() / f"rescore-{suite}.json"


def load_rescores(config: StudyConfig) -> list[dict[str, Any]]:
    """Every rescore JSON written for the study (one per suite), oldest suite name first."""
    out = config.out_dir()
    return [json.loads(p.read_text()) for p in sorted(out.glob("rescore-*.json"))] if out.is_dir() else []


def report_meta(study: optuna.Study, config: StudyConfig, storage: str | None = None) -> dict[str, Any]:
    """What the report says about the study: objectives, metrics, constraints, measurement."""
    measurements = [
        t.user_attrs["measurement"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("measurement")
    ]
    return {
        "name": config.name,
        "objectives": config.objective_specs(),
        "metrics": [m for m in config.metrics if m not in config.objective_names()],
        "constraints": [c.describe() for c in config.constraints],
        "measurement": measurements[-1] if measurements else "no completed trial yet",
        "storage": storage or config.storage_url(),
        "sampler": f"{config.sampler.name} (seed {config.sampler.seed})",
        "scheduler": config.scheduler.name,
        "max_epochs": None if config.is_tabular and not config.is_replay else config.max_epochs(),
        "rescore": load_rescores(config),
    }


def mark_pareto(trials: pd.DataFrame, config: StudyConfig) -> pd.DataFrame:
    """Adds the ``pareto`` column (complete, feasible, non-dominated trials) to ``trials``, in place."""
    trials["pareto"] = pareto_mask(trials, config.objective_specs()).to_numpy() if len(trials) else []
    return trials


def write_tables(study: optuna.Study, config: StudyConfig) -> dict[str, str]:
    """Writes ``trials.csv``/``trials.parquet`` and ``epochs.csv`` under the study's output directory."""
    out = config.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    trials = mark_pareto(trials_frame(study, config), config)
    atomic_write(out / "trials.csv", lambda tmp: trials.to_csv(tmp, index=False))
    trials.to_parquet(out / "trials.parquet", index=False)
    epochs = epochs_frame(study)
    atomic_write(out / "epochs.csv", lambda tmp: epochs.to_csv(tmp, index=False))
    return {"table": str(out / "trials.csv"), "parquet": str(out / "trials.parquet"), "epochs": str(out / "epochs.csv")}


def load_tables(config: StudyConfig, storage: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Trials, epochs and report metadata, read from the study storage."""
    study = open_study(config, storage, create=False)
    return trials_frame(study, config), epochs_frame(study), report_meta(study, config, storage)


def table_path(config: StudyConfig) -> Path:
    """Where :func:`write_tables` writes the trials CSV."""
    return config.out_dir() / "trials.csv"
