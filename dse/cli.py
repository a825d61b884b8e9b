"""The ``dse`` command line: ``profile``, ``train`` and ``eval``.

Errors in user input (files, keys, values) print one line ``dse: error: ...`` to stderr and
exit with code 2. With ``--json`` the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dse.errors import DseError, SpecError
from dse.errors import read_yaml_mapping
from dse.candidate import CandidateFile, load_candidate_file
from dse.checkpoint import load_checkpoint, save_checkpoint
from dse.data import DATASETS, dataset_spec, load_dataset
from dse.compress.keys import training_hooks
from dse.models import build_model, validate_candidate
from dse.profile import profile_model
from dse.training import Recipe, default_recipe, eval_settings, resolve_device, seed_everything, train
from objectives import EvalSettings, evaluate_objectives, measurement

__all__ = ["main"]

logger = logging.getLogger("dse")

DEFAULT_DATA_ROOT = os.environ.get("DSE_DATA_ROOT", str(Path.home() / ".cache" / "dse" / "data"))


def _add_candidate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("candidate", nargs="?", help="candidate YAML file (flat keys, optional recipe/data/eval sections)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="set a candidate key")
    p.add_argument("--dataset", choices=DATASETS, help="data set (default: the file's data.dataset, else digits)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help=f"directory of CIFAR files (default: $DSE_DATA_ROOT or {DEFAULT_DATA_ROOT})")
    p.add_argument("--subset", type=int, help="at most N examples per split (stratified, seeded)")
    p.add_argument("--val-fraction", type=float, help="fraction of the training data held out for validation")
    p.add_argument("--download", action="store_true", help="download CIFAR from its official location if missing")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-eps", type=float, help="evaluation attack eps (default: 8/255 for CIFAR, 0.1 for digits)")
    p.add_argument("--eval-steps", type=int, help="evaluation attack steps (default 20)")
    p.add_argument("--eval-step-size", type=float, help="evaluation attack step size")
    p.add_argument("--eval-restarts", type=int, help="evaluation attack random restarts")
    p.add_argument("--eval-samples", type=int, help="evaluate on at most N test samples")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def _add_suite_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    from dse.robust.suites import SUITES

    p.add_argument(
        "--suite", choices=tuple(SUITES), default=default,
        help=f"attack suite, robust accuracy = worst case per sample (default: {default or 'the checkpoint eval suite, else quick'})",
    )
    p.add_argument("--cascade", action="store_true", help="run each attack only on samples still robust (faster)")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dse", description="Design-space explorer for robust compact CNNs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="params and MACs of one candidate, without training")
    _add_candidate_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--layers", action="store_true", help="also list every conv/linear layer")

    p = sub.add_parser("train", help="train one candidate with a recipe and score every objective")
    _add_candidate_args(p)
    _add_data_args(p)
    p.add_argument("--recipe", help="recipe YAML file (overrides the candidate file's recipe section)")
    p.add_argument("--method", choices=("natural", "pgd_at", "trades", "fast_at"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("-o", "--output", help="checkpoint path (default: runs/train/<name>.pt); metrics go beside it as .json")
    _add_eval_args(p)

    for name, text in (("run", "launch a study"), ("resume", "continue an interrupted study")):
        p = sub.add_parser(name, help=text)
        p.add_argument("study", help="study YAML file")
        p.add_argument("--n-trials", type=int, help="total number of finished trials to reach (overrides budget.n_trials)")
        p.add_argument("--storage", help="Optuna storage URL (default: the file's storage, else sqlite under runs/NAME)")
        p.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
        p.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    p = sub.add_parser("report", help="write the study's HTML report (Pareto fronts, hypervolume, dynamics, table)")
    p.add_argument("study")
    p.add_argument("--storage")
    p.add_argument("-o", "--output", help="HTML path (default: runs/NAME/report.html)")
    p.add_argument("--trials", help="comma-separated trial numbers whose per-epoch dynamics to plot (default: Pareto set)")
    p.add_argument("--png", action="store_true", help="also write PNGs (needs kaleido and a Chromium)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="write a chosen trial as a candidate file for dse train")
    p.add_argument("study")
    p.add_argument("--storage")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--trial", type=int, help="trial number")
    group.add_argument("--pick", help="knee | best:OBJECTIVE")
    p.add_argument("-o", "--output", required=True, help="candidate YAML to write")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("eval", help="score a checkpoint again: an attack suite, gradient-masking checks, curves")
    p.add_argument("checkpoint")
    _add_data_args(p)
    p.add_argument("--split", choices=("test", "val"), default="test")
    _add_suite_args(p)
    p.add_argument("--curves", action="store_true", help="also the eps curve and step-size convergence curves")
    p.add_argument("-o", "--output", help="JSON file to write (default: beside the checkpoint, NAME.eval-SUITE.json)")
    _add_eval_args(p)

    p = sub.add_parser("rescore", help="re-score a study's Pareto set with a stronger suite (and curves, transfer)")
    p.add_argument("study")
    p.add_argument("--storage")
    _add_suite_args(p, default="standard")
    p.add_argument("--split", choices=("test", "val"), default="val", help="samples to re-score on (default val: the search's)")
    p.add_argument("--trials", help="comma-separated trial numbers (default: the Pareto set)")
    p.add_argument("--no-curves", action="store_true", help="skip the eps and step-size curves")
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer matrix between the re-scored models")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the HTML report")
    p.add_argument("--eval-samples", type=int, help="attack at most N samples (default: the study's eval.max_samples)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    p = sub.add_parser("transfer", help="transfer attacks between checkpoints: accuracy matrix and vulnerability")
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoints trained on the same data set")
    _add_data_args(p)
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("-o", "--output", help="JSON file to write (default: transfer.json beside the first checkpoint)")
    _add_eval_args(p)
    return parser


def _data_options(args: argparse.Namespace, section: dict[str, Any]) -> dict[str, Any]:
    opts = {"dataset": "digits", "root": None, "subset": None, "val_fraction": 0.1, "seed": 0}
    unknown = set(section) - set(opts)
    if unknown:
        raise SpecError(f"data: {sorted(unknown)[0]}: unknown key (known: {', '.join(opts)})")
    opts.update(section)
    for flag, key in (("dataset", "dataset"), ("data_root", "root"), ("subset", "subset"), ("val_fraction", "val_fraction")):
        value = getattr(args, flag, None)
        if value is not None:
            opts[key] = value
    if opts["dataset"] not in DATASETS:
        raise SpecError(f"data: dataset: unknown {opts['dataset']!r} (known: {', '.join(DATASETS)})")
    return opts


def _load_data(opts: dict[str, Any], download: bool):
    root = opts["root"] or DEFAULT_DATA_ROOT
    return load_dataset(
        opts["dataset"],
        root=root if opts["dataset"] != "digits" else None,
        subset=opts["subset"],
        val_fraction=opts["val_fraction"],
        seed=opts["seed"],
        download=download,
    )


def _eval_settings(args: argparse.Namespace, dataset: str, section: dict[str, Any]) -> EvalSettings:
    attack = {
        key: getattr(args, flag)
        for flag, key in (("eval_eps", "eps"), ("eval_steps", "steps"), ("eval_step_size", "step_size"), ("eval_restarts", "restarts"))
        if getattr(args, flag, None) is not None
    }
    if args.eval_eps is not None and args.eval_step_size is None:
        attack["step_size"] = args.eval_eps / 4
    try:
        return eval_settings(dataset, section, attack=attack, max_samples=args.eval_samples)
    except SpecError as err:
        raise SpecError(f"eval: {err}") from err


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, default=float) + "\n")
        return
    for key, value in result.items():
        if isinstance(value, (dict, list)):
            continue
        sys.stdout.write(f"{key:>18}: {value}\n")


def _cmd_profile(args: argparse.Namespace) -> dict[str, Any]:
    cf = load_candidate_file(args.candidate, args.sets)
    name = args.dataset or cf.section("data").get("dataset", "digits")
    spec = dataset_spec(name)
    model = build_model(cf.candidate, in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)
    prof = profile_model(model, in_channels=spec.in_channels, image_size=spec.image_size)
    result: dict[str, Any] = {
        "candidate": cf.candidate,
        "dataset": name,
        "input": [spec.in_channels, spec.image_size, spec.image_size],
        "params": prof["params"],
        "macs": prof["macs"],
        "params_M": round(prof["params"] / 1e6, 4),
        "macs_M": round(prof["macs"] / 1e6, 4),
        "lipschitz_bound": _lipschitz_bound_or_none(model),
    }
    result.update(_compression_costs(model, spec))
    if args.layers:
        result["layers"] = prof["layers"]
        if not args.json:
            for layer in prof["layers"]:
                sys.stdout.write(f"{layer['name']:<28} {layer['kind']:<15} {layer['params']:>9} {layer['macs']:>11}\n")
    return result


def _lipschitz_bound_or_none(model) -> float | None:
    """Eq. 5 is defined for inverted-residual networks only."""
    from objectives import OBJECTIVES

    try:
        return OBJECTIVES["lipschitz_bound"].fn(model, None, None)
    except ValueError:
        return None


def _compression_costs(model, spec) -> dict[str, Any]:
    """BOPS, bit-packed and DEFLATE-compressed size, and measured sparsity of one model."""
    from dse.data import Split
    from objectives._compression import bops, compressed_bytes, size_bytes, sparsity

    probe = Split(x=torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size), y=torch.zeros(1, dtype=torch.long))
    return {
        "bops": bops(model, probe, None),
        "size_bytes": size_bytes(model, probe, None),
        "compressed_bytes": compressed_bytes(model, probe, None),
        "sparsity": sparsity(model, probe, None),
    }


def _score(model, data, settings: EvalSettings, split: str) -> dict[str, Any]:
    start = time.perf_counter()
    scores = evaluate_objectives(model, data, settings)
    return {
        **scores,
        "split": split,
        "measurement": measurement(settings, data),
        "eval_seconds": round(time.perf_counter() - start, 2),
    }


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    cf = load_candidate_file(args.candidate, args.sets)
    opts = _data_options(args, cf.section("data"))
    recipe_fields = cf.section("recipe")
    if args.recipe:
        recipe_fields.update(read_yaml_mapping(args.recipe, "recipe"))
    for flag in ("method", "epochs", "batch_size", "lr", "seed"):
        value = getattr(args, flag)
        if value is not None:
            recipe_fields[flag] = value
    recipe = default_recipe(opts["dataset"], **recipe_fields)
    settings = _eval_settings(args, opts["dataset"], cf.section("eval"))
    dataset = _load_data(opts, args.download)
    device = resolve_device(args.device)
    seed_everything(recipe.seed)
    spec = dataset.spec
    model = build_model(cf.candidate, in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)
    logger.info(
        "training %s on %s (%d train / %d val / %d test) with %s for %d epochs on %s",
        cf.candidate, spec.name, len(dataset.train), len(dataset.val) if dataset.val else 0, len(dataset.test),
        recipe.method, recipe.epochs, device,
    )
    start = time.perf_counter()
    hooks = training_hooks(model, validate_candidate(cf.candidate).compression, recipe.epochs)
    history = train(model, dataset, recipe, eval_settings=settings, device=device, hooks=hooks)
    train_seconds = time.perf_counter() - start
    scores = _score(model, dataset.test.to(device), settings, "test")
    name = f"{cf.candidate['arch']}-{recipe.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(args.output) if args.output else Path("runs") / "train" / f"{name}.pt"
    result = {
        **scores,
        "candidate": cf.candidate,
        "dataset": spec.name,
        "method": recipe.method,
        "epochs": recipe.epochs,
        "train_seconds": round(train_seconds, 2),
        "checkpoint": str(out),
    }
    save_checkpoint(
        out,
        model,
        candidate=cf.candidate,
        data={**opts, "root": str(opts["root"]) if opts["root"] else None},
        recipe=recipe.model_dump(mode="json"),
        eval=settings.to_dict(),
        history=history,
        metrics={k: v for k, v in result.items() if isinstance(v, (int, float, str))},
    )
    out.with_suffix(".json").write_text(json.dumps({**result, "history": history}, indent=2, default=float))
    return result


def _load_model(path: str | Path, args: argparse.Namespace):
    """A checkpoint's model on ``--device`` plus its payload and data options."""
    payload = load_checkpoint(path)
    saved = payload.get("data", {})
    opts = _data_options(args, {k: v for k, v in saved.items() if k != "root"} | {"root": saved.get("root")})
    dataset = _load_data(opts, getattr(args, "download", False))
    spec = dataset.spec
    model = build_model(payload["candidate"], in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise SpecError(f"{path}: weights do not fit the candidate: {str(err).splitlines()[0]}") from err
    device = resolve_device(args.device)
    channels_last = (payload.get("recipe") or {}).get("channels_last", True)
    model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return model.eval(), payload, opts, dataset


def _split(dataset, name: str):
    split = dataset.test if name == "test" else dataset.val
    if split is None:
        raise SpecError("--split val: the data set has no validation split (val_fraction is 0)")
    return split


def _with_suite(settings: EvalSettings, args: argparse.Namespace) -> EvalSettings:
    changes: dict[str, Any] = {}
    if getattr(args, "suite", None):
        changes["suite"] = args.suite
    if getattr(args, "cascade", False):
        changes["cascade"] = True
    return dataclasses.replace(settings, **changes) if changes else settings


def _write_json(path: Path, result: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return path


def _cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from dse.robust.robustness import robustness_report

    model, payload, opts, dataset = _load_model(args.checkpoint, args)
    settings = _with_suite(_eval_settings(args, opts["dataset"], dict(payload.get("eval") or {})), args)
    split = _split(dataset, args.split).to(next(model.parameters()).device)
    start = time.perf_counter()
    cache: dict[str, Any] = {}
    report = robustness_report(model, split, settings, curves=args.curves, checks=not args.no_checks, cache=cache)
    scores = evaluate_objectives(model, split, settings, cache=cache)
    result = {
        **scores,
        **report,
        "split": args.split,
        "eval_seconds": round(time.perf_counter() - start, 2),
        "lipschitz_measurement": measurement(settings, split)["lipschitz"],
        "candidate": payload["candidate"],
        "dataset": dataset.spec.name,
        "checkpoint": str(args.checkpoint),
    }
    suite = result["suite"] if isinstance(result["suite"], str) else "custom"
    ckpt = Path(args.checkpoint)
    result["output"] = str(_write_json(Path(args.output) if args.output else ckpt.with_name(f"{ckpt.stem}.eval-{suite}.json"), result))
    if result["masking_flags"]:
        logger.warning("gradient-masking checks failed: %s", ", ".join(result["masking_flags"]))
    return result


def _cmd_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from dse.robust.transfer import transfer_matrix

    if len(args.checkpoints) < 2:
        raise SpecError("checkpoints: a transfer matrix needs at least two")
    loaded = [(Path(path), *_load_model(path, args)) for path in args.checkpoints]
    names = [path.stem for path, *_ in loaded]
    if len(set(names)) < len(names):
        names = [str(path) for path, *_ in loaded]
    models = {name: model for name, (_, model, *_) in zip(names, loaded)}
    datasets = {(dataset.spec.name, len(dataset.test)) for *_, dataset in loaded}
    if len(datasets) > 1:
        raise SpecError(f"checkpoints: trained on different data sets {sorted(datasets)}")
    _, _, payload, opts, dataset = loaded[0]
    settings = _eval_settings(args, opts["dataset"], dict(payload.get("eval") or {}))
    split = _split(dataset, args.split)
    result = transfer_matrix(models, split, attack=settings.attack, batch_size=settings.batch_size,
                             max_samples=settings.max_samples, seed=settings.seed)
    result["checkpoints"] = [str(p) for p in args.checkpoints]
    output = Path(args.output) if args.output else Path(args.checkpoints[0]).with_name("transfer.json")
    result["output"] = str(_write_json(output, result))
    return result


def _cmd_rescore(args: argparse.Namespace) -> dict[str, Any]:
    from dse.study.rescore import rescore_study

    config = _study(args)
    trials = [int(t) for t in args.trials.split(",")] if args.trials else None
    result = rescore_study(
        config, suite=args.suite, storage=args.storage, trials=trials, split=args.split, cascade=args.cascade,
        checks=not args.no_checks, curves=not args.no_curves, transfer=not args.no_transfer,
        max_samples=args.eval_samples, device=args.device,
    )
    if not args.no_report:
        result["report"] = str(_write_report(config, args.storage))
    return result


def _setup_logging(verbose: bool) -> None:
    """Progress goes to stderr through the ``dse`` logger (stdout stays for results)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.set_name("dse-cli")
    logger.handlers = [h for h in logger.handlers if h.get_name() != "dse-cli"] + [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _study(args: argparse.Namespace):
    from dse.study.config import load_study_config

    return load_study_config(args.study)


def _write_report(config, storage: str | None, output: str | None = None, selected=None, png: bool = False) -> Path:
    from dse.report import write_report
    from dse.study.tables import load_tables

    trials, epochs, meta = load_tables(config, storage)
    path = Path(output) if output else config.out_dir() / "report.html"
    write_report(trials, epochs, meta, path, selected=selected, png_dir=path.parent / "png" if png else None)
    return path


def _cmd_run(args: argparse.Namespace, *, resume: bool = False) -> dict[str, Any]:
    from dse.study.runner import run_study

    config = _study(args)
    outcome = run_study(config, n_trials=args.n_trials, storage=args.storage, address=args.address, resume=resume)
    result = dict(outcome)
    if not args.no_report:
        result["report"] = str(_write_report(config, args.storage))
    logger.info(
        "study %s: %d complete, %d failed, Pareto set of %d; table %s%s",
        config.name, result["complete"], result["failed"], result["pareto"], result["table"],
        f"; report {result['report']}" if "report" in result else "",
    )
    return result


def _cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    config = _study(args)
    selected = [int(t) for t in args.trials.split(",")] if args.trials else None
    path = _write_report(config, args.storage, args.output, selected, args.png)
    return {"report": str(path)}


def _cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from dse.study.export import choose_trial, export_candidate
    from dse.study.tables import load_tables
    from dse.study.pareto import pareto_mask

    config = _study(args)
    trials, _, meta = load_tables(config, args.storage)
    if len(trials):
        trials["pareto"] = pareto_mask(trials, meta["objectives"]).to_numpy()
    number = choose_trial(trials, config, trial=args.trial, pick=args.pick)
    content = export_candidate(trials, config, number, args.output, storage=meta["storage"])
    return {"trial": number, "output": str(args.output), "scores": content["source"]["scores"]}


_COMMANDS = {
    "profile": _cmd_profile,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "run": _cmd_run,
    "resume": lambda args: _cmd_run(args, resume=True),
    "report": _cmd_report,
    "export": _cmd_export,
    "rescore": _cmd_rescore,
    "transfer": _cmd_transfer,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dse`` console script."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        result = _COMMANDS[args.command](args)
    except DseError as err:
        sys.stderr.write(f"dse: error: {err}\n")
        return 2
    except FloatingPointError as err:  # a run that diverged: not bad input, but still one clear line
        sys.stderr.write(f"dse: error: {err} (lower --lr or add recipe.warmup_epochs)\n")
        return 1
    _emit(result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
