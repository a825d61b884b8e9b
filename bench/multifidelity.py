"""Multi-objective early stopping on a recorded learning-curve table: FIFO against ``mo_asha``
(with and without the attack-strength ladder, crowding or hypervolume tie-breaks) and Syne Tune's
MOASHA, each on many seeded replayed studies (``dse.study.simulate``: the same searcher, sampler,
scheduler and trial code as ``dse run``, on a simulated clock).

What it prints, medians (and interquartile ranges) over seeds:

* hypervolume of the found front as a fraction of the table's true front (every recorded
  candidate's final score), against epochs trained: at FIFO's budget and at fractions of it;
* the epochs each method needs to reach FIFO's final hypervolume (minus 1 point), as a fraction of
  FIFO's epochs, and the epochs to reach 0.9 and 0.95 of the true hypervolume;
* simulated seconds alongside (the ladder saves evaluation time, not epochs);
* the rank correlation between rung-level and final robust accuracy (full per-epoch PGD and the
  ladder's cheap PGD), and how many of the full evaluation's promotions the ladder keeps.

Usage: ``python bench/multifidelity.py [--table bench/data/curves_digits] [--seeds 20]
[--fifo-trials 30] [--trials 120] [--workers 2] [--methods ...]`` (about 4 minutes here)
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dse.study.config import load_study_config  # noqa: E402
from dse.study.pareto import default_reference, hypervolume, non_dominated_mask  # noqa: E402
from dse.study.simulate import simulate_study  # noqa: E402
from search_spaces.replay import load_table  # noqa: E402

OBJECTIVES = [{"name": "robust_acc", "direction": "maximize"}, {"name": "bops", "direction": "minimize"}]


def study_file(folder: Path, table: str, *, scheduler: dict, seed: int, trials: int, sampler: str) -> Path:
    path = folder / f"replay_{seed}_{abs(hash(str(scheduler))) % 10**8}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "replay", "space": {"name": "replay", "options": {"table": table}},
        "objectives": OBJECTIVES, "sampler": {"name": sampler, "seed": seed},
        "scheduler": scheduler, "budget": {"n_trials": trials}, "output_dir": str(folder / "out"),
    }))
    return path


def hv_curve(sim, names: list[str], directions: list[str], ref: np.ndarray, true_hv: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, seconds, hv fraction) after each finished trial."""
    values = {t.number: t.values for t in sim.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs}
    pts: list[list[float]] = []
    ep, sec, hv = [], [], []
    for clock, epochs, number, state in sim.events:
        if state == "COMPLETE" and number in values:
            pts.append(values[number])
        ep.append(epochs)
        sec.append(clock)
        hv.append(hypervolume(np.array(pts), directions, ref) / true_hv if pts else 0.0)
    return np.array(ep), np.array(sec), np.array(hv)


def at_budget(ep: np.ndarray, hv: np.ndarray, budget: float) -> float:
    ok = ep <= budget
    return float(hv[ok].max()) if ok.any() else 0.0


