"""Writes a study's tables (and its Optuna storage) gzip-compressed into a learning-curve table folder.

Usage: ``python bench/data/pack_table.py [--study bench/data/curves_digits.yaml] [--out bench/data/curves_digits]``
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dse.study.config import load_study_config  # noqa: E402
from dse.study.storage import open_study  # noqa: E402
from dse.study.tables import write_tables  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "bench" / "data" / "curves_digits.yaml"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "data" / "curves_digits"))
    args = parser.parse_args(argv)
    config = load_study_config(args.study)
    study = open_study(config, create=False)
    paths = write_tables(study, config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = {"trials.csv": Path(paths["table"]), "epochs.csv": Path(paths["epochs"]),
               "study.db": Path(config.storage_url().removeprefix("sqlite:///"))}
    for name, src in sources.items():
        with open(src, "rb") as f, gzip.open(out / f"{name}.gz", "wb", compresslevel=9) as g:
            shutil.copyfileobj(f, g)
        print(f"{out / (name + '.gz')}: {(out / (name + '.gz')).stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
