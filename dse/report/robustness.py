"""The robustness sections of the report (``dse rescore`` results) and their summary table.

:func:`robustness_sections` returns every section in page order (title, slug, escaped note and
figure, from :mod:`dse.report.rescore_info`, :mod:`dse.report.curves_info` and
:mod:`dse.report.rescore_figures`); :func:`robustness_summary` renders the table of every
re-scored trial, whose rows :func:`get_rescore_table_info` builds as plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from dse.report.curves_info import get_eps_curves_info, get_step_curves_info, get_transfer_info
from dse.report.formatting import escape, format_number, slug
from dse.report.rendering import render
from dse.report.rescore_figures import draw_eps_curves, draw_rescore, draw_step_curves, draw_transfer
from dse.report.rescore_info import get_rescore_info, suite_name, trial_label

__all__ = ["get_rescore_table_info", "robustness_sections", "robustness_summary"]


def _rescore_note(info: dict[str, Any]) -> str:
    """The note of the re-score section (plain text)."""
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
            text += f" Masking flagged: {', '.join(trial_label(n) for n in s['flagged'])}."
        parts.append(text)
    return " ".join(parts)


def _eps_note(info: dict[str, Any]) -> str:
    """The note of a eps section (plain text): what was measured, or why nothing is drawn."""
    if info["message"] is not None:
        return info["message"]
    text = (
        f"Robust accuracy under {info['attack'] or 'PGD'} at growing radii ({info['norm_label']} norm) on "
        f"{info['samples'] if info['samples'] is not None else '?'} samples of the {info['split']} split "
        f"({info['suite']} suite rescore); the sweep stops at the first radius below chance "
        f"(dashed line). A curve that does not fall to chance at large eps hints at gradient masking."
    )
    if info["skipped"]:
        text += f" No curve for: {', '.join(trial_label(n) for n in info['skipped'])}."
    return text


def _step_note(info: dict[str, Any]) -> str:
    """The note of a step section (plain text): what was measured, or why nothing is drawn."""
    if info["message"] is not None:
        return info["message"]
    text = (
        f"PGD ({info['norm'] or '?'}, eps={format_number(info['eps'])}, {info['iterations']} iterations) from "
        f"{info['runs']} random starts per step size on {info['samples'] if info['samples'] is not None else '?'}"
        f" samples of the {info['split']} split ({info['suite']} suite rescore). Solid: mean accuracy over the "
        f"runs; dotted: a sample counts as broken if any run broke it. Curves that are still falling at the last "
        f"iteration mean the search attack had not converged."
    )
    if len(info["selected"]) < len(info["available"]):
        text += (f" Shown: {', '.join(trial_label(n) for n in info['selected'])} "
                 f"(of {len(info['available'])} trials with curves).")
    if info["skipped"]:
        text += f" No curves for: {', '.join(trial_label(n) for n in info['skipped'])}."
    return text


def _transfer_note(info: dict[str, Any]) -> str:
    """The note of a transfer section (plain text): what was measured, or why nothing is drawn."""
    if info["message"] is not None:
        return info["message"]
    text = (
        f"Adversarial examples crafted on each source (row) with {info['attack'] or 'the attack'} on "
        f"{info['samples'] if info['samples'] is not None else '?'} samples of the {info['split']} split, "
        f"evaluated on every target (column); the diagonal is the white-box accuracy. Vulnerability "
        f"V = (clean acc - adversarial acc) / clean acc of the target (blank where the clean accuracy is 0)."
    )
    return text




def robustness_sections(rescores: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str, Markup, Any]]:
    """The robustness sections of the report, in page order.

    Args:
        rescores: ``meta["rescore"]``: the ``rescore-SUITE.json`` dicts; may be empty or None.

    Returns:
        ``(title, slug, note_html, figure)`` tuples. ``title`` is plain text (escape it when
        rendering), ``slug`` is file-name safe and unique, ``note_html`` is escaped HTML text
        (:class:`~markupsafe.Markup`) for a ``<p class="note">``, and ``figure`` a
        ``plotly.graph_objects.Figure`` or None when there is only the note (nothing re-scored,
        no curves, no transfer matrix). First the re-scored robust accuracy of every suite, then
        per suite its eps curves, step-size curves and transfer matrix. Without any rescore: one
        section whose note says how to make one.
    """
    info = get_rescore_info(rescores)
    if info["message"] is not None:
        return [("Robustness re-score", "rescore", Markup(escape(info["message"])), None)]
    drawn = any(s["trials"] for s in info["suites"])
    sections: list[tuple[str, str, Markup, Any]] = [
        ("Robustness re-score", "rescore", Markup(escape(_rescore_note(info))), draw_rescore(info) if drawn else None)
    ]
    slugs = {"rescore"}

    def slug_of(text: str) -> str:
        base = slug(text)
        name, k = base, 2
        while name in slugs:
            name, k = f"{base}_{k}", k + 1
        slugs.add(name)
        return name

    for rescore in rescores or []:
        if not isinstance(rescore, Mapping) or not rescore.get("trials"):
            continue
        suite = suite_name(rescore)
        for title, key, info_fn, note_fn, draw_fn in (
            ("Robust accuracy vs eps", "eps_curves", get_eps_curves_info, _eps_note, draw_eps_curves),
            ("PGD convergence per step size", "step_curves", get_step_curves_info, _step_note, draw_step_curves),
            ("Transfer between front points", "transfer", get_transfer_info, _transfer_note, draw_transfer),
        ):
            part = info_fn(rescore)
            sections.append((f"{title} ({suite} suite)", slug_of(f"{key}_{suite}"), Markup(escape(note_fn(part))),
                             None if part["message"] else draw_fn(part)))
    return sections


def _cell(display: str, sort: Any = None, style: str = "") -> dict[str, Any]:
    return {"display": display, "sort": sort, "css_class": "", "style": style}


def get_rescore_table_info(rescores: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """The summary table of every re-scored trial as plain data (raw strings); None without rescores.

    Returns:
        A dict with ``suites`` (one ``{"suite", "text"}`` line per suite: its split and
        measurement), ``columns`` (suite, trial, candidate, search robust acc, suite robust acc,
        drop, one column per attack over all suites, masking flags) and ``rows`` (one per suite
        and trial: ``number``, ``css_class`` and ``cells``, each ``{"display", "sort",
        "css_class", "style"}``; ``sort`` is None for a blank cell). Flags stay a list in the
        info; the cell joins them.
    """
    info = get_rescore_info(rescores)
    if info["message"] is not None:
        return None
    attacks = info["attacks"]
    rows = []
    for s in info["suites"]:
        for t in s["trials"]:
            cells = [
                _cell(s["suite"], s["suite"]),
                _cell(str(t["number"]), t["number"]),
                _cell(t["candidate_text"], t["candidate_text"] or None),
                _cell(format_number(t["search_robust_acc"]), t["search_robust_acc"]),
                _cell(format_number(t["robust_acc"]), t["robust_acc"]),
                _cell(format_number(t["drop"]), t["drop"]),
            ]
            cells += [_cell(format_number(t["per_attack"].get(a)), t["per_attack"].get(a)) for a in attacks]
            flags = ", ".join(t["flags"])
            cells.append(_cell(flags, flags or None, "color:#a00;font-weight:600" if flags else ""))
            rows.append({"number": t["number"], "css_class": "", "cells": cells})
    suites = []
    for s in info["suites"]:
        text = f" suite ({s['split']} split): " + ("; ".join(s["measurements"]) or "not recorded")
        if not s["trials"]:
            text += f" ({s['message']})"
        suites.append({"suite": s["suite"], "text": text})
    columns = ["suite", "trial", "candidate", "search robust acc", "suite robust acc", "drop", *attacks,
               "masking flags"]
    return {"suites": suites, "columns": columns, "rows": rows}


def robustness_summary(rescores: Sequence[Mapping[str, Any]] | None) -> Markup:
    """A small sortable HTML table of every re-scored trial (all strings escaped); "" without rescores.

    One row per suite and trial: suite, trial, candidate, search robust acc, suite robust acc,
    drop, one column per attack (over all suites; blank where a suite did not run it) and the
    masking flags (red). Above the table, one line per suite with its measurement. The table
    has class ``dse-sortable`` so the report's sorting script applies to it.
    """
    table = get_rescore_table_info(rescores)
    if table is None:
        return Markup("")
    return render("rescore_summary.html.j2", **table)
