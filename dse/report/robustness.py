"""Report sections of ``dse rescore``: re-scored robust accuracy, eps and step-size curves, transfer.

``dse rescore STUDY.yaml --suite SUITE`` writes ``runs/NAME/rescore-SUITE.json`` (one per suite, see
:mod:`dse.study.rescore`); the report receives them as ``meta["rescore"]``, a list of such dicts. As in
:mod:`dse.report`, pure ``_get_*_info()`` functions turn them into plain data (tested directly) and
thin ``_draw_*()`` functions into ``plotly.graph_objects.Figure`` objects:

* :func:`_get_rescore_info` / :func:`_draw_rescore`: per front point, the robust accuracy the search
  measured and the one the suite measured, as a dumbbell; trials whose gradient-masking checks
  failed are drawn as red crosses;
* :func:`_get_eps_curves_info` / :func:`_draw_eps_curves`: accuracy against the radius (seed 002,
  Alg. 2), chance level dashed;
* :func:`_get_step_curves_info` / :func:`_draw_step_curves`: accuracy against the PGD iteration per
  step size, mean and worst over random starts (seed 004, sec. 4.1);
* :func:`_get_transfer_info` / :func:`_draw_transfer`: transfer accuracy matrix and vulnerability
  (seed 003, eq. 7) heat-maps.

:func:`robustness_sections` returns every section in page order, :func:`robustness_summary` a
small HTML table. It shares :mod:`dse.report`'s escaping, palette and helpers; ``dse.report``
imports this module inside ``write_report`` (no import cycle).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from dse.report import _PALETTE, _esc, _slug, _spread

__all__ = ["robustness_sections", "robustness_summary"]

NO_RESCORE = "No rescore yet: run `dse rescore STUDY.yaml --suite standard`."
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
NO_TRIALS = "The {suite} suite re-scored no trial."
MAX_STEP_TRIALS = 6  # panels of the step-size figure, spread over the trials with curves

SEARCH_COLOR = "#7f7f7f"
SUITE_COLOR = "#1f77b4"
FLAG_COLOR = "#d62728"
_NORM_NAMES = {"linf": "L-inf", "l2": "L2", "l1": "L1"}
_HOVER_WRAP = 90  # characters per hover line of a measurement string


# --------------------------------------------------------------------------------------------
# Small helpers (numbers here are JSON values: bools are not numbers, digits vary)
# --------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, inf, not a number, bool)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; "" for a missing value."""
    v = _num(value)
    if v is None:
        return "" if value is None or isinstance(value, (int, float)) else str(value)
    return f"{v:.{digits}g}"


def _wrap(text: Any, width: int = _HOVER_WRAP) -> list[str]:
    """``text`` cut into lines of at most ``width`` characters (no line for a missing text)."""
    if text is None or str(text).strip() == "":
        return []
    return textwrap.wrap(str(text), width=width, break_long_words=True, break_on_hyphens=False) or [str(text)]


def _candidate(value: Any) -> dict[str, Any]:
    """The candidate spec as a dict (a JSON string is parsed; anything else is wrapped)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {"candidate": value}
        return dict(parsed) if isinstance(parsed, dict) else {"candidate": parsed}
    return {}


def _candidate_text(cand: Mapping[str, Any]) -> str:
    """``arch, key=value, ...`` on one line (lists and dicts as compact JSON)."""
    bits = []
    for key, value in cand.items():
        if isinstance(value, (list, dict, tuple)):
            value = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, float):
            value = _fmt(value)
        bits.append(str(value) if key == "arch" else f"{key}={value}")
    return ", ".join(bits)


def _label(number: Any) -> str:
    return f"trial {number}"


def _trial_number(row: Mapping[str, Any], position: int) -> int | str:
    number = row.get("number")
    try:
        return int(number)
    except (TypeError, ValueError):
        return str(number) if number is not None else f"#{position}"


def _sorted_trials(rescore: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rescore's trials ordered by trial number (stable; non-integer numbers last)."""
    rows = [r for r in (rescore.get("trials") or []) if isinstance(r, Mapping)]
    keyed = [(_trial_number(r, i), i, r) for i, r in enumerate(rows)]
    keyed.sort(key=lambda t: (0, t[0], t[1]) if isinstance(t[0], int) else (1, 0, t[1]))
    return [r for _, _, r in keyed]


