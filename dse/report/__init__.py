"""One self-contained HTML report of a study: Pareto plots, hypervolume, training dynamics, table.

The report follows Optuna's plotting pattern: pure ``_get_*_info()`` functions turn the
runner's tables into plain data structures (lists, dicts, numbers; tested directly), and thin
``_draw_*()`` functions turn those into ``plotly.graph_objects.Figure`` objects.
:func:`write_report` assembles everything into one HTML page that embeds plotly.js once and
needs no network (no CDN, no external script, style sheet or font).

Inputs are those of the study runner:

* ``trials``: one row per Optuna trial (``number``, ``state``, ``feasible``,
  ``constraint_violation``, ``error``, ``duration_s``, ``candidate`` (JSON), ``cand.<key>``
  columns and one float column per objective / metric);
* ``epochs``: per-epoch metrics (``number``, ``epoch``, ``val_natural_acc``, ...), possibly
  empty;
* ``meta``: ``name``, ``objectives`` (``[{"name", "direction"}]``), ``metrics``,
  ``constraints``, ``measurement``, ``storage``, ``sampler``.

Example:
    >>> write_report(trials, epochs, meta, "runs/study/report.html")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dse.study.pareto import (
    objective_values,
    best_trial,
    candidate_mask,
    default_reference,
    hypervolume_history,
    knee_point,
    non_dominated_mask,
    objective_directions,
    objective_names,
    pareto_mask,
)

__all__ = ["export_png", "write_report"]

logger = logging.getLogger(__name__)

PARETO_COLOR = "#1f77b4"
KNEE_COLOR = "#d62728"
GREY = "#a0a0a0"
# Categories drawn in the Pareto plots, back to front. Failed, running, pruned trials and
# complete trials without objective values are never drawn.
PLOTTED = ("infeasible", "dominated", "pareto")
DYNAMICS_METRICS = ("val_natural_acc", "val_robust_acc", "val_pert_instability")
# Drawn as a fourth panel when recorded (seed 000, Fig. 4).
OPTIONAL_DYNAMICS_METRICS = ("val_lipschitz",)
MAX_DYNAMICS_TRIALS = 8
MAX_PAIR_OBJECTIVES = 3  # with more objectives: parallel coordinates + pairs of the first three
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    """HTML-escapes any value's string form (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _fmt(value: Any) -> str:
    """Formats a cell / hover value: 4 significant digits, big integers with separators."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v.is_integer() and abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(value)


def _num(value: Any) -> float | None:
    """A JSON-safe float (None for NaN / missing)."""
    if _is_missing(value):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _short_dir(direction: str) -> str:
    return "max" if direction == "maximize" else "min"


def _objectives(meta: Mapping[str, Any]) -> tuple[list[dict], list[str], list[str]]:
    objectives = list(meta.get("objectives") or [])
    names = objective_names(objectives)
    directions = objective_directions(objectives)
    specs = [{"name": n, "direction": d} for n, d in zip(names, directions)]
    return specs, names, directions


def _metrics(trials: pd.DataFrame, meta: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Recorded (not optimized) metrics present in the table, in ``meta`` order."""
    out = []
    for m in meta.get("metrics") or []:
        m = str(m)
        if m not in names and m not in out and m in trials.columns:
            out.append(m)
    return out


def _states(trials: pd.DataFrame) -> pd.Series:
    if "state" not in trials.columns:
        return pd.Series("COMPLETE", index=trials.index)
    return trials["state"].astype(str).str.upper()


