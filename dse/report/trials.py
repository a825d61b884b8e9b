"""Reading the runner's trials table for the report: objectives, categories, candidates, hover texts.

The trials table has one row per Optuna trial (``number``, ``state``, ``feasible``,
``constraint_violation``, ``error``, ``duration_s``, ``candidate`` (JSON), ``cand.<key>`` columns
and one float column per objective / metric); ``meta`` is the study meta (``objectives``,
``metrics``, ...). Every function here is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dse.report.formatting import candidate_dict, escape, flag_list, format_cell, is_missing
from dse.report.intervals import interval_text
from dse.study.pareto import (
    candidate_mask,
    objective_directions,
    objective_names,
    objective_values,
    pareto_mask,
)

__all__ = [
    "PLOTTED",
    "candidate_columns",
    "repeat_mask",
    "repeats_of",
    "candidate_lines",
    "row_candidate",
    "short_label",
    "sorted_by_number",
    "study_objectives",
    "recorded_metrics",
    "table_cell",
    "trial_categories",
    "trial_hover",
]

PLOTTED = ("infeasible", "dominated", "pareto")
"""Categories drawn in the Pareto plots, back to front.

Failed, running, pruned trials and complete trials without objective values are never drawn.
"""


def study_objectives(meta: Mapping[str, Any]) -> tuple[list[dict], list[str], list[str]]:
    """``(specs, names, directions)`` of the study's objectives (``specs``: ``{"name", "direction"}``)."""
    objectives = list(meta.get("objectives") or [])
    names = objective_names(objectives)
    directions = objective_directions(objectives)
    specs = [{"name": n, "direction": d} for n, d in zip(names, directions)]
    return specs, names, directions


