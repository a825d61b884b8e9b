"""Published robustness of every NAS-Bench-201 cell (Jung et al., ICLR 2023), as lookup objectives.

The data directory (``meta.json`` plus one ``{dataset}/{source}_accuracy.json`` per evaluation) holds,
for each of the 6,466 unique NAS-Bench-201 architectures, the clean accuracy, the accuracy under
FGSM, PGD, APGD-CE and Square l_inf attacks at several eps, and under the 15 common corruptions.
``meta.json`` maps each of the 15,625 cell strings to its isomorph (the unique architecture whose
results are published), so any cell a sampler proposes gets a value.

A candidate of this space is ``{"arch": "nb201", "cell": "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"}``; it is
looked up, never built or trained.

(Over 400 lines: the metric registry, the lazy table reader and its one-line errors for every
malformed file are one concept.)

Example:
    >>> table = NB201Table("/path/to/nb201-robustness", dataset="cifar10")  # doctest: +SKIP
    >>> cell = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_1x1~1|skip_connect~2|"
    >>> table.lookup(cell, "nb201_pgd_acc_1")  # doctest: +SKIP
    0.336
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from dse.errors import DataError, SpecError, one_line_error
from dse.models.nb201 import NB201Config, nb201_params, parse_cell


__all__ = [
    "CORRUPTIONS",
    "NB201Metric",
    "NB201Table",
    "NB201_ATTACKS",
    "NB201_METRICS",
    "evaluate_nb201",
]

logger = logging.getLogger(__name__)

#: Attack key in metric names -> (file stem, name in descriptions, published eps in units of 1/255).
NB201_ATTACKS: Mapping[str, tuple[str, str, tuple[float, ...]]] = MappingProxyType(
    {
        "pgd": ("pgd@Linf", "PGD", (0.1, 0.5, 1, 2, 3, 4, 8)),
        "apgd": ("aa_apgd-ce@Linf", "APGD-CE (AutoAttack)", (0.1, 0.5, 1, 2, 3, 4, 8)),
        "square": ("aa_square@Linf", "Square (AutoAttack)", (0.1, 0.5, 1, 2, 3, 4, 8)),
        "fgsm": ("fgsm@Linf", "FGSM", (0.1, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 255)),
    }
)

#: The 15 common corruptions (Hendrycks & Dietterich), each published at severities 1..5.
CORRUPTIONS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "defocus_blur",
    "elastic_transform",
    "fog",
    "frost",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "shot_noise",
    "snow",
    "zoom_blur",
)
_SEVERITIES = 5
_SOURCE = "published, Jung et al. 2023"


@dataclass(frozen=True)
class NB201Metric:
    """One published measure of a NAS-Bench-201 cell.

    Args:
        name: Objective key and table column (``nb201_pgd_acc_2``...).
        source: File stem in the data directory (``pgd@Linf`` reads ``{dataset}/pgd@Linf_accuracy.json``).
        description: One line saying what was measured.
        eps: Attack eps in units of 1/255 (attacks only).
        severity: Corruption severity 1..5 (corruptions only).
        direction: ``maximize`` for the accuracies; ``minimize`` for the computed ``nb201_params``.
    """

    name: str
    source: str
    description: str
    eps: float | None = None
    severity: int | None = None
    direction: Literal["maximize", "minimize"] = "maximize"

    @property
    def filename(self) -> str:
        """The file name under the data set's directory."""
        return f"{self.source}_accuracy.json"


def _eps_token(eps: float) -> str:
    """``0.1 -> '0p1'``, ``2.0 -> '2'``, ``255 -> '255'``."""
    if float(eps).is_integer():
        return str(int(eps))
    return repr(float(eps)).replace(".", "p")


def _eps_text(eps: float) -> str:
    return f"{int(eps) if float(eps).is_integer() else float(eps)}/255"


#: ``source`` of metrics computed from the cell rather than read from a file.
COMPUTED = "computed"
#: Classes of the data sets NAS-Bench-201 was trained on (for the classifier's parameters).
_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}


