"""From a candidate to a trained model and back: the one path that ``dse train``/``eval``/
``transfer``/``profile``, a Ray trial and ``dse rescore`` share.

(Over 400 lines: the one candidate-to-checkpoint-and-back path, kept in one module on purpose.)

* evaluation settings: :class:`EvalOverrides` (command-line flags over an ``eval`` section, see
  :func:`objectives.eval_settings`); the per-epoch validation callback is :mod:`dse.epoch_eval`'s;
* data: :func:`data_options` (a ``data`` section with overrides), :func:`load_data`,
  :func:`cached_dataset` (once per process), :func:`split_of`;
* candidate -> model -> trained model: :func:`build_for`, :func:`train_candidate`;
* candidate -> trained model -> checkpoint, scored on the test split: :func:`train_to_checkpoint`;
* checkpoint -> model: :func:`model_from_checkpoint` (plus its data: :func:`load_for_evaluation`);
* a checkpoint scored again: :func:`evaluate_checkpoint`, :func:`transfer_between`;
* a candidate's costs without training: :func:`profile_candidate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dse.checkpoint import load_checkpoint, save_checkpoint
from dse.compress.keys import training_hooks
from dse.data import DATASETS, Dataset, DataSpec, Split, dataset_spec, load_dataset
from dse.errors import DataError, SpecError, did_you_mean
from dse.io import atomic_write_text, check_writable
from dse.models import build_model, validate_candidate
from dse.profile import bops, compressed_bytes, profile_model, size_bytes, sparsity
from dse.epoch_eval import EvalLadder, epoch_evaluator, free_objectives
from dse.training import Recipe, resolve_device, seed_everything, train
from objectives import OBJECTIVES, EvalSettings, eval_settings, evaluate_objectives, measurement

__all__ = [
    "DEFAULT_DATA_ROOT",
    "EvalOverrides",
    "build_for",
    "cached_dataset",
    "data_options",
    "evaluate_checkpoint",

    "load_data",
    "load_for_evaluation",
    "model_from_checkpoint",
    "profile_candidate",
    "split_of",
    "train_candidate",
    "train_to_checkpoint",
    "transfer_between",
]

logger = logging.getLogger(__name__)

#: Where CIFAR files are looked for when a ``data`` section names no root.
DEFAULT_DATA_ROOT = os.environ.get("DSE_DATA_ROOT", str(Path.home() / ".cache" / "dse" / "data"))


_DATA_DEFAULTS = {"dataset": "digits", "root": None, "subset": None, "val_fraction": 0.1, "seed": 0}


# -------------------------------------------------------------------------- evaluation
@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalOverrides:
    """Evaluation changes asked for on the command line (attack fields, ``max_samples``, a
    ``suite``, ``cascade``), applied over a file's ``eval`` section."""

    attack: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    max_samples: int | None = None
    suite: str | None = None
    cascade: bool = False

    def settings(self, dataset: str, section: Mapping[str, Any] | None) -> EvalSettings:
        """The data set's default evaluation, updated by ``section``, then by these overrides.

        Raises:
            SpecError: ``eval: ...`` naming the bad key or value.
        """
        try:
            settings = eval_settings(dataset, dict(section or {}), attack=dict(self.attack), max_samples=self.max_samples)
        except SpecError as err:
            raise SpecError(f"eval: {err}") from err
        changes: dict[str, Any] = {}
        if self.suite:
            changes["suite"] = self.suite
        if self.cascade:
            changes["cascade"] = True
        return dataclasses.replace(settings, **changes) if changes else settings