def _categories(trials: pd.DataFrame, specs: Sequence[dict]) -> pd.Series:
    """Category of each trial.

    ``pareto`` / ``dominated`` (complete, feasible), ``infeasible`` (complete, a constraint
    violated), ``missing`` (complete but without every objective value), ``failed``,
    ``running`` (RUNNING or WAITING), ``pruned``, or the lower-cased state otherwise.
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
    cat[feasible_cand & ~front] = "dominated"
    cat[front] = "pareto"
    return cat


def _candidate_dict(row: pd.Series, cand_cols: Sequence[str]) -> dict[str, Any]:
    """The candidate spec of one trial: parsed ``candidate`` JSON, else the ``cand.*`` cells."""
    raw = row.get("candidate") if "candidate" in row.index else None
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {"candidate": raw}
        if isinstance(parsed, dict):
            return parsed
        return {"candidate": parsed}
    if isinstance(raw, Mapping):
        return dict(raw)
    return {c[len("cand.") :]: row[c] for c in cand_cols if not _is_missing(row[c])}


def _candidate_lines(cand: Mapping[str, Any]) -> list[str]:
    """``key: value`` strings, one per candidate key (lists as compact JSON)."""
    lines = []
    for key, value in cand.items():
        if isinstance(value, (list, dict, tuple)):
            text = json.dumps(value, separators=(", ", ": "))
        elif isinstance(value, (float, np.floating)):
            text = _fmt(value)
        else:
            text = str(value)
        lines.append(f"{key}: {text}")
    return lines


def _cand_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if isinstance(c, str) and c.startswith("cand.")]


def _hover(
    row: pd.Series, category: str, names: Sequence[str], metrics: Sequence[str], cand_cols: Sequence[str]
) -> str:
    """Hover text of one trial (plotly's HTML subset; data strings escaped)."""
    parts = [f"<b>trial {int(row['number'])}</b> ({_esc(category)})"]
    parts += [_esc(line) for line in _candidate_lines(_candidate_dict(row, cand_cols))]
    for col in list(names) + list(metrics):
        parts.append(f"{_esc(col)}: {_esc(_fmt(row.get(col)))}")
    violation = row.get("constraint_violation") if "constraint_violation" in row.index else None
    if category == "infeasible" and not _is_missing(violation):
        parts.append(f"constraint violation: {_esc(_fmt(violation))}")
    flags = row.get("masking_flags") if "masking_flags" in row.index else None
    if isinstance(flags, str) and flags and flags != "none":
        parts.append(f"<b>gradient masking suspected</b>: {_esc(flags.replace(';', ', '))}")
    return "<br>".join(parts)


def _short_label(number: int, cand: Mapping[str, Any]) -> str:
    """Legend label of a trial: its number and the candidate keys other than ``arch``."""
    bits = [f"{k}={v if not isinstance(v, (list, dict)) else json.dumps(v, separators=(',', ':'))}"
            for k, v in cand.items() if k != "arch"]
    label = f"#{number}" + (f" {', '.join(bits)}" if bits else "")
    return label if len(label) <= 60 else label[:57] + "..."


def _sorted_by_number(trials: pd.DataFrame) -> pd.DataFrame:
    if "number" in trials.columns:
        return trials.sort_values("number", kind="stable")
    return trials


# --------------------------------------------------------------------------------------------
# Pure info functions
# --------------------------------------------------------------------------------------------


def _objective_pairs(m: int) -> list[tuple[int, int]]:
    k = min(m, MAX_PAIR_OBJECTIVES)
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def _get_pareto_info(trials: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Points of the Pareto plots, per category.

    Args:
        trials: The trials table.
        meta: The study meta (``objectives``, ``metrics``).

    Returns:
        A dict with ``objectives``, ``directions``, ``labels`` (axis titles such as
        ``"robust_acc (max)"``), ``metrics``, ``categories`` (for ``pareto``, ``dominated`` and
        ``infeasible``: ``numbers``, ``values`` (one list of objective values per point) and
        ``hover``), ``pairs`` (objective index pairs to draw), ``steps`` (one per pair: the
        2-D non-dominated subset of the Pareto points sorted along x, with ``line_shape``),
        ``knee`` (trial number or None) and ``counts`` (trials per category, all categories).
    """
    specs, names, directions = _objectives(meta)
    metrics = _metrics(trials, meta, names)
    trials = _sorted_by_number(trials)
    cats = _categories(trials, specs)
    cand_cols = _cand_columns(trials)
    categories: dict[str, dict[str, list]] = {}
    for cat in PLOTTED:
        rows = trials[cats.eq(cat)]
        categories[cat] = {
            "numbers": [int(n) for n in rows["number"]],
            "values": [[float(r[n]) for n in names] for _, r in rows.iterrows()],
            "hover": [_hover(r, cat, names, metrics, cand_cols) for _, r in rows.iterrows()],
        }

    pareto_vals = np.asarray(categories["pareto"]["values"], dtype=float).reshape(-1, len(names))
    pareto_nums = np.asarray(categories["pareto"]["numbers"], dtype=int)
    steps = []
    pairs = _objective_pairs(len(names))
    for i, j in pairs:
        sub = pareto_vals[:, [i, j]]
        keep = non_dominated_mask(sub, [directions[i], directions[j]]) if len(sub) else np.zeros(0, bool)
        order = np.lexsort((sub[keep, 1], sub[keep, 0]))
        steps.append(
            {
                "pair": [i, j],
                "numbers": [int(n) for n in pareto_nums[keep][order]],
                "x": [float(v) for v in sub[keep, 0][order]],
                "y": [float(v) for v in sub[keep, 1][order]],
                # Boundary of the dominated region: vertical first when x is maximized.
                "line_shape": "vh" if directions[i] == "maximize" else "hv",
            }
        )

    knee = None
    if len(pareto_nums):
        front = trials[cats.eq("pareto")]
        knee = knee_point(front, specs)
    return {
        "objectives": names,
        "directions": directions,
        "labels": [f"{n} ({_short_dir(d)})" for n, d in zip(names, directions)],
        "metrics": metrics,
        "categories": categories,
        "pairs": [list(p) for p in pairs],
        "steps": steps,
        "knee": knee,
        "counts": {str(k): int(v) for k, v in cats.value_counts().items()},
    }


def _get_hypervolume_info(
    trials: pd.DataFrame,
    meta: Mapping[str, Any],
    reference: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Hypervolume of the feasible front after each trial.

    Args:
        trials: The trials table.
        meta: The study meta (``objectives``).
        reference: Reference point in the objectives' units (``default_reference`` if None).

    Returns:
        A dict with ``numbers``, ``hypervolume`` (same length), ``reference`` (list),
        ``reference_text`` (``"robust_acc=0, params=5.5e+05"``) and ``title``.
    """
    specs, names, _ = _objectives(meta)
    ref = default_reference(trials, specs) if reference is None else np.asarray(reference, dtype=float)
    hist = hypervolume_history(trials, specs, ref)
    ref_text = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, ref))
    return {
        "numbers": [int(n) for n in hist["number"]],
        "hypervolume": [float(v) for v in hist["hypervolume"]],
        "reference": [float(v) for v in ref],
        "reference_text": ref_text,
        "title": f"Hypervolume of the feasible front (reference point: {ref_text})",
    }


