"""The report's recommended-candidate panel, 95% intervals, statistical ties, repeats and units."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dse.report import (
    get_dynamics_info,
    get_hypervolume_info,
    get_pareto_info,
    get_recommended_info,
    get_summary_info,
    get_table_info,
    tied_groups,
    wilson_interval,
    write_report,
)
from dse.report.figures import KNEE_MARKER, draw_pareto_3d, draw_pareto_pair
from dse.report.formatting import axis_title, unit_of
from dse.report.intervals import interval_text, is_accuracy, sample_count, trial_intervals
from dse.report.recommended import STUDY_PLACEHOLDER

N = 287
MEASUREMENT = f"PGD-10 linf eps=0.1 step=0.025 restarts=1 loss=ce random_start on {N} validation samples (seed 0)"
OBJECTIVES = [{"name": "robust_acc", "direction": "maximize"}, {"name": "params", "direction": "minimize"}]
# number, state, robust_acc, params, feasible, duplicate_of
ROWS = [
    (0, "COMPLETE", 0.50, 100_000.0, True, None),
    (1, "COMPLETE", 0.52, 200_000.0, True, None),  # the knee; tied with 0 (0.50 vs 0.52 on 287 samples)
    (2, "COMPLETE", 0.70, 900_000.0, True, None),  # on the front, not tied with 1
    (3, "COMPLETE", 0.52, 200_000.0, True, 1),  # a repeat of trial 1
    (4, "COMPLETE", 0.30, 300_000.0, True, None),  # dominated
    (5, "COMPLETE", 0.90, 50_000.0, False, None),  # infeasible
    (6, "FAIL", math.nan, math.nan, False, None),
    (7, "COMPLETE", 0.50, 100_000.0, True, 0),  # a repeat of trial 0
]


def small_study(*, tabular: bool = False):
    rows = []
    for number, state, acc, params, feasible, dup in ROWS:
        original = number if dup is None else dup
        cand = {"arch": "mobilenet_tiny", "width_mult": 0.1 * (number + 1), "expand_ratio": 2}
        if dup is not None:
            cand["width_mult"] = 0.1 * (dup + 1)
        rows.append(
            {
                "number": number,
                "state": state,
                "feasible": feasible,
                "constraint_violation": 0.0 if feasible else 0.5,
                "candidate": json.dumps(cand),
                "cand.arch": cand["arch"],
                "cand.width_mult": cand["width_mult"],
                "cand.expand_ratio": cand["expand_ratio"],
                "measurement": ("published results (cifar10, Jung et al. 2023)" if tabular else MEASUREMENT)
                if state == "COMPLETE" else None,
                "checkpoint": None if tabular or state != "COMPLETE" else f"/runs/s/trials/{original:04d}.pt",
                "duplicate_of": math.nan if dup is None else float(dup),
                "robust_acc": acc,
                "params": params,
                "natural_acc": acc + 0.3 if state == "COMPLETE" else math.nan,
                "pert_instability": 0.2 if state == "COMPLETE" else math.nan,
                "error": "boom" if state == "FAIL" else None,
            }
        )
    trials = pd.DataFrame(rows)
    epochs = pd.DataFrame(
        [
            {"number": n, "epoch": e, "val_natural_acc": 0.5, "val_robust_acc": 0.2 + 0.05 * e,
             "val_pert_instability": 0.1}
            for n, state, *_ in ROWS if state == "COMPLETE" for e in range(3)
        ]
    )
    meta = {
        "name": "small",
        "objectives": OBJECTIVES,
        "metrics": ["natural_acc", "pert_instability"],
        "constraints": ["natural_acc >= 0.6"],
        "measurement": rows[0]["measurement"],
        "storage": "sqlite:///study.db",
        "sampler": "nsga2 (seed 0)",
        "max_epochs": None if tabular else 6,
    }
    return trials, epochs, meta


# --------------------------------------------------------------------------------------------
# Intervals and ties
# --------------------------------------------------------------------------------------------


def test_wilson_interval_known_values():
    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0.2, 50) == pytest.approx((0.1124, 0.3304), abs=1e-4)
    low, high = wilson_interval(0.5749, N)
    assert low < 0.5749 < high and high - low == pytest.approx(0.114, abs=2e-3)  # about +-5.7 points
    wide = wilson_interval(0.5, 100, confidence=0.99)
    assert wide[0] < 0.4038 and wide[1] > 0.5962
    assert wilson_interval(0.5, 10_000)[1] - wilson_interval(0.5, 10_000)[0] < 0.02
    for bad in ((1.2, 10), (-0.1, 10), (0.5, 0)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 10, confidence=1.0)


def test_sample_count_accuracy_names_and_units():
    assert sample_count(MEASUREMENT) == N
    assert sample_count("standard suite; 1,000 samples, seed 0") == 1000
    assert sample_count(f"replayed from /t trial 3: {MEASUREMENT}") == N
    assert sample_count("published results (cifar10, Jung et al. 2023)") is None and sample_count(None) is None
    assert [is_accuracy(n) for n in ("robust_acc", "nb201_pgd_acc_2", "rescore.strong.robust_acc")] == [True] * 3
    assert [is_accuracy(n) for n in ("params", "macs", "pert_instability", "lipschitz_bound")] == [False] * 4
    assert unit_of("robust_acc") == "fraction" and unit_of("params") == "count" and unit_of("macs") == "MACs"
    assert unit_of("bops") == "BOPs" and unit_of("size_bytes") == "bytes" and unit_of("lipschitz_bound") is None
    assert axis_title("params", "minimize") == "params (min) [count]" and axis_title("lipschitz") == "lipschitz"
    assert interval_text(0.5241, 0.6375) == "[0.524, 0.637]" and interval_text(None, 0.5) == ""


def test_tie_rule():
    nan = math.nan
    # objectives: an accuracy (interval) and params (exact: no interval)
    low = np.array([[0.40, nan], [0.45, nan], [0.55, nan], [0.90, nan]])
    high = np.array([[0.50, nan], [0.60, nan], [0.65, nan], [0.95, nan]])
    ties = tied_groups([10, 11, 12, 13], low, high)
    # 10~11 and 11~12 overlap, 10 and 12 do not (a tie is not transitive); 13 overlaps nobody
    assert ties == {10: [11], 11: [10, 12], 12: [11], 13: []}
    # touching bounds count as overlapping; every interval-bearing objective must overlap
    two = tied_groups([0, 1], np.array([[0.4, 0.1], [0.5, 0.5]]), np.array([[0.5, 0.2], [0.6, 0.6]]))
    assert two == {0: [], 1: []}
    both = tied_groups([0, 1], np.array([[0.4, 0.1], [0.5, 0.15]]), np.array([[0.5, 0.2], [0.6, 0.3]]))
    assert both == {0: [1], 1: [0]}
    # without any interval (exact objectives only, or sample count unknown) nothing is tied
    assert tied_groups([0, 1], np.full((2, 2), nan), np.full((2, 2), nan)) == {0: [], 1: []}
    assert tied_groups([], np.empty((0, 2)), np.empty((0, 2))) == {}


def test_trial_intervals_follow_each_trials_sample_count():
    trials, _, meta = small_study()
    trials.loc[trials["number"] == 2, "measurement"] = "PGD-10 on 10000 validation samples (seed 0)"
    iv = trial_intervals(trials, meta, ["robust_acc", "params", "natural_acc"])
    assert set(iv) == {"robust_acc", "natural_acc"}  # params is exact
    low, high = iv["robust_acc"]
    assert (low[0], high[0]) == pytest.approx(wilson_interval(0.50, N))
    assert (low[2], high[2]) == pytest.approx(wilson_interval(0.70, 10_000))
    assert math.isnan(low[6])  # the failed trial has no value
    _, _, tab_meta = small_study(tabular=True)
    tab, _, _ = small_study(tabular=True)
    assert np.isnan(trial_intervals(tab, tab_meta, ["robust_acc"])["robust_acc"][0]).all()


# --------------------------------------------------------------------------------------------
# Repeats, ties and intervals in the info builders
# --------------------------------------------------------------------------------------------


def test_repeats_are_counted_once_everywhere():
    trials, epochs, meta = small_study()
    info = get_pareto_info(trials, meta)
    assert info["categories"]["pareto"]["numbers"] == [0, 1, 2]
    assert info["counts"]["repeat"] == 2 and info["counts"]["pareto"] == 3
    drawn = {n for c in info["categories"].values() for n in c["numbers"]}
    assert not drawn & {3, 7}  # repeats are never drawn (over their originals)
    summary = dict(get_summary_info(trials, meta, info))
    assert summary["Trials"].startswith("8 in all: 5 complete distinct candidates (4 feasible, 1 infeasible), "
                                        "2 repeats of earlier candidates")
    assert summary["Pareto set"] == "3 distinct candidates"
    dyn = get_dynamics_info(trials, epochs, meta)
    assert sorted(dyn["selected"]) == [0, 1, 2]  # not the repeats 3 and 7
    table = get_table_info(trials, meta)
    col = table["columns"].index("duplicate_of")
    cells = {r["number"]: r["cells"][col] for r in table["rows"]}
    assert cells[3] == ["repeat of #1", 1.0] and cells[7] == ["repeat of #0", 0.0] and cells[1] == ["", None]
    assert {r["number"] for r in table["rows"] if r["repeat"]} == {3, 7}
    assert {r["number"] for r in table["rows"] if r["pareto"]} == {0, 1, 2}
    hover = dict(zip(info["categories"]["pareto"]["numbers"], info["categories"]["pareto"]["hover"]))
    assert "repeated by #3 (same candidate, result reused)" in hover[1]


def test_ties_and_intervals_in_table_and_hover():
    trials, _, meta = small_study()
    info = get_pareto_info(trials, meta)
    assert info["ties"] == {0: [1], 1: [0], 2: []}
    assert info["axis_titles"] == ["robust_acc (max) [fraction]", "params (min) [count]"]
    text = interval_text(*wilson_interval(0.52, N))
    hover = dict(zip(info["categories"]["pareto"]["numbers"], info["categories"]["pareto"]["hover"]))
    assert f"robust_acc: 0.52 95% CI {text}" in hover[1] and "statistically tied with #0" in hover[1]
    assert f"over {N} evaluated samples" in hover[1]
    assert "params: 200,000<br>" in hover[1]  # exact: no interval
    k = info["categories"]["pareto"]["numbers"].index(1)
    assert info["categories"]["pareto"]["low"][k] == [pytest.approx(wilson_interval(0.52, N)[0]), None]
    table = get_table_info(trials, meta)
    cols = table["columns"]
    row = next(r for r in table["rows"] if r["number"] == 1)
    assert row["cells"][cols.index("robust_acc")] == [f"0.52 {text}", 0.52]
    assert row["cells"][cols.index("params")] == ["200,000", 200_000.0]  # exact: no interval
    assert row["cells"][cols.index("tied_with")][0] == "#0"
    tied = {r["number"]: r["cells"][cols.index("tied_with")][0] for r in table["rows"]}
    assert tied[2] == "none" and tied[4] == "" and tied[3] == ""


def test_recommended_info():
    trials, _, meta = small_study()
    pareto = get_pareto_info(trials, meta)
    assert pareto["knee"] == 1
    rec = get_recommended_info(trials, meta, pareto)
    assert rec["number"] == 1 and rec["message"] is None
    assert rec["candidate"] == ["arch: mobilenet_tiny", "width_mult: 0.2", "expand_ratio: 2"]
    scores = {s["name"]: s for s in rec["scores"]}
    assert list(scores) == ["robust_acc", "params", "natural_acc", "pert_instability"]
    assert scores["robust_acc"]["interval"] == interval_text(*wilson_interval(0.52, N))
    assert scores["robust_acc"]["unit"] == "fraction" and scores["robust_acc"]["direction"] == "max"
    assert scores["params"]["interval"] == "" and scores["params"]["note"].startswith("exact")
    assert scores["natural_acc"]["kind"] == "metric" and scores["natural_acc"]["interval"]
    assert scores["pert_instability"]["interval"] == "" and "not a proportion" in scores["pert_instability"]["note"]
    assert rec["samples"] == N and rec["measurement"] == MEASUREMENT
    assert rec["checkpoint"] == "/runs/s/trials/0001.pt"
    assert rec["tied_with"] == [0] and rec["ties_assessed"] and rec["repeats"] == [3]
    assert rec["commands"] == [f"dse export {STUDY_PLACEHOLDER} --trial 1 -o best.yaml", "dse train best.yaml"]
    assert not rec["study_file_known"] and rec["train_note"] is None

    meta["study_file"] = "studies/my study.yaml"
    rec = get_recommended_info(trials, meta, pareto)
    assert rec["commands"][0] == "dse export 'studies/my study.yaml' --trial 1 -o best.yaml" and rec["study_file_known"]

    tab, _, tab_meta = small_study(tabular=True)
    rec = get_recommended_info(tab, tab_meta, get_pareto_info(tab, tab_meta))
    assert rec["checkpoint"] is None and "tabular study" in rec["checkpoint_note"]
    assert rec["scores"][0]["interval"] == "" and "not recorded" in rec["scores"][0]["note"]
    assert rec["train_note"] and rec["commands"][1] == "dse train best.yaml"
    assert rec["tied_with"] == [] and not rec["ties_assessed"]

    none = trials.assign(feasible=False)
    rec = get_recommended_info(none, meta, get_pareto_info(none, meta))
    assert rec["number"] is None and "No recommendation" in rec["message"] and rec["commands"] == []


def test_hypervolume_fraction_ignores_repeats():
    trials, _, meta = small_study()
    info = get_hypervolume_info(trials, meta)
    assert info["ideal"] == pytest.approx([0.70, 100_000.0])  # trial 5 (infeasible) is not the ideal
    assert info["fraction"][-1] <= 1.0 and info["fraction"] == sorted(info["fraction"])
    assert "reference box" in info["title"]


# --------------------------------------------------------------------------------------------
# Figures and page
# --------------------------------------------------------------------------------------------


def _opaque(color: str) -> bool:
    return not (color.startswith("rgba") and float(color.rstrip(")").split(",")[-1]) < 1.0)


def test_knee_marker_is_visible():
    trials, _, meta = small_study()
    info = get_pareto_info(trials, meta)
    fig = draw_pareto_pair(info, 0)
    knee = fig.data[-1]  # drawn last: on top of the Pareto points
    assert knee.name == "knee (trial 1): recommended"
    assert list(knee.x) == [0.52] and list(knee.y) == [200_000.0]
    marker = knee.marker
    assert _opaque(marker.color) and marker.color == KNEE_MARKER["color"]
    assert marker.opacity in (None, 1.0) and not str(marker.symbol).endswith("open")
    assert marker.line.width > 0 and marker.size > max(t.marker.size or 0 for t in fig.data[:-1] if t.mode == "markers")
    pareto_trace = next(t for t in fig.data if str(t.name).startswith("Pareto"))
    assert pareto_trace.name == "Pareto (3)" and pareto_trace.error_x.array is not None  # 95% intervals drawn
    assert fig.layout.xaxis.title.text == "robust_acc (max) [fraction]"
    assert fig.layout.yaxis.title.text == "params (min) [count]"
    meta3 = dict(meta, objectives=OBJECTIVES + [{"name": "pert_instability", "direction": "minimize"}])
    fig3 = draw_pareto_3d(get_pareto_info(trials, meta3))
    assert fig3.data[-1].name.startswith("knee") and _opaque(fig3.data[-1].marker.color)


def test_page_has_panel_commands_and_intervals(tmp_path):
    trials, epochs, meta = small_study()
    meta["study_file"] = "studies/small.yaml"
    page = write_report(trials, epochs, meta, tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.index('<section class="recommended"') < page.index("<h2>Pareto front</h2>")
    assert "Recommended candidate: trial 1</h2>" in page
    assert "dse export studies/small.yaml --trial 1 -o best.yaml\ndse train best.yaml" in page
    text = interval_text(*wilson_interval(0.52, N))
    assert f"<td>{text}</td>" in page  # the panel's score table
    assert f"0.52 {text}</td>" in page  # the trials table
    assert "/runs/s/trials/0001.pt" in page and "Statistically tied with:</b> #0" in page
    assert "Repeated by:</b> #3" in page and "repeat of #1" in page
    assert "95% CI" in page  # plotly hover text
    assert "hypervolume [fraction]" in page and "as a fraction of the reference box" in page
    assert "Pareto set</b></td><td>3 distinct candidates" in page
    assert '<tr class="repeat" data-number="3">' in page

    tab, epochs, tab_meta = small_study(tabular=True)
    page = write_report(tab, epochs, tab_meta, tmp_path / "t.html").read_text(encoding="utf-8")
    assert "tabular study looks its scores up in published results" in page
    assert f"{STUDY_PLACEHOLDER} stands for the study file of small" in page
    assert "Statistically tied with:</b> not assessed (no objective of this trial has an interval)" in page

    page = write_report(trials.assign(feasible=False), epochs, meta, tmp_path / "n.html").read_text(encoding="utf-8")
    assert "No recommendation: no complete, feasible trial is on the Pareto front yet." in page
