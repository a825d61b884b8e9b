"""The Python API for notebooks and scripts: the same paths as the ``dse`` commands, as functions.

Example:
    >>> import dse
    >>> outcome = dse.run_study("studies/quickstart.yaml")            # doctest: +SKIP
    >>> trials = dse.load_results("studies/quickstart.yaml")          # doctest: +SKIP
    >>> trials[trials.pareto][["number", "robust_acc", "params"]]     # doctest: +SKIP
    >>> dse.export("studies/quickstart.yaml", "best.yaml")            # doctest: +SKIP
    >>> result = dse.train("best.yaml", epochs=2)                     # doctest: +SKIP
    >>> dse.evaluate(result["checkpoint"], suite="standard")          # doctest: +SKIP

Every function raises :class:`dse.SpecError` / :class:`dse.DataError` with the same one-line
messages the commands print, and imports torch, Ray and Optuna only when called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from dse.study.config import StudyConfig

__all__ = ["evaluate", "export", "load_results", "load_study", "profile_candidate", "run_study", "train", "write_report"]

def load_study(study: str | os.PathLike[str] | StudyConfig) -> StudyConfig:
    """A validated study: a study file's path (relative paths inside it resolve against its folder)
    or a :class:`~dse.study.config.StudyConfig` already loaded."""
    from dse.study.config import StudyConfig, load_study_config

    return study if isinstance(study, StudyConfig) else load_study_config(study)


def run_study(
    study: str | os.PathLike[str] | StudyConfig,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    with_report: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Runs (or, with ``resume``, continues) a study, as ``dse run`` / ``dse resume`` do.

    Args:
        study: A study file or a loaded study.
        n_trials: Overrides ``budget.n_trials`` (the total, counting finished trials).
        storage: Overrides the storage URL.
        resume: Continue a study that already has trials.
        retry_failed: With ``resume``, queue again the candidates of trials that failed (as
            ``dse resume --retry-failed`` does).
        with_report: Also write the HTML report (its path under ``"report"``).
        progress: Show the progress bar.

    Returns:
        Distinct complete trials, repeats, stopped, failed, the Pareto-set size, storage and table
        paths (and ``report``).
    """
    from dse.study.preflight import check_runnable
    from dse.study.runner import run_study as _run

    config = load_study(study)
    check_runnable(config, where=str(study) if isinstance(study, (str, os.PathLike)) else f"study {config.name}")
    result = dict(_run(config, n_trials=n_trials, storage=storage, resume=resume, retry=retry_failed, show_progress=progress))
    if with_report:
        result["report"] = str(write_report(study if isinstance(study, (str, os.PathLike)) else config, storage=storage))
    return result


def load_results(study: str | os.PathLike[str] | StudyConfig, *, storage: str | None = None) -> pd.DataFrame:
    """The study's trials table (one row per Optuna trial: ``number``, ``state``, objectives,
    metrics, ``feasible``, ``pareto`` (distinct candidates on the feasible front; a repeat is
    never marked), ``duplicate_of``, ``candidate`` as JSON, ...), read from its storage.
    Read-only: creates nothing."""
    from dse.study.tables import load_tables, mark_pareto

    config = load_study(study)
    trials, _, _ = load_tables(config, storage)
    return mark_pareto(trials, config)


def write_report(study: str | os.PathLike[str] | StudyConfig, *, output: str | os.PathLike[str] | None = None,
           storage: str | None = None) -> Path:
    """Writes the study's HTML report (default ``OUTPUT_DIR/report.html``); returns its path."""
    from dse.report import write_report as render
    from dse.study.tables import load_tables

    config = load_study(study)
    trials, epochs, meta = load_tables(config, storage)
    if isinstance(study, (str, os.PathLike)):
        meta["study_file"] = str(study)  # the recommended panel's commands name it
    path = Path(output) if output else config.out_dir() / "report.html"
    render(trials, epochs, meta, path)
    return path


