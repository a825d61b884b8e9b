"""Pure info builders of ``dse rescore`` files: re-scored robust accuracy per suite and trial.

``dse rescore STUDY.yaml --suite SUITE`` writes ``runs/NAME/rescore-SUITE.json`` (one per suite,
see :mod:`dse.study.rescore`); the report receives them as ``meta["rescore"]``, a list of such
dicts. :func:`get_rescore_info` turns them into plain data (numbers here are JSON values: bools
are not numbers); the helpers that read one rescore file are shared with
:mod:`dse.report.curves_info`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dse.report.formatting import candidate_dict, escape, finite_float, format_number, wrap

__all__ = [
    "NO_RESCORE",
    "NO_TRIALS",
    "candidate_text",
    "get_rescore_info",
    "sorted_trials",
    "suite_name",
    "trial_label",
    "trial_number",
]

NO_RESCORE = "No rescore yet: run `dse rescore STUDY.yaml --suite standard`."
NO_TRIALS = "The {suite} suite re-scored no trial."


def candidate_text(cand: Mapping[str, Any]) -> str:
    """``arch, key=value, ...`` on one line (lists and dicts as compact JSON)."""
    bits = []
    for key, value in cand.items():
        if isinstance(value, (list, dict, tuple)):
            value = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, float):
            value = format_number(value)
        bits.append(str(value) if key == "arch" else f"{key}={value}")
    return ", ".join(bits)


def trial_label(number: Any) -> str:
    """``"trial 3"``: a trial's name in titles, legends and notes."""
    return f"trial {number}"


def trial_number(row: Mapping[str, Any], position: int) -> int | str:
    """The ``number`` of a rescore row as an int (else as text; ``"#<position>"`` when missing)."""
    number = row.get("number")
    try:
        return int(number)
    except (TypeError, ValueError):
        return str(number) if number is not None else f"#{position}"


def sorted_trials(rescore: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rescore's trials ordered by trial number (stable; non-integer numbers last)."""
    rows = [r for r in (rescore.get("trials") or []) if isinstance(r, Mapping)]
    keyed = [(trial_number(r, i), i, r) for i, r in enumerate(rows)]
    keyed.sort(key=lambda t: (0, t[0], t[1]) if isinstance(t[0], int) else (1, 0, t[1]))
    return [r for _, _, r in keyed]


def suite_name(rescore: Mapping[str, Any]) -> str:
    """The rescore's suite name (``"unnamed"`` when missing)."""
    return str(rescore.get("suite") or "unnamed")


def _unique(values: Sequence[Any]) -> list[Any]:
    """The distinct non-empty values, first-seen order."""
    out: list[Any] = []
    for v in values:
        if v is not None and v != "" and v not in out:
            out.append(v)
    return out


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
                figures.append(f"{key}={format_number(value) if finite_float(value) is not None else value}")
        lines.append(f"{flag}" + (f" ({', '.join(figures)})" if figures else ""))
    return lines


def _rescore_hover(t: Mapping[str, Any], suite: str, split: str) -> str:
    """Hover text of one re-scored trial (plotly's HTML subset; data strings escaped)."""
    parts = [f"<b>{escape(t['label'])}</b> ({escape(suite)} suite, {escape(split)} split)"]
    if t["candidate_text"]:
        parts += [escape(line) for line in wrap(t["candidate_text"])]
    parts.append(f"search robust acc: {escape(format_number(t['search_robust_acc'])) or 'not recorded'}")
    parts += ["&nbsp;&nbsp;" + escape(line) for line in wrap(t["search_measurement"])]
    parts.append(f"{escape(suite)} suite robust acc: {escape(format_number(t['robust_acc']))}")
    parts += ["&nbsp;&nbsp;" + escape(line) for line in wrap(t["measurement"])]
    if t["drop"] is not None:
        parts.append(f"drop: {escape(format_number(t['drop']))}")
    if t["natural_acc"] is not None:
        parts.append(f"natural acc: {escape(format_number(t['natural_acc']))}")
    if t["per_attack"]:
        per = ", ".join(f"{name} {format_number(acc)}" for name, acc in t["per_attack"].items())
        parts += [escape(line) for line in wrap("per attack: " + per)]
    if t["flags"]:
        parts.append(f"<b>masking: {escape(', '.join(t['flags']))}</b>")
        parts += ["&nbsp;&nbsp;" + escape(line) for line in t["flag_details"]]
    return "<br>".join(parts)


def _get_suite_info(rescore: Mapping[str, Any]) -> dict[str, Any]:
    """One suite of :func:`get_rescore_info` (see there for the keys)."""
    suite = suite_name(rescore)
    split = str(rescore.get("split") or "val")
    trials = []
    attacks: list[str] = []
    for pos, row in enumerate(sorted_trials(rescore)):
        number = trial_number(row, pos)
        search = finite_float(row.get("search_robust_acc"))
        robust = finite_float(row.get("robust_acc"))
        drop = finite_float(row.get("drop"))
        if drop is None and search is not None and robust is not None:
            drop = search - robust
        per_attack_raw = row.get("per_attack") if isinstance(row.get("per_attack"), Mapping) else {}
        per_attack = {str(k): finite_float(v) for k, v in per_attack_raw.items()}
        attacks += [a for a in per_attack if a not in attacks]
        flags = [str(f) for f in (row.get("masking_flags") or [])]
        cand = candidate_dict(row.get("candidate"))
        t = {
            "number": number,
            "label": trial_label(number),
            "candidate": cand,
            "candidate_text": candidate_text(cand),
            "search_robust_acc": search,
            "robust_acc": robust,
            "natural_acc": finite_float(row.get("natural_acc")),
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


def get_rescore_info(rescores: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
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