def _spread(items: Sequence[int], k: int) -> list[int]:
    """``k`` items evenly spread over ``items`` (both ends kept), order preserved."""
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def _get_dynamics_info(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    meta: Mapping[str, Any],
    selected: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Per-epoch validation curves of the selected trials (seed 000, Figs. 2-4).

    Args:
        trials: The trials table.
        epochs: Per-epoch metrics (``number``, ``epoch``, ``val_*``...); may be empty.
        meta: The study meta (``objectives``).
        selected: Trial numbers to draw; by default the Pareto trials that have epochs (at
            most 8, spread along the first objective).

    Returns:
        A dict with ``metrics`` (panels to draw), ``selected`` (trial numbers), ``lines`` (one
        per trial with curves: ``number``, ``label``, ``epoch`` and ``values`` per metric) and
        ``message`` (a sentence explaining why nothing is drawn, else None).
    """
    specs, names, directions = _objectives(meta)
    empty = {"metrics": [], "selected": [], "lines": [], "message": None}
    if epochs is None or len(epochs) == 0 or "number" not in epochs.columns or "epoch" not in epochs.columns:
        empty["message"] = (
            "No per-epoch metrics were recorded for this study (e.g. a tabular benchmark that does not train)."
        )
        return empty
    metrics = [m for m in DYNAMICS_METRICS + OPTIONAL_DYNAMICS_METRICS if m in epochs.columns]
    if not metrics:
        empty["message"] = "The per-epoch records hold none of " + ", ".join(DYNAMICS_METRICS) + "."
        return empty
    with_epochs = set(int(n) for n in epochs["number"].dropna().unique())
    if selected is None:
        front = trials[pareto_mask(trials, specs)]
        front = front[front["number"].isin(with_epochs)]
        key = pd.to_numeric(front[names[0]], errors="coerce")
        front = front.assign(_key=-key if directions[0] == "maximize" else key).sort_values(["_key", "number"])
        chosen = _spread([int(n) for n in front["number"]], MAX_DYNAMICS_TRIALS)
    else:
        chosen = [int(n) for n in selected if int(n) in with_epochs]
    if not chosen:
        empty["metrics"] = metrics
        empty["message"] = "None of the selected trials has per-epoch metrics."
        return empty

    cand_cols = _cand_columns(trials)
    by_number = {int(r["number"]): r for _, r in trials.iterrows()} if "number" in trials else {}
    lines = []
    for number in chosen:
        rows = epochs[epochs["number"] == number].sort_values("epoch", kind="stable")
        cand = _candidate_dict(by_number[number], cand_cols) if number in by_number else {}
        lines.append(
            {
                "number": number,
                "label": _short_label(number, cand),
                "epoch": [_num(e) for e in rows["epoch"]],
                "values": {m: [_num(v) for v in rows[m]] for m in metrics},
            }
        )
    return {"metrics": metrics, "selected": chosen, "lines": lines, "message": None}


def _get_table_info(trials: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The table of all trials (raw, unescaped strings; escaping happens when rendering).

    Args:
        trials: The trials table.
        meta: The study meta (``objectives``, ``metrics``).

    Returns:
        A dict with ``columns`` (header names) and ``rows``: one dict per trial (ordered by
        number) with ``number``, ``pareto`` (bool) and ``cells`` (``[display, sort_key]`` per
        column; ``sort_key`` is a number, a string, or None for a missing value).
    """
    specs, names, _ = _objectives(meta)
    metrics = _metrics(trials, meta, names)
    trials = _sorted_by_number(trials)
    cats = _categories(trials, specs)
    cand_cols = _cand_columns(trials)
    derived: list[str] = []
    cand_dicts: list[dict] = []
    if not cand_cols:  # fall back to the candidate JSON
        for _, row in trials.iterrows():
            cand_dicts.append(_candidate_dict(row, []))
            derived += [k for k in cand_dicts[-1] if k not in derived]
    cand_headers = [c[len("cand.") :] for c in cand_cols] if cand_cols else derived

    # (header, kind, key): kind is "col" (a trials column), "cand" (a candidate key) or special.
    spec: list[tuple[str, str, str]] = [("number", "col", "number"), ("state", "col", "state"),
                                        ("pareto", "pareto", ""), ("feasible", "feasible", "")]
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
                value = None if _is_missing(value) else bool(value)
            elif kind == "cand":
                value = cand_dicts[pos].get(key) if cand_dicts else row.get("cand." + key)
                if isinstance(value, (list, dict)):
                    value = json.dumps(value)
            else:
                value = row.get(key) if key in row.index else None
            cells.append(_cell(value))
        rows.append({"number": int(row["number"]), "pareto": bool(cats[idx] == "pareto"), "cells": cells})
    columns = [h for h, _, _ in spec]
    return {"columns": columns, "rows": rows}


def _cell(value: Any) -> list[Any]:
    """``[display, sort_key]`` of one table value."""
    if _is_missing(value):
        return ["", None]
    if isinstance(value, (bool, np.bool_)):
        return ["yes" if value else "no", 1 if value else 0]
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return [_fmt(value), v if math.isfinite(v) else None]
    return [str(value), str(value)]


# --------------------------------------------------------------------------------------------
# Thin drawing functions
# --------------------------------------------------------------------------------------------

_MARKERS = {
    "pareto": {"color": PARETO_COLOR, "size": 9, "symbol": "circle", "line": {"width": 1, "color": "white"}},
    "dominated": {"color": GREY, "size": 7, "symbol": "circle", "opacity": 0.7},
    "infeasible": {"color": GREY, "size": 8, "symbol": "x", "opacity": 0.8},
}
_NAMES = {"pareto": "Pareto", "dominated": "dominated (feasible)", "infeasible": "infeasible"}


def _draw_pareto_pair(info: dict[str, Any], pair_index: int):
    """2-D scatter of one objective pair, the Pareto points joined by a step line."""
    import plotly.graph_objects as go

    i, j = info["pairs"][pair_index]
    step = info["steps"][pair_index]
    fig = go.Figure()
    for cat in PLOTTED:
        data = info["categories"][cat]
        fig.add_trace(
            go.Scatter(
                x=[v[i] for v in data["values"]],
                y=[v[j] for v in data["values"]],
                mode="markers",
                name=f"{_NAMES[cat]} ({len(data['numbers'])})",
                marker=_MARKERS[cat],
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
                customdata=data["numbers"],
            )
        )
    if len(step["x"]) > 1:
        fig.add_trace(
            go.Scatter(
                x=step["x"],
                y=step["y"],
                mode="lines",
                line={"color": PARETO_COLOR, "shape": step["line_shape"], "width": 1.5},
                name="front" if len(info["objectives"]) == 2 else "2-D front of the Pareto set",
                hoverinfo="skip",
            )
        )
    _add_knee(fig, info, lambda v: {"x": [v[i]], "y": [v[j]]}, go.Scatter)
    labels = [_esc(lbl) for lbl in info["labels"]]
    fig.update_layout(
        title=f"Pareto front: {labels[i]} vs {labels[j]}",
        xaxis_title=labels[i],
        yaxis_title=labels[j],
        height=480,
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0.0},
        margin={"t": 90},
    )
    return fig


