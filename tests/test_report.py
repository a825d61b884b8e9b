"""HTML report: info functions against independent Pareto maths, and one offline HTML file."""

from __future__ import annotations

import json
import logging
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest

from dse.report import page as report_page
from dse.study.pareto import non_dominated_mask
from dse.report import (
    get_dynamics_info,
    get_hypervolume_info,
    get_pareto_info,
    get_summary_info,
    get_table_info,
    export_png,
    write_report,
)
from dse.report.formatting import escape, flag_list, format_cell, mask_password, slug, sort_key, spread
from dse.report.info import get_masking_info
from dse.report.rendering import environment, render

ALL_OBJECTIVES = [
    ("robust_acc", "maximize"),
    ("params", "minimize"),
    ("pert_instability", "minimize"),
    ("natural_acc", "maximize"),
    ("macs", "minimize"),
]
MEASUREMENT = "PGD-20 linf eps=8/255 step 2/255, 1 restart, on 512 validation samples"
EVIL = "<script>alert('x')</script>"


def make_study(n: int = 40, m: int = 2, seed: int = 0, *, with_epochs: bool = True, evil: bool = False):
    """A synthetic runner output: trials (with FAIL/RUNNING rows and infeasible rows), epochs, meta."""
    rng = np.random.default_rng(seed)
    objectives = ALL_OBJECTIVES[:m]
    rows = []
    for i in range(n):
        state = str(rng.choice(["COMPLETE"] * 7 + ["FAIL", "RUNNING", "PRUNED"]))
        cand = {
            "arch": "mobilenet_tiny",
            "width_mult": float(rng.choice([0.35, 0.5, 0.65, 1.0])),
            "expand_ratio": int(rng.choice([2, 4, 6, 10])),
        }
        if evil and i == 0:
            cand["note"] = EVIL
        row = {
            "number": i,
            "state": state,
            "candidate": json.dumps(cand),
            "cand.arch": cand["arch"],
            "cand.width_mult": cand["width_mult"],
            "cand.expand_ratio": cand["expand_ratio"],
            "error": (EVIL if evil else "RuntimeError: out of memory") if state == "FAIL" else None,
            "duration_s": float(rng.uniform(5, 50)) if state == "COMPLETE" else np.nan,
        }
        if evil:
            row["cand.note"] = cand.get("note")
        values = {
            "robust_acc": rng.uniform(0.1, 0.5),
            "params": float(rng.integers(50_000, 1_000_000)),
            "pert_instability": rng.uniform(0.0, 1.0),
            "natural_acc": rng.uniform(0.4, 0.9),
            "macs": float(rng.integers(1_000_000, 50_000_000)),
            "lipschitz": rng.uniform(1.0, 20.0),
        }
        for key, value in values.items():
            row[key] = value if state == "COMPLETE" else np.nan
        violation = max(0.0, (row["params"] - 700_000) / 700_000) if state == "COMPLETE" else 0.0
        row["feasible"] = bool(violation == 0.0)
        row["constraint_violation"] = violation
        rows.append(row)
    trials = pd.DataFrame(rows)
    epoch_rows = []
    if with_epochs:
        for number in trials.loc[trials["state"] == "COMPLETE", "number"]:
            for epoch in range(4):
                epoch_rows.append(
                    {
                        "number": number,
                        "epoch": epoch,
                        "val_natural_acc": 0.4 + 0.1 * epoch + rng.uniform(0, 0.05),
                        "val_robust_acc": 0.1 + 0.05 * epoch,
                        "val_pert_instability": 0.05 * epoch,
                        "train_loss": 1.0 / (epoch + 1),
                        "lr": 0.1,
                    }
                )
    epochs = pd.DataFrame(epoch_rows)
    metrics = [k for k in ("natural_acc", "robust_acc", "pert_instability", "lipschitz", "params", "macs")
               if k not in dict(objectives)]
    meta = {
        "name": "synthetic" + (f" {EVIL}" if evil else ""),
        "objectives": [{"name": k, "direction": d} for k, d in objectives],
        "metrics": metrics,
        "constraints": ["params <= 700000"],
        "measurement": MEASUREMENT,
        "storage": "sqlite:///study.db",
        "sampler": "NSGAIISampler",
    }
    return trials, epochs, meta