# ------------------------------------------------------------------------------------- data
def data_options(section: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """A ``data`` section (candidate file or checkpoint) with defaults, then non-None ``overrides``.

    Raises:
        SpecError: An unknown key or data set, named.
    """
    opts = dict(_DATA_DEFAULTS)
    unknown = set(section) - set(opts)
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(f"data: {key}: unknown key{did_you_mean(key, opts)} (known: {', '.join(opts)})")
    opts.update(section)
    opts.update({k: v for k, v in overrides.items() if v is not None})
    if opts["dataset"] not in DATASETS:
        raise SpecError(f"data: dataset: unknown {opts['dataset']!r}{did_you_mean(opts['dataset'], DATASETS)} (known: {', '.join(DATASETS)})")
    return opts


def load_data(opts: Mapping[str, Any], *, download: bool = False) -> Dataset:
    """Loads the data set of :func:`data_options` (CIFAR under ``root`` or :data:`DEFAULT_DATA_ROOT`)."""
    root = (opts["root"] or DEFAULT_DATA_ROOT) if opts["dataset"] != "digits" else None
    return load_dataset(opts["dataset"], root=root, subset=opts["subset"], val_fraction=opts["val_fraction"],
                        seed=opts["seed"], download=download)


@lru_cache(maxsize=4)
def cached_dataset(dataset: str, root: str | None, subset: int | None, val_fraction: float, seed: int) -> Dataset:
    """A data set loaded once per process (a reused Ray actor keeps it between trials)."""
    return load_dataset(dataset, root=root, subset=subset, val_fraction=val_fraction, seed=seed)


def split_of(dataset: Dataset, name: str) -> Split:
    """The ``test`` or ``val`` split.

    Raises:
        SpecError: Another name, or ``val`` when the data set has no validation split.
    """
    if name not in ("val", "test"):
        raise SpecError(f"split: must be val or test, got {name!r}")
    split = dataset.test if name == "test" else dataset.val
    if split is None:
        raise SpecError("--split val: the data set has no validation split (val_fraction is 0)")
    return split


# ------------------------------------------------------------- candidate -> trained model
def build_for(candidate: Mapping[str, Any], spec: DataSpec) -> nn.Module:
    """The candidate's model for a data set's input shape, class count and normalisation."""
    return build_model(dict(candidate), in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)


def train_candidate(
    candidate: Mapping[str, Any],
    dataset: Dataset,
    recipe: Recipe,
    *,
    settings: EvalSettings,
    device: torch.device | str | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
    ladder: EvalLadder | None = None,
    free: Sequence[str] = (),
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Seeds, builds and trains a candidate (with its compression hooks).

    Args:
        candidate: The candidate spec.
        dataset: Train and validation splits.
        recipe: How to train.
        settings: The per-epoch validation evaluation (see :func:`epoch_evaluator`).
        device: Where to train (default: CUDA when present).
        callback: Called with each epoch's metrics.
        ladder: Cheaper evaluation at early-stopping rungs (see :class:`EvalLadder`).
        free: Objectives known before training (measured on the built model, passed to
            ``callback`` with every epoch as ``free_NAME``, so early stopping ranks on them).

    Returns:
        The trained model (in eval mode, on ``device``) and the per-epoch metrics.
    """
    seed_everything(recipe.seed)
    model = build_for(candidate, dataset.spec)
    hooks = training_hooks(model, validate_candidate(dict(candidate)).compression, recipe.epochs,
                           quant_recipe=recipe.quant, data=dataset.train, batch_size=recipe.batch_size,
                           admm_retrain_fraction=recipe.admm_retrain_fraction)
    known = {f"free_{k}": v for k, v in free_objectives(model, dataset.spec, free).items()}
    if known and callback is not None:
        inner = callback

        def callback(metrics: dict[str, float]) -> None:
            inner({**metrics, **known})

    evaluate = epoch_evaluator(settings, recipe, ladder=ladder)
    history = train(model, dataset, recipe, evaluate=evaluate, callback=callback, device=device, hooks=hooks)
    return model, history


def train_to_checkpoint(
    candidate: Mapping[str, Any],
    *,
    data: Mapping[str, Any],
    recipe: Recipe,
    settings: EvalSettings,
    device: str | None = None,
    download: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Trains a candidate, scores every objective on the test split, saves checkpoint and metrics.

    Args:
        candidate: The candidate spec.
        data: :func:`data_options`.
        recipe: How to train.
        settings: The evaluation (per epoch on validation samples, at the end on the test split).
        device: Torch device (default: CUDA when present).
        download: Download CIFAR if missing.
        output: Checkpoint path (default ``runs/train/ARCH-METHOD-TIME.pt``); metrics go beside it
            as ``.json``.

    Returns:
        Scores, measurement, candidate, data set, method, epochs, training time and checkpoint path.
    """
    name = f"{candidate['arch']}-{recipe.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(output) if output else Path("runs") / "train" / f"{name}.pt"
    check_writable(out, what="checkpoint")  # before the training, not after it
    check_writable(out.with_suffix(".json"), what="metrics")
    dataset = load_data(data, download=download)
    dev = resolve_device(device)
    logger.info(
        "training %s on %s (%d train / %d val / %d test) with %s for %d epochs on %s",
        dict(candidate), dataset.spec.name, len(dataset.train), len(dataset.val) if dataset.val else 0,
        len(dataset.test), recipe.method, recipe.epochs, dev,
    )
    start = time.perf_counter()
    model, history = train_candidate(candidate, dataset, recipe, settings=settings, device=dev)
    train_seconds = time.perf_counter() - start
    test = dataset.test.to(dev)
    start = time.perf_counter()
    scores = evaluate_objectives(model, test, settings)
    scores = {**scores, "split": "test", "measurement": measurement(settings, test),
              "eval_seconds": round(time.perf_counter() - start, 2)}
    result = {**scores, "candidate": dict(candidate), "dataset": dataset.spec.name, "method": recipe.method,
              "epochs": recipe.epochs, "train_seconds": round(train_seconds, 2), "checkpoint": str(out)}
    save_checkpoint(
        out, model, candidate=dict(candidate), data={**data, "root": str(data["root"]) if data["root"] else None},
        recipe=recipe.model_dump(mode="json"), eval=settings.to_dict(), history=history,
        metrics={k: v for k, v in result.items() if isinstance(v, (int, float, str))},
    )
    atomic_write_text(out.with_suffix(".json"), json.dumps({**result, "history": history}, indent=2, default=float))
    return result


# --------------------------------------------------------------------- checkpoint -> model
def model_from_checkpoint(
    path: str | os.PathLike[str], *, device: torch.device | str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint's model, in eval mode on ``device``, in the memory format it was trained in.

    Args:
        path: The checkpoint.
        device: Torch device (default: CUDA when present).

    Returns:
        The model and the checkpoint's payload (candidate, data, recipe, eval, history, metrics).

    Raises:
        DataError: Missing or not a dse checkpoint.
        SpecError: Weights that do not fit the candidate.
    """
    payload = load_checkpoint(path)
    spec = dataset_spec(data_options(payload.get("data") or {})["dataset"])
    model = build_for(payload["candidate"], spec)
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in payload["state_dict"].items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())}
    if bad:  # a diverged or corrupted model would otherwise be scored as if it were valid
        first = next(iter(bad))
        raise DataError(f"{path}: weights are not finite ({sum(bad.values())} NaN/inf values in {len(bad)} tensors, first {first})")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise SpecError(f"{path}: weights do not fit the candidate: {str(err).splitlines()[0]}") from err
    channels_last = (payload.get("recipe") or {}).get("channels_last", True)
    model.to(device=resolve_device(str(device) if device is not None else None),
             memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return model.eval(), payload


def load_for_evaluation(
    path: str | os.PathLike[str], *, device: str | None = None, data: Mapping[str, Any] | None = None, download: bool = False
) -> tuple[nn.Module, dict[str, Any], dict[str, Any], Dataset]:
    """A checkpoint's model and payload, its data options (with ``data`` overrides) and data set."""
    model, payload = model_from_checkpoint(path, device=device)
    opts = data_options(payload.get("data") or {}, **(data or {}))
    return model, payload, opts, load_data(opts, download=download)


def _write_json(path: Path, result: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(result, indent=1, default=float) + "\n")


def evaluate_checkpoint(
    path: str | os.PathLike[str],
    *,
    overrides: EvalOverrides | None = None,
    split: str = "test",
    curves: bool = False,
    checks: bool = True,
    device: str | None = None,
    data: Mapping[str, Any] | None = None,
    download: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Scores a checkpoint again: every objective, the robustness report (suite, masking checks,
    curves), written as JSON (default: beside the checkpoint, ``NAME.eval-SUITE.json``)."""
    from dse.robust.robustness import robustness_report

    if output:
        check_writable(output, what="eval output")  # before the evaluation, not after it
    model, payload, opts, dataset = load_for_evaluation(path, device=device, data=data, download=download)
    settings = (overrides or EvalOverrides()).settings(opts["dataset"], payload.get("eval"))
    samples = split_of(dataset, split).to(next(model.parameters()).device)
    start = time.perf_counter()
    cache: dict[str, Any] = {}
    report = robustness_report(model, samples, settings, curves=curves, checks=checks, cache=cache)
    scores = evaluate_objectives(model, samples, settings, cache=cache)
    result = {
        **scores,
        **report,
        "split": split,
        "eval_seconds": round(time.perf_counter() - start, 2),
        "lipschitz_measurement": measurement(settings, samples)["lipschitz"],
        "candidate": payload["candidate"],
        "dataset": dataset.spec.name,
        "checkpoint": str(path),
    }
    suite = result["suite"] if isinstance(result["suite"], str) else "custom"
    ckpt = Path(path)
    result["output"] = str(_write_json(Path(output) if output else ckpt.with_name(f"{ckpt.stem}.eval-{suite}.json"), result))
    if result["masking_flags"]:
        logger.warning("gradient-masking checks failed: %s", ", ".join(result["masking_flags"]))
    return result


def transfer_between(
    paths: Sequence[str | os.PathLike[str]],
    *,
    overrides: EvalOverrides | None = None,
    split: str = "test",
    device: str | None = None,
    data: Mapping[str, Any] | None = None,
    download: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Transfer attacks between two or more checkpoints trained on the same data set: accuracy
    matrix and vulnerability (see :func:`dse.robust.transfer.transfer_matrix`), written as JSON
    (default: ``transfer.json`` beside the first checkpoint).

    Raises:
        SpecError: Fewer than two checkpoints, or checkpoints trained on different data sets.
    """
    from dse.robust.transfer import transfer_matrix

    if len(paths) < 2:
        raise SpecError("checkpoints: a transfer matrix needs at least two")
    if output:
        check_writable(output, what="transfer output")
    loaded = [(Path(p), *load_for_evaluation(p, device=device, data=data, download=download)) for p in paths]
    names = [p.stem for p, *_ in loaded]
    if len(set(names)) < len(names):
        names = [str(p) for p, *_ in loaded]
    models = {name: model for name, (_, model, *_) in zip(names, loaded)}
    datasets = {(dataset.spec.name, len(dataset.test)) for *_, dataset in loaded}
    if len(datasets) > 1:
        raise SpecError(f"checkpoints: trained on different data sets {sorted(datasets)}")
    _, _, payload, opts, dataset = loaded[0]
    settings = (overrides or EvalOverrides()).settings(opts["dataset"], payload.get("eval"))
    result = transfer_matrix(models, split_of(dataset, split), attack=settings.attack, batch_size=settings.batch_size,
                             max_samples=settings.max_samples, seed=settings.seed)
    result["checkpoints"] = [str(p) for p in paths]
    result["output"] = str(_write_json(Path(output) if output else Path(paths[0]).with_name("transfer.json"), result))
    return result


# --------------------------------------------------------------------------- costs only
def profile_candidate(candidate: Mapping[str, Any], dataset: str, *, layers: bool = False, seed: int = 0) -> dict[str, Any]:
    """Params, MACs, Lipschitz bound, BOPS and sizes of a candidate's (untrained) model.

    Args:
        candidate: The candidate spec.
        dataset: The data set whose input shape and class count the model is built for.
        layers: Also list every conv/linear layer under ``layers``.
        seed: Seeds the initial weights, so ``compressed_bytes`` (which depends on the weight
            values) is the same on every call; the caller's random state is left as it was.
    """
    spec = dataset_spec(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_for(candidate, spec)
    prof = profile_model(model, in_channels=spec.in_channels, image_size=spec.image_size)
    try:  # seed 000's eq. 5 is defined for inverted-residual networks only
        bound = OBJECTIVES["lipschitz_bound"].fn(model, None, None)
    except ValueError:
        bound = None
    result: dict[str, Any] = {
        "candidate": dict(candidate),
        "dataset": dataset,
        "seed": seed,
        "input": [spec.in_channels, spec.image_size, spec.image_size],
        "params": prof["params"],
        "macs": prof["macs"],
        "params_M": round(prof["params"] / 1e6, 4),
        "macs_M": round(prof["macs"] / 1e6, 4),
        "lipschitz_bound": bound,
    }
    result.update(bops=bops(model, prof), size_bytes=size_bytes(model), compressed_bytes=compressed_bytes(model),
                  sparsity=sparsity(model))
    if layers:
        result["layers"] = prof["layers"]
    return result
