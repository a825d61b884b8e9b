"""Search spaces: define-by-run functions over an Optuna trial that return a candidate spec.

Each space is called as ``space(trial, **options)``, where the options come from a study file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from dse._errors import SpecError
from search_spaces.mobilenet_tiny import mobilenet_tiny
from search_spaces.nb201 import nb201

__all__ = ["SEARCH_SPACES", "SearchSpace", "get_search_space", "mobilenet_tiny", "nb201", "suggest"]

SearchSpace = Callable[..., dict[str, Any]]

SEARCH_SPACES: dict[str, SearchSpace] = {
    "mobilenet_tiny": mobilenet_tiny,
    "nb201": nb201,
}


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
