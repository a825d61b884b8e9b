"""What the console says about a study: the best scores so far (progress) and the Pareto table at the end.

Both count distinct candidates only: a repeat (``duplicate_of``) is its original, never a second
front member, the same rule as the report, the CSV and :func:`dse.load_results`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from dse.study.config import StudyConfig
from dse.study.pareto import knee_point, non_dominated_mask, pareto_front

__all__ = ["best_so_far", "distinct_feasible", "pareto_size", "pareto_table"]


def distinct_feasible(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials that meet every constraint, repeats (``duplicate_of``) left out."""
    return [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "duplicate_of" not in t.user_attrs and all(v <= 0 for v in t.user_attrs.get("constraint_values", []))
    ]


def pareto_size(study: optuna.Study) -> int:
    """Distinct candidates on the feasible front (reused repeats are not counted again)."""
    feasible = distinct_feasible(study)
    if not feasible:
        return 0
    values = np.array([t.values for t in feasible], dtype=float)
    return int(non_dominated_mask(values, [d.name.lower() for d in study.directions]).sum())


def best_so_far(study: optuna.Study, config: StudyConfig) -> str:
    """``robust_acc 0.574 (#5), params 240,370 (#1)``: each objective's best over the complete,
    feasible, distinct trials ('' before the first)."""
    trials = distinct_feasible(study)
    if not trials:
        return ""
    values = np.array([t.values for t in trials], dtype=float)
    parts = []
    for j, (name, direction) in enumerate(zip(config.objective_names(), config.directions())):
        i = int(np.nanargmax(values[:, j]) if direction == "maximize" else np.nanargmin(values[:, j]))
        parts.append(f"{name} {_fmt(values[i, j])} (#{trials[i].number})")
    return "best " + ", ".join(parts)


def pareto_table(trials: pd.DataFrame, config: StudyConfig, *, width: int = 48) -> list[str]:
    """The feasible front of distinct candidates as text lines: trial, candidate, objectives, knee mark."""
    objectives = config.objective_specs()
    front = pareto_front(trials, objectives)
    if front.empty:
        return ["no feasible trial on the front yet"]
    knee = knee_point(front, objectives)
    names = [o["name"] for o in objectives]
    header = f"{'':2}{'trial':>5}  {'candidate':<{width}}  " + "  ".join(f"{n:>12}" for n in names)
    lines = [header, "-" * len(header)]
    for _, row in front.sort_values(names[0], ascending=objectives[0]["direction"] != "maximize").iterrows():
        spec = _short(row.get("candidate"), width)
        mark = "* " if int(row["number"]) == knee else "  "
        lines.append(f"{mark}{int(row['number']):>5}  {spec:<{width}}  " + "  ".join(f"{_fmt(row[n]):>12}" for n in names))
    lines.append(f"* knee (recommended): trial {knee}; export it with `dse export STUDY --trial {knee} -o best.yaml`")
    return lines


def _short(candidate: Any, width: int) -> str:
    try:
        spec = json.loads(candidate) if isinstance(candidate, str) else dict(candidate or {})
    except (TypeError, ValueError):
        return str(candidate)[:width]
    text = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "arch")
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: Any) -> str:
    value = float(value)
    if not np.isfinite(value):
        return "nan"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
