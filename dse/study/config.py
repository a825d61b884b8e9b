"""Study files (``studies/*.yaml``): validated with pydantic, one-line errors naming the field.

A study file says what to search (a registered space and its options), what to optimize (2-4
objectives, each with a direction) and record (further metrics), under which constraints, with
which sampler, scheduler and budget, how each candidate is trained and evaluated, and where it
runs. See the README's study file reference for every field.

(Over 400 lines: every section of the study file and the cross-checks between sections run when
the file is read, so that bad input is refused before anything starts; they are one concept.)
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dse.errors import SpecError
from dse.errors import did_you_mean, one_line_error, read_yaml_mapping, refuse_non_finite
from dse.study.paths import DEFAULT_LOOKUP_ROOT, resolve_study_paths
from dse.study.values import check_sections

__all__ = [
    "BudgetConfig",
    "ConstraintConfig",
    "DataConfig",
    "ExecutionConfig",
    "ObjectiveConfig",
    "RungEvalConfig",
    "SamplerConfig",
    "SchedulerConfig",
    "SpaceConfig",
    "StudyConfig",
    "load_study_config",
    "parse_duration",
]

SAMPLERS = ("nsga2", "nsga3", "tpe", "gp", "random", "pls", "rea", "surrogate", "grid")  # sampler_registry.SAMPLER_NAMES (tested)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(value: float | int | str | None) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"2h"`` or ``"1d"``; ``None`` stays ``None``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration like 600, '10m' or '2h'")
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 600, '10m' or '2h'")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


class _Strict(BaseModel):
    # strict: no ``true`` read as 1, no "5" read as 5; a whole number still passes for a float
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Strict):
    """Data set, subset and the validation split the search selects on."""

    dataset: Literal["digits", "cifar10", "cifar100"] = "digits"
    root: str | None = None
    subset: int | None = Field(None, ge=10)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class SpaceConfig(_Strict):
    """A registered search space and its options (passed to the space function)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)


class ObjectiveConfig(_Strict):
    """One optimized objective; ``direction`` defaults to the objective's own."""

    name: str
    direction: Literal["maximize", "minimize"] | None = None


class ConstraintConfig(_Strict):
    """``metric <= max`` and/or ``metric >= min``; handed to the sampler as Optuna constraints."""

    metric: str
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> ConstraintConfig:
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"constraint on {self.metric}: {name} must be a finite number, got {value}")
        if self.max is None and self.min is None:
            raise ValueError(f"constraint on {self.metric} needs max or min")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"constraint on {self.metric}: min {self.min} > max {self.max}")
        return self

    def violations(self, value: float) -> list[float]:
        """Optuna form: each value <= 0 means satisfied."""
        out = []
        if self.max is not None:
            out.append(value - self.max)
        if self.min is not None:
            out.append(self.min - value)
        return out

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{self.metric} >= {self.min:g}")
        if self.max is not None:
            parts.append(f"{self.metric} <= {self.max:g}")
        return " and ".join(parts)


class SamplerConfig(_Strict):
    """The sampler (a name of ``dse.study.sampler_registry.SAMPLER_NAMES``), its seed and constructor options."""

    name: Literal["nsga2", "nsga3", "tpe", "gp", "random", "pls", "rea", "surrogate", "grid"] = "surrogate"  # the benchmark's pick
    seed: int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)


class RungEvalConfig(_Strict):
    """The attack-strength ladder: cheaper validation at the scheduler's low rungs.

    Entry ``i`` of ``steps`` (and of ``samples``) is the PGD step count (and the number of
    validation samples) used at rung ``i`` and the epochs before it; rungs past the lists use the
    recipe's per-epoch evaluation. The step size becomes ``2.5 * eps / steps`` (Madry et al.) when
    that is larger than the evaluation's, so a short attack can still reach the eps-ball's surface.
    A trial's final score always uses the study's full ``eval``.
    """

    steps: list[int] = Field(min_length=1)
    samples: list[int] | None = None

    @field_validator("steps", "samples")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 1 for v in value):
            raise ValueError("every entry must be >= 1")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> RungEvalConfig:
        if self.samples is not None and len(self.samples) != len(self.steps):
            raise ValueError(f"samples has {len(self.samples)} entries, steps {len(self.steps)}: give one per rung")
        return self


