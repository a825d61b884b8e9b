"""The report's compute section: epochs trained and saved by early stopping, hypervolume per epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dse.report import get_compute_info, get_pareto_info, write_report
from dse.report.compute_figures import compute_figures, draw_epochs_per_trial, draw_hypervolume_per_epoch
from dse.report.compute_info import compute_section_wanted, scheduler_name

OBJECTIVES = [{"name": "robust_acc", "direction": "maximize"}, {"name": "params", "direction": "minimize"}]
FULL = 9
T0 = pd.Timestamp("2024-05-01T12:00:00")

# number, state, robust_acc, params, duplicate_of, stopped_at_epoch, epochs_trained, finishes at (s)
ROWS = [
    (0, "COMPLETE", 0.3, 400.0, None, None, 9, 100),
    (1, "PRUNED", 0.9, 100.0, None, 3, 3, 40),  # would dominate everything were it complete
    (2, "COMPLETE", 0.5, 800.0, None, None, 9, 300),
    (3, "FAIL", None, None, None, None, 2, 50),
    (4, "COMPLETE", 0.3, 400.0, 0, None, 0, 110),  # repeat of trial 0
    (5, "PRUNED", None, None, None, 1, 1, 20),
    (6, "COMPLETE", 0.2, 900.0, None, None, 9, 200),  # dominated by trial 0
]


def make_tables() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Hand-checkable trials / epochs tables (shaped like ``trials_frame`` / ``epochs_frame``) and meta."""
    rows, epoch_rows = [], []
    for number, state, acc, params, dup, stop, trained, finish in ROWS:
        rows.append(
            {
                "number": number,
                "state": state,
                "feasible": state != "FAIL",  # a stopped trial marked feasible must still stay off the front
                "constraint_violation": 0.0,
                "robust_acc": np.nan if acc is None else acc,
                "params": np.nan if params is None else params,
                "duplicate_of": np.nan if dup is None else float(dup),
                "stopped_at_epoch": np.nan if stop is None else float(stop),
                "epochs_trained": trained,
                "datetime_start": (T0 + pd.Timedelta(seconds=number)).isoformat(),
                "duration_s": float(finish - number),
                "rung.robust_acc": 0.25 if stop is not None else np.nan,
                "error": "boom" if state == "FAIL" else None,
            }
        )
        history = 9 if dup is not None else trained  # a repeat copies its original's history
        epoch_rows += [
            {"number": number, "epoch": e, "epoch_seconds": 1.0, "val_natural_acc": 0.5, "val_robust_acc": 0.2}
            for e in range(1, history + 1)
        ]
    meta = {"name": "asha", "objectives": OBJECTIVES, "metrics": [], "constraints": []}
    return pd.DataFrame(rows), pd.DataFrame(epoch_rows), meta


# --------------------------------------------------------------------------------------------
# Info
# --------------------------------------------------------------------------------------------


def test_totals_and_saving():
    trials, epochs, _ = make_tables()
    totals = get_compute_info(trials, epochs, OBJECTIVES)["totals"]
    assert totals == {
        "complete": 3,  # 0, 2, 6 (the repeat 4 is not counted)
        "stopped": 2,
        "failed": 1,
        "running": 0,
        "repeats": 1,
        "full_epochs": FULL,
        "epochs_trained": 9 + 3 + 9 + 2 + 0 + 1 + 9,
        "fifo_epochs": 3 * 9 + 2 * 9 + 2,  # failed trials count as they trained
        "epochs_saved": (9 - 3) + (9 - 1),
        "saving": pytest.approx(14 / 47),
    }


def test_hypervolume_curve_in_finishing_order():
    trials, epochs, _ = make_tables()
    info = get_compute_info(trials, epochs, OBJECTIVES)
    curve = info["curve"]
    assert info["order"] == "finish time"
    assert info["reference"] == [0.0, 950.0]  # accuracy -> 0; params: 900 + 10% of 500
    assert info["final_hypervolume"] == pytest.approx(0.3 * 550 + 0.2 * 150)
    assert curve["numbers"] == [None, 5, 1, 3, 0, 6, 2]  # trial 4 (repeat) is not a step
    assert curve["epochs"] == [0, 1, 4, 6, 15, 24, 33]
    assert curve["fraction"] == pytest.approx([0, 0, 0, 0, 165 / 195, 165 / 195, 1.0])
    assert curve["fraction"][-1] == 1.0
    assert all(b >= a for a, b in zip(curve["fraction"], curve["fraction"][1:]))


