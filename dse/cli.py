"""The ``dse`` command line: argparse only (parse, call, print).

(Over 400 lines: every command's argparse definition, each flag with its help text, in one place.)

Commands: ``profile``, ``train``, ``eval``, ``transfer`` (:mod:`dse.pipeline`); ``run``, ``resume``,
``report``, ``export``, ``rescore`` (:mod:`dse.study`, :mod:`dse.report`).

Errors in user input (files, keys, values) print one line ``dse: error: ...`` to stderr and
exit with code 2. With ``--json`` the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dse.data import DATASETS
from dse.errors import DataError, DseError, read_yaml_mapping
from dse.flags import (
    fraction,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
    storage_url,
    torch_device,
    trial_list,
)
from dse.inputs import check_data_options, named, read_candidate
from dse.pipeline import (
    DEFAULT_DATA_ROOT,
    EvalOverrides,
    data_options,
    evaluate_checkpoint,
    profile_candidate,
    train_to_checkpoint,
    transfer_between,
)
from dse.training import METHODS, default_recipe
from dse.version import VERSION

__all__ = ["main"]

logger = logging.getLogger("dse")



def _add_candidate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("candidate", nargs="?", help="candidate YAML file (flat keys, optional recipe/data/eval sections)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="set a candidate key")
    p.add_argument("--dataset", choices=DATASETS, help="data set (default: the file's data.dataset, else digits)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help=f"directory of CIFAR files (default: $DSE_DATA_ROOT or {DEFAULT_DATA_ROOT})")
    p.add_argument("--subset", type=positive_int, help="at most N examples per split (stratified, seeded)")
    p.add_argument("--val-fraction", type=fraction, help="fraction of the training data held out for validation")
    p.add_argument("--download", action="store_true", help="download CIFAR from its official location if missing")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-attack", choices=("pgd", "fgsm", "bim"),
                   help="evaluation attack (default pgd; fgsm is plain FGSM, without a random start)")
    p.add_argument("--eval-eps", type=positive_float, help="evaluation attack eps (default: 8/255 for CIFAR, 0.1 for digits)")
    p.add_argument("--eval-steps", type=positive_int, help="evaluation attack steps (default 20)")
    p.add_argument("--eval-step-size", type=positive_float, help="evaluation attack step size")
    p.add_argument("--eval-restarts", type=positive_int, help="evaluation attack random restarts")
    p.add_argument("--eval-samples", type=positive_int, help="evaluate on at most N test samples")
    p.add_argument("--device", type=torch_device, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def _add_suite_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    from dse.robust.suites import SUITES

    p.add_argument(
        "--suite", choices=tuple(SUITES), default=default,
        help=f"attack suite, robust accuracy = worst case per sample (default: {default or 'the checkpoint eval suite, else quick'})",
    )
    p.add_argument("--cascade", action="store_true", help="run each attack only on samples still robust (faster)")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")


class _BadFlag(Exception):
    """A flag argparse refused (its message, without argparse's usage block)."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors raised, so ``main`` prints them as one ``dse: error:`` line, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        raise _BadFlag(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dse", description="Design-space explorer for robust compact CNNs.")
    parser.add_argument("--version", action="version", version=f"dse {VERSION}")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="debug logging, and Ray's and Optuna's own messages")
    noise.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("profile", help="params and MACs of one candidate, without training")
    _add_candidate_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--layers", action="store_true", help="also list every conv/linear layer")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the initial weights, which compressed_bytes depends on (default 0; recorded in the output)")

    p = sub.add_parser("train", help="train one candidate with a recipe and score every objective")
    _add_candidate_args(p)
    _add_data_args(p)
    p.add_argument("--recipe", help="recipe YAML file (overrides the candidate file's recipe section)")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--seed", type=non_negative_int)
    p.add_argument("-o", "--output", type=output_file, help="checkpoint path (default: runs/train/<name>.pt); metrics go beside it as .json")
    _add_eval_args(p)

    for name, text in (("run", "launch a study"), ("resume", "continue an interrupted study")):
        p = sub.add_parser(name, help=text)
        p.add_argument("study", help="study YAML file")
        p.add_argument("--n-trials", type=positive_int, help="total number of finished trials to reach (overrides budget.n_trials)")
        p.add_argument("--storage", type=storage_url, help="Optuna storage URL (default: the file's storage, else sqlite under runs/NAME)")
        p.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
        p.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        if name == "resume":
            p.add_argument("--retry-failed", action="store_true",
                           help="train again the candidates of trials that failed (a lost worker, memory, a bug fixed since); "
                                "their failures stop counting against the budget")

    p = sub.add_parser("report", help="write the study's HTML report (Pareto fronts, hypervolume, dynamics, table)")
    p.add_argument("study", help="study YAML file")
    p.add_argument("--storage", type=storage_url, help="Optuna storage URL (default: the file's storage, else sqlite under runs/NAME)")
    p.add_argument("-o", "--output", type=output_file, help="HTML path (default: runs/NAME/report.html)")
    p.add_argument("--trials", type=trial_list, help="comma-separated trial numbers whose per-epoch dynamics to plot (default: Pareto set)")
    p.add_argument("--png", action="store_true", help="also write PNGs (needs kaleido and a Chromium)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    p = sub.add_parser("export", help="write a chosen trial as a candidate file for dse train")
    p.add_argument("study", help="study YAML file")
    p.add_argument("--storage", type=storage_url, help="Optuna storage URL (default: the file's storage, else sqlite under runs/NAME)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--trial", type=non_negative_int, help="trial number")
    group.add_argument("--pick", help="knee | best:OBJECTIVE")
    p.add_argument("-o", "--output", type=output_file, required=True, help="candidate YAML to write")
    p.add_argument("--full", action="store_true",
                   help="hold the data set's full-training recipe (keeping the study's attack) instead of the short search recipe")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    p = sub.add_parser("export-model", help="export a checkpoint to ONNX and check it with onnxruntime (needs the onnx extra)")
    p.add_argument("checkpoint", help="a dse checkpoint (.pt)")
    p.add_argument("-o", "--output", type=output_file, required=True, help="ONNX file to write")
    p.add_argument("--opset", type=positive_int, help="ONNX opset, 11 to 21 (default 20)")
    p.add_argument("--samples", type=positive_int, help="test samples to compare torch and onnxruntime on (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    p = sub.add_parser("dashboard", help="serve optuna-dashboard on the study (needs the dashboard extra)")
    p.add_argument("study", help="study YAML file")
    p.add_argument("--storage", type=storage_url, help="Optuna storage URL (default: the file's storage, else sqlite under runs/NAME)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=8080, help="port (default 8080)")

    p = sub.add_parser("eval", help="score a checkpoint again: an attack suite, gradient-masking checks, curves")
    p.add_argument("checkpoint")
    _add_data_args(p)
    p.add_argument("--split", choices=("test", "val"), default="test", help="samples to score (default test)")
    _add_suite_args(p)
    p.add_argument("--curves", action="store_true", help="also the eps curve and step-size convergence curves")
    p.add_argument("-o", "--output", type=output_file, help="JSON file to write (default: beside the checkpoint, NAME.eval-SUITE.json)")
    _add_eval_args(p)

    p = sub.add_parser("rescore", help="re-score a study's Pareto set with a stronger suite (and curves, transfer)")
    p.add_argument("study", help="study YAML file")
    p.add_argument("--storage", type=storage_url, help="Optuna storage URL (default: the file's storage, else sqlite under runs/NAME)")
    _add_suite_args(p, default="standard")
    p.add_argument("--split", choices=("test", "val"), default="val", help="samples to re-score on (default val: the search's)")
    p.add_argument("--trials", type=trial_list, help="comma-separated trial numbers (default: the Pareto set)")
    p.add_argument("--no-curves", action="store_true", help="skip the eps and step-size curves")
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer matrix between the re-scored models")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the HTML report")
    p.add_argument("--eval-samples", type=positive_int, help="attack at most N samples (default: the study's eval.max_samples)")
    p.add_argument("--device", type=torch_device, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    p = sub.add_parser("transfer", help="transfer attacks between checkpoints: accuracy matrix and vulnerability")
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoints trained on the same data set")
    _add_data_args(p)
    p.add_argument("--split", choices=("test", "val"), default="test", help="samples to score (default test)")
    p.add_argument("-o", "--output", type=output_file, help="JSON file to write (default: transfer.json beside the first checkpoint)")
    _add_eval_args(p)
    return parser


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--dataset``/``--data-root``/``--subset``/``--val-fraction`` as ``data`` section overrides."""
    flags = (("dataset", "dataset"), ("data_root", "root"), ("subset", "subset"), ("val_fraction", "val_fraction"))
    return {key: getattr(args, flag, None) for flag, key in flags}


def _eval_overrides(args: argparse.Namespace) -> EvalOverrides:
    """The ``--eval-*``, ``--suite`` and ``--cascade`` flags (``--eval-eps`` alone: step size eps/4)."""
    attack = {
        key: getattr(args, flag)
        for flag, key in (("eval_eps", "eps"), ("eval_steps", "steps"), ("eval_step_size", "step_size"), ("eval_restarts", "restarts"))
        if getattr(args, flag, None) is not None
    }
    if args.eval_eps is not None and args.eval_step_size is None:
        attack["step_size"] = args.eval_eps / 4
    if getattr(args, "eval_attack", None) is not None:
        attack["name"] = args.eval_attack
        if args.eval_attack == "fgsm":
            attack["random_start"] = False  # FGSM as the papers use it, not FGSM-RS
    return EvalOverrides(attack=attack, max_samples=args.eval_samples, suite=getattr(args, "suite", None),
                         cascade=getattr(args, "cascade", False))


def _finite_json(value: Any) -> Any:
    """``value`` with every non-finite float as None, so ``--json`` prints valid JSON (no bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(_finite_json(result), default=float, allow_nan=False) + "\n")
        return
    for key, value in result.items():
        if isinstance(value, (dict, list)):
            continue
        sys.stdout.write(f"{key:>18}: {value}\n")


def _cmd_profile(args: argparse.Namespace) -> dict[str, Any]:
    cf = read_candidate(args.candidate, args.sets)
    section = named(args.candidate, data_options, named(args.candidate, cf.section, "data"))
    result = profile_candidate(cf.candidate, args.dataset or section["dataset"], layers=args.layers, seed=args.seed)
    if args.layers and not args.json:
        for layer in result["layers"]:
            sys.stdout.write(f"{layer['name']:<28} {layer['kind']:<15} {layer['params']:>9} {layer['macs']:>11}\n")
    return result


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    """Every input (candidate file and its sections, recipe file, flags, data folder, output path)
    is checked before :func:`train_to_checkpoint` writes or trains anything."""
    from dse.study.values import check_sections

    cf = read_candidate(args.candidate, args.sets)
    where = args.candidate
    section = named(where, cf.section, "data")
    named(where, check_data_options, named(where, data_options, section), default_root=DEFAULT_DATA_ROOT, download=True)  # the file's own values
    opts = data_options(section, **_data_overrides(args))
    check_data_options(opts, default_root=DEFAULT_DATA_ROOT, download=args.download)
    recipe_fields = named(where, cf.section, "recipe")
    named(where, default_recipe, opts["dataset"], **recipe_fields)
    if args.recipe:
        recipe_file = read_yaml_mapping(args.recipe, "recipe")
        check_sections({"recipe": recipe_file}, args.recipe)
        named(args.recipe, default_recipe, opts["dataset"], **recipe_file)
        recipe_fields.update(recipe_file)
    for flag in ("method", "epochs", "batch_size", "lr", "seed"):
        value = getattr(args, flag)
        if value is not None:
            recipe_fields[flag] = value
    recipe = default_recipe(opts["dataset"], **recipe_fields)
    eval_section = named(where, cf.section, "eval")
    named(where, EvalOverrides().settings, opts["dataset"], eval_section)
    settings = _eval_overrides(args).settings(opts["dataset"], eval_section)
    return train_to_checkpoint(
        cf.candidate, data=opts, recipe=recipe, settings=settings, device=args.device, download=args.download, output=args.output
    )


def _cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return evaluate_checkpoint(
            args.checkpoint, overrides=_eval_overrides(args), split=args.split, curves=args.curves, checks=not args.no_checks,
            device=args.device, data=_data_overrides(args), download=args.download, output=args.output,
        )
    except DseError as err:
        if str(err).startswith("candidate: "):  # the checkpoint's candidate: name the file
            raise type(err)(f"{args.checkpoint}: {err}") from None
        raise


def _cmd_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from dse.checkpoint import load_checkpoint

    for path in args.checkpoints:  # every file is a loadable checkpoint before any data is read
        load_checkpoint(path)
    return transfer_between(
        args.checkpoints, overrides=_eval_overrides(args), split=args.split, device=args.device,
        data=_data_overrides(args), download=args.download, output=args.output,
    )


def _cmd_rescore(args: argparse.Namespace) -> dict[str, Any]:
    from dse.study.rescore import rescore_study

    config = _study(args)
    trials = args.trials
    result = rescore_study(
        config, suite=args.suite, storage=args.storage, trials=trials, split=args.split, cascade=args.cascade,
        checks=not args.no_checks, curves=not args.no_curves, transfer=not args.no_transfer,
        max_samples=args.eval_samples, device=args.device,
    )
    if not args.no_report:
        result["report"] = str(_write_report(config, args.storage))
    return result


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    """Progress goes to stderr through the ``dse`` logger (stdout stays for results); Optuna's and
    Ray's own messages only with ``-v``; ``-q`` leaves errors and warnings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")  # Ray Tune's own console output too
    logging.getLogger("ray").setLevel(logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.set_name("dse-cli")
    logger.handlers = [h for h in logger.handlers if h.get_name() != "dse-cli"] + [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _study(args: argparse.Namespace):
    from dse.study.config import load_study_config

    return load_study_config(args.study)


def _write_report(config, storage: str | None, output: str | None = None, selected=None, png: bool = False,
                  study_file: str | None = None, tables=None) -> Path:
    from dse.report import write_report
    from dse.study.tables import load_tables

    trials, epochs, meta = tables if tables is not None else load_tables(config, storage)
    if study_file:
        meta["study_file"] = study_file  # the recommended panel's commands name it
    path = Path(output) if output else config.out_dir() / "report.html"
    write_report(trials, epochs, meta, path, selected=selected, png_dir=path.parent / "png" if png else None)
    return path


def _cmd_run(args: argparse.Namespace, *, resume: bool = False) -> dict[str, Any]:
    from dse.study.runner import run_study

    config = _study(args)
    from dse.study.preflight import check_runnable

    check_runnable(config, where=args.study, address=args.address)
    outcome = run_study(config, n_trials=args.n_trials, storage=args.storage, address=args.address, resume=resume,
                          retry=getattr(args, "retry_failed", False))
    result = dict(outcome)
    from dse.study.summary import pareto_table
    from dse.study.tables import load_tables

    tables = load_tables(config, args.storage)  # read once: the report and the Pareto table
    if not args.no_report:
        result["report"] = str(_write_report(config, args.storage, study_file=args.study, tables=tables))
    for line in pareto_table(tables[0], config):
        logger.info("%s", line.replace("STUDY", args.study))
    stopped = f", {result['stopped']} stopped early (saving {result['epochs_saved']} epochs)" if config.scheduler.name != "fifo" else ""
    logger.info(
        "study %s: %d complete%s, %d failed%s, Pareto set of %d; table %s%s",
        config.name, result["complete"], stopped, result["failed"],
        f" ({result['retried']} earlier failures retried)" if result.get("retried") else "", result["pareto"], result["table"],
        f"; report {result['report']}" if "report" in result else "",
    )
    if result["failed"]:
        logger.warning("%d trial(s) failed; their errors are in the table's error column. Once the cause is fixed, "
                       "`dse resume %s --retry-failed` trains their candidates again", result["failed"], args.study)
    return result


def _cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    config = _study(args)
    if args.png:  # a requested output that cannot be written is an error, before anything is written
        import importlib.util

        if importlib.util.find_spec("kaleido") is None:
            raise DataError("--png: kaleido is not installed (pip install kaleido; it also needs a Chromium)")
    path = _write_report(config, args.storage, args.output, args.trials, args.png, study_file=args.study)
    return {"report": str(path)}


def _cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from dse.study.export import export_trial

    return export_trial(_study(args), args.output, storage=args.storage, trial=args.trial, pick=args.pick, full=args.full)


def _cmd_export_model(args: argparse.Namespace) -> dict[str, Any]:
    from dse.deploy import export_onnx

    result = export_onnx(args.checkpoint, args.output, opset=args.opset, samples=args.samples)
    logger.info("%s: %s, opset %s; onnxruntime agrees with torch on %.2f%% of %d test samples (max |logit diff| %.2g)",
                result["output"], result["quantization"], result["opset"], 100 * result["agreement"], result["samples"],
                result["max_abs_diff"])
    return result


def _cmd_dashboard(args: argparse.Namespace) -> dict[str, Any]:
    from dse.study.dashboard import serve_dashboard

    serve_dashboard(_study(args), storage=args.storage, host=args.host, port=args.port)
    return {}


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
    "dashboard": _cmd_dashboard,
    "export-model": _cmd_export_model,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dse`` console script."""
    try:
        args = _parser().parse_args(argv)
    except _BadFlag as err:
        sys.stderr.write(f"dse: error: {err} (see `dse --help`)\n")
        return 2
    _setup_logging(args.verbose, args.quiet)
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
