"""Inputs of the single-candidate commands (``profile``, ``train``): the candidate file and
``--set`` flags read as written, and data options checked, before anything is written or trained.

Each check raises a one-line :class:`~dse.errors.DseError` naming the file (or flag) and field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from dse.candidate import SECTIONS, CandidateFile, load_candidate_file, parse_set_args
from dse.errors import DseError, read_yaml_mapping, refuse_bools, refuse_non_finite

__all__ = ["check_data_options", "named", "read_candidate"]


def read_candidate(path: str | os.PathLike[str] | None, sets: Sequence[str]) -> CandidateFile:
    """The candidate file and ``--set`` flags, read and validated; values are checked as written
    (no ``true`` for a number, no NaN or infinity anywhere) before pydantic converts them."""
    from dse.study.values import check_sections

    sources = [(parse_set_args(sets), "--set")]
    if path is not None:
        sources.insert(0, (read_yaml_mapping(path, "candidate"), str(path)))
    for raw, where in sources:
        refuse_non_finite(raw, where)
        refuse_bools({k: v for k, v in raw.items() if k not in SECTIONS}, where)
        check_sections({k: v for k, v in raw.items() if k in ("recipe", "eval")}, where)
    try:
        return load_candidate_file(path, sets)
    except DseError as err:
        if path is None and str(err).startswith("candidate: "):
            raise type(err)("--set: " + str(err).removeprefix("candidate: ")) from None
        raise


def check_data_options(opts: dict[str, Any], *, default_root: str, download: bool) -> None:
    """The data options make a loadable data set (subset, validation fraction, seed, the CIFAR
    folder unless ``download``), checked before anything is written or trained."""
    from dse.data import dataset_spec
    from dse.data.cifar import resolve_cifar_dir

    subset, fraction, seed = opts["subset"], opts["val_fraction"], opts["seed"]
    classes = dataset_spec(opts["dataset"]).num_classes
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < classes):
        raise DseError(f"data.subset: expected a whole number >= {classes} (the classes of {opts['dataset']}), got {subset!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise DseError(f"data.val_fraction: expected a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DseError(f"data.seed: expected a whole number >= 0, got {seed!r}")
    if opts["root"] is not None and not isinstance(opts["root"], str):
        raise DseError(f"data.root: expected a folder path, got {opts['root']!r}")
    if opts["dataset"] != "digits" and not download:
        resolve_cifar_dir(opts["dataset"], opts["root"] or default_root, download=False)


def named(where: str | os.PathLike[str] | None, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, its one-line error prefixed with ``where`` (the file it checks)."""
    try:
        return call(*args, **kwargs)
    except DseError as err:
        if where is None or str(err).startswith(str(where)):
            raise
        raise type(err)(f"{where}: {err}") from None