def _add_knee(fig, info: dict[str, Any], coords, trace_cls, symbol: str = "star-open") -> None:
    """Rings the knee point (if any) with an open marker."""
    knee = info.get("knee")
    if knee is None:
        return
    data = info["categories"]["pareto"]
    k = data["numbers"].index(knee)
    fig.add_trace(
        trace_cls(
            mode="markers",
            name=f"knee (trial {knee})",
            marker={"color": "rgba(0,0,0,0)", "size": 16, "symbol": symbol, "line": {"color": KNEE_COLOR, "width": 2}},
            hovertext=[data["hover"][k]],
            hovertemplate="%{hovertext}<extra></extra>",
            **coords(data["values"][k]),
        )
    )


def _draw_pareto_single(info: dict[str, Any]):
    """One objective: its value against the trial number."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cat in PLOTTED:
        data = info["categories"][cat]
        fig.add_trace(
            go.Scatter(
                x=data["numbers"],
                y=[v[0] for v in data["values"]],
                mode="markers",
                name=f"{_NAMES[cat]} ({len(data['numbers'])})",
                marker=_MARKERS[cat],
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    label = _esc(info["labels"][0])
    fig.update_layout(title=f"{label} per trial", xaxis_title="trial number", yaxis_title=label, height=450,
                      template="plotly_white")
    return fig


def _draw_pareto_3d(info: dict[str, Any]):
    """3-D scatter of the first three objectives."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cat in PLOTTED:
        data = info["categories"][cat]
        marker = dict(_MARKERS[cat])
        marker["size"] = 5 if cat == "pareto" else 4
        marker.pop("line", None)
        fig.add_trace(
            go.Scatter3d(
                x=[v[0] for v in data["values"]],
                y=[v[1] for v in data["values"]],
                z=[v[2] for v in data["values"]],
                mode="markers",
                name=f"{_NAMES[cat]} ({len(data['numbers'])})",
                marker=marker,
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    _add_knee(fig, info, lambda v: {"x": [v[0]], "y": [v[1]], "z": [v[2]]}, go.Scatter3d, symbol="circle-open")
    labels = [_esc(lbl) for lbl in info["labels"]]
    fig.update_layout(
        title="Pareto front: " + ", ".join(labels[:3]),
        scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2]},
        height=620,
        template="plotly_white",
    )
    return fig


