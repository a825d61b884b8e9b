"""Search efficiency of Optuna's multi-objective samplers on NAS-Bench-201 robustness (lookup, no training).

For each sampler (NSGA-II, NSGA-III, TPE, GP, random; seeded) and each objective setting, runs
plain Optuna ask/tell studies over the ``nb201`` search space, scoring each trial by looking up the
published results of Jung et al. (ICLR 2023), and prints, per sampler and setting, the median and
interquartile range over seeds of the hypervolume reached after 25, 50 and 100 trials, as a
fraction of the hypervolume of the true front (all 6,466 unique architectures), and the wall time.

Settings (all accuracies maximized, reference point 0):

* ``clean-pgd2``: ``nb201_clean_acc`` vs ``nb201_pgd_acc_2`` (PGD l_inf eps 2/255);
* ``clean-pgd2-square4``: also ``nb201_square_acc_4`` (Square l_inf eps 4/255);
* ``clean-pgd2-fgsm1`` (not run by default): ``nb201_clean_acc``, ``nb201_pgd_acc_2``, ``nb201_fgsm_acc_1``.

A sampler's duplicate suggestions are told the same value again, as in a user's study. GPSampler is
slow here (1 to 4 minutes per 100-trial study on 2 shared CPU cores, against well under a second for
the others), so it runs ``--gp-seeds`` seeds (default 3), as the table says.

Usage: ``python bench/search_efficiency.py [--seeds 10] [--trials 25,50,100] [--dataset cifar10]
[--root DIR] [--samplers nsga2,nsga3,tpe,gp,random] [--settings clean-pgd2,clean-pgd2-square4]``
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

from dse.study.samplers import ParetoLocalSearchSampler, RegularizedEvolutionSampler
from objectives._nb201 import NB201Table, evaluate_nb201
from search_spaces.nb201 import nb201

__all__ = [
    "DEFAULT_ROOT",
    "SAMPLERS",
    "SETTINGS",
    "Run",
    "Setting",
    "hypervolume",
    "main",
    "make_sampler",
    "run_benchmark",
    "run_study",
    "summarize",
]

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-robustness"
SAMPLERS: tuple[str, ...] = ("pls", "rea", "nsga2", "nsga3", "tpe", "gp", "random")
POPULATION_SIZE = 20


@dataclass(frozen=True)
class Setting:
    """Objectives (all maximized) and the hypervolume reference point."""

    name: str
    metrics: tuple[str, ...]
    reference: tuple[float, ...]


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("clean-pgd2", ("nb201_clean_acc", "nb201_pgd_acc_2"), (0.0, 0.0)),
        Setting("clean-pgd2-square4", ("nb201_clean_acc", "nb201_pgd_acc_2", "nb201_square_acc_4"), (0.0, 0.0, 0.0)),
        Setting("clean-pgd2-fgsm1", ("nb201_clean_acc", "nb201_pgd_acc_2", "nb201_fgsm_acc_1"), (0.0, 0.0, 0.0)),
    )
}
DEFAULT_SETTINGS = ("clean-pgd2", "clean-pgd2-square4")


@dataclass(frozen=True)
class Run:
    """One study: hypervolume fraction at each checkpoint and its wall time."""

    setting: str
    sampler: str
    seed: int
    fractions: dict[int, float]
    seconds: float


def hypervolume(values: np.ndarray, reference: Sequence[float]) -> float:
    """Exact hypervolume of maximized ``values`` ``[n, k]`` above ``reference`` (points not above it add 0).

    Uses Optuna's WFG implementation (``optuna._hypervolume.compute_hypervolume``) on the negated values.
    """
    values = np.asarray(values, dtype=float).reshape(-1, len(reference))
    ref = np.asarray(reference, dtype=float)
    values = values[np.all(values >= ref, axis=1) & np.all(np.isfinite(values), axis=1)]
    if len(values) == 0:
        return 0.0
    return float(compute_hypervolume(-values, -ref))


def make_sampler(name: str, seed: int, *, population_size: int = POPULATION_SIZE) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler by short name (``nsga2``, ``nsga3``, ``tpe``, ``gp``, ``random``)."""
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed),
        "nsga3": lambda: optuna.samplers.NSGAIIISampler(population_size=population_size, seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "pls": lambda: ParetoLocalSearchSampler(seed=seed),
        "rea": lambda: RegularizedEvolutionSampler(seed=seed),
    }
    if name not in factories:
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(factories)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return factories[name]()


