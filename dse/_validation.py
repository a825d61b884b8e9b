"""Turns pydantic validation errors into the one-line messages the CLI prints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dse._errors import SpecError

__all__ = ["one_line_error", "read_yaml_mapping"]


def read_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Reads a YAML file that must hold a mapping, with ``yaml.safe_load``.

    Raises:
        SpecError: One line naming the file: unreadable, not YAML, or not a mapping.
    """
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text())
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
    return f"{where}: {loc or 'value'}: {msg}{more}"