def _draw_parcoords(info: dict[str, Any]):
    """Parallel coordinates over all objectives (better is up on every axis)."""
    import plotly.graph_objects as go

    cats = ("dominated", "pareto")
    values = [v for c in cats for v in info["categories"][c]["values"]]
    colors = [1.0 if c == "pareto" else 0.0 for c in cats for _ in info["categories"][c]["values"]]
    dims = []
    for k, (label, direction) in enumerate(zip(info["labels"], info["directions"])):
        col = [v[k] for v in values]
        dim: dict[str, Any] = {"label": _esc(label), "values": col}
        if col:
            lo, hi = min(col), max(col)
            dim["range"] = [lo, hi] if direction == "maximize" else [hi, lo]
        dims.append(dim)
    fig = go.Figure(
        go.Parcoords(
            line={"color": colors, "colorscale": [[0.0, "#d0d0d0"], [1.0, PARETO_COLOR]], "cmin": 0.0, "cmax": 1.0},
            dimensions=dims,
        )
    )
    n_p = len(info["categories"]["pareto"]["numbers"])
    fig.update_layout(
        title=f"All objectives (Pareto trials in blue: {n_p}; feasible dominated in grey; better is up)",
        height=480,
        template="plotly_white",
    )
    return fig


def _draw_hypervolume(info: dict[str, Any]):
    """Hypervolume against the trial number."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=info["numbers"],
            y=info["hypervolume"],
            mode="lines+markers",
            line={"shape": "hv", "color": PARETO_COLOR},
            marker={"size": 4},
            name="hypervolume",
        )
    )
    fig.update_layout(
        title=_esc(info["title"]),
        xaxis_title="trial number",
        yaxis_title="hypervolume",
        height=420,
        template="plotly_white",
    )
    return fig


def _draw_dynamics(info: dict[str, Any]):
    """One panel per validation metric, one line per trial, against the epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = info["metrics"]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[_esc(m) for m in metrics])
    for t, line in enumerate(info["lines"]):
        color = _PALETTE[t % len(_PALETTE)]
        for c, metric in enumerate(metrics):
            fig.add_trace(
                go.Scatter(
                    x=line["epoch"],
                    y=line["values"][metric],
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"color": color},
                    name=_esc(line["label"]),
                    legendgroup=str(line["number"]),
                    showlegend=c == 0,
                    hovertemplate=(
                        f"trial {line['number']}<br>epoch %{{x}}<br>{_esc(metric)}: %{{y:.4g}}<extra></extra>"
                    ),
                    connectgaps=True,
                ),
                row=1,
                col=c + 1,
            )
            fig.update_xaxes(title_text="epoch", row=1, col=c + 1)
    fig.update_layout(
        title="Training dynamics of the selected trials (validation metrics per epoch)",
        height=440,
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0},
        margin={"b": 120},
    )
    return fig


