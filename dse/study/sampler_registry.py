"""The sampler registry: every name a study file's ``sampler.name`` may give, and how it is built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from dse.errors import SpecError
from dse.study.grid_sampler import ListedGridSampler
from dse.study.samplers import ParamsFilter, ParetoLocalSearchSampler, RegularizedEvolutionSampler
from dse.study.surrogate import FreeValues, SurrogateSampler

__all__ = ["DEFAULT_SAMPLER", "SAMPLER_NAMES", "build_sampler"]

#: Every sampler name a study file may give (``sampler.name``).
SAMPLER_NAMES: tuple[str, ...] = ("nsga2", "nsga3", "tpe", "gp", "random", "pls", "rea", "surrogate", "grid")
#: The sampler of a study file that names none: the best median hypervolume after 100 trials in
#: every setting of ``bench/search_efficiency.py`` (20 seeds; see the README's figures).
DEFAULT_SAMPLER = "surrogate"


def build_sampler(
    name: str,
    *,
    seed: int | None,
    options: Mapping[str, Any],
    params_filter: ParamsFilter | None = None,
    free_values: FreeValues | None = None,
    grid: Mapping[str, list[Any]] | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name`` (see :data:`SAMPLER_NAMES`) with its options.

    Args:
        name: A registered name.
        seed: The sampler's seed.
        options: Keyword options from the study file.
        params_filter: Handed to the samplers that can avoid proposals (``pls``, ``rea``,
            ``surrogate``): False for params that break a constraint known before training.
        free_values: Handed to ``surrogate``: objective index -> value, for the objectives known
            before training.
        grid: ``grid``: parameter name -> values, every combination tried once (Optuna's
            ``GridSampler``; the ``listed`` space gives its entries).

    Raises:
        SpecError: ``sampler.options: ...``, options the sampler refuses, in one line.
        KeyError: An unknown name (the study file's schema refuses it first).
    """
    options = dict(options)
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, **options),
        "nsga3": lambda: optuna.samplers.NSGAIIISampler(seed=seed, **options),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **options),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, **options),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed, **options),
        "pls": lambda: ParetoLocalSearchSampler(seed=seed, params_filter=params_filter, **options),
        "rea": lambda: RegularizedEvolutionSampler(seed=seed, params_filter=params_filter, **options),
        "surrogate": lambda: SurrogateSampler(seed=seed, params_filter=params_filter, free_values=free_values, **options),
        "grid": lambda: ListedGridSampler(dict(grid or {}), seed=seed, **options),
    }
    if name == "grid" and not grid:
        raise SpecError("sampler grid: only the listed space has a grid (space: {name: listed, ...})")
    try:
        return factories[name]()
    except (TypeError, ValueError) as err:
        raise SpecError(f"sampler.options: {err}".replace("\n", " ")) from err
