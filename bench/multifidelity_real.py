"""A real study through ``dse run``, FIFO against ``mo_asha``, timed one after the other on this
machine, each front scored against the learning-curve table of the same space.

Both studies are ``bench/data/curves_digits.yaml`` (same space, recipe, evaluation, sampler seed)
with a smaller trial budget and their own output folders; only the scheduler differs. Prints wall
time, epochs trained, trials stopped, and the hypervolume of each study's front as a fraction of
the table's true front (the table's reference point).

Usage: ``python bench/multifidelity_real.py [--trials 16] [--seed 1] [--out /tmp/dse-mf-real] [--asha YAML]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dse.study.pareto import default_reference, hypervolume  # noqa: E402
from search_spaces.replay import load_table  # noqa: E402

OBJECTIVES = [{"name": "robust_acc", "direction": "maximize"}, {"name": "bops", "direction": "minimize"}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1, help="sampler seed (the table used seed 0)")
    parser.add_argument("--out", default="/tmp/dse-mf-real")
    parser.add_argument("--table", default=str(ROOT / "bench" / "data" / "curves_digits"))
    parser.add_argument("--asha", default="{name: mo_asha, min_epochs: 2, reduction_factor: 2, rank_free: false, rung_eval: {steps: [2, 2], samples: [60, 60]}}",
                        help="the early-stopping scheduler section (YAML)")
    args = parser.parse_args(argv)

    table = load_table(str(Path(args.table).resolve()))
    ref_trials = table.trials.set_index("number").loc[table.candidates()].reset_index()
    ref_trials["state"] = "COMPLETE"
    names = [o["name"] for o in OBJECTIVES]
    directions = [o["direction"] for o in OBJECTIVES]
    ref = default_reference(ref_trials, OBJECTIVES)
    true_hv = hypervolume(ref_trials[names].to_numpy(float), directions, ref)

    base = yaml.safe_load((ROOT / "bench" / "data" / "curves_digits.yaml").read_text())
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = []
    for scheduler in ({"name": "fifo"}, yaml.safe_load(args.asha)):
        study = {**base, "name": f"real_{scheduler['name']}", "output_dir": str(out / scheduler["name"]),
                 "scheduler": scheduler, "budget": {"n_trials": args.trials},
                 "sampler": {"name": "random", "seed": args.seed}}
        path = out / f"{scheduler['name']}.yaml"
        path.write_text(yaml.safe_dump(study))
        start = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).parent / "dse"), "run", str(path), "--no-report"],
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return done.returncode
        trials = pd.read_csv(out / scheduler["name"] / "trials.csv")
        distinct = trials[trials["duplicate_of"].isna()]
        complete = distinct[distinct["state"] == "COMPLETE"]
        hv = hypervolume(complete[names].to_numpy(float), directions, ref) / true_hv if len(complete) else 0.0
        rows.append({"scheduler": scheduler["name"], "wall_s": round(wall, 1), "complete": len(complete),
                     "stopped": int((distinct["state"] == "PRUNED").sum()), "epochs": int(distinct["epochs_trained"].sum()),
                     "hv_fraction_of_table": round(hv, 3)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    fifo, asha = rows
    print(f"mo_asha / fifo: wall {asha['wall_s'] / fifo['wall_s']:.2f}x, epochs {asha['epochs'] / fifo['epochs']:.2f}x, "
          f"hypervolume {asha['hv_fraction_of_table']:.3f} vs {fifo['hv_fraction_of_table']:.3f} of the table's front "
          f"({len(ref_trials)} candidates)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
