"""The study's Optuna side: the sampler named in the study file and the study in its storage."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from dse.errors import SpecError
from dse.study.config import StudyConfig
from dse.study.sampler_registry import build_sampler
from dse.study.schema_race import retry_schema_race

__all__ = ["make_sampler", "open_study"]


def make_sampler(config: StudyConfig, *, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler. Constraints reach it as the trials' ``constraints`` system attribute (see ``searcher.record_constraints``).

    Args:
        config: The study file.
        seed_offset: Added to the seed. A resumed study passes its trial count: a seeded
            sampler started afresh would otherwise propose its first candidates again (each then
            a reused repeat, and 50 in a row end the study as "exhausted").

    Raises:
        SpecError: Options the sampler refuses, in one line.
    """
    s = config.sampler
    grid = None
    if s.name == "grid" and config.space.name == "listed":
        from search_spaces import listed_grid

        grid = listed_grid(config.space.options)
    return build_sampler(s.name, seed=None if s.seed is None else s.seed + seed_offset, options=s.options,
                         params_filter=_params_filter(config), free_values=_free_values(config), grid=grid)


def _candidate(config: StudyConfig, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The candidate that Optuna ``params`` stand for (None when they lack a key the space asks for)."""
    from search_spaces import suggest

    try:
        candidate = suggest(config.space.name, optuna.trial.FixedTrial(dict(params)), config.space.options)
    except ValueError:  # a conditional key the sampler leaves to sample_independent
        return None
    return {**candidate, **config.space.fixed}


def _params_filter(config: StudyConfig) -> Callable[[Mapping[str, Any]], bool] | None:
    """False for params whose candidate breaks a constraint on a metric known before training."""
    from dse.study.searcher import constraint_breaches, known_metrics, precheck_values

    if not any(c.metric in known_metrics(config) for c in config.constraints):
        return None

    def allowed(params: Mapping[str, Any]) -> bool:
        candidate = _candidate(config, params)
        return candidate is None or constraint_breaches(config, precheck_values(config, candidate)) is None

    return allowed


def _free_values(config: StudyConfig) -> Callable[[Mapping[str, Any]], dict[int, float]] | None:
    """Objective index -> value for the objectives known before training (params, MACs, BOPS, size)."""
    from dse.study.searcher import known_metrics, precheck_values

    names = config.objective_names()
    free = [n for n in names if n in known_metrics(config)]
    if not free:
        return None

    def values(params: Mapping[str, Any]) -> dict[int, float]:
        candidate = _candidate(config, params)
        if candidate is None:
            return {}
        known = precheck_values(config, candidate, free)
        return {names.index(n): float(v) for n, v in known.items()}

    return values


def _rdb(url: str, heartbeat_interval: int, grace: int) -> optuna.storages.RDBStorage:
    """The storage, with heartbeats on (several drivers on one study: see :mod:`dse.study.drivers`).

    Two drivers opening a new storage at the same moment race to create its schema: the loser
    retries (see :func:`dse.study.schema_race.retry_schema_race`) and then finds the schema made.
    """
    return retry_schema_race(
        lambda: optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace,
        ),
        pause=0.5,
    )


def open_study(config: StudyConfig, storage: str | None = None, *, create: bool = True) -> optuna.Study:
    """Creates or loads the study in its storage (SQLite under ``runs/NAME`` by default)."""
    url = storage or config.storage_url()
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        if not create and not db.is_file():  # read-only commands never create a file
            raise SpecError(f"study {config.name!r}: no storage at {db}; start it with `dse run`")
        db.parent.mkdir(parents=True, exist_ok=True)
    ex = config.execution
    with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna 5: say it once, in the docs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            rdb = _rdb(url, ex.heartbeat_interval, ex.grace())
        except sqlalchemy.exc.DatabaseError as err:  # not a database, or one another program locked or broke
            reason = str(err.orig).splitlines()[0] if err.orig is not None else type(err).__name__
            raise SpecError(f"storage {url}: cannot be opened as an Optuna study database ({reason})") from None

    if not create:
        try:
            return optuna.load_study(study_name=config.name, storage=rdb, sampler=make_sampler(config))
        except KeyError as err:
            raise SpecError(f"study {config.name!r} not found in {url}; start it with `dse run`") from err
    study = optuna.create_study(
        study_name=config.name, storage=rdb, directions=config.directions(), sampler=make_sampler(config), load_if_exists=True
    )
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in config.directions()]:
        raise SpecError(f"study {config.name!r} in {url} was created with other objectives; use another name or storage")
    if study.metric_names is None:  # so Optuna's plots and optuna-dashboard label the axes
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(config.objective_names())
    return study