def _build_metrics() -> dict[str, NB201Metric]:
    metrics = [
        NB201Metric("nb201_clean_acc", "clean", f"clean test accuracy ({_SOURCE})"),
        NB201Metric("nb201_params", COMPUTED, "parameters of the NB201 network built from the cell (computed, a cost axis)",
                    direction="minimize"),
    ]
    for key, (source, label, epsilons) in NB201_ATTACKS.items():
        for eps in epsilons:
            metrics.append(
                NB201Metric(
                    f"nb201_{key}_acc_{_eps_token(eps)}",
                    source,
                    f"{label} l_inf eps={_eps_text(eps)} ({_SOURCE})",
                    eps=float(eps),
                )
            )
    for corruption in CORRUPTIONS:
        for severity in range(1, _SEVERITIES + 1):
            metrics.append(
                NB201Metric(
                    f"nb201_{corruption}_acc_s{severity}",
                    corruption,
                    f"{corruption} corruption severity {severity} ({_SOURCE})",
                    severity=severity,
                )
            )
    return {m.name: m for m in metrics}


#: Every metric name -> its description; all are accuracies in [0, 1], direction ``maximize``.
NB201_METRICS: Mapping[str, NB201Metric] = MappingProxyType(_build_metrics())


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"NB201 data: {path}: missing") from None
    except json.JSONDecodeError as err:
        raise DataError(f"NB201 data: {path}: corrupt JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"NB201 data: {path}: unreadable ({type(err).__name__}: {err})") from None


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(type(value).__name__)
    return float(value)


@dataclass(frozen=True)
class _Meta:
    unique_ids: tuple[str, ...]
    unique_cells: tuple[str, ...]
    row_of_cell: Mapping[str, int]
    epsilons: Mapping[str, tuple[float, ...]]


class NB201Table:
    """The published results of one data set, loaded lazily file by file and cached.

    Args:
        root: The data directory (holding ``meta.json`` and one directory per data set).
        dataset: ``cifar10``, ``cifar100`` or any other data set directory under ``root``.

    Raises:
        DataError: ``root``, ``meta.json`` or the data set directory is missing (named).
    """

    def __init__(self, root: str | os.PathLike[str], *, dataset: str = "cifar10") -> None:
        self.root = Path(root).expanduser()
        self.dataset = str(dataset)
        if not self.root.is_dir():
            raise DataError(f"NB201 data: {self.root}: not a directory")
        if not (self.root / "meta.json").is_file():
            raise DataError(f"NB201 data: {self.root / 'meta.json'}: missing")
        if not self.dataset or "/" in self.dataset or self.dataset.startswith(".") or not self.directory.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise DataError(f"NB201 data: {self.directory}: no data set {self.dataset!r} (found: {', '.join(found)})")
        self._meta: _Meta | None = None
        self._columns: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"NB201Table({str(self.root)!r}, dataset={self.dataset!r})"

    @property
    def directory(self) -> Path:
        """The data set's directory."""
        return self.root / self.dataset

    # -- meta -------------------------------------------------------------------------------------
    @property
    def meta(self) -> _Meta:
        """Cell strings, isomorphs and epsilons from ``meta.json`` (read on first use)."""
        if self._meta is None:
            self._meta = self._load_meta()
        return self._meta

    def _load_meta(self) -> _Meta:
        path = self.root / "meta.json"
        raw = _read_json(path)
        try:
            ids = raw["ids"]
            unique_ids = tuple(k for k, v in ids.items() if v["isomorph"] == k)
            row_of_id = {k: i for i, k in enumerate(unique_ids)}
            row_of_cell: dict[str, int] = {}
            for key, entry in ids.items():
                cell = entry["nb201-string"]
                if not isinstance(cell, str):
                    raise ValueError(f"id {key}: nb201-string is not a string")
                if entry["isomorph"] not in row_of_id:
                    raise ValueError(f"id {key}: isomorph {entry['isomorph']!r} is not a unique id")
                row_of_cell[cell] = row_of_id[entry["isomorph"]]
            unique_cells = tuple(ids[k]["nb201-string"] for k in unique_ids)
            epsilons = {str(k): tuple(float(e) for e in v) for k, v in raw.get("epsilons", {}).items()}
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            detail = f"missing key {err}" if isinstance(err, KeyError) else str(err) or type(err).__name__
            raise DataError(f"NB201 data: {path}: malformed ({detail})") from None
        if not unique_ids:
            raise DataError(f"NB201 data: {path}: malformed (no architectures)")
        logger.debug("NB201: %d cells, %d unique, from %s", len(row_of_cell), len(unique_ids), path)
        return _Meta(unique_ids, unique_cells, MappingProxyType(row_of_cell), MappingProxyType(epsilons))

    # -- metrics ----------------------------------------------------------------------------------
    def _column_index(self, metric: NB201Metric) -> int | None:
        """Index of ``metric`` in its file's per-architecture list; ``None`` for scalar (clean) files."""
        if metric.eps is not None:
            epsilons = self.meta.epsilons.get(metric.source, ())
            matches = [i for i, e in enumerate(epsilons) if math.isclose(e, metric.eps)]
            if not matches:
                raise DataError(
                    f"NB201 data: {self.root / 'meta.json'}: no eps {_eps_text(metric.eps)} for {metric.source}"
                    f" (needed by {metric.name})"
                )
            return matches[0]
        if metric.severity is not None:
            return metric.severity - 1
        return None

    def metrics(self) -> list[str]:
        """Names of the metrics this directory holds (their file is present, and their eps in ``meta.json``)."""
        available = []
        for name, metric in NB201_METRICS.items():
            if metric.source == COMPUTED:
                available.append(name)
                continue
            if not (self.directory / metric.filename).is_file():
                continue
            if metric.eps is not None and not any(
                math.isclose(e, metric.eps) for e in self.meta.epsilons.get(metric.source, ())
            ):
                continue
            available.append(name)
        return available

    @staticmethod
    def _metric(name: str) -> NB201Metric:
        try:
            return NB201_METRICS[name]
        except (KeyError, TypeError):
            raise SpecError(
                f"NB201 metric: unknown {name!r} (known: nb201_clean_acc, nb201_{{{','.join(NB201_ATTACKS)}}}_acc_EPS"
                f" e.g. nb201_pgd_acc_2 or nb201_pgd_acc_0p5, nb201_CORRUPTION_acc_s1..s5)"
            ) from None

    def _source(self, metric: NB201Metric) -> np.ndarray:
        """All values of ``metric``'s file: ``[n_unique]`` (clean) or ``[n_unique, k]``; NaN where absent."""
        if metric.source in self._columns:
            return self._columns[metric.source]
        path = self.directory / metric.filename
        if not path.is_file():
            raise DataError(f"NB201 data: {path}: missing (needed by {metric.name})")
        raw = _read_json(path)
        meta = self.meta
        scalar = metric.eps is None and metric.severity is None
        width = len(meta.epsilons.get(metric.source, ())) if metric.eps is not None else _SEVERITIES
        try:
            accuracy = raw[self.dataset][metric.source]["accuracy"]
            if not isinstance(accuracy, Mapping):
                raise TypeError("accuracy is not a mapping")
            values = np.full(len(meta.unique_ids) if scalar else (len(meta.unique_ids), width), np.nan)
            for row, key in enumerate(meta.unique_ids):
                value = accuracy.get(key)
                if value is None:
                    continue
                if scalar:
                    values[row] = _number(value)
                else:
                    if not isinstance(value, list) or len(value) != width:
                        raise ValueError(f"id {key}: expected a list of {width} values")
                    values[row] = [_number(v) for v in value]
        except KeyError as err:
            raise DataError(f"NB201 data: {path}: malformed (missing key {err})") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise DataError(f"NB201 data: {path}: malformed ({err})") from None
        missing = int(np.isnan(values).any(axis=-1).sum()) if not scalar else int(np.isnan(values).sum())
        if missing:
            logger.warning("NB201: %s has no value for %d of %d unique architectures", path, missing, len(values))
        logger.debug("NB201: loaded %s", path)
        self._columns[metric.source] = values
        return values

    def column(self, name: str) -> np.ndarray:
        """Values of metric ``name`` for every unique architecture (aligned with :meth:`unique_cells`).

        Raises:
            SpecError: Unknown metric (named).
            DataError: Its file is missing or corrupt (named).
        """
        metric = self._metric(name)
        if metric.source == COMPUTED:
            if metric.source not in self._columns:
                classes = _CLASSES.get(self.dataset, 10)
                self._columns[metric.source] = np.array([nb201_params(c, num_classes=classes) for c in self.meta.unique_cells], dtype=float)
            return self._columns[metric.source]
        values = self._source(metric)
        index = self._column_index(metric)
        return values if index is None else values[:, index]

    # -- cells ------------------------------------------------------------------------------------
    def row(self, cell: str) -> int:
        """Row of ``cell``'s isomorph in :meth:`unique_cells` (any of the 15,625 cell strings).

        Raises:
            SpecError: Malformed or unknown cell (named).
        """
        if isinstance(cell, str) and cell in self.meta.row_of_cell:
            return self.meta.row_of_cell[cell]
        try:
            parse_cell(cell)
        except ValueError as err:
            raise SpecError(f"NB201 cell: {err}") from None
        raise SpecError(f"NB201 cell: {cell!r} is not in {self.root / 'meta.json'}")

    def isomorph_id(self, cell: str) -> int:
        """Id of the unique architecture that ``cell`` is isomorphic to (the id results are published under)."""
        return int(self.meta.unique_ids[self.row(cell)])

    def unique_cells(self) -> list[str]:
        """Cell strings of the unique architectures (those that are their own isomorph), in id order."""
        return list(self.meta.unique_cells)

    def lookup(self, cell: str, metric: str) -> float:
        """The published value of ``metric`` for ``cell`` (through its isomorph).

        Raises:
            SpecError: Unknown cell or metric (named).
            DataError: The metric's file is missing or corrupt, or has no value for this cell (named).
        """
        column = self.column(metric)
        row = self.row(cell)
        value = float(column[row])
        if math.isnan(value):
            raise DataError(
                f"NB201 data: {self.directory / NB201_METRICS[metric].filename}: no value for id"
                f" {self.meta.unique_ids[row]} (cell {cell})"
            )
        return value

    def values(self, metrics: Sequence[str]) -> np.ndarray:
        """A ``[n_unique, len(metrics)]`` float array of all unique architectures (rows as :meth:`unique_cells`).

        Rows a file has no value for are NaN.
        """
        if isinstance(metrics, str):
            metrics = [metrics]
        if not metrics:
            return np.empty((len(self.meta.unique_ids), 0))
        return np.stack([self.column(m) for m in metrics], axis=1)


@functools.lru_cache(maxsize=8)
def _cached_table(root: str, dataset: str) -> NB201Table:
    return NB201Table(root, dataset=dataset)


def _table(root: str | os.PathLike[str], dataset: str) -> NB201Table:
    return _cached_table(str(Path(root).expanduser().resolve()), str(dataset))


def evaluate_nb201(
    candidate: Mapping[str, Any] | NB201Config,
    names: Sequence[str],
    *,
    root: str | os.PathLike[str],
    dataset: str = "cifar10",
) -> dict[str, float]:
    """Looks up the named ``nb201_*`` metrics of a candidate ``{"arch": "nb201", "cell": ...}``.

    Tables are cached per (root, data set).

    Args:
        candidate: The candidate mapping (or its validated config).
        names: Metric names from :data:`NB201_METRICS`.
        root: The data directory.
        dataset: The data set directory under ``root``.

    Returns:
        ``{name: value}`` in the order of ``names``.

    Raises:
        SpecError: Bad candidate, unknown metric or cell (named).
        DataError: Missing or corrupt data files (named).
    """
    if isinstance(candidate, NB201Config):
        config = candidate
    else:
        if not isinstance(candidate, Mapping):
            raise SpecError(f"candidate: expected a mapping, got {type(candidate).__name__}")
        try:
            config = NB201Config.model_validate(dict(candidate))
        except ValidationError as err:
            raise SpecError(one_line_error(err, where="candidate")) from err
    if isinstance(names, str):
        names = [names]
    for name in names:
        NB201Table._metric(name)
    table = _table(root, dataset)
    return {name: table.lookup(config.cell, name) for name in names}
