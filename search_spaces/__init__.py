"""Search spaces: define-by-run functions over an Optuna trial that return a candidate spec.

Each space is called as ``space(trial, **options)``, where the options come from a study file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from dse.errors import SpecError, did_you_mean, refuse_bools, refuse_non_finite
from search_spaces.joint import JointOptions, joint
from search_spaces.listed import ListedOptions, listed, listed_grid
from search_spaces.mobilenet_tiny import check_expand_option, check_width_option, mobilenet_tiny
from search_spaces.nb201 import nb201
from search_spaces.pruning import PruningOptions, pruning
from search_spaces.quantization import QuantizationOptions, parse_options, quantization
from search_spaces.replay import load_table, replay

__all__ = [
    "SEARCH_SPACES",
    "SearchSpace",
    "check_options",
    "get_search_space",
    "joint",
    "listed",
    "listed_grid",
    "mobilenet_tiny",
    "nb201",
    "pruning",
    "quantization",
    "replay",
    "suggest",
]

SearchSpace = Callable[..., dict[str, Any]]

SEARCH_SPACES: dict[str, SearchSpace] = {
    "mobilenet_tiny": mobilenet_tiny,
    "nb201": nb201,
    "quantization": quantization,
    "pruning": pruning,
    "joint": joint,
    "replay": replay,
    "listed": listed,
}

#: Option models of the spaces that validate their options up front (when a study file is read).
_OPTION_MODELS = {"quantization": QuantizationOptions, "pruning": PruningOptions, "joint": JointOptions, "listed": ListedOptions}


class _ProbeTrial:
    """Stands in for an Optuna trial: every suggestion takes its first choice (``end=0``) or its
    last (``end=-1``), the low or the high end of a range. Running a space on both builds the
    candidates at both ends of every option, without a study."""

    def __init__(self, end: int) -> None:
        self.end = end
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = list(choices)[self.end]
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        value = low if self.end == 0 else high
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = low if self.end == 0 else high
        self.params[name] = value
        return value


def check_options(name: str, options: dict[str, Any], fixed: Mapping[str, Any] | None = None) -> None:
    """Validates a space's options and fixed keys without a study: one-line SpecError naming the field.

    Checks the options themselves (known names, types, finite numbers, bounds), then builds the
    candidates at both ends of every option (first and last choices, low and high ends of ranges)
    with ``fixed`` merged in, and validates each as a candidate. So a study file with a bad option
    or a bad ``space.fixed`` is refused when it is read, not in its first trial.
    """
    space = get_search_space(name)
    refuse_non_finite(options, "", "space.options")
    refuse_non_finite(dict(fixed or {}), "", "space.fixed")
    if name == "replay":
        unknown = set(options) - {"table", "time_scale"}
        if unknown:
            key = sorted(unknown)[0]
            raise SpecError(f"space replay: options: unknown {key!r}{did_you_mean(key, ['table', 'time_scale'])} (known: table, time_scale)")
        if not isinstance(options.get("table"), str):
            raise SpecError("space replay: options.table: a folder with trials.csv and epochs.csv is needed")
        scale = options.get("time_scale", 0.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < 1e6:
            raise SpecError(f"space replay: options.time_scale: a number >= 0 is needed, got {scale!r}")
        load_table(options["table"])
        if fixed:
            raise SpecError("space.fixed: a replayed space takes no fixed keys (its candidates are recorded)")
        return
    if name in ("mobilenet_tiny", "joint"):
        if "width_mult" in options:
            check_width_option(options["width_mult"])
        if "expand_ratio" in options:
            check_expand_option(options["expand_ratio"])
    if name in _OPTION_MODELS:
        parse_options(_OPTION_MODELS[name], options, f"space {name}")
    else:
        known = [p for p in inspect.signature(space).parameters if p != "trial"]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise SpecError(f"space.options.{unknown[0]}: unknown option of space {name}{did_you_mean(unknown[0], known)} "
                            f"(known: {', '.join(known)})")
    if fixed:
        refuse_bools(fixed, "space.fixed")
    if name == "listed":  # every entry, not only both ends
        from dse.models import validate_candidate

        for i, entry in enumerate(options["candidates"]):
            validate_candidate({**entry, **dict(fixed or {})}, where=f"space.options.candidates[{i}]")
        return
    for end in (0, -1):
        try:
            candidate = space(_ProbeTrial(end), **options)
        except SpecError:
            raise
        except (TypeError, ValueError, KeyError, IndexError) as err:
            raise SpecError(f"space.options: space {name} cannot use these options ({type(err).__name__}: {err})") from None
        if fixed:
            from dse.models import validate_candidate

            validate_candidate({**candidate, **fixed}, where="space.fixed")


def get_search_space(name: str) -> SearchSpace:
    """Looks up a space by name, with a one-line error listing the known ones."""
    try:
        return SEARCH_SPACES[name]
    except KeyError:
        raise SpecError(f"search space: unknown {name!r}{did_you_mean(name, SEARCH_SPACES)} (known: {', '.join(sorted(SEARCH_SPACES))})") from None


def suggest(name: str, trial: optuna.Trial, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Calls space ``name`` on ``trial`` with ``options``; unknown options raise a one-line error."""
    space = get_search_space(name)
    try:
        return space(trial, **(options or {}))
    except TypeError as err:
        raise SpecError(f"search space {name}: {err}") from err