def independent_front(trials: pd.DataFrame, meta) -> set[int]:
    ok = trials[(trials["state"] == "COMPLETE") & trials["feasible"].astype(bool)]
    names = [o["name"] for o in meta["objectives"]]
    mask = non_dominated_mask(ok[names].to_numpy(float), [o["direction"] for o in meta["objectives"]])
    return set(ok.loc[mask, "number"].astype(int))


# --------------------------------------------------------------------------------------------
# Info functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_pareto_info_matches_independent_front(m, seed):
    trials, _, meta = make_study(n=50, m=m, seed=seed)
    info = get_pareto_info(trials, meta)
    pareto = set(info["categories"]["pareto"]["numbers"])
    assert pareto and pareto == independent_front(trials, meta)
    infeasible = set(trials.loc[(trials["state"] == "COMPLETE") & ~trials["feasible"], "number"])
    assert infeasible and set(info["categories"]["infeasible"]["numbers"]) == infeasible
    assert not pareto & infeasible
    # failed / running / pruned trials are drawn in no category
    drawn = {n for c in info["categories"].values() for n in c["numbers"]}
    assert not drawn & set(trials.loc[trials["state"] != "COMPLETE", "number"])
    assert info["labels"][0] == "robust_acc (max)" and info["labels"][1] == "params (min)"
    for cat in info["categories"].values():
        assert len(cat["numbers"]) == len(cat["values"]) == len(cat["hover"])
        assert all(len(v) == m for v in cat["values"])
    assert info["knee"] in pareto
    assert len(info["pairs"]) == {2: 1, 3: 3, 5: 3}[m]


def test_infeasible_point_that_dominates_everything_is_not_pareto():
    trials, _, meta = make_study(n=30, m=2, seed=3)
    super_row = trials.iloc[[0]].copy()
    super_row[["number", "state", "robust_acc", "params", "feasible", "constraint_violation"]] = [
        999, "COMPLETE", 0.99, 10.0, False, 0.5]
    trials = pd.concat([trials, super_row], ignore_index=True)
    info = get_pareto_info(trials, meta)
    assert 999 not in info["categories"]["pareto"]["numbers"]
    assert 999 in info["categories"]["infeasible"]["numbers"]
    assert set(info["categories"]["pareto"]["numbers"]) == independent_front(trials, meta)


def test_step_line_two_objectives_is_the_sorted_front():
    trials, _, meta = make_study(n=60, m=2, seed=4)
    info = get_pareto_info(trials, meta)
    step = info["steps"][0]
    assert set(step["numbers"]) == set(info["categories"]["pareto"]["numbers"])
    assert step["x"] == sorted(step["x"])
    # robust_acc up, params down along the front: y is non-decreasing too
    assert step["y"] == sorted(step["y"])
    assert step["line_shape"] == "vh"


def test_hover_text_has_number_candidate_and_values():
    trials, _, meta = make_study(n=20, m=2, seed=5)
    info = get_pareto_info(trials, meta)
    number = info["categories"]["pareto"]["numbers"][0]
    hover = info["categories"]["pareto"]["hover"][0]
    assert f"trial {number}" in hover
    assert "arch: mobilenet_tiny" in hover and "width_mult: " in hover and "<br>expand_ratio: " in hover
    for key in ("robust_acc", "params", "natural_acc", "lipschitz"):
        assert f"{key}: " in hover