# --------------------------------------------------------------------------------------------
# PNG export
# --------------------------------------------------------------------------------------------

_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "chrome.exe")


def _find_chromium(kaleido_module: Any) -> str | None:
    """A Chromium kaleido can drive: bundled (kaleido 0.x), ``BROWSER_PATH``, or on ``PATH``."""
    version = str(getattr(kaleido_module, "__version__", ""))
    if version.startswith("0."):
        return "bundled"
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return env
    for name in _CHROME_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def export_png(fig: Any, path: str | os.PathLike) -> bool:
    """Writes ``fig`` as a PNG with kaleido, if possible.

    Needs the ``kaleido`` package and a Chromium it can drive (kaleido 0.x bundles one;
    kaleido 1.x needs Chrome/Chromium on ``PATH`` or in ``BROWSER_PATH``). Never raises for a
    missing tool: logs a warning and returns False instead.

    Args:
        fig: A ``plotly.graph_objects.Figure``.
        path: Where to write the PNG.

    Returns:
        True when the file was written.
    """
    path = Path(path)
    try:
        import kaleido
    except ImportError:
        logger.warning("PNG export skipped for %s: kaleido is not installed (pip install kaleido)", path)
        return False
    if _find_chromium(kaleido) is None:
        logger.warning("PNG export skipped for %s: kaleido found no Chrome/Chromium (set BROWSER_PATH)", path)
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.write_image(str(path), format="png")
    except Exception as exc:  # noqa: BLE001 - any renderer failure degrades to "no PNG"
        logger.warning("PNG export failed for %s: %s", path, exc)
        return False
    return path.is_file()


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;max-width:1280px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.measurement{background:#f5f7fa;border-left:4px solid #1f77b4;padding:.5rem .8rem}
.summary td{padding:.1rem .8rem .1rem 0;vertical-align:top}.note{color:#555;font-style:italic}
.figure{margin:1rem 0}
table.dse-sortable{border-collapse:collapse;font-size:.85rem;width:100%}
table.dse-sortable th,table.dse-sortable td{border:1px solid #ddd;padding:.2rem .4rem;text-align:left;
white-space:nowrap}
table.dse-sortable th{background:#f0f0f0;cursor:pointer;position:sticky;top:0;user-select:none}
table.dse-sortable th[data-order=asc]::after{content:" \\25B2"}
table.dse-sortable th[data-order=desc]::after{content:" \\25BC"}
table.dse-sortable tr.pareto td{background:#e3eefb;font-weight:600}
table.dse-sortable td.error{white-space:normal;max-width:30rem;color:#a00}
.tablewrap{max-height:40rem;overflow:auto}
"""

# Clicking a header sorts by that column (numbers numerically, missing values last).
_SORT_JS = """
(function () {
  document.querySelectorAll("table.dse-sortable").forEach(function (table) {
    var headers = table.querySelectorAll("th");
    headers.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("data-order") !== "asc";
        headers.forEach(function (h) { h.removeAttribute("data-order"); });
        th.setAttribute("data-order", asc ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
          if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }
          var nx = Number(x), ny = Number(y), c;
          if (!isNaN(nx) && !isNaN(ny)) { c = nx - ny; } else { c = x.localeCompare(y); }
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def _render_table(info: dict[str, Any]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in info["columns"])
    body = []
    for row in info["rows"]:
        cells = []
        for col, (display, key) in zip(info["columns"], row["cells"]):
            sort_key = "" if key is None else (repr(float(key)) if isinstance(key, (int, float)) else str(key))
            cls = ' class="error"' if col == "error" else ""
            cells.append(f'<td{cls} data-sort="{_esc(sort_key)}">{_esc(display)}</td>')
        cls = ' class="pareto"' if row["pareto"] else ""
        body.append(f'<tr{cls} data-number="{row["number"]}">{"".join(cells)}</tr>')
    return (
        '<div class="tablewrap"><table class="dse-sortable" id="dse-trials">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "figure"


def _figures(pareto: dict, hv: dict, dyn: dict) -> list[tuple[str, str, Any]]:
    """``(section, slug, figure)`` for every figure of the report, in page order."""
    names = pareto["objectives"]
    figs: list[tuple[str, str, Any]] = []
    m = len(names)
    if m == 1:
        figs.append(("pareto", f"best_{names[0]}", _draw_pareto_single(pareto)))
    if m > 3:
        figs.append(("pareto", "parcoords", _draw_parcoords(pareto)))
    if m == 3:
        figs.append(("pareto", "pareto_3d", _draw_pareto_3d(pareto)))
    for k, (i, j) in enumerate(pareto["pairs"]):
        figs.append(("pareto", f"pareto_{names[i]}_vs_{names[j]}", _draw_pareto_pair(pareto, k)))
    figs.append(("hypervolume", "hypervolume", _draw_hypervolume(hv)))
    if dyn["message"] is None:
        figs.append(("dynamics", "dynamics", _draw_dynamics(dyn)))
    return figs


def _mask_password(url: str) -> str:
    """Hides the password of a database URL (``postgresql://user:***@host/db``)."""
    return re.sub(r"(//[^:/@\s]+):[^/\s]*@", r"\1:***@", url)


def _summary_rows(trials: pd.DataFrame, meta: Mapping[str, Any], pareto: dict) -> list[tuple[str, str]]:
    specs, names, directions = _objectives(meta)
    counts = pareto["counts"]
    n_complete = sum(counts.get(c, 0) for c in ("pareto", "dominated", "infeasible", "missing"))
    constraints = [str(c) for c in meta.get("constraints") or []]
    rows = [
        ("Objectives", ", ".join(pareto["labels"])),
        ("Recorded metrics", ", ".join(pareto["metrics"]) or "none"),
        ("Constraints", "; ".join(constraints) if constraints else "none"),
        (
            "Trials",
            f"{len(trials)} in all: {n_complete} complete "
            f"({counts.get('pareto', 0) + counts.get('dominated', 0)} feasible, "
            f"{counts.get('infeasible', 0)} infeasible), {counts.get('failed', 0)} failed, "
            f"{counts.get('running', 0)} running, {counts.get('pruned', 0)} pruned",
        ),
        ("Pareto set", f"{counts.get('pareto', 0)} trials"),
    ]
    if pareto["knee"] is not None:
        knee = f"trial {pareto['knee']} (closest to the ideal point, objectives normalized over the front)"
        rows.append(("Knee point", knee))
    best = []
    for spec in specs:
        try:
            best.append(f"{spec['name']}: trial {best_trial(trials, spec['name'], spec['direction'])}")
        except ValueError:
            continue
    if best:
        rows.append(("Best per objective", "; ".join(best)))
    if meta.get("sampler"):
        rows.append(("Sampler", str(meta["sampler"])))
    if meta.get("storage"):
        rows.append(("Storage", _mask_password(str(meta["storage"]))))
    return rows


def write_report(
    trials: pd.DataFrame,
    epochs: pd.DataFrame | None,
    meta: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    selected: Sequence[int] | None = None,
    png_dir: str | os.PathLike | None = None,
) -> Path:
    """Writes the study report as one self-contained, offline HTML file.

    The page holds a summary (measurement, objectives, constraints, trial counts, Pareto-set
    size, knee point), the Pareto plots (a 2-D scatter per objective pair, a 3-D scatter for
    three objectives, parallel coordinates beyond three), the hypervolume per trial,
    per-epoch dynamics of the selected trials and a sortable table of all trials. plotly.js
    is embedded once; nothing is loaded from the network.

    Args:
        trials: The trials table (one row per Optuna trial).
        epochs: Per-epoch metrics; may be empty or None.
        meta: The study meta (``name``, ``objectives``, ``metrics``, ``constraints``,
            ``measurement``, ``storage``, ``sampler``).
        path: The HTML file to write (parent folders are created).
        selected: Trial numbers whose training dynamics are drawn (default: the Pareto
            trials, at most 8).
        png_dir: When given, every figure is also written there as PNG (needs kaleido; see
            :func:`export_png`).

    Returns:
        The path written.
    """
    path = Path(path)
    trials = trials.reset_index(drop=True)
    if epochs is None:
        epochs = pd.DataFrame(columns=["number", "epoch"])
    pareto = _get_pareto_info(trials, meta)
    hv = _get_hypervolume_info(trials, meta)
    dyn = _get_dynamics_info(trials, epochs, meta, selected=selected)
    table = _get_table_info(trials, meta)
    figs = _figures(pareto, hv, dyn)

    blocks: dict[str, list[str]] = {"pareto": [], "hypervolume": [], "dynamics": []}
    config = {"responsive": True, "displaylogo": False}
    for k, (section, slug, fig) in enumerate(figs):
        height = fig.layout.height or 450
        blocks[section].append(
            '<div class="figure">'
            + fig.to_html(
                full_html=False,
                include_plotlyjs=(k == 0),
                div_id=f"dse-{_slug(slug)}",
                config=config,
                default_height=f"{height}px",
            )
            + "</div>"
        )
        if png_dir is not None:
            export_png(fig, Path(png_dir) / f"{_slug(slug)}.png")

    from dse.report.robustness import robustness_sections, robustness_summary

    rescores = list(meta.get("rescore") or [])
    rob_blocks: list[str] = []
    has_models = "checkpoint" in trials.columns and trials["checkpoint"].notna().any()
    for i, (title, slug, note, fig) in enumerate(robustness_sections(rescores) if rescores or has_models else []):
        rob_blocks.append(f'<h2>{_esc(title)}</h2><p class="note">{note}</p>')
        if i == 0:
            rob_blocks.append(robustness_summary(rescores))
        if fig is not None:
            rob_blocks.append(
                '<div class="figure">'
                + fig.to_html(full_html=False, include_plotlyjs=not figs, div_id=f"dse-{_slug(slug)}", config=config,
                              default_height=f"{fig.layout.height or 450}px")
                + "</div>"
            )
            if png_dir is not None:
                export_png(fig, Path(png_dir) / f"{_slug(slug)}.png")
    checked = int(trials["masking_flags"].notna().sum()) if "masking_flags" in trials.columns else 0
    flagged = int(trials["masking_flags"].fillna("none").astype(str).ne("none").sum()) if checked else 0
    masking_note = (
        f'<p class="note">Gradient-masking checks ran on {checked} scored trial(s); {flagged} flagged '
        "(column masking_flags, and a line in the hover of their points).</p>" if checked else ""
    )

    name = str(meta.get("name") or "study")
    measurement = meta.get("measurement") or "not recorded"
    summary = "".join(
        f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in _summary_rows(trials, meta, pareto)
    )
    dyn_html = "".join(blocks["dynamics"]) if dyn["message"] is None else f'<p class="note">{_esc(dyn["message"])}</p>'
    if dyn["message"] is None:
        dyn_html = (
            f'<p class="note">Trials shown: {_esc(", ".join(str(n) for n in dyn["selected"]))}'
            f'{" (Pareto trials)" if selected is None else ""}.</p>' + dyn_html
        )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dse report: {_esc(name)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>dse report: {_esc(name)}</h1>
<p class="measurement"><b>Measurement:</b> {_esc(measurement)}</p>
<table class="summary">{summary}</table>
<h2>Pareto front</h2>
<p class="note">Coloured: Pareto-optimal feasible trials (step line: their 2-D front); grey dots: feasible
dominated trials; grey crosses: infeasible trials (constraints violated). Failed trials are not drawn.
Hover a point for its candidate and values.</p>
{"".join(blocks["pareto"])}
<h2>Hypervolume</h2>
<p class="note">Hypervolume of the feasible Pareto front after each trial
(reference point: {_esc(hv["reference_text"])}).</p>
{"".join(blocks["hypervolume"])}
<h2>Training dynamics</h2>
{dyn_html}
{"".join(rob_blocks)}
<h2>All trials</h2>
{masking_note}
<p class="note">Click a column header to sort. Pareto trials are highlighted.</p>
{_render_table(table)}
<script>{_SORT_JS}</script>
</body>
</html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
