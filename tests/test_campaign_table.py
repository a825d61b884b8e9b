"""bench/campaign_table.py: the seeds of a campaign as one markdown table (docs/reproduction.md quotes it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_bench

table = load_bench("campaign_table")

DENSE = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6}
PRUNED = {**DENSE, "prune_scheme": "admm", "prune_ratio": 0.5}


def _csv(path: Path, rows: list[tuple[dict, str, float, float, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["number", "state", "candidate", "natural_acc", "robust_acc", "masking_flags"])
        w.writeheader()
        for i, (cand, state, nat, rob, flags) in enumerate(rows):
            w.writerow({"number": i, "state": state, "candidate": json.dumps(cand), "natural_acc": nat,
                        "robust_acc": rob, "masking_flags": flags})
    return path


def test_rows_group_by_candidate_over_seeds(tmp_path):
    a = _csv(tmp_path / "s0.csv", [(DENSE, "COMPLETE", 0.9, 0.7, ""), (PRUNED, "COMPLETE", 0.8, 0.5, "pgd_far_above_best_attack"),
                                   (PRUNED, "FAIL", "", "", "")])
    b = _csv(tmp_path / "s1.csv", [(DENSE, "COMPLETE", 0.7, 0.5, "none")])  # trials.csv writes "none"
    out = table.campaign_table([a, b], ["natural_acc", "robust_acc"]).splitlines()
    assert out[0] == "| candidate | seeds | natural_acc | robust_acc | masking flags |"
    assert out[2] == "| mobilenet_tiny, W=0.35 E=6 | 2 | 0.800 +- 0.141 (0.900 / 0.700) | 0.600 +- 0.141 (0.700 / 0.500) | none |"
    assert out[3] == "| mobilenet_tiny, W=0.35 E=6, admm 0.5 | 1 | 0.800 | 0.500 | pgd_far_above_best_attack |"
    assert len(out) == 4  # the failed trial is not a row


def test_an_unknown_column_or_file_is_named(tmp_path):
    a = _csv(tmp_path / "s0.csv", [(DENSE, "COMPLETE", 0.9, 0.7, "")])
    with pytest.raises(SystemExit, match="no column 'attack.fgsm'"):
        table.campaign_table([a], ["attack.fgsm"])
    with pytest.raises(SystemExit, match="missing.csv: no such file"):
        table.campaign_table([tmp_path / "missing.csv"], ["natural_acc"])


def test_skipped_trials_are_left_out(tmp_path):
    a = _csv(tmp_path / "s0.csv", [(DENSE, "COMPLETE", 0.9, 0.7, ""), (PRUNED, "COMPLETE", 0.1, 0.1, "")])
    out = table.campaign_table([a], ["natural_acc"], {"s0.csv": {"1"}}).splitlines()
    assert len(out) == 3 and "admm" not in "\n".join(out)


def test_order_follows_the_studys_listed_candidates(tmp_path):
    a = _csv(tmp_path / "s0.csv", [(PRUNED, "COMPLETE", 0.8, 0.5, ""), (DENSE, "COMPLETE", 0.9, 0.7, "")])
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"space": {"name": "listed", "options": {"candidates": [DENSE, PRUNED]}}}))
    unordered = table.campaign_table([a], ["natural_acc"]).splitlines()
    assert "admm" in unordered[2], "without --order: the CSV's order"
    ordered = table.campaign_table([a], ["natural_acc"], order=table.listed_order(study)).splitlines()
    assert "admm" not in ordered[2] and "admm" in ordered[3]
    assert sorted(ordered) == sorted(unordered), "the same rows"
    study.write_text(yaml.safe_dump({"space": {"name": "mobilenet_tiny"}}))
    with pytest.raises(SystemExit, match="space.options.candidates"):
        table.listed_order(study)
