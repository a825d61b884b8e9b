"""The NAS-Bench-201 cell space (6 edges x 5 ops = 15,625 cells), define-by-run.

Its candidates are looked up in published results (``nb201_*`` objectives), not trained.

Example:
    >>> import optuna
    >>> study = optuna.create_study(directions=["maximize", "maximize"])
    >>> spec = nb201(study.ask(), ops=["skip_connect", "nor_conv_3x3"])
    >>> spec["arch"], spec["cell"].count("~")
    ('nb201', 6)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from dse.errors import SpecError, did_you_mean
from dse.models.nb201 import EDGE_SOURCES, OPS, NB201Config, make_cell

__all__ = ["OPS", "nb201"]


def nb201(trial: optuna.Trial, *, ops: Sequence[str] = OPS) -> dict[str, Any]:
    """Suggests one NAS-Bench-201 cell: one categorical op per edge, ``edge_0`` .. ``edge_5``.

    Edges are in cell-string order: node1<-0 (``edge_0``), node2<-0, node2<-1, node3<-0, node3<-1,
    node3<-2 (``edge_5``).

    Args:
        trial: The Optuna trial.
        ops: The ops to choose from, a non-empty subset of ``none``, ``skip_connect``, ``nor_conv_1x1``,
            ``nor_conv_3x3``, ``avg_pool_3x3``.

    Returns:
        ``{"arch": "nb201", "cell": "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"}``.

    Raises:
        SpecError: Bad ``ops``, named.
    """
    if isinstance(ops, str) or not isinstance(ops, Sequence):
        raise SpecError(f"space.options.ops: expected a list of ops from {', '.join(OPS)}, got {ops!r}")
    choices = list(dict.fromkeys(ops))
    unknown = [op for op in choices if op not in OPS]
    if not choices or unknown:
        what = f"unknown {unknown}{did_you_mean(unknown[0], OPS)}" if unknown else "needs at least one op"
        raise SpecError(f"space.options.ops: {what} (known: {', '.join(OPS)})")
    picked = [trial.suggest_categorical(f"edge_{i}", choices) for i in range(len(EDGE_SOURCES))]
    return NB201Config(cell=make_cell(picked)).model_dump()