def _suite_name(rescore: Mapping[str, Any]) -> str:
    return str(rescore.get("suite") or "unnamed")


def _k255(eps: float | None) -> str:
    """``eps`` as ``k/255`` (``"8/255"``; at most two decimals when ``k`` is not an integer)."""
    if eps is None:
        return ""
    k = eps * 255.0
    if abs(k - round(k)) < 1e-4:
        return f"{int(round(k))}/255"
    return f"{k:.2f}".rstrip("0").rstrip(".") + "/255"


def _unique(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v != "" and v not in out:
            out.append(v)
    return out


def _message_figure(title: str, message: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=_esc(message), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_layout(title=_esc(title), height=200, template="plotly_white",
                      xaxis={"visible": False}, yaxis={"visible": False})
    return fig


# --------------------------------------------------------------------------------------------
# Pure info functions
# --------------------------------------------------------------------------------------------


def _flag_details(flags: Sequence[str], checks: Mapping[str, Any]) -> list[str]:
    """One line per raised flag: its name and the check's figures (``zero_fraction=0.3, max=0.05``)."""
    lines = []
    for flag in flags:
        check = checks.get(flag) if isinstance(checks, Mapping) else None
        figures = []
        if isinstance(check, Mapping):
            for key, value in check.items():
                if key == "passed":
                    continue
                figures.append(f"{key}={_fmt(value) if _num(value) is not None else value}")
        lines.append(f"{flag}" + (f" ({', '.join(figures)})" if figures else ""))
    return lines


def _rescore_hover(t: Mapping[str, Any], suite: str, split: str) -> str:
    """Hover text of one re-scored trial (plotly's HTML subset; data strings escaped)."""
    parts = [f"<b>{_esc(t['label'])}</b> ({_esc(suite)} suite, {_esc(split)} split)"]
    if t["candidate_text"]:
        parts += [_esc(line) for line in _wrap(t["candidate_text"])]
    parts.append(f"search robust acc: {_esc(_fmt(t['search_robust_acc'])) or 'not recorded'}")
    parts += ["&nbsp;&nbsp;" + _esc(line) for line in _wrap(t["search_measurement"])]
    parts.append(f"{_esc(suite)} suite robust acc: {_esc(_fmt(t['robust_acc']))}")
    parts += ["&nbsp;&nbsp;" + _esc(line) for line in _wrap(t["measurement"])]
    if t["drop"] is not None:
        parts.append(f"drop: {_esc(_fmt(t['drop']))}")
    if t["natural_acc"] is not None:
        parts.append(f"natural acc: {_esc(_fmt(t['natural_acc']))}")
    if t["per_attack"]:
        per = ", ".join(f"{name} {_fmt(acc)}" for name, acc in t["per_attack"].items())
        parts += [_esc(line) for line in _wrap("per attack: " + per)]
    if t["flags"]:
        parts.append(f"<b>masking: {_esc(', '.join(t['flags']))}</b>")
        parts += ["&nbsp;&nbsp;" + _esc(line) for line in t["flag_details"]]
    return "<br>".join(parts)


def _get_suite_info(rescore: Mapping[str, Any]) -> dict[str, Any]:
    suite = _suite_name(rescore)
    split = str(rescore.get("split") or "val")
    trials = []
    attacks: list[str] = []
    for pos, row in enumerate(_sorted_trials(rescore)):
        number = _trial_number(row, pos)
        search = _num(row.get("search_robust_acc"))
        robust = _num(row.get("robust_acc"))
        drop = _num(row.get("drop"))
        if drop is None and search is not None and robust is not None:
            drop = search - robust
        per_attack_raw = row.get("per_attack") if isinstance(row.get("per_attack"), Mapping) else {}
        per_attack = {str(k): _num(v) for k, v in per_attack_raw.items()}
        attacks += [a for a in per_attack if a not in attacks]
        flags = [str(f) for f in (row.get("masking_flags") or [])]
        cand = _candidate(row.get("candidate"))
        t = {
            "number": number,
            "label": _label(number),
            "candidate": cand,
            "candidate_text": _candidate_text(cand),
            "search_robust_acc": search,
            "robust_acc": robust,
            "natural_acc": _num(row.get("natural_acc")),
            "drop": drop,
            "per_attack": per_attack,
            "flags": flags,
            "flag_details": _flag_details(flags, row.get("checks") or {}),
            "measurement": row.get("measurement"),
            "search_measurement": row.get("search_measurement"),
            "samples": row.get("samples"),
            "mode": row.get("mode"),
        }
        t["hover"] = _rescore_hover(t, suite, split)
        trials.append(t)
    drops = [t["drop"] for t in trials if t["drop"] is not None]
    return {
        "suite": suite,
        "split": split,
        "study": rescore.get("study"),
        "measurements": _unique([t["measurement"] for t in trials]),
        "search_measurements": _unique([t["search_measurement"] for t in trials]),
        "samples": _unique([t["samples"] for t in trials]),
        "attacks": attacks,
        "trials": trials,
        "flagged": [t["number"] for t in trials if t["flags"]],
        "max_drop": max(drops) if drops else None,
        "message": NO_TRIALS.format(suite=suite) if not trials else None,
    }


def _get_rescore_info(rescores: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Search versus re-scored robust accuracy of every re-scored trial, per suite.

    Args:
        rescores: The ``rescore-SUITE.json`` dicts (``meta["rescore"]``); may be empty or None.

    Returns:
        A dict with ``suites`` (in input order; per suite ``suite``, ``split``, ``study``,
        ``measurements`` / ``search_measurements`` / ``samples`` (distinct values over its
        trials), ``attacks`` (attack names in first-seen order), ``trials``, ``flagged`` (trial
        numbers), ``max_drop`` and ``message`` (None unless the suite re-scored no trial)),
        ``flagged`` (``{"suite", "number", "label", "flags"}`` for every trial with a masking flag,
        suite by suite), ``attacks`` (over all suites) and ``message`` (:data:`NO_RESCORE` when
        there is nothing, else None). Each trial (ordered by number) holds ``number``, ``label``
        (``"trial 3"``), ``candidate`` (dict), ``candidate_text``, ``search_robust_acc``,
        ``robust_acc``, ``natural_acc``, ``drop`` (search minus suite; computed when the file has
        None but both accuracies), ``per_attack`` (``{attack: acc}``), ``flags``,
        ``flag_details``, ``measurement``, ``search_measurement``, ``samples``, ``mode`` and
        ``hover``. Strings are raw except ``hover``, which is escaped plotly HTML.
    """
    suites = [_get_suite_info(r) for r in (rescores or []) if isinstance(r, Mapping)]
    flagged = [
        {"suite": s["suite"], "number": t["number"], "label": t["label"], "flags": list(t["flags"])}
        for s in suites
        for t in s["trials"]
        if t["flags"]
    ]
    attacks: list[str] = []
    for s in suites:
        attacks += [a for a in s["attacks"] if a not in attacks]
    return {
        "suites": suites,
        "flagged": flagged,
        "attacks": attacks,
        "message": NO_RESCORE if not suites else None,
    }


def _get_eps_curves_info(rescore: Mapping[str, Any]) -> dict[str, Any]:
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
    suite = _suite_name(rescore)
    lines = []
    skipped = []
    first: Mapping[str, Any] | None = None
    for pos, row in enumerate(_sorted_trials(rescore)):
        number = _trial_number(row, pos)
        curve = row.get("eps_curve")
        points = curve.get("points") if isinstance(curve, Mapping) else None
        pts = [(_num(p.get("eps")), _num(p.get("acc"))) for p in (points or []) if isinstance(p, Mapping)]
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
                "label": _label(number),
                "eps": eps,
                "acc": [a for _, a in pts],
                "k255": [_k255(e) for e in eps] if norm == "linf" else None,
                "below_chance_at": _num(curve.get("below_chance_at")),
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
        chance=_num(first.get("chance")),
    )
    return info


def _step_label(ratio: float | None, size: float | None) -> str:
    return f"step={_fmt(ratio)}*eps" + (f" ({_fmt(size)})" if size is not None else "")


def _get_step_curves_info(rescore: Mapping[str, Any], max_trials: int = MAX_STEP_TRIALS) -> dict[str, Any]:
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
    suite = _suite_name(rescore)
    panels = []
    skipped = []
    first: Mapping[str, Any] | None = None
    for pos, row in enumerate(_sorted_trials(rescore)):
        number = _trial_number(row, pos)
        sc = row.get("step_size_curve")
        raw = sc.get("curves") if isinstance(sc, Mapping) else None
        curves = []
        for c in raw or []:
            if not isinstance(c, Mapping):
                continue
            mean = [_num(v) for v in (c.get("mean_acc") or [])]
            worst = [_num(v) for v in (c.get("worst_acc") or [])]
            if not mean and not worst:
                continue
            ratio, size = _num(c.get("step_ratio")), _num(c.get("step_size"))
            curves.append(
                {
                    "step_ratio": ratio,
                    "step_size": size,
                    "name": _step_label(ratio, size),
                    "iteration": list(range(max(len(mean), len(worst)))),
                    "mean_acc": mean,
                    "worst_acc": worst,
                }
            )
        if not curves:
            skipped.append(number)
            continue
        first = first or sc
        w_ratio, w_size = _num(sc.get("worst_step_ratio")), _num(sc.get("worst_step_size"))
        w_final = _num(sc.get("worst_final_acc"))
        title = f"{_label(number)}: worst case {_step_label(w_ratio, w_size)}"
        if w_final is not None:
            title += f", final acc {_fmt(w_final, 3)}"
        panels.append(
            {
                "number": number,
                "label": _label(number),
                "title": title,
                "short_title": f"{_label(number)}: worst step={_fmt(w_ratio)}*eps",
                "worst_step_ratio": w_ratio,
                "worst_step_size": w_size,
                "worst_final_acc": w_final,
                "curves": curves,
            }
        )
    available = [p["number"] for p in panels]
    panels = _spread(panels, max_trials)
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
        eps=_num(first.get("eps")),
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
        out.append([_num(row[j]) if j < len(row) else None for j in range(m)])
    return out


def _get_transfer_info(rescore: Mapping[str, Any]) -> dict[str, Any]:
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
    suite = _suite_name(rescore)
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
    clean = [_num(clean_raw[j]) if j < len(clean_raw) else None for j in range(m)]
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


# --------------------------------------------------------------------------------------------
# Thin drawing functions
# --------------------------------------------------------------------------------------------


def _draw_rescore(info: dict[str, Any]):
    """Dumbbells per suite (one panel each): search robust acc -> suite robust acc per trial.

    Traces per suite panel: ``drop`` (the grey connecting lines), ``search robust acc``,
    ``re-scored robust acc`` (trials without flags) and, when a trial is flagged,
    ``re-scored, masking flagged`` (red crosses). The legend shows each name once.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    suites = [s for s in info["suites"] if s["trials"]]
    if not suites:
        return _message_figure("Re-scored robust accuracy", info["message"] or "Nothing was re-scored.")
    titles = [f"{_esc(s['suite'])} suite ({_esc(s['split'])} split)" for s in suites]
    fig = make_subplots(rows=1, cols=len(suites), subplot_titles=titles, shared_yaxes=True,
                        horizontal_spacing=0.06)
    shown: set[str] = set()

    def legend(name: str) -> bool:
        first = name not in shown
        shown.add(name)
        return first

    for c, s in enumerate(suites, start=1):
        trials = s["trials"]
        xs, ys = [], []
        for t in trials:
            if t["search_robust_acc"] is not None and t["robust_acc"] is not None:
                xs += [t["label"], t["label"], None]
                ys += [t["search_robust_acc"], t["robust_acc"], None]
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name="drop", line={"color": "#c8c8c8", "width": 3},
                       legendgroup="drop", showlegend=legend("drop"), hoverinfo="skip"),
            row=1, col=c,
        )
        fig.add_trace(
            go.Scatter(
                x=[t["label"] for t in trials],
                y=[t["search_robust_acc"] for t in trials],
                mode="markers",
                name="search robust acc",
                marker={"color": SEARCH_COLOR, "size": 9, "symbol": "circle-open", "line": {"width": 2}},
                legendgroup="search",
                showlegend=legend("search"),
                hovertext=[t["hover"] for t in trials],
                hovertemplate="%{hovertext}<extra></extra>",
            ),
            row=1, col=c,
        )
        clean = [t for t in trials if not t["flags"]]
        fig.add_trace(
            go.Scatter(
                x=[t["label"] for t in clean],
                y=[t["robust_acc"] for t in clean],
                mode="markers",
                name="re-scored robust acc",
                marker={"color": SUITE_COLOR, "size": 10, "symbol": "circle"},
                legendgroup="suite",
                showlegend=legend("suite"),
                hovertext=[t["hover"] for t in clean],
                hovertemplate="%{hovertext}<extra></extra>",
            ),
            row=1, col=c,
        )
        flagged = [t for t in trials if t["flags"]]
        if flagged:
            fig.add_trace(
                go.Scatter(
                    x=[t["label"] for t in flagged],
                    y=[t["robust_acc"] for t in flagged],
                    mode="markers",
                    name="re-scored, masking flagged",
                    marker={"color": FLAG_COLOR, "size": 12, "symbol": "x"},
                    legendgroup="flagged",
                    showlegend=legend("flagged"),
                    hovertext=[t["hover"] for t in flagged],
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                row=1, col=c,
            )
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=[t["label"] for t in trials],
                         row=1, col=c)
    fig.update_yaxes(title_text="robust accuracy", row=1, col=1)
    fig.update_layout(
        title="Robust accuracy of the front points: search attack vs attack suite",
        height=460,
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0.0},
        margin={"t": 110},
    )
    return fig


