"""Turns pydantic validation errors into the one-line messages the CLI prints."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["one_line_error"]


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