class SchedulerConfig(_Strict):
    """When trials stop early: ``fifo`` (every trial trains to its last epoch) or ``mo_asha``.

    ``mo_asha`` is asynchronous successive halving over epochs: rungs at ``min_epochs *
    reduction_factor**k`` epochs (below the recipe's last epoch); at a rung a trial continues when
    it ranks in the top ``1/reduction_factor`` of the trials that reached that rung, ranked by
    non-dominated sorting of the rung's objective vector with ``tie_break`` inside a front (see
    :mod:`dse.study.scheduling`). ``rank_free: false`` leaves the objectives known before training
    out of the rung vectors (they still count in constraints). ``rung_eval`` is the attack-strength ladder; under ``fifo`` it is
    measured beside the full per-epoch evaluation (to build benchmark tables), under ``mo_asha`` it
    replaces it up to the last ladder rung.
    """

    name: Literal["fifo", "mo_asha"] = "fifo"
    min_epochs: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    tie_break: Literal["crowding", "hypervolume"] = "crowding"
    rank_free: bool = True
    rung_eval: RungEvalConfig | None = None


class BudgetConfig(_Strict):
    """How many trials, and how long (seconds or '10m', '2h')."""

    n_trials: int = Field(20, ge=1)
    wall_time: float | None = None

    @field_validator("wall_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        seconds = parse_duration(value)
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError("must be a positive, finite duration")
        return seconds


class ExecutionConfig(_Strict):
    """Where trials run: local Ray (address None) or a cluster, and resources per trial."""

    address: str | None = None
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    concurrency: int = Field(1, ge=1)
    num_cpus: int | None = Field(None, ge=1)
    #: Seconds between a driver's heartbeats for the trials it runs; a RUNNING trial whose last
    #: heartbeat is older than ``grace_period`` (default 3 intervals) belongs to a driver that is
    #: gone, and ``dse resume`` (or any live driver) runs its candidate again.
    heartbeat_interval: int = Field(10, ge=1)
    grace_period: int | None = Field(None, ge=1)

    def grace(self) -> int:
        """Seconds without a heartbeat after which a RUNNING trial counts as interrupted."""
        return self.grace_period if self.grace_period is not None else 3 * self.heartbeat_interval


class LookupConfig(_Strict):
    """Where tabular (no-training) objectives read published results from (``root`` left out:
    :data:`dse.study.paths.DEFAULT_LOOKUP_ROOT`, beside the checkout)."""

    root: str = str(DEFAULT_LOOKUP_ROOT)
    dataset: Literal["cifar10", "cifar100"] = "cifar10"


class StudyConfig(_Strict):
    """One study file.

    Paths: a relative path in the file (``data.root``, ``lookup.root``, ``output_dir``,
    ``space.options.table``, a ``sqlite:///`` storage file) is relative to the folder of the study
    file, and ``~`` is the home folder; :func:`load_study_config` makes them all absolute, so the
    file means the same from any working directory. ``output_dir`` left out is ``runs/NAME`` under
    the working directory (see :mod:`dse.study.paths`).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    storage: str | None = None
    output_dir: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    space: SpaceConfig
    objectives: list[ObjectiveConfig] = Field(min_length=2, max_length=4)
    metrics: list[str] = Field(default_factory=list)
    constraints: list[ConstraintConfig] = Field(default_factory=list)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    recipe: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    lookup: LookupConfig | None = None

    @field_validator("objectives", mode="before")
    @classmethod
    def _objective_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _cross_check(self) -> StudyConfig:
        from objectives import OBJECTIVES, is_lookup_objective, metric_names
        from search_spaces import SEARCH_SPACES

        if self.space.name not in SEARCH_SPACES:
            raise ValueError(f"space.name: unknown space {self.space.name!r}{did_you_mean(self.space.name, SEARCH_SPACES)} "
                             f"(known: {', '.join(sorted(SEARCH_SPACES))})")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError("objectives: each objective may appear once")
        lookup = [n for n in names + self.metrics if is_lookup_objective(n)]
        for i, obj in enumerate(self.objectives):
            if obj.name not in OBJECTIVES and not is_lookup_objective(obj.name):
                raise ValueError(f"objectives.{i}.name: unknown objective {obj.name!r}{did_you_mean(obj.name, metric_names())} "
                                 f"(known: {', '.join(sorted(OBJECTIVES))}, nb201_*)")
            natural = self.direction_of(obj.name)
            if obj.direction is not None and obj.direction != natural:
                raise ValueError(f"objectives.{i}.direction: {obj.name} is to {natural}, not {obj.direction}")
        for i, metric in enumerate(self.metrics):
            if metric not in OBJECTIVES and not is_lookup_objective(metric):
                raise ValueError(f"metrics.{i}: unknown metric {metric!r}{did_you_mean(metric, metric_names())}")
        known = set(names) | set(self.metrics)
        for i, con in enumerate(self.constraints):
            if con.metric not in known:
                raise ValueError(f"constraints.{i}.metric: {con.metric!r}{did_you_mean(con.metric, [*names, *self.metrics])} "
                                 "is neither an objective nor a recorded metric")
        if lookup and len(lookup) != len(names) + len(self.metrics):
            raise ValueError("objectives: tabular (nb201_*) objectives cannot be mixed with trained ones")
        if lookup and self.lookup is None:
            object.__setattr__(self, "lookup", LookupConfig())
        return self

    # ----------------------------------------------------------------- derived views
    @property
    def is_tabular(self) -> bool:
        """True when every objective is looked up in published results (nothing is trained)."""
        from objectives import is_lookup_objective

        return self.is_replay or is_lookup_objective(self.objectives[0].name)

    @property
    def is_replay(self) -> bool:
        """True when trials are replayed from a recorded learning-curve table (``space: replay``)."""
        return self.space.name == "replay"

    def max_epochs(self) -> int:
        """The epochs a trial trains for (a replayed table: its most epochs)."""
        if self.is_replay:
            from search_spaces.replay import load_table

            return load_table(self.space.options["table"]).max_epochs
        if self.is_tabular:
            return 1
        from dse.training import default_recipe

        return default_recipe(self.data.dataset, **self.recipe).epochs

    def rung_epochs(self) -> list[int]:
        """The scheduler's rungs: ``min_epochs * reduction_factor**k`` below the last epoch."""
        sch, last = self.scheduler, self.max_epochs()
        rungs, epoch = [], sch.min_epochs
        while epoch < last:
            rungs.append(epoch)
            epoch *= sch.reduction_factor
        return rungs

    @staticmethod
    def direction_of(name: str) -> str:
        """The natural direction of an objective or metric (tabular ``nb201_*`` ones included)."""
        from objectives import objective_direction

        return objective_direction(name)

    def directions(self) -> list[str]:
        """Each objective's direction (a study file may only restate the natural one)."""
        return [o.direction or self.direction_of(o.name) for o in self.objectives]

    def objective_names(self) -> list[str]:
        """The optimized objectives' names, in order."""
        return [o.name for o in self.objectives]

    def objective_specs(self) -> list[dict[str, str]]:
        """``[{"name": ..., "direction": ...}]`` per objective, in order: the form the Pareto maths,
        the report and exports take (see :mod:`dse.study.pareto`)."""
        return [{"name": n, "direction": d} for n, d in zip(self.objective_names(), self.directions())]

    def rung_metric_names(self) -> list[str]:
        """The objectives early-stopping rungs rank on: those the per-epoch evaluation measures
        (``dse.epoch_eval.EPOCH_METRICS``, reported as ``val_NAME``, the ladder's as ``val_rung_NAME``)
        and those known before training (``objectives.FREE_OBJECTIVES``)."""
        from dse.epoch_eval import EPOCH_METRICS
        from objectives import FREE_OBJECTIVES

        free = FREE_OBJECTIVES if self.scheduler.rank_free else ()
        return [n for n in self.objective_names() if n in EPOCH_METRICS or n in free]

    def recorded_names(self) -> list[str]:
        """Objectives first, then the further metrics, without repeats."""
        return list(dict.fromkeys(self.objective_names() + self.metrics))

    def out_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.out_dir() / 'study.db').resolve()}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_study_config(path: str | os.PathLike[str], *, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Reads and validates a study file.

    Args:
        path: The YAML file.
        overrides: Top-level fields replaced after reading (e.g. from CLI flags), taken as if
            written in the file (a relative path in them is relative to the file's folder).

    Returns:
        The validated study, with every path absolute (see :class:`StudyConfig`).

    Raises:
        SpecError: ``FILE: field.path: message`` on the first problem.
    """
    p = Path(path)
    data = read_yaml_mapping(p, "study")
    for key, value in (overrides or {}).items():
        section, _, field = key.partition(".")
        if field:
            data[section] = {**(data.get(section) or {}), field: value}
        else:
            data[key] = value
    try:
        config = StudyConfig.model_validate(data)
    except ValidationError as err:
        raise SpecError(one_line_error(err, where=str(p), model=StudyConfig)) from err
    config = resolve_study_paths(config, p.resolve().parent)
    _check_recipe_and_space(config, where=str(p))
    _check_scheduler(config, where=str(p))
    _check_sampler_storage_output(config, where=str(p))
    return config


def _check_recipe_and_space(config: StudyConfig, *, where: str) -> None:
    """Validates the parts checked by other modules: recipe, eval settings and space options."""
    from objectives import is_lookup_objective
    from search_spaces import check_options

    check_sections({"recipe": config.recipe, "eval": config.eval}, where)
    refuse_non_finite(config.sampler.options, where, "sampler.options")  # switches such as multivariate: true stay
    try:
        check_options(config.space.name, config.space.options, config.space.fixed)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from err
    lookup = is_lookup_objective(config.objectives[0].name)
    if lookup and config.space.name != "nb201":
        raise SpecError(f"{where}: space.name: nb201_* objectives are looked up for NAS-Bench-201 cells: use space nb201, not {config.space.name}")
    if config.space.name == "nb201" and not lookup:
        raise SpecError(f"{where}: space.name: nb201 cells are not trained: score them with nb201_* objectives (not {config.objectives[0].name})")
    if config.is_replay:
        from search_spaces.replay import load_table

        try:
            load_table(config.space.options["table"]).check_names(config.recorded_names())
        except SpecError as err:
            raise SpecError(f"{where}: {err}") from err
    if config.is_tabular:
        return
    from dse.training import default_recipe

    try:
        default_recipe(config.data.dataset, **config.recipe)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from err
    try:
        eval_settings_for(config)
    except (SpecError, TypeError) as err:
        raise SpecError(f"{where}: eval: {err}") from err


def _check_scheduler(config: StudyConfig, *, where: str) -> None:
    """A scheduler that can rank: rungs below the last epoch, and something measured at each rung."""
    sch = config.scheduler
    if sch.name == "fifo" and sch.rung_eval is None:
        return
    if config.is_tabular and not config.is_replay:
        raise SpecError(f"{where}: scheduler: {sch.name} needs training epochs; tabular (nb201_*) studies have none")
    rungs = config.rung_epochs()
    if sch.name == "mo_asha":
        if not rungs:
            raise SpecError(f"{where}: scheduler.min_epochs: {sch.min_epochs} leaves no rung below the last epoch ({config.max_epochs()})")
        if not config.rung_metric_names():
            raise SpecError(f"{where}: scheduler: no objective is measured per epoch or known before training, so rungs cannot rank")
    if sch.rung_eval is not None and sch.name == "mo_asha" and len(sch.rung_eval.steps) > len(rungs):
        raise SpecError(f"{where}: scheduler.rung_eval.steps: {len(sch.rung_eval.steps)} entries for {len(rungs)} rung(s) {rungs}")


def _check_sampler_storage_output(config: StudyConfig, *, where: str) -> None:
    """The sampler can be built with its options, the storage URL parses and its driver is
    installed, and the output folder is (or can become) a writable folder."""
    from dse.study.sampler_registry import build_sampler

    try:
        from search_spaces import listed_grid

        grid = listed_grid(config.space.options) if config.space.name == "listed" else None
        build_sampler(config.sampler.name, seed=config.sampler.seed, options=config.sampler.options, grid=grid)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None
    if config.storage:
        from dse.study.preflight import check_storage_url

        check_storage_url(config.storage, where=f"{where}: storage")
    out = config.out_dir()
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise SpecError(f"{where}: output_dir: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"{where}: output_dir: {existing} is not writable")


def eval_settings_for(config: StudyConfig):
    """Evaluation settings of a study: the data set's default attack updated by the ``eval`` section."""
    from objectives import eval_settings

    return eval_settings(config.data.dataset, config.eval)
