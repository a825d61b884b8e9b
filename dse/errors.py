"""Errors that the CLI turns into one line and exit code 2, and the readers that raise them.

Everything user-facing that can be wrong (a study file, a candidate file, a flag, a data file) is
reported as a :class:`DseError` whose message names the file or field in one line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

__all__ = ["DataError", "DseError", "SpecError", "one_line_error", "read_yaml_mapping", "refuse_bool_numbers", "refuse_bools", "refuse_non_finite"]


class DseError(ValueError):
    """A user-facing error: bad input, named in one line."""


class DataError(DseError):
    """A data file or data set is missing, corrupt or malformed (the message names the file)."""


class SpecError(DseError):
    """A candidate spec or recipe has an unknown key or an out-of-range value (the message names it)."""


def read_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Reads a YAML file that must hold a mapping, with ``yaml.safe_load``.

    Args:
        path: The file.
        what: What the file is ("study", "candidate"), for the message.

    Raises:
        SpecError: One line naming the file: unreadable, not UTF-8, not YAML, or not a mapping.
    """
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SpecError(f"{p}: not UTF-8 text (byte {err.start}): cannot read {what} file") from err
    except OSError as err:
        raise SpecError(f"{p}: cannot read {what} file: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise SpecError(f"{p}: not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(loaded, dict):
        raise SpecError(f"{p}: expected a mapping of {what} fields")
    return loaded


def one_line_error(err: ValidationError, *, where: str) -> str:
    """Formats the first problem of a pydantic error as ``where: field: message``.

    Args:
        err: The pydantic error.
        where: What was being read (a file name, "candidate", "recipe").
    """
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int) or len(first["loc"]) > 1)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {loc}: {msg}{more}" if loc else f"{where}: {msg}{more}"  # a cross-field check names its field itself


def refuse_non_finite(value: Any, where: str, field: str = "") -> None:
    """Refuses a NaN or infinite number anywhere in ``value`` (nested mappings and lists).

    YAML reads ``.nan`` and ``.inf`` as numbers, and a NaN slips through every ``<`` / ``>`` range
    check, so free-form sections (recipe, eval, space options) are walked once when they are read.

    Args:
        value: What was read.
        where: The file (or flag) it came from ("" when the caller adds it).
        field: The dotted field ``value`` is (``recipe``), for the message.

    Raises:
        SpecError: ``where: field.path: must be a finite number, got nan``.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(": ".join(p for p in (where, field or "value") if p) + f": must be a finite number, got {value}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            refuse_non_finite(item, where, f"{field}.{key}" if field else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            refuse_non_finite(item, where, f"{field}.{i}" if field else str(i))


def refuse_bools(candidate: Mapping[str, Any], where: str) -> None:
    """Refuses ``true``/``false`` as a candidate key's value: no candidate key is a switch, and
    pydantic would otherwise read ``width_mult: true`` as 1.0.

    Raises:
        SpecError: ``where: key: expected a number or a name, got true``.
    """
    for key, value in candidate.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) for v in items):
            raise SpecError(f"{where}: {key}: expected a number or a name, got {str(value).lower()}")


def refuse_bool_numbers(value: Any, where: str, field: str, switches: frozenset[str]) -> None:
    """Refuses ``true``/``false`` for any key of a nested section (recipe, eval) that is not one of
    its ``switches``: pydantic and ``float()`` would read ``lr: true`` as 1.0.

    Raises:
        SpecError: ``where: field.path: expected a number, got true``.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{field}.{key}" if field else str(key)
            if isinstance(item, bool) and key not in switches:
                raise SpecError(f"{where}: {path}: expected a number or a name, got {str(item).lower()}")
            refuse_bool_numbers(item, where, path, switches)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, bool):
                raise SpecError(f"{where}: {field}.{i}: expected a number or a name, got {str(item).lower()}")
