"""Formatting shared by every part of the report: escaping, slugs, numbers, candidates, palette.

Everything here is a pure function of its arguments. Strings that reach plotly's HTML subset
(hover texts, titles, legend names) are escaped with :func:`escape`; the page template uses the
same function for every value it prints (see :mod:`dse.report.rendering`).
"""

from __future__ import annotations

import html
import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

__all__ = [
    "PALETTE",
    "axis_title",
    "candidate_dict",
    "escape",
    "finite_float",
    "flag_list",
    "format_cell",
    "format_number",
    "k255",
    "mask_password",
    "is_missing",
    "short_direction",
    "slug",
    "sort_key",
    "spread",
    "unit_of",
    "wrap",
]

T = TypeVar("T")

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
"""Line colours of the report's figures, cycled over trials."""

_UNITS = (  # (name test, unit), first match wins
    (lambda n: re.search(r"(^|[._])acc($|[._])", n) is not None, "fraction"),
    (lambda n: n == "params" or n.endswith("_params"), "count"),
    (lambda n: n == "macs" or n.endswith("_macs"), "MACs"),
    (lambda n: n == "bops" or n.endswith("_bops"), "BOPs"),
    (lambda n: n.endswith("bytes"), "bytes"),
    (lambda n: n.endswith("_ms"), "ms"),
    (lambda n: n == "sparsity", "fraction"),
    (lambda n: n == "pert_instability", "KL, nats"),
)

HOVER_WRAP = 90  # characters per hover line of a long string (a measurement)


def escape(value: Any) -> str:
    """HTML-escapes any value's string form (quotes included; None is ``""``)."""
    return html.escape("" if value is None else str(value), quote=True)


def slug(text: str) -> str:
    """A file-name and HTML-id safe form of ``text`` (``"figure"`` when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "figure"


def spread(items: Sequence[T], k: int) -> list[T]:
    """``k`` items evenly spread over ``items`` (both ends kept), order preserved."""
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and ``pd.NA``; False for anything else (lists included)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def finite_float(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, inf, not a number, a Python bool)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def format_cell(value: Any) -> str:
    """A table cell / hover value: 4 significant digits, big integers with separators, yes/no."""
    if is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v.is_integer() and abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(value)


def format_number(value: Any, digits: int = 4) -> str:
    """A JSON number with ``digits`` significant digits; "" when missing, a non-number as is."""
    v = finite_float(value)
    if v is None:
        return "" if value is None or isinstance(value, (int, float)) else str(value)
    return f"{v:.{digits}g}"


def sort_key(key: Any) -> str:
    """The ``data-sort`` attribute of a table cell: ``""`` when missing, numbers as floats."""
    if key is None:
        return ""
    return repr(float(key)) if isinstance(key, (int, float)) else str(key)


def short_direction(direction: str) -> str:
    """``"max"`` or ``"min"``."""
    return "max" if direction == "maximize" else "min"


def unit_of(name: str) -> str | None:
    """The unit of an objective or metric (``"fraction"`` for accuracies, ``"count"`` for params,
    ``"MACs"``, ``"BOPs"``, ``"bytes"``, ``"ms"``); None when dse does not know it."""
    for test, unit in _UNITS:
        if test(str(name)):
            return unit
    return None


def axis_title(name: str, direction: str | None = None) -> str:
    """An axis title with direction and unit: ``"robust_acc (max) [fraction]"``."""
    title = str(name) + (f" ({short_direction(direction)})" if direction else "")
    unit = unit_of(name)
    return f"{title} [{unit}]" if unit else title


def mask_password(url: str) -> str:
    """Hides the password of a database URL (``postgresql://user:***@host/db``)."""
    return re.sub(r"(//[^:/@\s]+):[^/\s]*@", r"\1:***@", url)


def k255(eps: float | None) -> str:
    """``eps`` as ``k/255`` (``"8/255"``; at most two decimals when ``k`` is not an integer)."""
    if eps is None:
        return ""
    k = eps * 255.0
    if abs(k - round(k)) < 1e-4:
        return f"{int(round(k))}/255"
    return f"{k:.2f}".rstrip("0").rstrip(".") + "/255"


def wrap(text: Any, width: int = HOVER_WRAP) -> list[str]:
    """``text`` cut into lines of at most ``width`` characters (no line for a missing text)."""
    if text is None or str(text).strip() == "":
        return []
    return textwrap.wrap(str(text), width=width, break_long_words=True, break_on_hyphens=False) or [str(text)]


def candidate_dict(value: Any) -> dict[str, Any]:
    """A candidate spec as a dict: a mapping is copied, a JSON string parsed, anything else ``{}``.

    A string that is not JSON, or JSON that is not an object, comes back as ``{"candidate": ...}``.
    """
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {"candidate": value}
        return dict(parsed) if isinstance(parsed, dict) else {"candidate": parsed}
    return {}


def flag_list(value: Any) -> list[str] | None:
    """Gradient-masking flags as a list: None when not checked, ``[]`` when every check passed.

    Accepts the list itself or a table cell (``"flag_a;flag_b"``, ``"none"`` for no flag).
    """
    if is_missing(value):
        return None
    if isinstance(value, str):
        return [f for f in value.split(";") if f and f != "none"]
    return [str(f) for f in value]