def test_hypervolume_info():
    trials, _, meta = make_study(n=40, m=2, seed=6)
    info = get_hypervolume_info(trials, meta)
    assert info["numbers"] == sorted(trials["number"].tolist())
    assert len(info["hypervolume"]) == len(info["numbers"])
    assert np.all(np.diff(info["hypervolume"]) >= -1e-12)
    assert info["reference"][0] == 0.0
    assert "reference box" in info["title"] and "robust_acc=0" in info["reference_text"]
    # as a fraction of the box from the reference to the ideal point (best feasible value per objective)
    ok = trials[(trials["state"] == "COMPLETE") & trials["feasible"].astype(bool)]
    ideal = [ok["robust_acc"].max(), ok["params"].min()]
    assert info["ideal"] == pytest.approx(ideal)
    box = (ideal[0] - info["reference"][0]) * (info["reference"][1] - ideal[1])
    assert info["box_volume"] == pytest.approx(box)
    assert info["fraction"] == pytest.approx([v / box for v in info["hypervolume"]])
    assert 0.0 < info["fraction"][-1] <= 1.0


def test_dynamics_info_default_selection_and_explicit():
    trials, epochs, meta = make_study(n=80, m=2, seed=7)
    info = get_dynamics_info(trials, epochs, meta)
    assert info["message"] is None
    assert info["metrics"] == ["val_natural_acc", "val_robust_acc", "val_pert_instability"]
    pareto = independent_front(trials, meta)
    assert set(info["selected"]) <= pareto and 0 < len(info["selected"]) <= 8
    assert len(info["selected"]) == min(8, len(pareto))
    line = info["lines"][0]
    assert line["epoch"] == [0.0, 1.0, 2.0, 3.0] and len(line["values"]["val_robust_acc"]) == 4
    complete = trials.loc[trials["state"] == "COMPLETE", "number"].tolist()
    explicit = get_dynamics_info(trials, epochs, meta, selected=complete[:3])
    assert explicit["selected"] == complete[:3]


def test_dynamics_info_empty_epochs():
    trials, epochs, meta = make_study(n=10, m=2, with_epochs=False)
    info = get_dynamics_info(trials, epochs, meta)
    assert info["lines"] == [] and info["message"]
    assert get_dynamics_info(trials, pd.DataFrame(), meta)["message"]


def test_table_info_columns_and_rows():
    trials, _, meta = make_study(n=25, m=3, seed=8)
    info = get_table_info(trials, meta)
    cols = info["columns"]
    assert cols[:4] == ["number", "state", "pareto", "feasible"]
    for key in ("robust_acc", "params", "pert_instability", "natural_acc", "lipschitz", "arch", "width_mult",
                "expand_ratio", "error"):
        assert key in cols
    assert [r["number"] for r in info["rows"]] == sorted(trials["number"])
    pareto_rows = {r["number"] for r in info["rows"] if r["pareto"]}
    assert pareto_rows == independent_front(trials, meta)
    i = cols.index("params")
    row = info["rows"][0]
    assert row["cells"][i][1] is None or isinstance(row["cells"][i][1], float)


def test_summary_info_rows():
    trials, _, meta = make_study(n=30, m=2, seed=11)
    pareto = get_pareto_info(trials, meta)
    rows = dict(get_summary_info(trials, meta, pareto))
    assert rows["Objectives"] == "robust_acc (max) [fraction], params (min) [count]"
    assert rows["Constraints"] == "params <= 700000"  # raw: escaping happens in the template
    assert rows["Pareto set"] == f"{len(pareto['categories']['pareto']['numbers'])} distinct candidates"
    assert rows["Trials"].startswith("30 in all: ")
    assert rows["Knee point"].startswith(f"trial {pareto['knee']} ")
    assert rows["Sampler"] == "NSGAIISampler" and rows["Storage"] == "sqlite:///study.db"
    assert rows["Best per objective"].startswith("robust_acc: trial ")


