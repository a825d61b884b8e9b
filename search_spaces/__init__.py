"""Search spaces: define-by-run functions over an Optuna trial that return a candidate spec.

Each space is called as ``space(trial, **options)``, where the options come from a study file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from dse.errors import SpecError
from search_spaces.joint import JointOptions, joint
from search_spaces.mobilenet_tiny import mobilenet_tiny
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
}

#: Option models of the spaces that validate their options up front (when a study file is read).
_OPTION_MODELS = {"quantization": QuantizationOptions, "pruning": PruningOptions, "joint": JointOptions}


def check_options(name: str, options: dict[str, Any]) -> None:
    """Validates a space's options without a trial (one-line SpecError naming the field)."""
    get_search_space(name)
    if name == "replay":
        unknown = set(options) - {"table", "time_scale"}
        if unknown:
            raise SpecError(f"space replay: options: unknown {sorted(unknown)[0]!r} (known: table, time_scale)")
        if not isinstance(options.get("table"), str):
            raise SpecError("space replay: options.table: a folder with trials.csv and epochs.csv is needed")
        scale = options.get("time_scale", 0.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < 1e6:
            raise SpecError(f"space replay: options.time_scale: a number >= 0 is needed, got {scale!r}")
        load_table(options["table"])
    if name in _OPTION_MODELS:
        parse_options(_OPTION_MODELS[name], options, f"space {name}")


def get_search_space(name: str) -> SearchSpace:
    """Looks up a space by name, with a one-line error listing the known ones."""
    try:
        return SEARCH_SPACES[name]
    except KeyError:
        raise SpecError(f"search space: unknown {name!r} (known: {', '.join(sorted(SEARCH_SPACES))})") from None


def suggest(name: str, trial: optuna.Trial, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Calls space ``name`` on ``trial`` with ``options``; unknown options raise a one-line error."""
    space = get_search_space(name)
    try:
        return space(trial, **(options or {}))
    except TypeError as err:
        raise SpecError(f"search space {name}: {err}") from err
