"""Replay: a recorded study (its learning curves) as a search space, so schedulers and samplers
are compared on hundreds of seeded studies in seconds instead of GPU-days.

A learning-curve table is a folder holding a study's ``trials.csv`` and ``epochs.csv`` (as
``dse run`` writes them; ``.csv.gz`` or ``.parquet`` also do). Its candidates are the distinct
complete trials; ``space: {name: replay, options: {table: PATH}}`` proposes one of them per trial
(a categorical choice of the recorded trial number), and the trial reports the recorded epochs and
final metrics instead of training. Time is the recorded one: each epoch reports its
``epoch_seconds`` and evaluation seconds, which a simulator adds up.

Example:
    >>> import optuna
    >>> table = LearningCurveTable(trials=_demo_trials(), epochs=_demo_epochs())
    >>> trial = optuna.create_study().ask()
    >>> replay(trial, table=table)["replay"] in (0, 1)
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from dse.errors import SpecError

__all__ = ["LearningCurveTable", "epoch_cost", "load_table", "replay"]


def epoch_cost(row: Mapping[str, Any]) -> float:
    """Seconds one recorded epoch took: training plus the evaluations it measured (full, ladder)."""
    return sum(float(row.get(k, 0.0) or 0.0) for k in ("epoch_seconds", "val_eval_seconds", "val_rung_eval_seconds"))


def _read(folder: Path, stem: str) -> pd.DataFrame:
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv.gz", pd.read_csv), (".csv", pd.read_csv)):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return reader(path)
    raise SpecError(f"space replay: table: {folder} has no {stem}.csv, {stem}.csv.gz or {stem}.parquet")


@dataclass(frozen=True)
class LearningCurveTable:
    """A recorded study: one row per trial (``trials``) and per (trial, epoch) (``epochs``)."""

    trials: pd.DataFrame
    epochs: pd.DataFrame
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for column in ("number", "state"):
            if column not in self.trials.columns:
                raise SpecError(f"space replay: table {self.source}: trials has no {column!r} column")
        for column in ("number", "epoch"):
            if column not in self.epochs.columns:
                raise SpecError(f"space replay: table {self.source}: epochs has no {column!r} column")
        if not self.candidates():
            raise SpecError(f"space replay: table {self.source}: no complete trial to replay")

    def candidates(self) -> list[int]:
        """Recorded trial numbers of the distinct complete trials (repeats left out)."""
        ok = self.trials["state"] == "COMPLETE"
        if "duplicate_of" in self.trials.columns:
            ok &= self.trials["duplicate_of"].isna()
        numbers = set(self.epochs["number"].astype(int))
        return sorted(int(n) for n in self.trials.loc[ok, "number"] if int(n) in numbers)

    @property
    def max_epochs(self) -> int:
        """The most epochs any replayed trial trained."""
        return int(self.epochs.loc[self.epochs["number"].isin(self.candidates()), "epoch"].max())

    def check_names(self, names: Sequence[str]) -> None:
        """Raises a one-line error when an objective or metric was not recorded."""
        missing = [n for n in names if n not in self.trials.columns]
        if missing:
            raise SpecError(f"space replay: table {self.source} has no recorded {missing[0]!r} (it has: {', '.join(self._metric_columns())})")

    def _metric_columns(self) -> list[str]:
        skip = {"number", "state", "feasible", "constraint_violation", "error", "duration_s", "datetime_start",
                "candidate", "measurement", "checkpoint", "node", "duplicate_of", "masking_flags", "pareto"}
        return [c for c in self.trials.columns if c not in skip and not c.startswith(("cand.", "attack.", "rescore."))]

    def final(self, number: int, names: Sequence[str]) -> dict[str, float]:
        """The recorded final values of ``names`` for trial ``number``."""
        self.check_names(names)
        row = self.trials.loc[self.trials["number"] == number].iloc[0]
        return {n: float(row[n]) for n in names}

    def curve(self, number: int, *, free: dict[str, float] | None = None, ladder_until: int | None = None) -> list[dict[str, float]]:
        """The per-epoch results of trial ``number`` as the trial reported them.

        Args:
            number: The recorded trial.
            free: ``free_NAME`` values added to every epoch.
            ladder_until: Up to this epoch the recorded ``val_rung_*`` columns stand in for the
                full ``val_*`` ones (the ladder under ``mo_asha``); None drops the ladder columns.
        """
        rows = self.epochs.loc[self.epochs["number"] == number].sort_values("epoch")
        out = []
        for _, row in rows.iterrows():
            epoch = int(row["epoch"])
            result: dict[str, float] = {}
            for key, value in row.items():
                if key == "number" or value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                if not isinstance(value, (int, float)):
                    continue
                result[str(key)] = float(value)
            rung = {k: v for k, v in result.items() if k.startswith("val_rung_")}
            if ladder_until is not None and epoch <= ladder_until:
                if not rung:
                    raise SpecError(f"space replay: table {self.source} has no val_rung_* columns for the rung_eval ladder")
                result = {k: v for k, v in result.items() if not k.startswith("val_") or k in rung}
            else:
                result = {k: v for k, v in result.items() if k not in rung}
            out.append({**result, **(free or {})})
        return out

    def replay(self, candidate: dict[str, Any], names: Sequence[str], report: Callable[[dict[str, float]], None],
               *, ladder: int | None = None, time_scale: float = 0.0) -> dict[str, Any]:
        """Reports the recorded epochs of ``candidate`` (``{"replay": number}``), returns its final values.

        Args:
            candidate: ``{"replay": recorded trial number}``.
            names: The objectives and metrics to return.
            report: Called with each epoch's recorded result.
            ladder: See :meth:`curve` (``ladder_until``).
            time_scale: Sleep this fraction of each epoch's recorded seconds before reporting it
                (0: no waiting; 0.01 replays a 10-second epoch in 0.1 s), so runs under Ray Tune
                can be stopped and resumed mid-study like real ones.
        """
        from objectives import FREE_OBJECTIVES

        number = int(candidate["replay"])
        final = self.final(number, names)
        free = {f"free_{n}": v for n, v in final.items() if n in FREE_OBJECTIVES}
        for row in self.curve(number, free=free, ladder_until=ladder):
            if time_scale > 0:
                time.sleep(time_scale * epoch_cost(row))
            report({**row, "replay_of": float(number)})
        row = self.trials.loc[self.trials["number"] == number].iloc[0]
        how = row.get("measurement") if "measurement" in self.trials.columns else None
        return {**final, "measurement": f"replayed from {self.source} trial {number}: {how}"}


@lru_cache(maxsize=8)
def load_table(path: str) -> LearningCurveTable:
    """Reads (once per process) the learning-curve table in folder ``path``."""
    folder = Path(path)
    if not folder.is_dir():
        raise SpecError(f"space replay: table: {path} is not a folder with trials.csv and epochs.csv")
    return LearningCurveTable(trials=_read(folder, "trials"), epochs=_read(folder, "epochs"), source=str(folder))


def replay(trial: optuna.Trial, *, table: str | LearningCurveTable, time_scale: float = 0.0) -> dict[str, Any]:
    """Suggests one recorded candidate: ``{"replay": recorded trial number}`` (``time_scale``: see
    :meth:`LearningCurveTable.replay`)."""
    if isinstance(table, str):
        table = load_table(table)
    elif not isinstance(table, LearningCurveTable):
        raise SpecError("search space replay: table: a folder path is needed")
    return {"replay": int(trial.suggest_categorical("replay", table.candidates()))}


def _demo_trials() -> pd.DataFrame:
    return pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "COMPLETE"], "robust_acc": [0.5, 0.6]})


def _demo_epochs() -> pd.DataFrame:
    return pd.DataFrame({"number": [0, 1], "epoch": [1, 1], "val_robust_acc": [0.5, 0.6]})
