"""Pure info builders of a rescore's curves: eps curves, step-size curves and the transfer matrix.

Each takes one ``rescore-SUITE.json`` dict (see :mod:`dse.report.rescore_info`) and returns plain
data; :mod:`dse.report.rescore_figures` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dse.report.formatting import finite_float, format_number, k255, spread
from dse.report.rescore_info import sorted_trials, suite_name, trial_label, trial_number

__all__ = [
    "MAX_STEP_TRIALS",
    "NO_EPS_CURVES",
    "NO_STEP_CURVES",
    "NO_TRANSFER",
    "get_eps_curves_info",
    "get_step_curves_info",
    "get_transfer_info",
    "step_label",
]

NO_EPS_CURVES = (
    "No eps curves for the {suite} suite: the rescore ran without curves "
    "(run `dse rescore STUDY.yaml --suite {suite}` without --no-curves)."
)
NO_STEP_CURVES = (
    "No step-size curves for the {suite} suite: the rescore ran without curves "
    "(run `dse rescore STUDY.yaml --suite {suite}` without --no-curves)."
)
NO_TRANSFER = (
    "No transfer matrix for the {suite} suite: it needs two or more re-scored models and a rescore "
    "run without --no-transfer."
)
MAX_STEP_TRIALS = 6  # panels of the step-size figure, spread over the trials with curves
_NORM_NAMES = {"linf": "L-inf", "l2": "L2", "l1": "L1"}


def get_eps_curves_info(rescore: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy against the radius, one line per trial with an eps curve (seed 002, Alg. 2).

    Args:
        rescore: One ``rescore-SUITE.json`` dict.

    Returns:
        A dict with ``suite``, ``split``, ``norm``, ``norm_label`` (``"L-inf"``), ``attack``,
        ``steps``, ``samples``, ``chance``, ``lines`` (ordered by trial number: ``number``,
        ``label``, ``eps``, ``acc``, ``k255`` (``"8/255"`` strings for linf, else None) and
        ``below_chance_at``), ``skipped`` (trial numbers without a curve) and ``message``
        (None when a line is drawn).
    """
    suite = suite_name(rescore)
    lines = []
    skipped = []
    first: Mapping[str, Any] | None = None
    for pos, row in enumerate(sorted_trials(rescore)):
        number = trial_number(row, pos)
        curve = row.get("eps_curve")
        points = curve.get("points") if isinstance(curve, Mapping) else None
        pts = [(finite_float(p.get("eps")), finite_float(p.get("acc"))) for p in (points or []) if isinstance(p, Mapping)]
        pts = [(e, a) for e, a in pts if e is not None]
        if not pts:
            skipped.append(number)
            continue
        first = first or curve
        norm = str(curve.get("norm") or "linf")
        eps = [e for e, _ in pts]
        lines.append(
            {
                "number": number,
                "label": trial_label(number),
                "eps": eps,
                "acc": [a for _, a in pts],
                "k255": [k255(e) for e in eps] if norm == "linf" else None,
                "below_chance_at": finite_float(curve.get("below_chance_at")),
            }
        )
    info: dict[str, Any] = {
        "suite": suite,
        "split": str(rescore.get("split") or "val"),
        "norm": None,
        "norm_label": None,
        "attack": None,
        "steps": None,
        "samples": None,
        "chance": None,
        "lines": lines,
        "skipped": skipped,
        "message": None,
    }
    if first is None:
        info["message"] = NO_EPS_CURVES.format(suite=suite)
        return info
    norm = str(first.get("norm") or "linf")
    info.update(
        norm=norm,
        norm_label=_NORM_NAMES.get(norm, norm),
        attack=first.get("attack"),
        steps=first.get("steps"),
        samples=first.get("samples"),
        chance=finite_float(first.get("chance")),
    )
    return info


def step_label(ratio: float | None, size: float | None) -> str:
    """``"step=0.25*eps (0.025)"`` (the absolute size only when known)."""
    return f"step={format_number(ratio)}*eps" + (f" ({format_number(size)})" if size is not None else "")