def recorded_metrics(trials: pd.DataFrame, meta: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Recorded (not optimized) metrics present in the table, in ``meta`` order."""
    out = []
    for m in meta.get("metrics") or []:
        m = str(m)
        if m not in names and m not in out and m in trials.columns:
            out.append(m)
    return out


def sorted_by_number(trials: pd.DataFrame) -> pd.DataFrame:
    """The table ordered by trial number (stable), when it has one."""
    if "number" in trials.columns:
        return trials.sort_values("number", kind="stable")
    return trials


def candidate_columns(trials: pd.DataFrame) -> list[str]:
    """The ``cand.<key>`` columns, in table order."""
    return [c for c in trials.columns if isinstance(c, str) and c.startswith("cand.")]


def _states(trials: pd.DataFrame) -> pd.Series:
    if "state" not in trials.columns:
        return pd.Series("COMPLETE", index=trials.index)
    return trials["state"].astype(str).str.upper()


def repeat_mask(trials: pd.DataFrame) -> pd.Series:
    """True for a repeat: a trial whose sampler proposed an already-scored candidate and that reused
    that trial's result (``duplicate_of`` set). Each candidate counts once: its original does."""
    if "duplicate_of" not in trials.columns:
        return pd.Series(False, index=trials.index, dtype=bool)
    return trials["duplicate_of"].map(lambda v: not is_missing(v)).astype(bool)


def repeats_of(trials: pd.DataFrame) -> dict[int, list[int]]:
    """``{original trial number: [numbers of its repeats, ascending]}`` (originals with repeats only)."""
    out: dict[int, list[int]] = {}
    if "duplicate_of" not in trials.columns or "number" not in trials.columns:
        return out
    repeat = repeat_mask(trials)
    for number, original in zip(trials.loc[repeat, "number"], trials.loc[repeat, "duplicate_of"]):
        try:
            out.setdefault(int(float(original)), []).append(int(number))
        except (TypeError, ValueError):
            continue
    return {k: sorted(v) for k, v in out.items()}


def trial_categories(trials: pd.DataFrame, specs: Sequence[dict]) -> pd.Series:
    """Category of each trial.

    ``pareto`` / ``dominated`` (complete, feasible), ``infeasible`` (complete, a constraint
    violated), ``missing`` (complete but without every objective value), ``repeat`` (complete,
    a reused result of an earlier trial's candidate: see :func:`repeat_mask`; never drawn, never
    counted as a complete candidate), ``failed``, ``running`` (RUNNING or WAITING), ``pruned``,
    or the lower-cased state otherwise.
    """
    states = _states(trials)
    cat = states.str.lower().copy()
    cat[states.eq("FAIL")] = "failed"
    cat[states.isin(["RUNNING", "WAITING"])] = "running"
    complete = states.eq("COMPLETE")
    names = [s["name"] for s in specs]
    has_values = ~np.isnan(objective_values(trials, names)).any(axis=1)
    feasible_cand = candidate_mask(trials, specs)
    front = pareto_mask(trials, specs)
    cat[complete & ~has_values] = "missing"
    cat[complete & has_values & ~feasible_cand] = "infeasible"
    cat[complete & repeat_mask(trials)] = "repeat"
    cat[feasible_cand & ~front] = "dominated"
    cat[front] = "pareto"
    return cat


def row_candidate(row: pd.Series, cand_cols: Sequence[str]) -> dict[str, Any]:
    """The candidate spec of one trial: its ``candidate`` JSON, else its ``cand.*`` cells."""
    raw = row.get("candidate") if "candidate" in row.index else None
    if isinstance(raw, Mapping) or (isinstance(raw, str) and raw.strip()):
        return candidate_dict(raw)
    return {c[len("cand.") :]: row[c] for c in cand_cols if not is_missing(row[c])}


def candidate_lines(cand: Mapping[str, Any]) -> list[str]:
    """``key: value`` strings, one per candidate key (lists as compact JSON)."""
    lines = []
    for key, value in cand.items():
        if isinstance(value, (list, dict, tuple)):
            text = json.dumps(value, separators=(", ", ": "))
        elif isinstance(value, (float, np.floating)):
            text = format_cell(value)
        else:
            text = str(value)
        lines.append(f"{key}: {text}")
    return lines


def trial_hover(
    row: pd.Series,
    category: str,
    names: Sequence[str],
    metrics: Sequence[str],
    cand_cols: Sequence[str],
    *,
    intervals: Mapping[str, tuple[float, float]] | None = None,
    samples: int | None = None,
    repeats: Sequence[int] = (),
    tied: Sequence[int] = (),
) -> str:
    """Hover text of one trial (plotly's HTML subset; data strings escaped).

    ``intervals`` (``{column: (low, high)}``) adds a 95% interval after a value, ``samples`` the
    count they were measured on; ``repeats`` names the later trials that reused this one's result
    and ``tied`` the front members it is statistically tied with.
    """
    parts = [f"<b>trial {int(row['number'])}</b> ({escape(category)})"]
    parts += [escape(line) for line in candidate_lines(row_candidate(row, cand_cols))]
    shown = False
    for col in list(names) + list(metrics):
        text = f"{escape(col)}: {escape(format_cell(row.get(col)))}"
        bounds = interval_text(*(intervals or {}).get(col, (None, None)))
        if bounds:
            text += f" 95% CI {bounds}"
            shown = True
        parts.append(text)
    if shown and samples:
        parts.append(f"(Wilson intervals over {int(samples)} evaluated samples)")
    if tied:
        parts.append("statistically tied with " + ", ".join(f"#{n}" for n in tied))
    if repeats:
        parts.append("repeated by " + ", ".join(f"#{n}" for n in repeats) + " (same candidate, result reused)")
    violation = row.get("constraint_violation") if "constraint_violation" in row.index else None
    if category == "infeasible" and not is_missing(violation):
        parts.append(f"constraint violation: {escape(format_cell(violation))}")
    flags = flag_list(row.get("masking_flags")) if "masking_flags" in row.index else None
    if flags:
        parts.append(f"<b>gradient masking suspected</b>: {escape(', '.join(flags))}")
    return "<br>".join(parts)


def short_label(number: int, cand: Mapping[str, Any]) -> str:
    """Legend label of a trial: its number and the candidate keys other than ``arch``."""
    bits = [f"{k}={v if not isinstance(v, (list, dict)) else json.dumps(v, separators=(',', ':'))}"
            for k, v in cand.items() if k != "arch"]
    label = f"#{number}" + (f" {', '.join(bits)}" if bits else "")
    return label if len(label) <= 60 else label[:57] + "..."


def table_cell(value: Any) -> list[Any]:
    """``[display, sort_key]`` of one table value (``sort_key``: a number, a string or None)."""
    if is_missing(value):
        return ["", None]
    if isinstance(value, (bool, np.bool_)):
        return ["yes" if value else "no", 1 if value else 0]
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return [format_cell(value), v if np.isfinite(v) else None]
    return [str(value), str(value)]
