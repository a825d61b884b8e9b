"""Making a database schema that another driver may be making at the same moment.

Several drivers may start on one new storage together (see :mod:`dse.study.drivers`); each creates
the tables it needs (Optuna's, and the claims table of :mod:`dse.study.claims`) if they are
missing, and only one can win. The losers see the schema made when they try again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc

__all__ = ["SCHEMA_RACE_ERRORS", "retry_schema_race"]

T = TypeVar("T")

#: What the loser of a schema race gets: an IntegrityError (a unique row or PostgreSQL's catalog
#: entry the winner inserted), on PostgreSQL a ProgrammingError (``relation "studies" already
#: exists``: it checked for the table just before the winner committed), on SQLite an
#: OperationalError (the database is locked, or ``table ... already exists``).
SCHEMA_RACE_ERRORS = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError)


def retry_schema_race(create: Callable[[], T], *, pause: float, tries: int = 5) -> T:
    """Calls ``create`` until it returns, at most ``tries`` times.

    Args:
        create: Makes what is missing of the schema (``checkfirst``-style) and returns its result.
        pause: Seconds to wait after the first failure; after the k-th, ``k * pause``.
        tries: Calls in all; the last one's error is raised (a storage that keeps failing is broken,
            not racing).
    """
    for attempt in range(1, tries + 1):
        try:
            return create()
        except SCHEMA_RACE_ERRORS:
            if attempt == tries:
                raise
            time.sleep(pause * attempt)
    raise AssertionError("unreachable: the last try returns or raises")