def get_step_curves_info(rescore: Mapping[str, Any], max_trials: int = MAX_STEP_TRIALS) -> dict[str, Any]:
    """Accuracy against the PGD iteration per step size, mean and worst over runs (seed 004, 4.1).

    Args:
        rescore: One ``rescore-SUITE.json`` dict.
        max_trials: Most trials drawn (spread over the trials with curves, both ends kept).

    Returns:
        A dict with ``suite``, ``split``, ``eps``, ``norm``, ``iterations``, ``runs``,
        ``samples``, ``step_ratios`` (over the drawn panels, first-seen order), ``panels`` (one
        per drawn trial, by number: ``number``, ``label``, ``title`` (names the worst-case step
        size and its final accuracy), ``short_title`` (subplot title), ``worst_step_ratio``,
        ``worst_step_size``, ``worst_final_acc`` and ``curves``: ``step_ratio``, ``step_size``,
        ``name``, ``iteration`` (0..T), ``mean_acc``, ``worst_acc``), ``selected`` (drawn trial
        numbers), ``available`` (trial numbers with curves), ``skipped`` (without) and
        ``message`` (None when a panel is drawn).
    """
    suite = suite_name(rescore)
    panels = []
    skipped = []
    first: Mapping[str, Any] | None = None
    for pos, row in enumerate(sorted_trials(rescore)):
        number = trial_number(row, pos)
        sc = row.get("step_size_curve")
        raw = sc.get("curves") if isinstance(sc, Mapping) else None
        curves = []
        for c in raw or []:
            if not isinstance(c, Mapping):
                continue
            mean = [finite_float(v) for v in (c.get("mean_acc") or [])]
            worst = [finite_float(v) for v in (c.get("worst_acc") or [])]
            if not mean and not worst:
                continue
            ratio, size = finite_float(c.get("step_ratio")), finite_float(c.get("step_size"))
            curves.append(
                {
                    "step_ratio": ratio,
                    "step_size": size,
                    "name": step_label(ratio, size),
                    "iteration": list(range(max(len(mean), len(worst)))),
                    "mean_acc": mean,
                    "worst_acc": worst,
                }
            )
        if not curves:
            skipped.append(number)
            continue
        first = first or sc
        w_ratio, w_size = finite_float(sc.get("worst_step_ratio")), finite_float(sc.get("worst_step_size"))
        w_final = finite_float(sc.get("worst_final_acc"))
        title = f"{trial_label(number)}: worst case {step_label(w_ratio, w_size)}"
        if w_final is not None:
            title += f", final acc {format_number(w_final, 3)}"
        panels.append(
            {
                "number": number,
                "label": trial_label(number),
                "title": title,
                "short_title": f"{trial_label(number)}: worst step={format_number(w_ratio)}*eps",
                "worst_step_ratio": w_ratio,
                "worst_step_size": w_size,
                "worst_final_acc": w_final,
                "curves": curves,
            }
        )
    available = [p["number"] for p in panels]
    panels = spread(panels, max_trials)
    ratios: list[float | None] = []
    for p in panels:
        ratios += [c["step_ratio"] for c in p["curves"] if c["step_ratio"] not in ratios]
    info: dict[str, Any] = {
        "suite": suite,
        "split": str(rescore.get("split") or "val"),
        "eps": None,
        "norm": None,
        "iterations": None,
        "runs": None,
        "samples": None,
        "step_ratios": ratios,
        "panels": panels,
        "selected": [p["number"] for p in panels],
        "available": available,
        "skipped": skipped,
        "message": None,
    }
    if first is None:
        info["message"] = NO_STEP_CURVES.format(suite=suite)
        return info
    info.update(
        eps=finite_float(first.get("eps")),
        norm=first.get("norm"),
        iterations=first.get("iterations"),
        runs=first.get("runs"),
        samples=first.get("samples"),
    )
    return info


def _matrix(rows: Any, m: int) -> list[list[float | None]]:
    """An ``m x m`` matrix of finite floats or None (short / missing rows padded with None)."""
    out = []
    for i in range(m):
        row = rows[i] if isinstance(rows, Sequence) and i < len(rows) and isinstance(rows[i], Sequence) else []
        out.append([finite_float(row[j]) if j < len(row) else None for j in range(m)])
    return out


def get_transfer_info(rescore: Mapping[str, Any]) -> dict[str, Any]:
    """The transfer accuracy matrix and vulnerability (seed 003, eq. 7) between re-scored models.

    Args:
        rescore: One ``rescore-SUITE.json`` dict.

    Returns:
        A dict with ``suite``, ``split``, ``attack``, ``samples``, ``models`` (row / column
        names; rows are sources, columns targets), ``clean_acc``, ``acc`` and ``vulnerability``
        (``M x M``, None where undefined), ``acc_text`` / ``vulnerability_text`` (cell labels,
        ``""`` for None), ``white_box`` (the diagonal of ``acc``) and ``message`` (None when
        there is a matrix).
    """
    suite = suite_name(rescore)
    info: dict[str, Any] = {
        "suite": suite,
        "split": str(rescore.get("split") or "val"),
        "attack": None,
        "samples": None,
        "models": [],
        "clean_acc": [],
        "acc": [],
        "vulnerability": [],
        "acc_text": [],
        "vulnerability_text": [],
        "white_box": [],
        "message": None,
    }
    tr = rescore.get("transfer")
    models = [str(m) for m in (tr.get("models") or [])] if isinstance(tr, Mapping) else []
    if not models:
        info["message"] = NO_TRANSFER.format(suite=suite)
        return info
    m = len(models)
    acc = _matrix(tr.get("acc"), m)
    vuln = _matrix(tr.get("vulnerability"), m)
    clean_raw = tr.get("clean_acc") or []
    clean = [finite_float(clean_raw[j]) if j < len(clean_raw) else None for j in range(m)]
    info.update(
        attack=tr.get("attack"),
        samples=tr.get("samples"),
        models=models,
        clean_acc=clean,
        acc=acc,
        vulnerability=vuln,
        acc_text=[["" if v is None else f"{v:.2f}" for v in row] for row in acc],
        vulnerability_text=[["" if v is None else f"{v:.2f}" for v in row] for row in vuln],
        white_box=[acc[i][i] for i in range(m)],
    )
    return info


