"""Errors that the CLI turns into one line and exit code 2, and the readers that raise them.

Everything user-facing that can be wrong (a study file, a candidate file, a flag, a data file) is
reported as a :class:`DseError` whose message names the file or field in one line.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["CANDIDATE_SWITCHES", "DataError", "DseError", "SpecError", "did_you_mean", "one_line_error", "read_yaml_mapping", "refuse_bool_numbers", "refuse_bools", "refuse_non_finite"]


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


def did_you_mean(name: Any, known: Iterable[Any]) -> str:
    """The hint for a misspelt name: `` (did you mean 'x'?)`` with the entry of ``known`` closest
    to ``name`` when :func:`difflib.get_close_matches` finds one, else ``""``.

    Every "unknown key / objective / sampler / space" message adds it after the name it quotes.
    Of equally close entries the one listed first wins (``nsga`` suggests ``nsga2``, not ``nsga3``).

    Args:
        name: What was written; anything but a string gets no hint.
        known: The names accepted there, in the order they are listed.
    """
    if not isinstance(name, str):
        return ""
    options = list(dict.fromkeys(str(k) for k in known))
    matches = difflib.get_close_matches(name, options, n=max(len(options), 1))
    if not matches:
        return ""

    def closeness(option: str) -> float:  # the score get_close_matches ranks by
        return difflib.SequenceMatcher(None, option, name).ratio()

    best = closeness(matches[0])
    return f" (did you mean {next(o for o in options if o in matches and closeness(o) == best)!r}?)"


def _model_at(model: type[BaseModel], path: Iterable[Any]) -> type[BaseModel] | None:
    """The pydantic model that the fields ``path`` (a pydantic ``loc``) lead to inside ``model``;
    list indices and ``X | None`` are looked through."""

    def nested(annotation: Any) -> type[BaseModel] | None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        return next((m for m in map(nested, typing.get_args(annotation)) if m is not None), None)

    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        model = nested(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def one_line_error(err: ValidationError, *, where: str, model: type[BaseModel] | None = None) -> str:
    """Formats the first problem of a pydantic error as ``where: field: message``, with
    :func:`did_you_mean`'s hint for a misspelt choice (a ``Literal`` field) or, when ``model`` is
    given, a misspelt key.

    Args:
        err: The pydantic error.
        where: What was being read (a file name, "candidate", "recipe").
        model: The model ``err`` came from: its fields (and nested models' fields) are the known keys.
    """
    errors = err.errors()
    first = errors[0]
    if first["type"] == "missing":  # a required key missing beside an unknown one: most likely misspelt, say so
        first = next((e for e in errors if e["type"] == "extra_forbidden"), first)
    loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int) or len(first["loc"]) > 1)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "literal_error":  # ctx["expected"] lists the choices: "'a', 'b' or 'c'"
        msg += did_you_mean(first["input"], re.findall(r"'([^']*)'", str(first.get("ctx", {}).get("expected", ""))))
    if first["type"] == "extra_forbidden":
        parent = _model_at(model, first["loc"][:-1]) if model is not None else None
        msg = "unknown key" + (did_you_mean(first["loc"][-1], parent.model_fields) if parent is not None else "")
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


#: The candidate keys that are switches (true/false): per-channel weight scales.
CANDIDATE_SWITCHES = frozenset({"per_channel"})


def refuse_bools(candidate: Mapping[str, Any], where: str) -> None:
    """Refuses ``true``/``false`` as a candidate key's value, except for the switches of
    :data:`CANDIDATE_SWITCHES`: pydantic would otherwise read ``width_mult: true`` as 1.0.

    Raises:
        SpecError: ``where: key: expected a number or a name, got true``.
    """
    for key, value in candidate.items():
        if key in CANDIDATE_SWITCHES:
            if not isinstance(value, bool):
                raise SpecError(f"{where}: {key}: expected true or false, got {value!r}")
            continue
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