def export(study: str | os.PathLike[str] | StudyConfig, output: str | os.PathLike[str], *, trial: int | None = None,
           pick: str | None = None, storage: str | None = None) -> dict[str, Any]:
    """Writes trial ``trial`` (or the ``pick``: ``knee`` by default, or ``best:OBJECTIVE``) as a
    candidate file for :func:`train`; returns ``{"trial", "output", "scores", ...}``."""
    from dse.study.export import export_trial

    return export_trial(load_study(study), output, storage=storage, trial=trial, pick=pick if trial is not None or pick else "knee")


def train(
    candidate: str | os.PathLike[str] | Mapping[str, Any],
    *,
    data: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    eval: Mapping[str, Any] | None = None,  # noqa: A002 - the candidate file's section name
    device: str | None = None,
    output: str | os.PathLike[str] | None = None,
    **recipe_fields: Any,
) -> dict[str, Any]:
    """Trains one candidate and scores every objective on the test split, as ``dse train`` does.

    Args:
        candidate: A candidate file (its ``data``/``recipe``/``eval`` sections apply) or a
            candidate spec such as ``{"arch": "mobilenet_tiny", "width_mult": 0.35}``.
        data: ``data`` section changes (``dataset``, ``root``, ``subset``, ...).
        recipe: ``recipe`` section changes.
        eval: ``eval`` section changes.
        device: Torch device (default: CUDA when present).
        output: Checkpoint path (metrics JSON beside it).
        **recipe_fields: Recipe fields as keywords (``epochs=2``, ``method="trades"``, ...).

    Returns:
        Scores, measurement, candidate, data set, method, epochs, training time and checkpoint path.
    """
    from dse.candidate import load_candidate_file
    from dse.pipeline import EvalOverrides, data_options, train_to_checkpoint
    from dse.training import default_recipe

    if isinstance(candidate, Mapping):
        spec, sections = dict(candidate), {"data": {}, "recipe": {}, "eval": {}}
    else:
        cf = load_candidate_file(candidate)
        spec, sections = cf.candidate, {k: cf.section(k) for k in ("data", "recipe", "eval")}
    from dse.models import validate_candidate

    validate_candidate(spec)
    opts = data_options({**sections["data"], **(data or {})})
    fitted = default_recipe(opts["dataset"], **{**sections["recipe"], **(recipe or {}), **recipe_fields})
    settings = EvalOverrides().settings(opts["dataset"], {**sections["eval"], **(eval or {})})
    return train_to_checkpoint(spec, data=opts, recipe=fitted, settings=settings, device=device, output=output)


def evaluate(checkpoint: str | os.PathLike[str], *, suite: str | None = None, split: str = "test", curves: bool = False,
             checks: bool = True, max_samples: int | None = None, device: str | None = None,
             output: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Scores a checkpoint again, as ``dse eval`` does: every objective, an attack ``suite``
    (``quick``/``standard``/``strong``), gradient-masking checks, optional curves; writes JSON
    beside the checkpoint (or to ``output``) and returns the result."""
    from dse.pipeline import EvalOverrides, evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, overrides=EvalOverrides(max_samples=max_samples, suite=suite), split=split,
                               curves=curves, checks=checks, device=device, output=output)


def profile_candidate(candidate: str | os.PathLike[str] | Mapping[str, Any], *, dataset: str = "digits", layers: bool = False,
                      seed: int = 0) -> dict[str, Any]:
    """Params, MACs, BOPS and sizes of a candidate (a file or a spec), without training; ``seed``
    seeds the initial weights (``compressed_bytes`` depends on them), as ``dse profile --seed``."""
    from dse.candidate import load_candidate_file
    from dse.pipeline import profile_candidate as count

    spec = dict(candidate) if isinstance(candidate, Mapping) else load_candidate_file(candidate).candidate
    return count(spec, dataset, layers=layers, seed=seed)