def run_study(sampler: optuna.samplers.BaseSampler, setting: Setting, n_trials: int, *, root: Path, dataset: str) -> np.ndarray:
    """Runs one ask/tell study of ``n_trials``; returns the told values ``[n_trials, k]`` in order."""
    study = optuna.create_study(directions=["maximize"] * len(setting.metrics), sampler=sampler)
    told = np.empty((n_trials, len(setting.metrics)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i in range(n_trials):
            trial = study.ask()
            scores = evaluate_nb201(nb201(trial), setting.metrics, root=root, dataset=dataset)
            told[i] = [scores[m] for m in setting.metrics]
            study.tell(trial, list(told[i]))
    return told


def run_benchmark(
    *,
    root: Path = DEFAULT_ROOT,
    dataset: str = "cifar10",
    samplers: Sequence[str] = SAMPLERS,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    seeds: int = 10,
    gp_seeds: int | None = 3,
    trials: Sequence[int] = (25, 50, 100),
    population_size: int = POPULATION_SIZE,
) -> tuple[list[Run], dict[str, float]]:
    """Runs every (setting, sampler, seed) study.

    Args:
        root: The NB201 robustness data directory.
        dataset: ``cifar10`` or ``cifar100``.
        samplers: Names from :data:`SAMPLERS`.
        settings: Names from :data:`SETTINGS`.
        seeds: Seeds per sampler (0 .. seeds-1).
        gp_seeds: Seeds for ``gp`` (at most ``seeds``); ``None`` for ``seeds``.
        trials: Checkpoints; studies run ``max(trials)`` trials.
        population_size: NSGA-II/III population.

    Returns:
        The runs, and the true front's hypervolume per setting.
    """
    table = NB201Table(root, dataset=dataset)
    checkpoints = sorted(set(int(t) for t in trials))
    true_hv: dict[str, float] = {}
    runs: list[Run] = []
    for setting_name in settings:
        setting = SETTINGS[setting_name]
        true_hv[setting.name] = hypervolume(table.values(list(setting.metrics)), setting.reference)
        for sampler_name in samplers:
            n_seeds = min(seeds, gp_seeds) if sampler_name == "gp" and gp_seeds is not None else seeds
            for seed in range(n_seeds):
                start = time.perf_counter()
                told = run_study(
                    make_sampler(sampler_name, seed, population_size=population_size),
                    setting,
                    checkpoints[-1],
                    root=root,
                    dataset=dataset,
                )
                seconds = time.perf_counter() - start
                fractions = {t: hypervolume(told[:t], setting.reference) / true_hv[setting.name] for t in checkpoints}
                runs.append(Run(setting.name, sampler_name, seed, fractions, seconds))
                logger.info("%s %s seed %d: %s (%.1f s)", setting.name, sampler_name, seed, fractions, seconds)
    return runs, true_hv


def summarize(runs: Sequence[Run]) -> list[dict[str, object]]:
    """Per (setting, sampler): seeds, median and IQR of each checkpoint's fraction, mean seconds per study."""
    rows: list[dict[str, object]] = []
    keys = list(dict.fromkeys((r.setting, r.sampler) for r in runs))
    for setting, sampler in keys:
        group = [r for r in runs if r.setting == setting and r.sampler == sampler]
        row: dict[str, object] = {"setting": setting, "sampler": sampler, "seeds": len(group)}
        for t in group[0].fractions:
            q1, med, q3 = np.percentile([r.fractions[t] for r in group], [25, 50, 75])
            row[t] = (float(med), float(q1), float(q3))
        row["seconds"] = float(np.mean([r.seconds for r in group]))
        rows.append(row)
    return rows


def _format(runs: Sequence[Run], true_hv: dict[str, float], *, dataset: str, table: NB201Table) -> str:
    rows = summarize(runs)
    checkpoints = list(runs[0].fractions) if runs else []
    lines = [
        f"NAS-Bench-201 robustness ({dataset}, Jung et al. 2023): hypervolume after N trials as a fraction of the"
        f" true front's (all {len(table.unique_cells())} unique archs); median [IQR] over seeds",
    ]
    for name, hv in true_hv.items():
        setting = SETTINGS[name]
        front = table.values(list(setting.metrics))
        lines.append(f"  {name}: {' vs '.join(setting.metrics)}, ref {setting.reference}, true HV {hv:.4f}"
                     f" ({_front_size(front)} archs on the front)")
    header = f"{'setting':<20} {'sampler':<7} {'seeds':>5} " + " ".join(f"{'HV@' + str(t):>19}" for t in checkpoints)
    header += f" {'s/study':>8}"
    lines += ["", header, "-" * len(header)]
    for row in rows:
        cells = " ".join(f"{row[t][0]:.3f} [{row[t][1]:.3f},{row[t][2]:.3f}]" for t in checkpoints)  # type: ignore[index]
        lines.append(f"{row['setting']:<20} {row['sampler']:<7} {row['seeds']:>5} {cells} {row['seconds']:>8.2f}")
    lines.append("")
    lines.append("wall time per sampler (all settings and seeds): " + ", ".join(
        f"{s} {sum(r.seconds for r in runs if r.sampler == s):.1f} s" for s in dict.fromkeys(r.sampler for r in runs)
    ))
    return "\n".join(lines)


def _front_size(values: np.ndarray) -> int:
    from optuna.study._multi_objective import _is_pareto_front

    unique = np.unique(-values[np.all(np.isfinite(values), axis=1)], axis=0)
    return int(_is_pareto_front(unique, assume_unique_lexsorted=True).sum())


def _csv(kind: Callable[[str], object], choices: Sequence[str] | None = None) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [kind(t.strip()) for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("needs at least one value")
        if choices is not None:
            bad = [i for i in items if i not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad} (known: {', '.join(choices)})")
        return items

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv``, runs the benchmark, prints the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar10")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="NB201 robustness data directory")
    parser.add_argument("--seeds", type=_positive, default=10, help="seeds per sampler (default 10)")
    parser.add_argument("--gp-seeds", type=_positive, default=3, help="seeds for gp, at most --seeds (default 3: slow)")
    parser.add_argument("--trials", type=_csv(_positive), default=[25, 50, 100], help="checkpoints (default 25,50,100)")
    parser.add_argument("--samplers", type=_csv(str, SAMPLERS), default=list(SAMPLERS))
    parser.add_argument("--settings", type=_csv(str, list(SETTINGS)), default=list(DEFAULT_SETTINGS))
    parser.add_argument("--population-size", type=_positive, default=POPULATION_SIZE, help="NSGA-II/III population")
    args = parser.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from dse.errors import DseError

    try:
        table = NB201Table(args.root, dataset=args.dataset)
        runs, true_hv = run_benchmark(
            root=args.root,
            dataset=args.dataset,
            samplers=args.samplers,
            settings=args.settings,
            seeds=args.seeds,
            gp_seeds=args.gp_seeds,
            trials=args.trials,
            population_size=args.population_size,
        )
    except DseError as err:
        print(f"search_efficiency: error: {err}", file=sys.stderr)
        return 2
    print(_format(runs, true_hv, dataset=args.dataset, table=table))
    if "gp" in args.samplers and args.gp_seeds < args.seeds:
        print(f"gp ran {min(args.gp_seeds, args.seeds)} seeds, not {args.seeds}: GPSampler takes 1 to 4 minutes per"
              " 100-trial study on 2 CPU cores (--gp-seeds)")
    print(f"NSGA-II/III population {args.population_size}; TPE, GP and random with Optuna's defaults; seeds 0..N-1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
