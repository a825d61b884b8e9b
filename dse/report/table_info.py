"""The report's table of all trials: one row per trial, raw strings (escaped when rendered).

A pure ``get_*_info()`` builder like those of :mod:`dse.report.info`; :mod:`dse.report.page`
turns its rows into the sortable table of ``templates/sortable_table.html.j2``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from dse.report.formatting import finite_float, is_missing
from dse.report.intervals import front_ties, interval_text, trial_intervals
from dse.report.trials import (
    candidate_columns,
    recorded_metrics,
    row_candidate,
    sorted_by_number,
    study_objectives,
    table_cell,
    trial_categories,
)

__all__ = ["get_table_info"]


def get_table_info(trials: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The table of all trials (raw, unescaped strings; escaping happens when rendering).

    Args:
        trials: The trials table.
        meta: The study meta (``objectives``, ``metrics``).

    Returns:
        A dict with ``columns`` (header names) and ``rows``: one dict per trial (ordered by
        number) with ``number``, ``pareto`` (bool), ``repeat`` (bool: a reused result, see
        :func:`~dse.report.trials.repeat_mask`) and ``cells`` (``[display, sort_key]`` per
        column; ``sort_key`` is a number, a string, or None for a missing value). Columns:
        ``duplicate_of`` (``"repeat of #N"``), ``tied_with`` (for a front member: the members it
        is statistically tied with, ``"none"``; see :func:`~dse.report.intervals.tied_groups`),
        and accuracies with their 95% interval (``"0.5819 [0.524, 0.637]"``, sorted by value).
    """
    specs, names, _ = study_objectives(meta)
    metrics = recorded_metrics(trials, meta, names)
    trials = sorted_by_number(trials).reset_index(drop=True)
    cats = trial_categories(trials, specs)
    cand_cols = candidate_columns(trials)
    intervals = trial_intervals(trials, meta, list(names) + metrics)
    ties = front_ties(trials, meta, names, cats.eq("pareto"))
    derived: list[str] = []
    cand_dicts: list[dict] = []
    if not cand_cols:  # fall back to the candidate JSON
        for _, row in trials.iterrows():
            cand_dicts.append(row_candidate(row, []))
            derived += [k for k in cand_dicts[-1] if k not in derived]
    cand_headers = [c[len("cand.") :] for c in cand_cols] if cand_cols else derived

    # (header, kind, key): kind is "col" (a trials column), "cand" (a candidate key) or special.
    spec: list[tuple[str, str, str]] = [("number", "col", "number"), ("state", "col", "state"),
                                        ("pareto", "pareto", ""), ("feasible", "feasible", ""),
                                        ("duplicate_of", "repeat", ""), ("tied_with", "tied", "")]
    if "constraint_violation" in trials.columns:
        spec.append(("constraint_violation", "col", "constraint_violation"))
    spec += [(c, "col", c) for c in list(names) + metrics]
    spec += [(h, "cand", h) for h in cand_headers]
    spec += [(c, "col", c) for c in trials.columns if c == "masking_flags" or c.startswith(("rescore.", "attack."))]
    if "duration_s" in trials.columns:
        spec.append(("duration_s", "col", "duration_s"))
    spec.append(("error", "col", "error"))

    rows = []
    for pos, (idx, row) in enumerate(trials.iterrows()):
        cells: list[list[Any]] = []
        for _, kind, key in spec:
            if kind == "pareto":
                value: Any = bool(cats[idx] == "pareto")
            elif kind == "feasible":
                value = row.get("feasible") if "feasible" in row.index else True
                value = None if is_missing(value) else bool(value)
            elif kind == "repeat":
                original = finite_float(row.get("duplicate_of")) if "duplicate_of" in row.index else None
                cells.append(["", None] if original is None else [f"repeat of #{int(original)}", original])
                continue
            elif kind == "tied":
                tied = ties.get(int(row["number"])) if cats[idx] == "pareto" else None
                text = None if tied is None else (", ".join(f"#{n}" for n in tied) or "none")
                cells.append(["", None] if text is None else [text, float(len(tied or []))])
                continue
            elif kind == "cand":
                value = cand_dicts[pos].get(key) if cand_dicts else row.get("cand." + key)
                if isinstance(value, (list, dict)):
                    value = json.dumps(value)
            else:
                value = row.get(key) if key in row.index else None
            cell = table_cell(value)
            if key in intervals and kind == "col":
                bounds = interval_text(intervals[key][0][idx], intervals[key][1][idx])
                cell[0] = f"{cell[0]} {bounds}" if bounds else cell[0]
            cells.append(cell)
        rows.append({"number": int(row["number"]), "pareto": bool(cats[idx] == "pareto"),
                     "repeat": bool(cats[idx] == "repeat"), "cells": cells})
    return {"columns": [h for h, _, _ in spec], "rows": rows}
