"""95% intervals of measured accuracies, and which Pareto members they cannot tell apart.

An accuracy measured on ``n`` evaluated samples is a binomial proportion: its interval here is
Wilson's score interval (Wilson, 1927), which stays inside ``[0, 1]`` and keeps its coverage
near 0 and 1, where the normal approximation's ``p +- 1.96 * sqrt(p (1 - p) / n)`` does not.
The sample count comes from each trial's ``measurement`` (``"PGD-10 ... on 287 validation
samples (seed 0)"``), else from the study's. Objectives that follow from the architecture
(params, MACs, BOPS, sizes) are exact and get no interval; neither do measured quantities that
are not proportions (perturbation instability, Lipschitz estimates, latency).

Everything here is a pure function of its arguments.

Example:
    >>> wilson_interval(0.5, 100)  # doctest: +ELLIPSIS
    (0.4038..., 0.5961...)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CONFIDENCE",
    "front_ties",
    "interval_text",
    "is_accuracy",
    "sample_count",
    "tied_groups",
    "trial_intervals",
    "trial_samples",
    "wilson_interval",
]

CONFIDENCE = 0.95
"""Coverage of every interval the report shows."""

_ACCURACY = re.compile(r"(^|[._])acc($|[._])")
_SAMPLES = re.compile(r"(\d[\d,]*)\s+(?:[a-z-]+\s+){0,2}samples\b", re.IGNORECASE)


def wilson_interval(p: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Args:
        p: The observed proportion (e.g. robust accuracy), in ``[0, 1]``.
        n: The number of evaluated samples it was measured on (>= 1).
        confidence: Coverage, in ``(0, 1)``.

    Returns:
        ``(low, high)`` with ``0 <= low <= p <= high <= 1``.

    Raises:
        ValueError: If ``p`` is outside ``[0, 1]``, ``n < 1`` or ``confidence`` is outside ``(0, 1)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p must be a proportion in [0, 1], got {p!r}")
    if isinstance(n, bool) or int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    p, n = float(p), int(n)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    z2 = z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, min(center - half, p)), min(1.0, max(center + half, p))


def is_accuracy(name: str) -> bool:
    """True for a proportion of correctly classified samples (``natural_acc``, ``robust_acc``,
    ``nb201_pgd_acc_2``, ``rescore.SUITE.robust_acc``...), which gets a binomial interval."""
    return bool(_ACCURACY.search(str(name)))


def sample_count(measurement: Any) -> int | None:
    """The number of evaluated samples a measurement string names (the last ``N ... samples``).

    ``"PGD-10 linf eps=0.1 ... on 287 validation samples (seed 0)"`` gives 287; a string that
    names no count (``"published results (cifar10, ...)"``), or no string, gives None.
    """
    if not isinstance(measurement, str):
        return None
    found = _SAMPLES.findall(measurement)
    if not found:
        return None
    n = int(found[-1].replace(",", ""))
    return n if n >= 1 else None


def trial_samples(trials: pd.DataFrame, meta: Mapping[str, Any]) -> pd.Series:
    """Evaluated samples per trial: from its ``measurement``, else the study's; None when unknown."""
    default = sample_count(meta.get("measurement"))
    if "measurement" not in trials.columns:
        return pd.Series([default] * len(trials), index=trials.index, dtype=object)
    counts = [sample_count(m) for m in trials["measurement"]]
    return pd.Series([default if c is None else c for c in counts], index=trials.index, dtype=object)


def trial_intervals(
    trials: pd.DataFrame, meta: Mapping[str, Any], names: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (low, high)}`` for each accuracy column in ``names`` (arrays aligned with ``trials``).

    A bound is NaN where the value is missing or outside ``[0, 1]``, or the sample count is unknown.
    Names that are not accuracies (see :func:`is_accuracy`) or not in the table are left out.
    """
    samples = trial_samples(trials, meta).to_list()
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        if not is_accuracy(name) or name not in trials.columns:
            continue
        values = pd.to_numeric(trials[name], errors="coerce").to_numpy(dtype=float)
        lo = np.full(len(trials), np.nan)
        hi = np.full(len(trials), np.nan)
        for i, (v, n) in enumerate(zip(values, samples)):
            if n is not None and math.isfinite(v) and 0.0 <= v <= 1.0:
                lo[i], hi[i] = wilson_interval(v, n)
        out[name] = (lo, hi)
    return out


def interval_text(low: float | None, high: float | None) -> str:
    """``"[0.524, 0.637]"`` (three decimals), or ``""`` when a bound is missing."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{low:.3f}, {high:.3f}]"


def tied_groups(numbers: Sequence[int], low: np.ndarray, high: np.ndarray) -> dict[int, list[int]]:
    """Which Pareto members are statistically tied with which.

    Two front members are *statistically tied* when, on every objective for which both have an
    interval, their 95% intervals overlap (``low_a <= high_b`` and ``low_b <= high_a``), and
    there is at least one such objective. Objectives without intervals (exact ones such as
    params or MACs, whose differences are real) are left out of the rule: a tie says that the
    measured scores do not separate the two, so the choice between them rests on the exact
    objectives. Overlap of 95% intervals is a conservative reading (two values can differ
    significantly while their intervals overlap slightly), so a tie means "not shown to differ".

    Args:
        numbers: Trial numbers of the front members, one per row.
        low: ``(n, m)`` lower bounds per member and objective (NaN: no interval).
        high: ``(n, m)`` upper bounds, same shape.

    Returns:
        ``{number: [numbers of the members it is tied with, ascending]}`` for every member
        (an empty list when it is tied with none).
    """
    if len(numbers) == 0:
        return {}
    low = np.asarray(low, dtype=float).reshape(len(numbers), -1)
    high = np.asarray(high, dtype=float).reshape(len(numbers), -1)
    has = np.isfinite(low) & np.isfinite(high)
    out: dict[int, list[int]] = {int(n): [] for n in numbers}
    for a in range(len(numbers)):
        for b in range(a + 1, len(numbers)):
            both = has[a] & has[b]
            if not both.any():
                continue
            overlap = (low[a, both] <= high[b, both]) & (low[b, both] <= high[a, both])
            if overlap.all():
                out[int(numbers[a])].append(int(numbers[b]))
                out[int(numbers[b])].append(int(numbers[a]))
    return {n: sorted(v) for n, v in out.items()}


def front_ties(
    trials: pd.DataFrame, meta: Mapping[str, Any], names: Sequence[str], front: Sequence[bool] | pd.Series
) -> dict[int, list[int]]:
    """:func:`tied_groups` of the front members (rows where ``front`` is True) on the objectives ``names``."""
    rows = trials[np.asarray(front, dtype=bool)]
    intervals = trial_intervals(rows, meta, names)
    nan = np.full(len(rows), np.nan)
    low = np.column_stack([intervals[n][0] if n in intervals else nan for n in names]) if names else nan[:, None]
    high = np.column_stack([intervals[n][1] if n in intervals else nan for n in names]) if names else nan[:, None]
    return tied_groups([int(n) for n in rows["number"]], low, high)