def test_order_falls_back_to_number_without_times():
    trials, epochs, _ = make_tables()
    info = get_compute_info(trials.drop(columns=["datetime_start"]), epochs, OBJECTIVES)
    assert info["order"] == "trial number"
    assert info["curve"]["numbers"] == [None, 0, 1, 2, 3, 5, 6]
    assert info["curve"]["epochs"] == [0, 9, 12, 21, 23, 24, 33]
    assert info["curve"]["fraction"] == pytest.approx([0, 165 / 195, 165 / 195, 1, 1, 1, 1])


def test_stopped_trial_is_never_on_the_front():
    trials, epochs, meta = make_tables()
    info = get_compute_info(trials, epochs, OBJECTIVES)
    assert info["front"] == [0, 2]  # not 1 (PRUNED, best values), not 4 (repeat)
    pareto = get_pareto_info(trials, meta)
    assert 1 not in pareto["categories"]["pareto"]["numbers"]
    assert 1 not in pareto["categories"]["dominated"]["numbers"]
    assert set(pareto["categories"]["pareto"]["numbers"]) - {4} == {0, 2}


def test_per_trial_rows():
    trials, epochs, _ = make_tables()
    rows = {t["number"]: t for t in get_compute_info(trials, epochs, OBJECTIVES)["trials"]}
    assert rows[1] == {"number": 1, "epochs_trained": 3, "stopped_at_epoch": 3, "state": "PRUNED", "outcome": "stopped"}
    assert rows[0]["stopped_at_epoch"] is None and rows[0]["outcome"] == "complete"
    assert rows[4]["epochs_trained"] == 0 and rows[4]["outcome"] == "repeat"
    assert rows[3]["outcome"] == "failed"
    assert [t["number"] for t in get_compute_info(trials.iloc[::-1], epochs, OBJECTIVES)["trials"]] == list(range(7))


def test_epochs_from_the_epochs_table_and_max_epochs():
    trials, epochs, _ = make_tables()
    base = get_compute_info(trials, epochs, OBJECTIVES)
    # without epochs_trained the epochs table is counted (the repeat's copied history is not)
    fallback = get_compute_info(trials.drop(columns=["epochs_trained"]), epochs, OBJECTIVES)
    assert fallback["totals"] == base["totals"]
    longer = get_compute_info(trials, epochs, OBJECTIVES, max_epochs=12)["totals"]
    assert longer["full_epochs"] == 12
    assert longer["fifo_epochs"] == 5 * 12 + 2 and longer["epochs_saved"] == 62 - 33


def test_empty_and_no_feasible_trial():
    trials, epochs, _ = make_tables()
    info = get_compute_info(trials.iloc[:0], epochs.iloc[:0], OBJECTIVES)
    assert info["curve"]["epochs"] == [0] and info["curve"]["fraction"] == [0.0]
    assert info["totals"]["epochs_trained"] == 0 and info["totals"]["saving"] == 0.0 and info["front"] == []
    only_stopped = get_compute_info(trials[trials["state"] == "PRUNED"], None, OBJECTIVES)
    assert only_stopped["final_hypervolume"] == 0.0 and only_stopped["front"] == []
    assert only_stopped["curve"]["fraction"] == [0.0, 0.0, 0.0]
    # no epochs table: the full count is the most epochs seen (3); FIFO would train 2 x 3
    assert only_stopped["totals"]["full_epochs"] == 3 and only_stopped["totals"]["fifo_epochs"] == 6
    assert only_stopped["totals"]["saving"] == pytest.approx(2 / 6)