def _draw_eps_curves(info: dict[str, Any]):
    """Accuracy against eps, one line per trial, chance level as a dashed ``chance`` line."""
    import plotly.graph_objects as go

    title = f"Robust accuracy vs eps ({_esc(info['suite'])} suite)"
    if info["message"] is not None:
        return _message_figure(title, info["message"])
    fig = go.Figure()
    for k, line in enumerate(info["lines"]):
        k255 = " (%{customdata})" if line["k255"] is not None else ""
        template = f"{_esc(line['label'])}<br>eps %{{x:.4g}}{k255}<br>accuracy %{{y:.3f}}<extra></extra>"
        fig.add_trace(
            go.Scatter(
                x=line["eps"],
                y=line["acc"],
                customdata=line["k255"],
                mode="lines+markers",
                marker={"size": 5},
                line={"color": _PALETTE[k % len(_PALETTE)]},
                name=_esc(line["label"]),
                hovertemplate=template,
            )
        )
    if info["chance"] is not None:
        all_eps = [e for line in info["lines"] for e in line["eps"]]
        fig.add_trace(
            go.Scatter(
                x=[min(all_eps), max(all_eps)],
                y=[info["chance"], info["chance"]],
                mode="lines",
                line={"color": "#555555", "dash": "dash", "width": 1.5},
                name=f"chance ({_fmt(info['chance'], 3)})",
                hoverinfo="skip",
            )
        )
    norm = _esc(info["norm_label"])
    fig.update_layout(
        title=title + (f": {_esc(info['attack'])}" if info["attack"] else ""),
        xaxis_title=f"eps ({norm} radius)" + (", k/255 in hover" if info["norm"] == "linf" else ""),
        yaxis_title="accuracy",
        yaxis={"range": [0, 1.02]},
        height=440,
        template="plotly_white",
    )
    return fig