def to_reach(ep: np.ndarray, hv: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(hv >= target - 1e-12)
    return float(ep[hit[0]]) if hit.size else math.inf


def fmt(values: list[float], digits: int = 3) -> str:
    arr = np.array(values, dtype=float)
    if np.isinf(arr).sum() * 2 > arr.size:
        return f"not reached ({int(np.isinf(arr).sum())}/{arr.size})"
    med = np.median(arr)
    q1, q3 = np.percentile(arr, [25, 75], method="nearest")  # actual values: inf stays inf
    return f"{med:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def ladder_report(table) -> None:
    """Rank agreement between rung-level and final robust accuracy (Spearman), per rung epoch."""
    ep, tr = table.epochs, table.trials.set_index("number")
    numbers = table.candidates()
    final = tr.loc[numbers, "robust_acc"]
    print("\nRung-level vs final robust accuracy (Spearman rank correlation over", len(numbers), "candidates):")
    print(f"{'epoch':>5}  {'full per-epoch PGD':>18}  {'ladder (cheap PGD)':>18}  {'ladder keeps full top-1/3':>26}")
    for epoch in (1, 3):
        rows = ep[(ep["epoch"] == epoch) & ep["number"].isin(numbers)].set_index("number")
        if rows.empty or "val_robust_acc" not in rows:
            continue
        full = rows["val_robust_acc"].reindex(numbers)
        rho_full = pd.Series(full.values).corr(pd.Series(final.values), method="spearman")
        text = f"{epoch:>5}  {rho_full:>18.3f}"
        if "val_rung_robust_acc" in rows:
            cheap = rows["val_rung_robust_acc"].reindex(numbers)
            rho_cheap = pd.Series(cheap.values).corr(pd.Series(final.values), method="spearman")
            k = max(1, len(numbers) // 3)
            top_full = set(full.sort_values(ascending=False).index[:k])
            top_cheap = set(cheap.sort_values(ascending=False).index[:k])
            text += f"  {rho_cheap:>18.3f}  {len(top_full & top_cheap) / k:>26.2f}"
        print(text)


class OracleRule:
    """The ceiling of any stopping rule with a first rung at ``epoch``: it knows every candidate's
    final score and stops at that rung each trial whose candidate is not on the table's true front."""

    def __init__(self, *, front: set[int], epoch: int) -> None:
        self.front, self.epoch = front, epoch
        self.stopped: dict[int, tuple[int, dict]] = {}

    def __call__(self, number: int, result) -> bool:
        if int(result["epoch"]) == self.epoch and int(result["replay_of"]) not in self.front:
            self.stopped[number] = (self.epoch, {})
            return False
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(ROOT / "bench" / "data" / "curves_digits"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--fifo-trials", type=int, default=30, help="FIFO's budget of trials (its epochs set the compute)")
    parser.add_argument("--trials", type=int, default=120, help="trial budget of the early-stopping runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sampler", default="random")
    parser.add_argument("--methods", default="fifo,mo_asha,mo_asha_hv,mo_asha_ladder,mo_asha_m2e2,mo_asha_m2e2_nofree,mo_asha_m2e2_ladder_nofree,syne_tune,syne_tune_m2e2_nofree,oracle_m1,oracle_m2",
                        help="fifo, mo_asha (min_epochs 1, eta 3, crowding), mo_asha_hv (hypervolume tie-break), mo_asha_ladder "
                             "(PGD-2 at rung 0), mo_asha_mXeY (min_epochs X, eta Y), syne_tune[_m2e3] (Syne Tune's MOASHA rule), "
                             "oracle_mX (knows the final scores: stops every trial off the true front at epoch X; a ceiling)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dse").setLevel(logging.WARNING)

    table = load_table(str(Path(args.table).resolve()))
    numbers = table.candidates()
    if args.trials > len(numbers):
        parser.error(f"--trials {args.trials}: the table has {len(numbers)} candidates")
    trials = table.trials.set_index("number").loc[numbers].reset_index()
    trials["state"] = "COMPLETE"
    names = [o["name"] for o in OBJECTIVES]
    directions = [o["direction"] for o in OBJECTIVES]
    ref = default_reference(trials, OBJECTIVES)
    true_hv = hypervolume(trials[names].to_numpy(float), directions, ref)
    print(f"table {args.table}: {len(numbers)} candidates, {table.max_epochs} epochs each; objectives "
          f"{', '.join(f'{n} ({d})' for n, d in zip(names, directions))}; reference {ref.tolist()}; "
          f"sampler {args.sampler}, {args.workers} workers, {args.seeds} seeds")

    methods = {
        "fifo": ({"name": "fifo"}, args.fifo_trials, None),
        "mo_asha": ({"name": "mo_asha", "min_epochs": 1, "reduction_factor": 3, "tie_break": "crowding"}, args.trials, None),
        "mo_asha_hv": ({"name": "mo_asha", "min_epochs": 1, "reduction_factor": 3, "tie_break": "hypervolume"}, args.trials, None),
        "mo_asha_ladder": ({"name": "mo_asha", "min_epochs": 1, "reduction_factor": 3, "rung_eval": {"steps": [2]}}, args.trials, None),
        "mo_asha_m2e2": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 2}, args.trials, None),
        "mo_asha_m1e2": ({"name": "mo_asha", "min_epochs": 1, "reduction_factor": 2}, args.trials, None),
        "mo_asha_m2e3": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 3}, args.trials, None),
        "syne_tune": ({"name": "mo_asha", "min_epochs": 1, "reduction_factor": 3}, args.trials, "syne_tune"),
        "syne_tune_m2e3": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 3}, args.trials, "syne_tune"),
        "mo_asha_m2e2_ladder": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 2, "rung_eval": {"steps": [2, 2]}}, args.trials, None),
        "mo_asha_m2e3_ladder": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 3, "rung_eval": {"steps": [2, 2]}}, args.trials, None),
        "mo_asha_m2e2_ladder_nofree": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 2, "rank_free": False,
                                        "rung_eval": {"steps": [2, 2]}}, args.trials, None),
        "mo_asha_m2e2_nofree": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 2, "rank_free": False}, args.trials, None),
        "mo_asha_nofree": ({"name": "mo_asha", "rank_free": False}, args.trials, None),
        "syne_tune_m2e2_nofree": ({"name": "mo_asha", "min_epochs": 2, "reduction_factor": 2, "rank_free": False}, args.trials, "syne_tune"),
        "oracle_m1": ({"name": "mo_asha", "min_epochs": 1}, args.trials, "oracle"),
        "oracle_m2": ({"name": "mo_asha", "min_epochs": 2}, args.trials, "oracle"),
    }
    wanted = [m for m in args.methods.split(",") if m]
    results: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in wanted:
            scheduler, budget, external = methods[method]
            rule_factory = None
            if external == "oracle":
                on_front = set(trials.loc[non_dominated_mask(trials[names].to_numpy(float), directions), "number"].astype(int))
                first = int(scheduler["min_epochs"])

                def rule_factory(config, on_front=on_front, first=first):
                    return OracleRule(front=on_front, epoch=first)
            elif external == "syne_tune":
                from syne_tune_moasha import SyneTuneMOASHARule, available

                reason = available()
                if reason:
                    print(f"{method}: skipped ({reason})")
                    continue
                rule_factory = SyneTuneMOASHARule
            start = time.perf_counter()
            runs = []
            for seed in range(args.seeds):
                config = load_study_config(study_file(Path(tmp), str(Path(table.source).resolve()), scheduler=scheduler, seed=seed, trials=budget, sampler=args.sampler))
                rule = rule_factory(config=config) if rule_factory else None
                sim = simulate_study(config, workers=args.workers, rule=rule)
                runs.append(hv_curve(sim, names, directions, ref, true_hv))
            results[method] = runs
            print(f"{method}: {args.seeds} studies in {time.perf_counter() - start:.1f} s")

    fifo = results["fifo"]
    fifo_epochs = [r[0][-1] for r in fifo]
    fifo_final = [r[2][-1] for r in fifo]
    budget = float(np.median(fifo_epochs))
    print(f"\nFIFO: {args.fifo_trials} trials = {budget:.0f} epochs (median); final hypervolume {fmt(fifo_final)}")
    header = f"{'method':<15} {'HV @20%':>20} {'HV @40%':>20} {'HV @100% FIFO epochs':>22} {'epochs to FIFO HV-1pt':>24} {'epochs to 0.90':>16} {'epochs to 0.95':>16} {'sim. hours to FIFO HV-1pt':>26}"
    print(header)
    for method, runs in results.items():
        cols = []
        for frac in (0.2, 0.4, 1.0):
            cols.append(fmt([at_budget(ep, hv, frac * budget) for ep, _, hv in runs]))
        reach = [to_reach(ep, hv, f - 0.01) / budget for (ep, _, hv), f in zip(runs, fifo_final)]
        secs = [to_reach(sec, hv, f - 0.01) / 3600 for (_, sec, hv), f in zip(runs, fifo_final)]
        to90 = [to_reach(ep, hv, 0.90) for ep, _, hv in runs]
        to95 = [to_reach(ep, hv, 0.95) for ep, _, hv in runs]
        print(f"{method:<15} {cols[0]:>20} {cols[1]:>20} {cols[2]:>22} {fmt(reach, 2) + ' x':>24} {fmt(to90, 0):>16} {fmt(to95, 0):>16} {fmt(secs, 2):>26}")
    print("(epochs to FIFO HV-1pt: per seed, epochs until the method's front reaches that seed's FIFO final hypervolume "
          "minus 0.01, as a fraction of FIFO's epochs; medians [IQR] over seeds)")
    ladder_report(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
