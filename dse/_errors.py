"""Errors that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

__all__ = ["DseError", "DataError", "SpecError"]


class DseError(ValueError):
    """A user-facing error: bad input, named in one line."""


class DataError(DseError):
    """A data file or data set is missing, corrupt or malformed (the message names the file)."""


class SpecError(DseError):
    """A candidate spec or recipe has an unknown key or an out-of-range value (the message names it)."""