def _draw_step_curves(info: dict[str, Any]):
    """One panel per drawn trial: accuracy against the PGD iteration per step size.

    Per panel and step size two traces: ``<step> mean of N runs`` (solid) and ``<step> worst of N
    runs`` (dotted), one colour per step ratio; the legend shows each pair once.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = f"PGD convergence per step size ({_esc(info['suite'])} suite)"
    if info["message"] is not None:
        return _message_figure(title, info["message"])
    panels = info["panels"]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[_esc(p["short_title"]) for p in panels],
                        shared_yaxes=True, vertical_spacing=0.18 if rows > 1 else 0.1)
    colors = {r: _PALETTE[k % len(_PALETTE)] for k, r in enumerate(info["step_ratios"])}
    runs = info["runs"]
    of_runs = f" of {runs} runs" if runs is not None else " over runs"
    shown: set[str] = set()
    for k, panel in enumerate(panels):
        row, col = k // cols + 1, k % cols + 1
        for curve in panel["curves"]:
            color = colors[curve["step_ratio"]]
            for kind, dash in (("mean", "solid"), ("worst", "dot")):
                name = f"{_step_label(curve['step_ratio'], None)} {kind}{of_runs}"
                fig.add_trace(
                    go.Scatter(
                        x=curve["iteration"],
                        y=curve[f"{kind}_acc"],
                        mode="lines",
                        line={"color": color, "dash": dash, "width": 2 if kind == "mean" else 1.5},
                        name=_esc(name),
                        legendgroup=_esc(name),
                        showlegend=name not in shown,
                        hovertemplate=(
                            f"{_esc(panel['label'])}, {_esc(curve['name'])}<br>iteration %{{x}}"
                            f"<br>{kind} accuracy %{{y:.3f}}<br>{_esc(panel['title'])}<extra></extra>"
                        ),
                    ),
                    row=row,
                    col=col,
                )
                shown.add(name)
            fig.update_xaxes(title_text="PGD iteration", row=row, col=col)
    for r in range(1, rows + 1):
        fig.update_yaxes(title_text="accuracy", row=r, col=1)
    fig.update_annotations(font_size=13)
    eps = info["eps"]
    eps_text = f"eps={_fmt(eps)}" + (f" ({_k255(eps)})" if eps is not None and info["norm"] == "linf" else "")
    fig.update_layout(
        title=f"{title}: {_esc(info['norm'] or '')} {_esc(eps_text)}; solid = mean, dotted = worst{_esc(of_runs)}",
        height=120 + 300 * rows,
        template="plotly_white",
        legend={"tracegroupgap": 2},
    )
    return fig


def _draw_transfer(info: dict[str, Any]):
    """Two heat-maps: ``transfer accuracy`` (diagonal = white box) and ``vulnerability``."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = f"Transfer between front points ({_esc(info['suite'])} suite)"
    if info["message"] is not None:
        return _message_figure(title, info["message"])
    models = [_esc(m) for m in info["models"]]
    m = len(models)
    clean = [[info["clean_acc"][j] for j in range(m)] for _ in range(m)]
    vuln_vals = [v for row in info["vulnerability"] for v in row if v is not None]
    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.22,
        subplot_titles=["accuracy of target on source's examples", "vulnerability (clean - adv) / clean"],
    )
    common = {"x": models, "y": models, "texttemplate": "%{text}", "hoverongaps": False, "xgap": 1, "ygap": 1}
    fig.add_trace(
        go.Heatmap(
            z=info["acc"], text=info["acc_text"], customdata=clean, zmin=0.0, zmax=1.0,
            colorscale="Blues", name="transfer accuracy",
            colorbar={"title": {"text": "acc"}, "x": 0.40, "len": 0.9},
            hovertemplate=("source %{y}<br>target %{x}<br>accuracy %{z:.3f}"
                           "<br>target clean acc %{customdata:.3f}<extra></extra>"),
            **common,
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Heatmap(
            z=info["vulnerability"], text=info["vulnerability_text"], customdata=clean,
            zmin=min([0.0] + vuln_vals), zmax=max([1.0] + vuln_vals),
            colorscale="Reds", name="vulnerability",
            colorbar={"title": {"text": "V"}, "x": 1.0, "len": 0.9},
            hovertemplate=("source %{y}<br>target %{x}<br>vulnerability %{z:.3f}"
                           "<br>target clean acc %{customdata:.3f}<extra></extra>"),
            **common,
        ),
        row=1, col=2,
    )
    for c in (1, 2):
        fig.update_xaxes(title_text="target (evaluated)", type="category", row=1, col=c)
        fig.update_yaxes(title_text="source (attacked)" if c == 1 else None, type="category",
                         autorange="reversed", row=1, col=c)
    fig.update_layout(
        title=title + (f": {_esc(info['attack'])}" if info["attack"] else ""),
        height=max(380, 160 + 45 * m),
        template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------------------------
# Sections and summary
# --------------------------------------------------------------------------------------------


def _samples_text(samples: Sequence[Any]) -> str:
    return "/".join(str(s) for s in samples) if samples else "?"


def _rescore_note(info: dict[str, Any]) -> str:
    parts = [
        "Each front point's robust accuracy as the search measured it (open grey circle) and "
        "re-scored with a stronger attack suite (blue dot); the grey bar between them is the drop. "
        "Red crosses: a gradient-masking check failed, so even the suite's figure may overstate robustness."
    ]
    for s in info["suites"]:
        if not s["trials"]:
            parts.append(s["message"])
            continue
        text = f"{s['suite']} suite on the {s['split']} split: {'; '.join(s['measurements']) or 'not recorded'}."
        if s["search_measurements"]:
            text += f" Search: {'; '.join(s['search_measurements'])}."
        if s["flagged"]:
            text += f" Masking flagged: {', '.join(_label(n) for n in s['flagged'])}."
        parts.append(text)
    return " ".join(_esc(p) for p in parts)


def _eps_note(info: dict[str, Any]) -> str:
    if info["message"] is not None:
        return _esc(info["message"])
    text = (
        f"Robust accuracy under {info['attack'] or 'PGD'} at growing radii ({info['norm_label']} norm) on "
        f"{info['samples'] if info['samples'] is not None else '?'} samples of the {info['split']} split "
        f"({info['suite']} suite rescore); the sweep stops at the first radius below chance "
        f"(dashed line). A curve that does not fall to chance at large eps hints at gradient masking."
    )
    if info["skipped"]:
        text += f" No curve for: {', '.join(_label(n) for n in info['skipped'])}."
    return _esc(text)


def _step_note(info: dict[str, Any]) -> str:
    if info["message"] is not None:
        return _esc(info["message"])
    text = (
        f"PGD ({info['norm'] or '?'}, eps={_fmt(info['eps'])}, {info['iterations']} iterations) from "
        f"{info['runs']} random starts per step size on {info['samples'] if info['samples'] is not None else '?'}"
        f" samples of the {info['split']} split ({info['suite']} suite rescore). Solid: mean accuracy over the "
        f"runs; dotted: a sample counts as broken if any run broke it. Curves that are still falling at the last "
        f"iteration mean the search attack had not converged."
    )
    if len(info["selected"]) < len(info["available"]):
        text += (f" Shown: {', '.join(_label(n) for n in info['selected'])} "
                 f"(of {len(info['available'])} trials with curves).")
    if info["skipped"]:
        text += f" No curves for: {', '.join(_label(n) for n in info['skipped'])}."
    return _esc(text)


def _transfer_note(info: dict[str, Any]) -> str:
    if info["message"] is not None:
        return _esc(info["message"])
    text = (
        f"Adversarial examples crafted on each source (row) with {info['attack'] or 'the attack'} on "
        f"{info['samples'] if info['samples'] is not None else '?'} samples of the {info['split']} split, "
        f"evaluated on every target (column); the diagonal is the white-box accuracy. Vulnerability "
        f"V = (clean acc - adversarial acc) / clean acc of the target (blank where the clean accuracy is 0)."
    )
    return _esc(text)


def robustness_sections(rescores: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str, str, Any]]:
    """The robustness sections of the report, in page order.

    Args:
        rescores: ``meta["rescore"]``: the ``rescore-SUITE.json`` dicts; may be empty or None.

    Returns:
        ``(title, slug, note_html, figure)`` tuples. ``title`` is plain text (escape it when
        rendering), ``slug`` is file-name safe and unique, ``note_html`` is escaped HTML text for
        a ``<p class="note">``, and ``figure`` a ``plotly.graph_objects.Figure`` or None when
        there is only the note (nothing re-scored, no curves, no transfer matrix). First the
        re-scored robust accuracy of every suite, then per suite its eps curves, step-size
        curves and transfer matrix. Without any rescore: one section whose note says how to
        make one.
    """
    info = _get_rescore_info(rescores)
    if info["message"] is not None:
        return [("Robustness re-score", "rescore", _esc(info["message"]), None)]
    drawn = any(s["trials"] for s in info["suites"])
    sections: list[tuple[str, str, str, Any]] = [
        ("Robustness re-score", "rescore", _rescore_note(info), _draw_rescore(info) if drawn else None)
    ]
    slugs = {"rescore"}

    def slug_of(text: str) -> str:
        base = _slug(text)
        slug, k = base, 2
        while slug in slugs:
            slug, k = f"{base}_{k}", k + 1
        slugs.add(slug)
        return slug

    for rescore in rescores or []:
        if not isinstance(rescore, Mapping) or not rescore.get("trials"):
            continue
        suite = _suite_name(rescore)
        eps = _get_eps_curves_info(rescore)
        sections.append((f"Robust accuracy vs eps ({suite} suite)", slug_of(f"eps_curves_{suite}"),
                         _eps_note(eps), None if eps["message"] else _draw_eps_curves(eps)))
        step = _get_step_curves_info(rescore)
        sections.append((f"PGD convergence per step size ({suite} suite)", slug_of(f"step_curves_{suite}"),
                         _step_note(step), None if step["message"] else _draw_step_curves(step)))
        tr = _get_transfer_info(rescore)
        sections.append((f"Transfer between front points ({suite} suite)", slug_of(f"transfer_{suite}"),
                         _transfer_note(tr), None if tr["message"] else _draw_transfer(tr)))
    return sections


def _td(display: str, sort_key: Any = None, style: str = "") -> str:
    key = "" if sort_key is None else (repr(float(sort_key)) if isinstance(sort_key, (int, float)) else str(sort_key))
    attr = f' style="{style}"' if style else ""
    return f'<td data-sort="{_esc(key)}"{attr}>{_esc(display)}</td>'


def robustness_summary(rescores: Sequence[Mapping[str, Any]] | None) -> str:
    """A small sortable HTML table of every re-scored trial (all strings escaped); "" without rescores.

    One row per suite and trial: suite, trial, candidate, search robust acc, suite robust acc,
    drop, one column per attack (over all suites; blank where a suite did not run it) and the
    masking flags (red). Above the table, one line per suite with its measurement. The table
    has class ``dse-sortable`` so the report's sorting script applies to it.
    """
    info = _get_rescore_info(rescores)
    if info["message"] is not None:
        return ""
    attacks = info["attacks"]
    head = ["suite", "trial", "candidate", "search robust acc", "suite robust acc", "drop", *attacks, "masking flags"]
    body = []
    for s in info["suites"]:
        for t in s["trials"]:
            cells = [
                _td(s["suite"], s["suite"]),
                _td(str(t["number"]), t["number"]),
                _td(t["candidate_text"], t["candidate_text"] or None),
                _td(_fmt(t["search_robust_acc"]), t["search_robust_acc"]),
                _td(_fmt(t["robust_acc"]), t["robust_acc"]),
                _td(_fmt(t["drop"]), t["drop"]),
            ]
            cells += [_td(_fmt(t["per_attack"].get(a)), t["per_attack"].get(a)) for a in attacks]
            flags = ", ".join(t["flags"])
            cells.append(_td(flags, flags or None, "color:#a00;font-weight:600" if flags else ""))
            body.append(f'<tr data-number="{_esc(t["number"])}">{"".join(cells)}</tr>')
    lines = []
    for s in info["suites"]:
        text = f" suite ({s['split']} split): " + ("; ".join(s["measurements"]) or "not recorded")
        if not s["trials"]:
            text += f" ({s['message']})"
        lines.append(f"<b>{_esc(s['suite'])}</b>{_esc(text)}")
    header = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return (
        f'<p class="note">{"<br>".join(lines)}</p>'
        '<div class="tablewrap"><table class="dse-sortable" id="dse-rescore-table">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
