"""One markdown table from several seeds of a campaign: each candidate's figures as mean +- spread.

A campaign (``studies/campaigns/*.yaml``) runs the same listed candidates once per seed, one study
per seed; each study writes ``runs/NAME/trials.csv`` and the landed rows are committed under
``docs/data/``. This reads those CSVs (one per seed), groups the completed trials by candidate and
prints, per candidate and column, ``mean +- std (value / value / ...)`` over the seeds that have
it (the sample standard deviation; with one seed, the value alone), plus the masking flags raised
on any seed. ``docs/reproduction.md`` quotes its output, so every figure there can be recomputed
from the committed rows::

    python bench/campaign_table.py docs/data/claims_digits_s{0,1,2}.csv \\
        --columns natural_acc,robust_acc,attack.fgsm,attack.bim,pert_instability

Columns are those of ``trials.csv``: objectives and metrics by name, each suite attack's own robust
accuracy as ``attack.NAME``. ``--skip FILE:N,M`` leaves out trials ``N`` and ``M`` of the CSV named
``FILE`` (rows superseded by a rerun after a fix, which ``docs/reproduction.md`` names).
``--order STUDY.yaml`` prints the rows in the order of that study's listed candidates (its
``space.options.candidates``; the others after them, in the order they appear), not in the order
the first CSV happens to have them (trial numbers, which follow completion and retries).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

import yaml


def _label(candidate: dict) -> str:
    """A short row label: the keys that differ from a dense float candidate."""
    parts = [str(candidate.get("arch", "?"))]
    if "width_mult" in candidate:
        parts.append(f"W={candidate['width_mult']} E={candidate.get('expand_ratio')}")
    quant = candidate.get("quant", "none")
    if quant == "fixed":
        parts.append(f"fixed {candidate['weight_bits']}/{candidate['act_bits']}")
    elif quant == "mbn":
        parts.append(f"MBN {candidate['weight_bases']}x{candidate['act_bases']}")
    elif quant == "pow2":
        parts.append(f"pow2 (INQ) {candidate['weight_bits']}-bit")
    if candidate.get("prune_scheme", "none") != "none":
        parts.append(f"{candidate['prune_scheme']} {candidate['prune_ratio']}")
    return ", ".join(parts)


def _read(path: Path, skip: frozenset[str] = frozenset()) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"campaign_table: {path}: no such file")
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("state") == "COMPLETE" and r.get("number") not in skip]
    for row in rows:
        row["_candidate"] = json.loads(row["candidate"])
    return rows


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    each = " / ".join(f"{v:.3f}" for v in values)
    if len(values) == 1:
        return each
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} ({each})"


def listed_order(study: Path) -> list[dict]:
    """The candidates a listed-space study file names, in its order."""
    if not study.is_file():
        raise SystemExit(f"campaign_table: {study}: no such file")
    data = yaml.safe_load(study.read_text()) or {}
    candidates = ((data.get("space") or {}).get("options") or {}).get("candidates")
    if not isinstance(candidates, list):
        raise SystemExit(f"campaign_table: {study}: space.options.candidates: expected the list of a listed space")
    return candidates


def campaign_table(paths: list[Path], columns: list[str], skip: dict[str, set[str]] | None = None,
                   order: list[dict] | None = None) -> str:
    """The markdown table (see the module docstring); ``skip``: file name -> trial numbers left out;
    ``order``: candidates whose rows come first, in this order."""
    groups: dict[str, dict] = {}
    for path in paths:
        for row in _read(path, frozenset((skip or {}).get(path.name, ()))):
            key = json.dumps(row["_candidate"], sort_keys=True)
            group = groups.setdefault(key, {"candidate": row["_candidate"], "rows": []})
            group["rows"].append(row)
    if order:
        rank = {json.dumps(c, sort_keys=True): i for i, c in enumerate(order)}
        groups = dict(sorted(groups.items(), key=lambda kv: rank.get(kv[0], len(rank))))  # stable: the rest keep theirs
    lines = ["| candidate | seeds | " + " | ".join(columns) + " | masking flags |",
             "|---" * (len(columns) + 3) + "|"]
    for group in groups.values():
        cells = []
        for column in columns:
            values = []
            for row in group["rows"]:
                if column not in row:
                    raise SystemExit(f"campaign_table: no column {column!r} (have: {', '.join(k for k in row if not k.startswith('_'))})")
                if row[column] not in ("", None) and math.isfinite(float(row[column])):
                    values.append(float(row[column]))
            cells.append(_cell(values))
        flags = sorted({f for row in group["rows"] for f in (row.get("masking_flags") or "").split(";") if f and f != "none"})
        lines.append(f"| {_label(group['candidate'])} | {len(group['rows'])} | " + " | ".join(cells)
                     + f" | {', '.join(flags) or 'none'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csvs", nargs="+", type=Path, help="trials.csv of each seed's study")
    parser.add_argument("--columns", default="natural_acc,robust_acc", help="comma-separated trials.csv columns")
    parser.add_argument("--skip", action="append", default=[], metavar="FILE:N,M", help="leave out these trials of FILE")
    parser.add_argument("--order", type=Path, metavar="STUDY.yaml", help="rows in the order of this study's listed candidates")
    args = parser.parse_args(argv)
    skip: dict[str, set[str]] = {}
    for item in args.skip:
        name, sep, numbers = item.partition(":")
        if not sep or not numbers:
            raise SystemExit(f"campaign_table: --skip {item!r}: expected FILE:N[,M...]")
        skip.setdefault(Path(name).name, set()).update(n.strip() for n in numbers.split(","))
    order = listed_order(args.order) if args.order else None
    print(campaign_table(args.csvs, [c.strip() for c in args.columns.split(",") if c.strip()], skip, order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
