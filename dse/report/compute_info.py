"""Pure info builder of the report's "Compute" section: what early stopping cost and saved.

Under ``scheduler: {name: mo_asha}`` a trial stopped at a rung is PRUNED: it never counts towards
the front or the hypervolume, but the epochs it trained do count towards the compute spent.
:func:`get_compute_info` turns the trials and epochs tables into plain lists and numbers (tested
directly); :mod:`dse.report.compute_figures` draws them.

Counting rules (the same as the runner's):

* a repeat (``duplicate_of`` set) reuses an earlier trial's result and trains 0 epochs; it is
  counted nowhere but in ``totals["repeats"]``;
* a trial's epochs are its ``epochs_trained`` cell, else its rows in the epochs table;
* a FIFO run of the same trials trains every complete and stopped trial to the full epoch
  count; failed and running trials count with the epochs they trained in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dse.report.formatting import finite_float
from dse.study.pareto import default_reference, hypervolume_history, pareto_mask

__all__ = ["OUTCOMES", "compute_section_wanted", "get_compute_info", "scheduler_name"]

OUTCOMES = ("complete", "stopped", "failed", "running", "repeat")
"""Outcome of a trial in the compute section (``stopped``: PRUNED by the scheduler)."""

_FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def scheduler_name(meta: Mapping[str, Any]) -> str | None:
    """The study's scheduler name from the report meta (a string or ``{"name": ...}``), or None."""
    value = meta.get("scheduler")
    if isinstance(value, Mapping):
        value = value.get("name")
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def _states(trials: pd.DataFrame) -> pd.Series:
    if "state" not in trials.columns:
        return pd.Series("COMPLETE", index=trials.index)
    return trials["state"].astype(str).str.upper()


def _stopped_at(trials: pd.DataFrame) -> pd.Series:
    if "stopped_at_epoch" not in trials.columns:
        return pd.Series(np.nan, index=trials.index)
    return pd.to_numeric(trials["stopped_at_epoch"], errors="coerce")


def compute_section_wanted(trials: pd.DataFrame, meta: Mapping[str, Any]) -> bool:
    """True when the report shows the compute section.

    That is when the study's scheduler (``meta["scheduler"]``) is not ``fifo``, or when a
    PRUNED trial has a ``stopped_at_epoch`` (it was stopped early by the scheduler).

    Args:
        trials: The trials table.
        meta: The study meta.
    """
    name = scheduler_name(meta)
    if name is not None and name.lower() != "fifo":
        return True
    if len(trials) == 0:
        return False
    return bool((_states(trials).eq("PRUNED") & _stopped_at(trials).notna()).any())


def _repeats(trials: pd.DataFrame) -> pd.Series:
    if "duplicate_of" not in trials.columns:
        return pd.Series(False, index=trials.index)
    return trials["duplicate_of"].notna()


def _epochs_trained(trials: pd.DataFrame, epochs: pd.DataFrame | None, repeat: pd.Series) -> np.ndarray:
    """Epochs each trial trained: ``epochs_trained``, else its rows in ``epochs``; repeats 0."""
    counted = pd.Series(0, index=trials.index, dtype=float)
    if epochs is not None and len(epochs) and "number" in epochs.columns:
        rows = epochs.drop_duplicates(["number", "epoch"]) if "epoch" in epochs.columns else epochs
        per_number = rows.groupby("number").size()
        counted = trials["number"].map(per_number).fillna(0).astype(float)
    if "epochs_trained" in trials.columns:
        own = pd.to_numeric(trials["epochs_trained"], errors="coerce")
        counted = own.where(own.notna(), counted)
    counted = counted.where(~repeat, 0.0)
    return counted.to_numpy(dtype=float).round().astype(int)


def _full_epochs(epochs: pd.DataFrame | None, trained: np.ndarray, stopped_at: pd.Series,
                 max_epochs: int | None) -> int:
    """``max_epochs``, else the most epochs seen (last epoch number, trained count, stop epoch)."""
    if max_epochs is not None:
        return int(max_epochs)
    seen = [int(trained.max())] if trained.size else []
    if epochs is not None and len(epochs) and "epoch" in epochs.columns:
        last = pd.to_numeric(epochs["epoch"], errors="coerce").max()
        if pd.notna(last):
            seen.append(int(last))
    if stopped_at.notna().any():
        seen.append(int(stopped_at.max()))
    return max(seen, default=0)


