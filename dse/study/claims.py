"""Atomic claims of candidates by trials, shared by every driver of one study.

Several drivers (``dse run`` twice, or ``dse resume`` beside a live ``dse run``) share a study
through its storage. Before a trial trains a candidate it claims it: one row per (study,
candidate) in a table of the study's own database, inserted under the table's primary key. The
database decides who wins (an insert either lands or hits the key), so two drivers asking for
the same candidate at the same moment can never both train it. Optuna's own tables have no such
key (its trials are independent rows), hence this small table beside them.

A claim held by a trial that failed, or was recovered as interrupted, is taken over with a
compare-and-set update (``WHERE trial_number = old``), again decided by the database.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa

from dse.study.schema_race import retry_schema_race

__all__ = ["CandidateClaims", "candidate_key"]

_METADATA = sa.MetaData()
_CLAIMS = sa.Table(
    "dse_candidate_claims",
    _METADATA,
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("candidate_key", sa.String(64), primary_key=True),
    sa.Column("trial_number", sa.Integer, nullable=False),
)


def candidate_key(candidate: dict[str, Any]) -> str:
    """A stable digest of a candidate (its keys sorted), the claim's key."""
    return hashlib.sha256(json.dumps(candidate, sort_keys=True, default=str).encode()).hexdigest()


class CandidateClaims:
    """The claims of one study.

    Args:
        url: The study's SQLAlchemy storage URL (the same database as its Optuna tables).
        study_name: The study's name (several studies may share one database).
    """

    def __init__(self, url: str, study_name: str) -> None:
        self.url, self.study_name = url, study_name
        self._engine: sa.Engine | None = None
        self._create_table()

    @property
    def engine(self) -> sa.Engine:
        """The database engine, made on first use (Ray pickles the searcher that holds this
        object; an engine does not pickle, so it is dropped there and made again)."""
        if self._engine is None:
            connect_args = {"timeout": 60} if self.url.startswith("sqlite") else {}
            self._engine = sa.create_engine(self.url, connect_args=connect_args)
        return self._engine

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "study_name": self.study_name, "_engine": None}

    def _create_table(self) -> None:
        # Two drivers may create the table at the same moment: the loser sees it made on retry.
        retry_schema_race(lambda: _METADATA.create_all(self.engine, checkfirst=True), pause=0.2)

    def claim(self, candidate: dict[str, Any], trial_number: int) -> int | None:
        """Claims ``candidate`` for trial ``trial_number``.

        Returns:
            None when this trial now holds the claim (it trains the candidate); otherwise the
            number of the trial that holds it.
        """
        key = candidate_key(candidate)
        try:
            with self.engine.begin() as conn:
                conn.execute(_CLAIMS.insert().values(study_name=self.study_name, candidate_key=key, trial_number=trial_number))
            return None
        except sa.exc.IntegrityError:
            pass
        with self.engine.connect() as conn:
            owner = conn.execute(
                sa.select(_CLAIMS.c.trial_number).where(_CLAIMS.c.study_name == self.study_name, _CLAIMS.c.candidate_key == key)
            ).scalar_one()
        return None if owner == trial_number else int(owner)

    def take_over(self, candidate: dict[str, Any], old: int, new: int) -> bool:
        """Moves the claim from trial ``old`` (failed or interrupted) to ``new``; False when
        another trial took it first."""
        with self.engine.begin() as conn:
            done = conn.execute(
                _CLAIMS.update()
                .where(_CLAIMS.c.study_name == self.study_name, _CLAIMS.c.candidate_key == candidate_key(candidate),
                       _CLAIMS.c.trial_number == old)
                .values(trial_number=new)
            )
        return done.rowcount == 1

    def release(self, candidate: dict[str, Any], trial_number: int) -> None:
        """Drops trial ``trial_number``'s claim of ``candidate`` (nothing if another trial holds it)."""
        with self.engine.begin() as conn:
            conn.execute(_CLAIMS.delete().where(
                _CLAIMS.c.study_name == self.study_name, _CLAIMS.c.candidate_key == candidate_key(candidate),
                _CLAIMS.c.trial_number == trial_number))

    def close(self) -> None:
        """Releases the connection pool."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
