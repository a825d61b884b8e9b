"""The "recommended candidate" panel at the top of the report: the knee of the Pareto front.

:func:`get_recommended_info` is a pure builder like those of :mod:`dse.report.info`: it takes the
trials table, the study meta and :func:`~dse.report.info.get_pareto_info`'s dict, and returns
what the panel prints (the knee's candidate, its scores with 95% intervals, its checkpoint, the
front members it is statistically tied with, and the exact ``dse export`` / ``dse train``
commands that turn it into a trained model).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import pandas as pd

from dse.report.formatting import format_cell, is_missing, short_direction, unit_of
from dse.report.intervals import interval_text, is_accuracy, trial_intervals, trial_samples
from dse.report.trials import (
    candidate_columns,
    candidate_lines,
    recorded_metrics,
    repeats_of,
    row_candidate,
    study_objectives,
)

__all__ = ["EXACT_UNITS", "KNEE_RULE", "STUDY_PLACEHOLDER", "get_recommended_info"]

KNEE_RULE = (
    "the knee of the Pareto front: the member closest to the ideal point, each objective scaled to "
    "[0, 1] over the front"
)
STUDY_PLACEHOLDER = "STUDY.yaml"
"""Stands for the study file in the commands when the meta does not name it (``study_file``)."""

EXACT_UNITS = frozenset({"count", "MACs", "BOPs", "bytes"})
"""Units of quantities that follow from the architecture (or the stored model): exact, no interval."""


def _score_note(name: str, bounds: str, samples: int | None) -> str:
    """How the value of ``name`` should be read: its interval, or why it has none."""
    if bounds:
        return f"Wilson 95% interval over {samples} evaluated samples"
    if is_accuracy(name):
        return "no interval: the number of evaluated samples is not recorded"
    if unit_of(name) in EXACT_UNITS:
        return "exact (follows from the architecture): no interval"
    return "measured; not a proportion, so no binomial interval"


def _checkpoint(row: pd.Series, meta: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(path or None, sentence)`` about the trial's trained model."""
    path = row.get("checkpoint") if "checkpoint" in row.index else None
    if not is_missing(path) and str(path).strip():
        return str(path), "the trained model of this trial (on the node that ran it)"
    how = str(row.get("measurement") or meta.get("measurement") or "")
    if how.startswith("replayed from"):
        return None, "none: a replayed study reads its scores from a recorded table and trains nothing"
    if how.startswith("published results") or ("max_epochs" in meta and meta["max_epochs"] is None):
        return None, "none: a tabular study looks its scores up in published results and trains nothing"
    return None, "none recorded for this trial"


def get_recommended_info(trials: pd.DataFrame, meta: Mapping[str, Any], pareto: Mapping[str, Any]) -> dict[str, Any]:
    """What the "recommended candidate" panel shows.

    Args:
        trials: The trials table.
        meta: The study meta (``name``, ``objectives``, ``metrics``, ``measurement``; optionally
            ``study_file``, the study YAML's path, and ``max_epochs`` (None for a tabular study)).
        pareto: :func:`~dse.report.info.get_pareto_info` of the same trials (its ``knee`` and
            ``ties``).

    Returns:
        A dict with ``number`` (the knee's trial number, None without a feasible front),
        ``message`` (why nothing is recommended, else None), ``rule`` (how the knee is chosen),
        ``candidate`` (``"key: value"`` lines), ``scores`` (one dict per objective then recorded
        metric: ``name``, ``kind`` (``"objective"`` / ``"metric"``), ``direction`` (``"max"`` /
        ``"min"`` / ``""``), ``unit``, ``value`` (text), ``interval`` (``"[0.524, 0.637]"`` or
        ``""``) and ``note``), ``samples`` (evaluated samples, None when unknown),
        ``measurement``, ``checkpoint`` (path or None) and ``checkpoint_note``, ``tied_with``
        and ``repeats`` (trial numbers), ``ties_assessed`` (False when no objective of the knee
        has an interval, so that no tie can be told), ``study_file`` (the path, or ``STUDY.yaml`` when the meta
        does not name it) and ``study_file_known``, ``commands`` (``dse export ... --trial N -o
        best.yaml`` and ``dse train best.yaml``) and ``train_note`` (None, or a sentence for a
        candidate whose scores were not measured on a model of this study).
    """
    knee = pareto.get("knee")
    study_file = meta.get("study_file")
    info: dict[str, Any] = {
        "number": None,
        "message": None,
        "rule": KNEE_RULE,
        "candidate": [],
        "scores": [],
        "samples": None,
        "measurement": None,
        "checkpoint": None,
        "checkpoint_note": "",
        "tied_with": [],
        "ties_assessed": False,
        "repeats": [],
        "study_file": str(study_file) if study_file else STUDY_PLACEHOLDER,
        "study_file_known": bool(study_file),
        "commands": [],
        "train_note": None,
    }
    rows = trials[trials["number"] == knee] if knee is not None and "number" in trials.columns else trials.iloc[:0]
    if rows.empty:
        info["message"] = "No recommendation: no complete, feasible trial is on the Pareto front yet."
        return info
    rows = rows.iloc[[0]].reset_index(drop=True)
    row = rows.iloc[0]
    specs, names, directions = study_objectives(meta)
    metrics = recorded_metrics(trials, meta, names)
    intervals = trial_intervals(rows, meta, list(names) + metrics)
    samples = trial_samples(rows, meta).iloc[0]
    scores = []
    for kind, cols, dirs in (("objective", names, directions), ("metric", metrics, [None] * len(metrics))):
        for name, direction in zip(cols, dirs):
            low, high = intervals.get(name, ([None], [None]))
            bounds = interval_text(low[0], high[0])
            scores.append(
                {
                    "name": name,
                    "kind": kind,
                    "direction": short_direction(direction) if direction else "",
                    "unit": unit_of(name) or "",
                    "value": format_cell(row.get(name)),
                    "interval": bounds,
                    "note": _score_note(name, bounds, samples),
                }
            )
    checkpoint, checkpoint_note = _checkpoint(row, meta)
    measurement = row.get("measurement") if "measurement" in row.index else None
    measurement = None if is_missing(measurement) else str(measurement)
    number = int(knee)
    info.update(
        number=number,
        candidate=candidate_lines(row_candidate(row, candidate_columns(trials))),
        scores=scores,
        samples=None if samples is None else int(samples),
        measurement=measurement or meta.get("measurement"),
        checkpoint=checkpoint,
        checkpoint_note=checkpoint_note,
        tied_with=list(pareto.get("ties", {}).get(number, [])),
        ties_assessed=any(s["interval"] for s in scores if s["kind"] == "objective"),
        repeats=repeats_of(trials).get(number, []),
        commands=[f"dse export {shlex.quote(info['study_file'])} --trial {number} -o best.yaml", "dse train best.yaml"],
    )
    if checkpoint is None and checkpoint_note.startswith("none: a"):
        info["train_note"] = (
            "The scores above were not measured on a model of this study: `dse train best.yaml` trains the "
            "candidate from scratch."
        )
    return info