def _finish_order(trials: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Positions of ``trials`` in finishing order, and ``"finish time"`` or ``"trial number"``.

    The finish time is ``datetime_start + duration_s``; when a trial lacks either, every trial
    is ordered by number instead.
    """
    numbers = trials["number"].to_numpy()
    if len(trials) and {"datetime_start", "duration_s"} <= set(trials.columns):
        start = pd.to_datetime(trials["datetime_start"], errors="coerce", utc=True)
        duration = pd.to_timedelta(pd.to_numeric(trials["duration_s"], errors="coerce"), unit="s")
        finish = start + duration
        if finish.notna().all():
            stamp = (finish - finish.min()).dt.total_seconds().to_numpy()
            return np.lexsort((numbers, stamp)), "finish time"
    return np.argsort(numbers, kind="stable"), "trial number"


def _outcome(state: str, repeat: bool) -> str:
    if repeat:
        return "repeat"
    return {"COMPLETE": "complete", "PRUNED": "stopped", "FAIL": "failed"}.get(state, "running")


def get_compute_info(
    trials: pd.DataFrame,
    epochs: pd.DataFrame | None,
    objectives: Sequence[Mapping[str, Any]],
    *,
    max_epochs: int | None = None,
    reference: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Compute spent and hypervolume reached, per trial and in total.

    Args:
        trials: The trials table (``number``, ``state``, ``feasible``, objective columns and,
            when recorded, ``duplicate_of``, ``stopped_at_epoch``, ``epochs_trained``,
            ``datetime_start``, ``duration_s``).
        epochs: The epochs table (``number``, ``epoch``, ...); may be empty or None.
        objectives: Objective specs (``{"name", "direction"}``).
        max_epochs: The epochs a trial trains when not stopped (default: the most epochs seen
            in the tables).
        reference: Hypervolume reference point in the objectives' units (default:
            :func:`~dse.study.pareto.default_reference` over the non-repeat trials).

    Returns:
        A dict with

        * ``curve``: the hypervolume of the feasible front of the COMPLETE non-repeat trials
          against the cumulative epochs trained, in finishing order (``order`` says which),
          starting at ``(0, 0)``: ``epochs`` (cumulative), ``fraction`` (hypervolume / the
          final hypervolume, so the last point is 1.0 when the final hypervolume is positive;
          all 0.0 otherwise), ``hypervolume`` and ``numbers`` (the trial finished at each
          point, None for the start);
        * ``trials``: one dict per trial by number: ``number``, ``epochs_trained``,
          ``stopped_at_epoch`` (int or None), ``state``, ``outcome`` (one of
          :data:`OUTCOMES`);
        * ``front``: trial numbers on that front (never a stopped, failed or repeat trial);
        * ``totals``: ``complete``, ``stopped``, ``failed``, ``running``, ``repeats`` (trial
          counts, repeats not in the others), ``full_epochs``, ``epochs_trained``,
          ``fifo_epochs``, ``epochs_saved`` and ``saving`` (fraction of ``fifo_epochs``, 0.0
          when that is 0);
        * ``reference``, ``final_hypervolume`` and ``order``.
    """
    specs = [dict(o) for o in objectives]
    if "number" not in trials.columns:
        trials = trials.assign(number=np.arange(len(trials)))
    if "rejected" in trials.columns:  # refused before training (a constraint on a free objective): no compute
        trials = trials[trials["rejected"].isna()]
    trials = trials.sort_values("number", kind="stable").reset_index(drop=True)
    states = _states(trials)
    repeat = _repeats(trials)
    stopped_at = _stopped_at(trials)
    trained = _epochs_trained(trials, epochs, repeat)
    full = _full_epochs(epochs, trained, stopped_at, max_epochs)

    outcomes = [_outcome(s, bool(r)) for s, r in zip(states, repeat)]
    per_trial = [
        {
            "number": int(n),
            "epochs_trained": int(e),
            "stopped_at_epoch": None if finite_float(s) is None else int(s),
            "state": str(st),
            "outcome": o,
        }
        for n, e, s, st, o in zip(trials["number"], trained, stopped_at, states, outcomes)
    ]

    distinct_mask = ~repeat.to_numpy()
    distinct = trials[distinct_mask]
    ref = default_reference(distinct, specs) if reference is None else np.asarray(reference, dtype=float)
    front = distinct[pareto_mask(distinct, specs).to_numpy()]

    finished_mask = distinct_mask & states.isin(_FINISHED).to_numpy()
    finished = trials[finished_mask].reset_index(drop=True)
    order, order_by = _finish_order(finished)
    finished = finished.iloc[order].reset_index(drop=True)
    finished_epochs = trained[finished_mask][order]
    ranked = finished.assign(number=np.arange(len(finished)))  # hypervolume_history goes by number
    hv = hypervolume_history(ranked, specs, ref)["hypervolume"].to_numpy(dtype=float)
    final = float(hv[-1]) if hv.size else 0.0
    fraction = hv / final if final > 0 and np.isfinite(final) else np.zeros_like(hv)

    counts = {o: outcomes.count(o) for o in OUTCOMES}
    total = int(trained.sum())
    fifo = total + sum(max(full - int(e), 0) for e, o in zip(trained, outcomes) if o in ("complete", "stopped"))
    return {
        "curve": {
            "epochs": [0] + [int(v) for v in np.cumsum(finished_epochs)],
            "fraction": [0.0] + [float(v) for v in fraction],
            "hypervolume": [0.0] + [float(v) for v in hv],
            "numbers": [None] + [int(n) for n in finished["number"]],
        },
        "trials": per_trial,
        "front": [int(n) for n in front["number"]],
        "totals": {
            "complete": counts["complete"],
            "stopped": counts["stopped"],
            "failed": counts["failed"],
            "running": counts["running"],
            "repeats": counts["repeat"],
            "full_epochs": int(full),
            "epochs_trained": total,
            "fifo_epochs": int(fifo),
            "epochs_saved": int(fifo - total),
            "saving": float((fifo - total) / fifo) if fifo > 0 else 0.0,
        },
        "reference": [float(v) for v in ref],
        "final_hypervolume": final,
        "order": order_by,
    }