def test_masking_info_and_flags_stay_lists():
    trials, _, meta = make_study(n=6, m=2, seed=12)
    assert get_masking_info(trials) == {"checked": 0, "flagged": 0}
    trials["masking_flags"] = [None, "none", "zero_grad;bb_beats_wb", "none", "zero_grad", None]
    assert get_masking_info(trials) == {"checked": 4, "flagged": 2}
    assert flag_list(None) is None and flag_list(float("nan")) is None
    assert flag_list("none") == [] and flag_list("a;b") == ["a", "b"] and flag_list(["a"]) == ["a"]
    info = get_pareto_info(trials.assign(masking_flags=["a;b"] * 6), meta)
    hovers = [h for c in info["categories"].values() for h in c["hover"]]
    assert hovers and all("<b>gradient masking suspected</b>: a, b" in h for h in hovers)


def test_formatting_helpers():
    assert escape(None) == "" and escape("<a href='x'>") == "&lt;a href=&#x27;x&#x27;&gt;"
    assert slug("pareto a/b <x>") == "pareto_a_b_x" and slug("<>") == "figure"
    assert spread(list(range(10)), 3) == [0, 4, 9] and spread([1, 2], 5) == [1, 2]
    assert format_cell(123456.0) == "123,456" and format_cell(0.123456) == "0.1235" and format_cell(True) == "yes"
    assert format_cell(float("nan")) == "" and format_cell(float("inf")) == "inf"
    assert sort_key(None) == "" and sort_key(3) == "3.0" and sort_key("x") == "x"
    assert mask_password("postgresql://bob:pw@h/db") == "postgresql://bob:***@h/db"


def test_template_environment_escapes():
    env = environment()
    assert env.autoescape("report.html.j2") and env.autoescape("sortable_table.html.j2")
    rows = [{"number": 1, "css_class": "", "cells": [{"display": EVIL, "sort": None, "css_class": "", "style": ""}]}]
    out = render("rescore_summary.html.j2", suites=[{"suite": EVIL, "text": " suite"}], columns=[EVIL], rows=rows)
    assert EVIL not in out and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in out
    assert '<td data-sort="">&lt;script&gt;' in out and out.endswith("</table></div>")


# --------------------------------------------------------------------------------------------
# The HTML page
# --------------------------------------------------------------------------------------------


def strip_bundle(page: str) -> str:
    """The page without the embedded plotly.js bundle (whose code holds URL string literals)."""
    start = page.index("plotly.js v")
    start = page.rindex("<script", 0, start)
    end = page.index("</script>", start)
    return page[:start] + page[end:]


def check_page(page: str, trials: pd.DataFrame) -> None:
    assert page.count("plotly.js v") == 1  # the bundle's header comment, once
    assert "<script src" not in page.lower()
    rest = strip_bundle(page)
    assert "http://" not in rest and "https://" not in rest
    assert "<link" not in rest.lower()
    assert MEASUREMENT in page
    assert "params &lt;= 700000" in page  # the constraint, escaped
    numbers = {int(n) for n in re.findall(r'<tr(?: class="[a-z]+")? data-number="(\d+)"', page)}
    assert numbers == set(trials["number"].astype(int))
    assert "dse-sortable" in page and "addEventListener" in page
    n_pareto = page.count('<tr class="pareto"')
    assert f"Pareto set</b></td><td>{n_pareto} distinct candidates" in page


@pytest.mark.parametrize("m", [2, 3, 5])
def test_write_report_objectives(tmp_path, m):
    trials, epochs, meta = make_study(n=30, m=m, seed=m)
    path = write_report(trials, epochs, meta, tmp_path / "sub" / "report.html")
    assert path == tmp_path / "sub" / "report.html" and path.is_file()
    assert list(tmp_path.rglob("*")) == [tmp_path / "sub", path]  # one file
    page = path.read_text(encoding="utf-8")
    check_page(page, trials)
    assert page.count("Plotly.newPlot(") == {2: 3, 3: 6, 5: 6}[m]  # pareto plots + hypervolume + dynamics
    assert "val_robust_acc" in page
    if m == 3:
        assert '"type":"scatter3d"' in page
    if m == 5:
        assert '"type":"parcoords"' in page
    assert "(max)" in page and "(min)" in page


