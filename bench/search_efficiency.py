"""Search efficiency of multi-objective samplers on NAS-Bench-201 robustness (lookup, no training).

For each sampler and each objective setting, runs seeded ask/tell studies over the ``nb201`` search
space, scoring each trial by looking up the published results of Jung et al. (ICLR 2023), and prints,
per sampler and setting, the median and interquartile range over seeds of the hypervolume reached
after 25, 50 and 100 trials, as a fraction of the hypervolume of the true front (all 6,466 unique
architectures), and the wall time per study. Hypervolumes are exact (``dse.study.pareto.hypervolume``,
moocore), in the objectives' own units.

Settings (accuracies maximized with reference 0; ``nb201_params`` minimized, its reference the worst
value over all unique cells plus 10% of its range, 1,677,370 on CIFAR-10):

* ``clean-pgd2``: ``nb201_clean_acc`` vs ``nb201_pgd_acc_2`` (PGD l_inf eps 2/255);
* ``clean-pgd2-square4``: also ``nb201_square_acc_4`` (Square l_inf eps 4/255);
* ``clean-pgd2-params``: ``nb201_clean_acc``, ``nb201_pgd_acc_2`` and ``nb201_params`` (cost, minimized);
* ``clean-pgd2-fgsm1`` (not run by default): ``nb201_clean_acc``, ``nb201_pgd_acc_2``, ``nb201_fgsm_acc_1``.

Samplers: dse's ``surrogate`` (random-forest surrogate, hypervolume improvement over the enumerated
grid, exact ``nb201_params`` in the cost setting), ``pls`` and ``rea``; Optuna's ``nsga2`` and ``nsga3`` (population ``--population-size``,
default 20), ``tpe``, ``gp`` and ``random`` with their defaults; tuned variants ``nsga2-p10`` and
``nsga2-p50`` (NSGA-II, population 10 / 50) and ``tpe-mv`` (TPE, multivariate, grouped, 10 startup
trials); and, as an outside reference, ``st-morea``: Syne Tune's multi-objective regularized evolution
(``MultiObjectiveRegularizedEvolution``, population ``--population-size``, sample size 10) driven
through its ``suggest`` / ``on_trial_complete`` API over the same 6 categorical edges (skipped, with
the reason printed, when ``syne_tune`` does not import). A sampler's duplicate suggestions are told
the same value again, as in a user's study. GPSampler is slow here (1 to 4 minutes per 100-trial
study on 2 shared CPU cores), so it runs ``--gp-seeds`` seeds (default 3), as the table says.

Then (``--ask-timing``, default on; ``--no-ask-timing`` skips it), for those of ``pls``, ``rea``,
``nsga2`` and ``tpe`` selected, one 1,005-trial in-memory study on the first setting (seed 0) and the
seconds per ``study.ask()`` plus the space's suggest, averaged over the 10 asks around the 100th and
the 1,000th trial, in a small table of its own (pls's study takes about a minute on 2 shared cores).

Usage: ``python bench/search_efficiency.py [--seeds 20] [--trials 25,50,100] [--dataset cifar10]
[--root DIR] [--samplers pls,rea,nsga2,nsga2-p10,...] [--settings clean-pgd2,clean-pgd2-square4,clean-pgd2-params]
[--gp-seeds 3] [--population-size 20] [--no-ask-timing]``
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

import moocore
import numpy as np
import optuna

from dse.models.nb201 import EDGE_SOURCES, OPS, make_cell, nb201_params
from dse.study import pareto
from dse.study.samplers import ParetoLocalSearchSampler, RegularizedEvolutionSampler
from dse.study.surrogate import FreeValues, SurrogateSampler
from objectives._nb201 import NB201_METRICS, NB201Table, evaluate_nb201
from search_spaces.nb201 import nb201

__all__ = [
    "ASK_TIMED", "DEFAULT_ROOT", "SAMPLERS", "SETTINGS", "Run", "Setting", "free_values", "hypervolume", "main", "make_sampler",
    "run_benchmark", "run_study", "run_syne_tune", "summarize", "syne_tune_unavailable", "time_asks", "true_front",
]

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-robustness"
SAMPLERS = ("surrogate", "pls", "rea", "nsga2", "nsga2-p10", "nsga2-p50", "nsga3", "tpe", "tpe-mv", "gp", "random", "st-morea")
#: Samplers whose seconds per ask are measured (``--ask-timing``), at these trial counts.
ASK_TIMED: tuple[str, ...] = ("surrogate", "pls", "rea", "nsga2", "tpe")
ASK_AT: tuple[int, ...] = (100, 1000)
ASK_REPEATS = 10
POPULATION_SIZE = 20
#: Reference of a minimized objective: its worst value over all unique cells plus this share of its range.
MARGIN = 0.1


@dataclass(frozen=True)
class Setting:
    """Objectives, their directions, and how the hypervolume reference point is set (:meth:`reference`)."""

    name: str
    metrics: tuple[str, ...]
    directions: tuple[str, ...]

    def reference(self, table: NB201Table) -> tuple[float, ...]:
        """0 for a maximized accuracy; for a minimized metric, its worst value over all unique cells plus
        :data:`MARGIN` of its range (so the cheapest and the dearest front members both count)."""
        ref = []
        for metric, direction in zip(self.metrics, self.directions):
            if direction == "maximize":
                ref.append(0.0)
            else:
                column = table.column(metric)
                worst, best = float(np.nanmax(column)), float(np.nanmin(column))
                ref.append(worst + MARGIN * (worst - best))
        return tuple(ref)


def _setting(name: str, *metrics: str) -> Setting:
    return Setting(name, metrics, tuple(NB201_METRICS[m].direction for m in metrics))


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    _setting("clean-pgd2", "nb201_clean_acc", "nb201_pgd_acc_2"),
    _setting("clean-pgd2-square4", "nb201_clean_acc", "nb201_pgd_acc_2", "nb201_square_acc_4"),
    _setting("clean-pgd2-params", "nb201_clean_acc", "nb201_pgd_acc_2", "nb201_params"),
    _setting("clean-pgd2-fgsm1", "nb201_clean_acc", "nb201_pgd_acc_2", "nb201_fgsm_acc_1"),
)}
DEFAULT_SETTINGS = ("clean-pgd2", "clean-pgd2-square4", "clean-pgd2-params")


@dataclass(frozen=True)
class Run:
    """One study: hypervolume fraction at each checkpoint and its wall time."""

    setting: str
    sampler: str
    seed: int
    fractions: dict[int, float]
    seconds: float


def hypervolume(values: np.ndarray, reference: Sequence[float], directions: Sequence[str] | None = None) -> float:
    """Exact hypervolume of ``values`` ``[n, k]`` against ``reference``, by ``dse.study.pareto.hypervolume``.

    ``directions`` defaults to all ``maximize``; points not better than the reference add 0.
    """
    directions = ["maximize"] * len(reference) if directions is None else list(directions)
    return pareto.hypervolume(np.asarray(values, dtype=float).reshape(-1, len(reference)), directions, reference)


def true_front(table: NB201Table, setting: Setting) -> np.ndarray:
    """The distinct non-dominated value rows of all unique cells under ``setting`` (moocore's O(n log n) sweep)."""
    values = table.values(list(setting.metrics))
    unique = np.unique(values[np.all(np.isfinite(values), axis=1)], axis=0)
    return unique[moocore.is_nondominated(pareto.to_minimization(unique, setting.directions))]


def make_sampler(name: str, seed: int, *, population_size: int = POPULATION_SIZE,
                 free_values: FreeValues | None = None) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler by short name (any of :data:`SAMPLERS` but ``st-morea``); ``surrogate``
    gets ``free_values`` (the objectives known without a lookup, as the runner hands it)."""
    tpe_mv = dict(multivariate=True, group=True, n_startup_trials=10)
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed),
        "nsga2-p10": lambda: optuna.samplers.NSGAIISampler(population_size=10, seed=seed),
        "nsga2-p50": lambda: optuna.samplers.NSGAIISampler(population_size=50, seed=seed),
        "nsga3": lambda: optuna.samplers.NSGAIIISampler(population_size=population_size, seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "tpe-mv": lambda: optuna.samplers.TPESampler(seed=seed, **tpe_mv),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "pls": lambda: ParetoLocalSearchSampler(seed=seed),
        "surrogate": lambda: SurrogateSampler(seed=seed, free_values=free_values),
        "rea": lambda: RegularizedEvolutionSampler(seed=seed),
    }
    if name not in factories:
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(factories)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return factories[name]()


def free_values(setting: Setting) -> FreeValues | None:
    """``nb201_params`` of the cell, computed (not looked up), for a setting that optimizes it."""
    if "nb201_params" not in setting.metrics:
        return None
    index = setting.metrics.index("nb201_params")

    def values(params: dict) -> dict[int, float]:
        return {index: float(nb201_params(nb201(optuna.trial.FixedTrial(dict(params)))["cell"]))}

    return values


def _score(spec_or_trial: object, setting: Setting, root: Path, dataset: str) -> list[float]:
    spec = spec_or_trial if isinstance(spec_or_trial, dict) else nb201(spec_or_trial)  # type: ignore[arg-type]
    scores = evaluate_nb201(spec, setting.metrics, root=root, dataset=dataset)
    return [scores[m] for m in setting.metrics]


def run_study(sampler: optuna.samplers.BaseSampler, setting: Setting, n_trials: int, *, root: Path,
              dataset: str) -> np.ndarray:
    """Runs one in-memory ask/tell study of ``n_trials``; returns the told values ``[n_trials, k]`` in order."""
    study = optuna.create_study(directions=list(setting.directions), sampler=sampler)
    told = np.empty((n_trials, len(setting.metrics)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i in range(n_trials):
            trial = study.ask()
            told[i] = _score(trial, setting, root, dataset)
            study.tell(trial, list(told[i]))
    return told


def syne_tune_unavailable() -> str | None:
    """``None`` when Syne Tune's MO-REA imports, else why not (one line)."""
    try:
        from syne_tune.config_space import choice  # noqa: F401
        from syne_tune.optimizer.schedulers.multiobjective import MultiObjectiveRegularizedEvolution  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure (missing deps of a --no-deps install) skips it
        return f"syne_tune does not import ({type(err).__name__}: {err})".splitlines()[0]
    return None


def run_syne_tune(seed: int, setting: Setting, n_trials: int, *, root: Path, dataset: str,
                  population_size: int = POPULATION_SIZE) -> np.ndarray:
    """Runs Syne Tune's MO-REA through ``suggest`` / ``on_trial_complete`` over the 6 categorical edges;
    returns the told values ``[n_trials, k]`` (its metrics are told in minimization form)."""
    from syne_tune.config_space import choice
    from syne_tune.optimizer.schedulers.multiobjective import MultiObjectiveRegularizedEvolution

    space = {f"edge_{i}": choice(list(OPS)) for i in range(len(EDGE_SOURCES))}
    searcher = MultiObjectiveRegularizedEvolution(space, population_size=population_size, random_seed=seed)
    state = np.random.get_state()  # its random start draws from numpy's global generator: seed it, then restore
    np.random.seed(seed)
    told = np.empty((n_trials, len(setting.metrics)))
    try:
        for i in range(n_trials):
            config = searcher.suggest()
            cell = make_cell([config[f"edge_{k}"] for k in range(len(EDGE_SOURCES))])
            told[i] = _score({"arch": "nb201", "cell": cell}, setting, root, dataset)
            loss = pareto.to_minimization(told[i], setting.directions)
            searcher.on_trial_complete(trial_id=i, config=config, metrics=[float(v) for v in loss])
    finally:
        np.random.set_state(state)
    return told


def run_benchmark(*, root: Path = DEFAULT_ROOT, dataset: str = "cifar10", samplers: Sequence[str] = SAMPLERS,
                  settings: Sequence[str] = DEFAULT_SETTINGS, seeds: int = 20, gp_seeds: int | None = 3,
                  trials: Sequence[int] = (25, 50, 100), population_size: int = POPULATION_SIZE,
                  ) -> tuple[list[Run], dict[str, float]]:
    """Runs every (setting, sampler, seed) study (``st-morea`` is skipped, logged, when Syne Tune does not import).

    Args:
        root: The NB201 robustness data directory.
        dataset: ``cifar10`` or ``cifar100``.
        samplers: Names from :data:`SAMPLERS`.
        settings: Names from :data:`SETTINGS`.
        seeds: Seeds per sampler (0 .. seeds-1).
        gp_seeds: Seeds for ``gp`` (at most ``seeds``); ``None`` for ``seeds``.
        trials: Checkpoints; studies run ``max(trials)`` trials.
        population_size: Population of ``nsga2``, ``nsga3`` and ``st-morea``.

    Returns:
        The runs, and the true front's hypervolume per setting.
    """
    table = NB201Table(root, dataset=dataset)
    checkpoints = sorted(set(int(t) for t in trials))
    if "st-morea" in samplers and (reason := syne_tune_unavailable()) is not None:
        logger.warning("st-morea skipped: %s", reason)
        samplers = [s for s in samplers if s != "st-morea"]
    true_hv: dict[str, float] = {}
    runs: list[Run] = []
    for setting_name in settings:
        setting = SETTINGS[setting_name]
        ref = setting.reference(table)
        true_hv[setting.name] = hypervolume(true_front(table, setting), ref, setting.directions)
        for sampler_name in samplers:
            n_seeds = min(seeds, gp_seeds) if sampler_name == "gp" and gp_seeds is not None else seeds
            for seed in range(n_seeds):
                start = time.perf_counter()
                if sampler_name == "st-morea":
                    told = run_syne_tune(seed, setting, checkpoints[-1], root=root, dataset=dataset,
                                         population_size=population_size)
                else:
                    sampler = make_sampler(sampler_name, seed, population_size=population_size,
                                           free_values=free_values(setting))
                    told = run_study(sampler, setting, checkpoints[-1], root=root, dataset=dataset)
                seconds = time.perf_counter() - start
                fractions = {
                    t: hypervolume(told[:t], ref, setting.directions) / true_hv[setting.name] for t in checkpoints
                }
                runs.append(Run(setting.name, sampler_name, seed, fractions, seconds))
                logger.info("%s %s seed %d: %s (%.1f s)", setting.name, sampler_name, seed, fractions, seconds)
    return runs, true_hv


def time_asks(sampler_name: str, setting: Setting, *, root: Path, dataset: str = "cifar10", at: Sequence[int] = ASK_AT,
              repeats: int = ASK_REPEATS, seed: int = 0) -> dict[int, float]:
    """Mean seconds of ``study.ask()`` plus the space's suggest over the ``repeats`` asks around trial ``n``
    (numbers ``n - repeats // 2`` to ``n + (repeats - 1) // 2``), for each ``n`` in ``at``; one in-memory
    study, lookup-scored."""
    sampler = make_sampler(sampler_name, seed, free_values=free_values(setting))
    study = optuna.create_study(directions=list(setting.directions), sampler=sampler)
    windows = {n: range(max(n - repeats // 2, 0), max(n - repeats // 2, 0) + repeats) for n in at}
    spent = {n: 0.0 for n in at}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i in range(max(w.stop for w in windows.values())):
            start = time.perf_counter()
            trial = study.ask()
            spec = nb201(trial)
            seconds = time.perf_counter() - start
            for n, window in windows.items():
                if i in window:
                    spent[n] += seconds
            study.tell(trial, _score(spec, setting, root, dataset))
    return {n: spent[n] / repeats for n in at}


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
        objectives = " vs ".join(f"{m} ({d[:3]})" for m, d in zip(setting.metrics, setting.directions))
        ref = ", ".join(f"{r:,.0f}" if abs(r) >= 1e4 else f"{r:g}" for r in setting.reference(table))
        lines.append(f"  {name}: {objectives}, ref ({ref}), true HV {hv:.6g}"
                     f" ({len(true_front(table, setting))} archs on the front)")
    header = f"{'setting':<20} {'sampler':<9} {'seeds':>5} " + " ".join(f"{'HV@' + str(t):>19}" for t in checkpoints)
    header += f" {'s/study':>8}"
    lines += ["", header, "-" * len(header)]
    for row in rows:
        cells = " ".join(f"{row[t][0]:.3f} [{row[t][1]:.3f},{row[t][2]:.3f}]" for t in checkpoints)  # type: ignore[index]
        lines.append(f"{row['setting']:<20} {row['sampler']:<9} {row['seeds']:>5} {cells} {row['seconds']:>8.2f}")
    lines.append("")
    lines.append("wall time per sampler (all settings and seeds): " + ", ".join(
        f"{s} {sum(r.seconds for r in runs if r.sampler == s):.1f} s" for s in dict.fromkeys(r.sampler for r in runs)
    ))
    return "\n".join(lines)


def _format_asks(timings: dict[str, dict[int, float]], *, setting: str, repeats: int = ASK_REPEATS) -> str:
    at = list(next(iter(timings.values()))) if timings else list(ASK_AT)
    header = f"{'sampler':<9} " + " ".join(f"{'s/ask@' + str(n):>12}" for n in at)
    lines = [f"seconds per ask (study.ask() + the space's suggest, mean of {repeats} asks around trial N;"
             f" one in-memory study, {setting}, seed 0)", header, "-" * len(header)]
    lines += [f"{name:<9} " + " ".join(f"{t[n]:>12.5f}" for n in at) for name, t in timings.items()]
    return "\n".join(lines)


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
    """Parses ``argv``, runs the benchmark (and the ask timing), prints the tables; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar10")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="NB201 robustness data directory")
    parser.add_argument("--seeds", type=_positive, default=20, help="seeds per sampler (default 20)")
    parser.add_argument("--gp-seeds", type=_positive, default=3, help="seeds for gp, at most --seeds (default 3: slow)")
    parser.add_argument("--trials", type=_csv(_positive), default=[25, 50, 100], help="checkpoints (default 25,50,100)")
    parser.add_argument("--samplers", type=_csv(str, SAMPLERS), default=list(SAMPLERS),
                        help=f"comma-separated, from {','.join(SAMPLERS)} (default: all)")
    parser.add_argument("--settings", type=_csv(str, list(SETTINGS)), default=list(DEFAULT_SETTINGS),
                        help=f"comma-separated, from {','.join(SETTINGS)} (default: {','.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--population-size", type=_positive, default=POPULATION_SIZE,
                        help="population of nsga2, nsga3 and st-morea (default 20)")
    parser.add_argument("--ask-timing", action=argparse.BooleanOptionalAction, default=True,
                        help=f"time asks at {' and '.join(map(str, ASK_AT))} trials for {', '.join(ASK_TIMED)}"
                        " (default on; --no-ask-timing skips)")
    args = parser.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from dse.errors import DseError

    samplers = list(dict.fromkeys(args.samplers))
    skipped = syne_tune_unavailable() if "st-morea" in samplers else None
    if skipped is not None:
        samplers.remove("st-morea")
    try:
        table = NB201Table(args.root, dataset=args.dataset)
        runs, true_hv = run_benchmark(root=args.root, dataset=args.dataset, samplers=samplers, settings=args.settings,
                                      seeds=args.seeds, gp_seeds=args.gp_seeds, trials=args.trials,
                                      population_size=args.population_size)
        timed = [s for s in ASK_TIMED if s in samplers] if args.ask_timing else []
        setting = SETTINGS[args.settings[0]]
        timings = {s: time_asks(s, setting, root=args.root, dataset=args.dataset, at=ASK_AT) for s in timed}
    except DseError as err:
        print(f"search_efficiency: error: {err}", file=sys.stderr)
        return 2
    print(_format(runs, true_hv, dataset=args.dataset, table=table))
    if skipped is not None:
        print(f"st-morea (Syne Tune MO-REA) skipped: {skipped}")
    if "gp" in samplers and args.gp_seeds < args.seeds:
        print(f"gp ran {min(args.gp_seeds, args.seeds)} seeds, not {args.seeds}: GPSampler takes 1 to 4 minutes per"
              " 100-trial study on 2 CPU cores (--gp-seeds)")
    print(f"NSGA-II/III and st-morea population {args.population_size}; nsga2-p10/-p50 population 10/50; tpe-mv"
          " multivariate, grouped, 10 startup trials; TPE, GP and random otherwise Optuna's defaults; seeds 0..N-1")
    print(_format_targets(runs))
    if timings:
        print("\n" + _format_asks(timings, setting=args.settings[0]))
    return 0


#: The sampler issue's targets: median hypervolume fraction after 100 trials of the default sampler.
TARGETS = {"clean-pgd2": 0.95, "clean-pgd2-params": 0.80}


def _format_targets(runs: Sequence[Run]) -> str:
    """Whether the default sampler meets each target, and by how much it misses or beats it."""
    from dse.study.sampler_registry import DEFAULT_SAMPLER

    lines = []
    for setting, target in TARGETS.items():
        group = [r for r in runs if r.setting == setting and r.sampler == DEFAULT_SAMPLER and 100 in r.fractions]
        if not group:
            continue
        median = float(np.median([r.fractions[100] for r in group]))
        rivals = [row for row in summarize([r for r in runs if r.setting == setting and r.sampler != DEFAULT_SAMPLER
                                            and 100 in r.fractions])]
        best = max(rivals, key=lambda row: row[100][0]) if rivals else None  # type: ignore[index]
        verdict = f"meets it (+{median - target:.3f})" if median >= target else f"MISSED by {target - median:.3f}"
        ahead = (f"; best other sampler {best['sampler']} {best[100][0]:.3f}" if best else "")  # type: ignore[index]
        lines.append(f"target {setting} after 100 trials: {target:.2f}; default sampler {DEFAULT_SAMPLER} median"
                     f" {median:.3f} over {len(group)} seeds: {verdict}{ahead}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
