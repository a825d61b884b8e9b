"""Pure ``get_*_info()`` builders of the study report: trials / epochs tables in, plain data out.

Following Optuna's plotting split, each builder turns the runner's tables into lists, dicts and
numbers (tested directly, no plotly); :mod:`dse.report.figures` draws them and
:mod:`dse.report.page` lays them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dse.report.formatting import (
    axis_title,
    finite_float,
    flag_list,
    mask_password,
    short_direction,
    spread,
)
from dse.report.intervals import front_ties, trial_intervals, trial_samples
from dse.report.trials import (
    PLOTTED,
    candidate_columns,
    recorded_metrics,
    repeats_of,
    row_candidate,
    short_label,
    sorted_by_number,
    study_objectives,
    trial_categories,
    trial_hover,
)
from dse.study.pareto import (
    best_trial,
    candidate_mask,
    default_reference,
    hypervolume_history,
    knee_point,
    non_dominated_mask,
    objective_values,
    pareto_mask,
    to_minimization,
)

__all__ = [
    "DYNAMICS_METRICS",
    "MAX_DYNAMICS_TRIALS",
    "MAX_PAIR_OBJECTIVES",
    "OPTIONAL_DYNAMICS_METRICS",
    "get_dynamics_info",
    "get_hypervolume_info",
    "get_masking_info",
    "get_pareto_info",
    "get_summary_info",
]

DYNAMICS_METRICS = ("val_natural_acc", "val_robust_acc", "val_pert_instability")
OPTIONAL_DYNAMICS_METRICS = ("val_lipschitz",)  # a fourth panel when recorded (seed 000, Fig. 4)
MAX_DYNAMICS_TRIALS = 8
MAX_PAIR_OBJECTIVES = 3  # with more objectives: parallel coordinates + pairs of the first three


def _objective_pairs(m: int) -> list[tuple[int, int]]:
    k = min(m, MAX_PAIR_OBJECTIVES)
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def get_pareto_info(trials: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Points of the Pareto plots, per category.

    Args:
        trials: The trials table.
        meta: The study meta (``objectives``, ``metrics``).

    Returns:
        A dict with ``objectives``, ``directions``, ``labels`` (``"robust_acc (max)"``),
        ``axis_titles`` (with units: ``"robust_acc (max) [fraction]"``), ``metrics``,
        ``categories`` (for ``pareto``, ``dominated`` and ``infeasible``: ``numbers``, ``values``
        (one list of objective values per point), ``low`` / ``high`` (the 95% interval bounds per
        point and objective, None where there is none: see :mod:`dse.report.intervals`) and
        ``hover``), ``pairs`` (objective index pairs to draw), ``steps`` (one per pair: the 2-D
        non-dominated subset of the Pareto points sorted along x, with ``line_shape``), ``knee``
        (trial number or None), ``ties`` (``{front member: [members it is statistically tied
        with]}``) and ``counts`` (trials per category, all categories; repeats are ``repeat``).
    """
    specs, names, directions = study_objectives(meta)
    metrics = recorded_metrics(trials, meta, names)
    trials = sorted_by_number(trials).reset_index(drop=True)
    cats = trial_categories(trials, specs)
    cand_cols = candidate_columns(trials)
    intervals = trial_intervals(trials, meta, list(names) + metrics)
    samples = trial_samples(trials, meta)
    repeats = repeats_of(trials)
    ties = front_ties(trials, meta, names, cats.eq("pareto"))
    categories: dict[str, dict[str, list]] = {}
    for cat in PLOTTED:
        rows = trials[cats.eq(cat)]
        categories[cat] = {
            "numbers": [int(n) for n in rows["number"]],
            "values": [[float(r[n]) for n in names] for _, r in rows.iterrows()],
            "low": [[_bound(intervals, n, 0, i) for n in names] for i in rows.index],
            "high": [[_bound(intervals, n, 1, i) for n in names] for i in rows.index],
            "hover": [
                trial_hover(
                    r, cat, names, metrics, cand_cols,
                    intervals={k: (lo[i], hi[i]) for k, (lo, hi) in intervals.items()},
                    samples=samples[i], repeats=repeats.get(int(r["number"]), ()),
                    tied=ties.get(int(r["number"]), ()),
                )
                for i, r in rows.iterrows()
            ],
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
        knee = knee_point(trials[cats.eq("pareto")], specs)
    return {
        "objectives": names,
        "directions": directions,
        "labels": [f"{n} ({short_direction(d)})" for n, d in zip(names, directions)],
        "axis_titles": [axis_title(n, d) for n, d in zip(names, directions)],
        "metrics": metrics,
        "categories": categories,
        "pairs": [list(p) for p in pairs],
        "steps": steps,
        "knee": knee,
        "ties": ties,
        "counts": {str(k): int(v) for k, v in cats.value_counts().items()},
    }


def _bound(intervals: Mapping[str, tuple[np.ndarray, np.ndarray]], name: str, side: int, i: int) -> float | None:
    """One interval bound of row ``i`` (None when ``name`` has no interval there)."""
    return finite_float(intervals[name][side][i]) if name in intervals else None


def get_hypervolume_info(
    trials: pd.DataFrame,
    meta: Mapping[str, Any],
    reference: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Hypervolume of the feasible front after each trial, raw and as a fraction of the reference box.

    The *reference box* spans, per objective, from the reference point to the ideal point (the
    best value of that objective over the complete, feasible, distinct trials); the front's
    hypervolume divided by the box's volume is 1 only when one trial is best in every objective.

    Args:
        trials: The trials table.
        meta: The study meta (``objectives``).
        reference: Reference point in the objectives' units (``default_reference`` if None).

    Returns:
        A dict with ``numbers``, ``hypervolume`` (same length, in the objectives' units
        multiplied), ``fraction`` (same length, or None when the box is empty), ``reference``
        and ``ideal`` (lists; ``ideal`` None without a feasible trial), ``reference_text``
        (``"robust_acc=0, params=5.5e+05"``), ``ideal_text``, ``box_volume`` and ``title``.
    """
    specs, names, directions = study_objectives(meta)
    ref = default_reference(trials, specs) if reference is None else np.asarray(reference, dtype=float)
    hist = hypervolume_history(trials, specs, ref)
    ref_text = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, ref))
    cand = candidate_mask(trials, specs).to_numpy() if len(trials) else np.zeros(0, bool)
    ideal = None
    box = 0.0
    if cand.any():
        best = to_minimization(objective_values(trials, names)[cand], directions).min(axis=0)
        ideal = to_minimization(best, directions)  # back to the objectives' own signs
        box = float(np.prod(np.clip(to_minimization(ref, directions) - best, 0.0, None)))
    raw = [float(v) for v in hist["hypervolume"]]
    fraction = [v / box for v in raw] if box > 0 and np.isfinite(box) else None
    ideal_text = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, ideal)) if ideal is not None else "none"
    return {
        "numbers": [int(n) for n in hist["number"]],
        "hypervolume": raw,
        "fraction": fraction,
        "reference": [float(v) for v in ref],
        "ideal": None if ideal is None else [float(v) for v in ideal],
        "reference_text": ref_text,
        "ideal_text": ideal_text,
        "box_volume": box,
        "title": (
            "Hypervolume of the feasible front, as a fraction of the reference box"
            if fraction is not None
            else f"Hypervolume of the feasible front (reference point: {ref_text})"
        ),
    }


def get_dynamics_info(
    trials: pd.DataFrame,
    epochs: pd.DataFrame | None,
    meta: Mapping[str, Any],
    selected: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Per-epoch validation curves of the selected trials (seed 000, Figs. 2-4).

    Args:
        trials: The trials table.
        epochs: Per-epoch metrics (``number``, ``epoch``, ``val_*``...); may be empty or None.
        meta: The study meta (``objectives``).
        selected: Trial numbers to draw; by default the Pareto trials that have epochs (at
            most 8, spread along the first objective).

    Returns:
        A dict with ``metrics`` (panels to draw), ``selected`` (trial numbers), ``lines`` (one
        per trial with curves: ``number``, ``label``, ``epoch`` and ``values`` per metric),
        ``default_selection`` (True when ``selected`` was None) and ``message`` (a sentence
        explaining why nothing is drawn, else None).
    """
    specs, names, directions = study_objectives(meta)
    empty = {"metrics": [], "selected": [], "lines": [], "default_selection": selected is None, "message": None}
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
        chosen = spread([int(n) for n in front["number"]], MAX_DYNAMICS_TRIALS)
    else:
        chosen = [int(n) for n in selected if int(n) in with_epochs]
    if not chosen:
        empty["metrics"] = metrics
        empty["message"] = "None of the selected trials has per-epoch metrics."
        return empty

    cand_cols = candidate_columns(trials)
    by_number = {int(r["number"]): r for _, r in trials.iterrows()} if "number" in trials else {}
    lines = []
    for number in chosen:
        rows = epochs[epochs["number"] == number].sort_values("epoch", kind="stable")
        cand = row_candidate(by_number[number], cand_cols) if number in by_number else {}
        lines.append(
            {
                "number": number,
                "label": short_label(number, cand),
                "epoch": [finite_float(e) for e in rows["epoch"]],
                "values": {m: [finite_float(v) for v in rows[m]] for m in metrics},
            }
        )
    return {"metrics": metrics, "selected": chosen, "lines": lines, "default_selection": selected is None,
            "message": None}


def get_summary_info(trials: pd.DataFrame, meta: Mapping[str, Any], pareto: Mapping[str, Any]) -> list[list[str]]:
    """The summary table at the top of the page: ``[label, text]`` rows (raw strings).

    Args:
        trials: The trials table.
        meta: The study meta (``objectives``, ``constraints``, ``sampler``, ``storage``).
        pareto: :func:`get_pareto_info` of the same trials.

    Returns:
        Objectives, recorded metrics, constraints, trial counts, Pareto-set size, then (when
        there is one) the knee point, the best trial per objective, the sampler and the
        storage URL (password masked).
    """
    specs, _, _ = study_objectives(meta)
    counts = pareto["counts"]
    n_complete = sum(counts.get(c, 0) for c in ("pareto", "dominated", "infeasible", "missing"))
    constraints = [str(c) for c in meta.get("constraints") or []]
    repeats = counts.get("repeat", 0)
    rows = [
        ["Objectives", ", ".join(pareto["axis_titles"])],
        ["Recorded metrics", ", ".join(pareto["metrics"]) or "none"],
        ["Constraints", "; ".join(constraints) if constraints else "none"],
        [
            "Trials",
            f"{len(trials)} in all: {n_complete} complete distinct candidates "
            f"({counts.get('pareto', 0) + counts.get('dominated', 0)} feasible, "
            f"{counts.get('infeasible', 0)} infeasible), "
            + (f"{repeats} repeats of earlier candidates (results reused, counted once), " if repeats else "")
            + f"{counts.get('failed', 0)} failed, "
            f"{counts.get('running', 0)} running, {counts.get('pruned', 0)} pruned",
        ],
        ["Pareto set", f"{counts.get('pareto', 0)} distinct candidates"],
    ]
    if pareto["knee"] is not None:
        knee = f"trial {pareto['knee']} (closest to the ideal point, objectives normalized over the front)"
        rows.append(["Knee point", knee])
    best = []
    for spec in specs:
        try:
            best.append(f"{spec['name']}: trial {best_trial(trials, spec['name'], spec['direction'])}")
        except ValueError:
            continue
    if best:
        rows.append(["Best per objective", "; ".join(best)])
    if meta.get("sampler"):
        rows.append(["Sampler", str(meta["sampler"])])
    if meta.get("storage"):
        rows.append(["Storage", mask_password(str(meta["storage"]))])
    return rows


def get_masking_info(trials: pd.DataFrame) -> dict[str, int]:
    """How many trials the per-trial gradient-masking checks ran on, and how many they flagged.

    Returns:
        ``{"checked": n, "flagged": k}`` (both 0 when the table has no ``masking_flags``).
    """
    if "masking_flags" not in trials.columns:
        return {"checked": 0, "flagged": 0}
    flags = [flag_list(v) for v in trials["masking_flags"]]
    checked = [f for f in flags if f is not None]
    return {"checked": len(checked), "flagged": sum(1 for f in checked if f)}