def test_write_report_empty_epochs_and_selected(tmp_path):
    trials, epochs, meta = make_study(n=20, m=2, with_epochs=False)
    page = write_report(trials, epochs, meta, tmp_path / "r.html").read_text(encoding="utf-8")
    check_page(page, trials)
    assert "No per-epoch metrics were recorded" in page
    assert page.count("Plotly.newPlot(") == 2
    page = write_report(trials, None, meta, tmp_path / "r2.html").read_text(encoding="utf-8")
    assert "No per-epoch metrics were recorded" in page

    trials, epochs, meta = make_study(n=20, m=2, seed=2)
    chosen = trials.loc[trials["state"] == "COMPLETE", "number"].tolist()[:2]
    page = write_report(trials, epochs, meta, tmp_path / "r3.html", selected=chosen).read_text(encoding="utf-8")
    assert f"Trials shown: {chosen[0]}, {chosen[1]}." in page


def test_write_report_single_objective_and_no_complete_trial(tmp_path):
    trials, epochs, meta = make_study(n=15, m=1, seed=9)
    page = write_report(trials, epochs, meta, tmp_path / "one.html").read_text(encoding="utf-8")
    check_page(page, trials)
    trials["state"] = "FAIL"
    page = write_report(trials, epochs.iloc[:0], meta, tmp_path / "none.html").read_text(encoding="utf-8")
    assert "Pareto set</b></td><td>0 distinct candidates" in page and page.count("plotly.js v") == 1


def test_strings_from_data_are_escaped(tmp_path):
    trials, epochs, meta = make_study(n=30, m=2, seed=10, evil=True)
    assert (trials["state"] == "FAIL").any()
    page = write_report(trials, epochs, meta, tmp_path / "r.html").read_text(encoding="utf-8")
    assert EVIL not in page
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # table cells and title
    check_page(page, trials)


def test_storage_password_is_masked(tmp_path):
    trials, epochs, meta = make_study(n=10, m=2)
    meta["storage"] = "postgresql://bob:hunter2@db.local/dse"
    page = write_report(trials, epochs, meta, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "hunter2" not in page and "postgresql://bob:***@db.local/dse" in page


# --------------------------------------------------------------------------------------------
# PNG export
# --------------------------------------------------------------------------------------------


def test_export_png_without_kaleido(tmp_path, caplog, monkeypatch):
    import plotly.graph_objects as go

    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido -> ImportError
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    with caplog.at_level(logging.WARNING, logger="dse.report"):
        assert export_png(fig, tmp_path / "f.png") is False
    assert not (tmp_path / "f.png").exists()
    assert "kaleido" in caplog.text


def test_export_png_with_kaleido_but_no_chromium(tmp_path, caplog, monkeypatch):
    import plotly.graph_objects as go

    monkeypatch.setitem(sys.modules, "kaleido", types.SimpleNamespace(__version__="1.0.0"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    with caplog.at_level(logging.WARNING, logger="dse.report"):
        assert export_png(go.Figure(), tmp_path / "f.png") is False
    assert "Chromium" in caplog.text


def test_export_png_renderer_failure_is_a_warning(tmp_path, caplog, monkeypatch):
    import plotly.graph_objects as go

    monkeypatch.setitem(sys.modules, "kaleido", types.SimpleNamespace(__version__="0.2.1"))
    fig = go.Figure()
    monkeypatch.setattr(fig, "write_image", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no renderer")))
    with caplog.at_level(logging.WARNING, logger="dse.report"):
        assert export_png(fig, tmp_path / "f.png") is False
    assert "no renderer" in caplog.text


def test_write_report_png_dir(tmp_path, monkeypatch):
    written = []

    def fake_export(fig, path):
        written.append(path.name)
        return False

    monkeypatch.setattr(report_page, "export_png", fake_export)
    trials, epochs, meta = make_study(n=20, m=3, seed=1)
    write_report(trials, epochs, meta, tmp_path / "r.html", png_dir=tmp_path / "png")
    assert "hypervolume.png" in written and "pareto_3d.png" in written and "dynamics.png" in written
    assert "pareto_robust_acc_vs_params.png" in written