def test_section_wanted():
    trials, _, _ = make_tables()
    assert compute_section_wanted(trials, {})
    complete = trials[trials["state"] != "PRUNED"]
    assert not compute_section_wanted(complete, {})
    assert not compute_section_wanted(complete, {"scheduler": "fifo"})
    assert compute_section_wanted(complete, {"scheduler": {"name": "mo_asha"}})
    # a PRUNED row without a stop epoch (no scheduler stopped it) does not call for the section
    assert not compute_section_wanted(trials.assign(stopped_at_epoch=np.nan), {})
    assert scheduler_name({"scheduler": {"name": "mo_asha"}}) == "mo_asha" and scheduler_name({}) is None


# --------------------------------------------------------------------------------------------
# Figures and page
# --------------------------------------------------------------------------------------------


def test_figures_build():
    trials, epochs, _ = make_tables()
    info = get_compute_info(trials, epochs, OBJECTIVES)
    hv = draw_hypervolume_per_epoch(info)
    assert hv.layout.xaxis.title.text == "epochs trained (cumulative)"
    assert hv.layout.yaxis.title.text == "hypervolume (fraction of final)"
    assert list(hv.data[0].x) == info["curve"]["epochs"] and "markers" in hv.data[0].mode
    bars = draw_epochs_per_trial(info)
    names = [t.name for t in bars.data]
    assert names == ["complete (3)", "stopped early (PRUNED) (2)", "failed (1)"]
    assert list(bars.data[1].x) == [1, 5] and list(bars.data[1].y) == [3, 1]
    assert bars.layout.yaxis.title.text == "epochs trained"
    assert any(s.line.dash == "dash" and s.y0 == FULL for s in bars.layout.shapes)
    assert [name for name, _ in compute_figures(info)] == ["compute_hypervolume_per_epoch", "compute_epochs_per_trial"]
    empty = get_compute_info(trials.iloc[:0], None, OBJECTIVES)
    draw_hypervolume_per_epoch(empty), draw_epochs_per_trial(empty)


def _plots(page: str) -> int:
    return page.count("Plotly.newPlot(")


def test_page_has_the_section_with_a_stopped_trial(tmp_path):
    trials, epochs, meta = make_tables()
    page = write_report(trials, epochs, meta, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Compute</h2>" in page
    assert "Trials stopped early by mo_asha are PRUNED" in page
    assert "early stopping saved 14 of 47 epochs (29.8%)" in page
    assert "dse-compute_hypervolume_per_epoch" in page and "dse-compute_epochs_per_trial" in page
    assert page.count("plotly.js v") == 1
    assert page.index("<h2>Hypervolume</h2>") < page.index("<h2>Compute</h2>") < page.index("<h2>Training dynamics")

    complete = trials[trials["state"] != "PRUNED"]
    without = write_report(complete, epochs, meta, tmp_path / "n.html").read_text(encoding="utf-8")
    assert "<h2>Compute</h2>" not in without and "stopped early" not in without
    assert _plots(page) == _plots(without) + 2

    fifo = write_report(complete, epochs, {**meta, "scheduler": "fifo"}, tmp_path / "f.html").read_text(encoding="utf-8")
    assert "<h2>Compute</h2>" not in fifo


def test_page_section_from_the_scheduler_and_png(tmp_path, monkeypatch):
    trials, epochs, meta = make_tables()
    complete = trials[trials["state"] != "PRUNED"]
    meta = {**meta, "scheduler": {"name": "mo_asha"}, "max_epochs": 10}
    page = write_report(complete, epochs, meta, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Compute</h2>" in page
    # trials 0, 2, 6 to 10 epochs, the failed trial's 2 and the repeat's 0 as they are
    assert "trial trained to 10 epochs) would have trained 32:" in page

    from dse.report import page as report_page

    written = []
    monkeypatch.setattr(report_page, "export_png", lambda fig, path: written.append(path.name))
    write_report(trials, epochs, meta, tmp_path / "p.html", png_dir=tmp_path / "png")
    assert {"compute_hypervolume_per_epoch.png", "compute_epochs_per_trial.png"} <= set(written)
