"""Report sections of ``dse rescore``: info functions on hand-made rescore files, figures, escaping."""

from __future__ import annotations

import copy
import json

import plotly.graph_objects as go
import pytest

from dse.report.curves_info import (
    MAX_STEP_TRIALS,
    NO_EPS_CURVES,
    NO_STEP_CURVES,
    NO_TRANSFER,
    get_eps_curves_info,
    get_step_curves_info,
    get_transfer_info,
)
from dse.report.rescore_figures import draw_eps_curves, draw_rescore, draw_step_curves, draw_transfer
from dse.report.rescore_info import NO_RESCORE, get_rescore_info
from dse.report.robustness import get_rescore_table_info, robustness_sections, robustness_summary

EVIL = "<script>alert('x')</script>"
SEARCH = "PGD-20 linf eps=0.1 step=0.025 restarts=1 loss=ce on 100 validation samples (seed 0)"
STANDARD = "standard suite, worst case per sample of: PGD-50 x5, APGD-CE, APGD-T; 100 samples, seed 0"
QUICK = "quick suite, worst case per sample of: APGD-CE, FAB; 100 samples, seed 0"


def eps_curve(accs, norm="linf", chance=0.1, below=None):
    step = 1 / 255 if norm == "linf" else 0.125
    return {
        "kind": "eps_curve", "attack": "PGD-20 linf step=0.25*eps restarts=1 loss=ce", "norm": norm, "steps": 20,
        "samples": 100, "chance": chance, "points": [{"eps": k * step, "acc": a} for k, a in enumerate(accs)],
        "below_chance_at": below,
    }


def step_curve(worst_ratio=0.5, iterations=4):
    curves = []
    for k, ratio in enumerate((0.05, 0.25, 0.5)):
        mean = [0.9 - 0.05 * (k + 1) * t for t in range(iterations + 1)]
        curves.append({"step_ratio": ratio, "step_size": ratio * 0.1, "mean_acc": mean,
                       "worst_acc": [m - 0.02 for m in mean]})
    return {
        "kind": "step_size_curve", "eps": 0.1, "norm": "linf", "iterations": iterations, "runs": 3, "samples": 100,
        "curves": curves, "worst_step_ratio": worst_ratio, "worst_step_size": worst_ratio * 0.1,
        "worst_final_acc": curves[-1]["mean_acc"][-1],
    }


def trial(number, search, robust, per_attack, *, flags=(), curves=True, drop="auto", measurement=STANDARD,
          cand=None):
    row = {
        "number": number,
        "candidate": cand or {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2},
        "checkpoint": f"runs/tiny/trial-{number}.pt",
        "search_robust_acc": search,
        "search_measurement": SEARCH if search is not None else None,
        "drop": (search - robust if search is not None else None) if drop == "auto" else drop,
        "suite": "standard",
        "measurement": measurement,
        "mode": "independent",
        "samples": 100,
        "natural_acc": 0.97,
        "robust_acc": robust,
        "per_attack": per_attack,
        "attacks": {k: {"robust_acc": v, "description": k, "seconds": 1.0, "white_box": True, "library": "dse"}
                    for k, v in per_attack.items()},
        "masking_flags": list(flags),
        "checks": {
            "zero_or_nonfinite_gradients": {"passed": "zero_or_nonfinite_gradients" not in flags,
                                            "zero_fraction": 0.3 if flags else 0.0, "nonfinite_fraction": 0.0,
                                            "max": 0.05},
            "black_box_beats_white_box": {"passed": "black_box_beats_white_box" not in flags,
                                          "square": 0.4, "white_box": 0.6},
        },
    }
    if curves:
        row["eps_curve"] = eps_curve([0.97, 0.9, 0.7, 0.4, 0.05], below=4 / 255)
        row["step_size_curve"] = step_curve(worst_ratio=0.5 if number != 5 else 0.25)
    return row


def standard_rescore():
    """Three trials, listed out of order: 5 is flagged, 7 has no curves and no search figure."""
    return {
        "study": "tiny",
        "suite": "standard",
        "split": "val",
        "trials": [
            trial(5, 0.80, 0.50, {"pgd-50x5": 0.55, "apgd-ce": 0.52, "apgd-t": 0.50},
                  flags=("zero_or_nonfinite_gradients", "black_box_beats_white_box")),
            trial(3, 0.72, 0.685, {"pgd-50x5": 0.69, "apgd-ce": 0.69, "apgd-t": 0.685}, drop=None),
            trial(7, None, 0.60, {"pgd-50x5": 0.61, "apgd-ce": 0.60, "apgd-t": 0.60}, curves=False),
        ],
        "transfer": {
            "kind": "transfer", "attack": "PGD-20 linf eps=0.1", "samples": 100,
            "models": ["trial 3", "trial 5", "trial 7"],
            "clean_acc": [0.97, 0.95, 0.0],
            "acc": [[0.70, 0.88, 0.0], [0.91, 0.66, 0.0], [0.93, 0.90, 0.0]],
            "vulnerability": [[0.28, 0.07, None], [0.06, 0.31, None], [0.04, 0.05, None]],
        },
    }


def quick_rescore():
    """Two trials, no curves, no transfer, its own attacks."""
    return {
        "study": "tiny",
        "suite": "quick",
        "split": "test",
        "trials": [
            trial(3, 0.72, 0.70, {"apgd-ce": 0.70, "fab": 0.71}, curves=False, measurement=QUICK),
            trial(5, 0.80, 0.62, {"apgd-ce": 0.62, "fab": 0.64}, curves=False, measurement=QUICK),
        ],
        "transfer": None,
    }


# --------------------------------------------------------------------------------------------
# get_rescore_info / draw_rescore
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [[], None])
def test_rescore_info_empty(empty):
    info = get_rescore_info(empty)
    assert info == {"suites": [], "flagged": [], "attacks": [], "message": NO_RESCORE}
    assert "dse rescore STUDY.yaml --suite standard" in info["message"]


def test_rescore_info_values_and_order():
    info = get_rescore_info([standard_rescore(), quick_rescore()])
    assert info["message"] is None
    assert [s["suite"] for s in info["suites"]] == ["standard", "quick"]  # input order
    std, quick = info["suites"]
    assert std["split"] == "val" and quick["split"] == "test" and std["study"] == "tiny"
    assert [t["number"] for t in std["trials"]] == [3, 5, 7]  # by trial number
    assert [t["label"] for t in std["trials"]] == ["trial 3", "trial 5", "trial 7"]
    assert [t["search_robust_acc"] for t in std["trials"]] == [0.72, 0.80, None]
    assert [t["robust_acc"] for t in std["trials"]] == [0.685, 0.50, 0.60]
    drops = [t["drop"] for t in std["trials"]]
    assert drops[0] == pytest.approx(0.035)  # None in the file: computed from both accuracies
    assert drops[1] == pytest.approx(0.30) and drops[2] is None
    assert std["max_drop"] == pytest.approx(0.30)
    assert std["trials"][0]["per_attack"] == {"pgd-50x5": 0.69, "apgd-ce": 0.69, "apgd-t": 0.685}
    assert list(std["trials"][0]["per_attack"]) == ["pgd-50x5", "apgd-ce", "apgd-t"]
    assert [t["flags"] for t in std["trials"]] == [[], ["zero_or_nonfinite_gradients", "black_box_beats_white_box"], []]
    assert std["trials"][1]["flag_details"] == [
        "zero_or_nonfinite_gradients (zero_fraction=0.3, nonfinite_fraction=0, max=0.05)",
        "black_box_beats_white_box (square=0.4, white_box=0.6)",
    ]
    assert std["flagged"] == [5] and quick["flagged"] == []
    assert std["measurements"] == [STANDARD] and quick["measurements"] == [QUICK]
    assert std["search_measurements"] == [SEARCH] and std["samples"] == [100]
    assert std["trials"][0]["measurement"] == STANDARD and std["trials"][0]["search_measurement"] == SEARCH
    assert std["trials"][2]["search_measurement"] is None
    assert std["trials"][0]["candidate_text"] == "mobilenet_tiny, width_mult=0.35, expand_ratio=2"
    assert std["attacks"] == ["pgd-50x5", "apgd-ce", "apgd-t"] and quick["attacks"] == ["apgd-ce", "fab"]
    assert info["attacks"] == ["pgd-50x5", "apgd-ce", "apgd-t", "fab"]
    assert info["flagged"] == [{"suite": "standard", "number": 5, "label": "trial 5",
                                "flags": ["zero_or_nonfinite_gradients", "black_box_beats_white_box"]}]
    hover = std["trials"][1]["hover"]
    assert "masking: zero_or_nonfinite_gradients, black_box_beats_white_box" in hover
    assert "PGD-20 linf eps=0.1" in hover and "standard suite, worst case per sample of" in hover
    assert "masking" not in std["trials"][0]["hover"]
    assert "search robust acc: not recorded" in std["trials"][2]["hover"]


def test_rescore_info_suite_without_trials():
    empty = {"study": "tiny", "suite": "full", "split": "val", "trials": []}
    info = get_rescore_info([empty])
    assert info["message"] is None and info["suites"][0]["trials"] == []
    assert info["suites"][0]["message"] == "The full suite re-scored no trial."
    fig = draw_rescore(info)
    assert isinstance(fig, go.Figure) and len(fig.data) == 0
    sections = robustness_sections([empty])
    assert [(t, s) for t, s, _, _ in sections] == [("Robustness re-score", "rescore")]
    assert sections[0][3] is None and "re-scored no trial" in sections[0][2]


def test_draw_rescore_two_suites():
    info = get_rescore_info([standard_rescore(), quick_rescore()])
    fig = draw_rescore(info)
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["drop", "search robust acc", "re-scored robust acc", "re-scored, masking flagged",
                     "drop", "search robust acc", "re-scored robust acc"]
    assert [t.showlegend for t in fig.data] == [True, True, True, True, False, False, False]
    drop, search, suite, flagged = fig.data[:4]
    # trial 7 has no search figure: no dumbbell bar for it
    assert list(drop.x) == ["trial 3", "trial 3", None, "trial 5", "trial 5", None]
    assert list(drop.y) == [0.72, 0.685, None, 0.80, 0.50, None]
    assert list(search.x) == ["trial 3", "trial 5", "trial 7"] and list(search.y) == [0.72, 0.80, None]
    assert list(suite.x) == ["trial 3", "trial 7"] and list(suite.y) == [0.685, 0.60]
    assert list(flagged.x) == ["trial 5"] and flagged.marker.symbol == "x"
    assert "masking: zero_or_nonfinite_gradients" in flagged.hovertext[0]
    assert fig.data[4].xaxis == "x2"  # the second suite in its own panel
    assert fig.layout.height == 460


def test_draw_rescore_empty():
    fig = draw_rescore(get_rescore_info([]))
    assert isinstance(fig, go.Figure) and len(fig.data) == 0
    assert "No rescore yet" in fig.layout.annotations[0].text


# --------------------------------------------------------------------------------------------
# eps curves
# --------------------------------------------------------------------------------------------


def test_eps_curves_info():
    info = get_eps_curves_info(standard_rescore())
    assert info["message"] is None
    assert [line["number"] for line in info["lines"]] == [3, 5] and info["skipped"] == [7]
    line = info["lines"][0]
    assert line["label"] == "trial 3"
    assert line["eps"] == pytest.approx([0, 1 / 255, 2 / 255, 3 / 255, 4 / 255])
    assert line["acc"] == [0.97, 0.9, 0.7, 0.4, 0.05]
    assert line["k255"] == ["0/255", "1/255", "2/255", "3/255", "4/255"]
    assert line["below_chance_at"] == pytest.approx(4 / 255)
    assert info["norm"] == "linf" and info["norm_label"] == "L-inf" and info["chance"] == 0.1
    assert info["samples"] == 100 and info["steps"] == 20 and info["split"] == "val"
    assert info["attack"] == "PGD-20 linf step=0.25*eps restarts=1 loss=ce"


def test_eps_curves_info_l2_and_fractional_k():
    r = standard_rescore()
    r["trials"][1]["eps_curve"] = eps_curve([0.9, 0.5], norm="l2")
    r["trials"][0]["eps_curve"] = eps_curve([0.9, 0.5], norm="l2")
    info = get_eps_curves_info(r)
    assert info["norm"] == "l2" and info["norm_label"] == "L2"
    assert all(line["k255"] is None for line in info["lines"])
    fig = draw_eps_curves(info)
    assert "L2" in fig.layout.xaxis.title.text and "k/255" not in fig.layout.xaxis.title.text
    r["trials"][0]["eps_curve"]["points"] = [{"eps": 0.0, "acc": 0.9}, {"eps": 0.0039, "acc": 0.8}]
    r["trials"][0]["eps_curve"]["norm"] = "linf"  # r["trials"][0] is trial 5, the second line
    assert get_eps_curves_info(r)["lines"][1]["k255"] == ["0/255", "0.99/255"]


def test_eps_curves_info_missing():
    info = get_eps_curves_info(quick_rescore())
    assert info["lines"] == [] and info["skipped"] == [3, 5]
    assert info["message"] == NO_EPS_CURVES.format(suite="quick")
    assert "--no-curves" in info["message"]
    fig = draw_eps_curves(info)
    assert isinstance(fig, go.Figure) and len(fig.data) == 0


def test_draw_eps_curves():
    fig = draw_eps_curves(get_eps_curves_info(standard_rescore()))
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["trial 3", "trial 5", "chance (0.1)"]
    chance = fig.data[-1]
    assert chance.line.dash == "dash" and list(chance.y) == [0.1, 0.1]
    assert list(chance.x) == pytest.approx([0, 4 / 255])
    assert "L-inf" in fig.layout.xaxis.title.text and "k/255" in fig.layout.xaxis.title.text
    assert list(fig.data[0].customdata) == ["0/255", "1/255", "2/255", "3/255", "4/255"]
    assert "%{customdata}" in fig.data[0].hovertemplate and "accuracy" in fig.data[0].hovertemplate


# --------------------------------------------------------------------------------------------
# step-size curves
# --------------------------------------------------------------------------------------------


def test_step_curves_info():
    info = get_step_curves_info(standard_rescore())
    assert info["message"] is None
    assert info["selected"] == [3, 5] and info["available"] == [3, 5] and info["skipped"] == [7]
    assert info["eps"] == 0.1 and info["norm"] == "linf" and info["iterations"] == 4 and info["runs"] == 3
    assert info["step_ratios"] == [0.05, 0.25, 0.5]
    p3, p5 = info["panels"]
    assert p3["worst_step_ratio"] == 0.5 and p3["worst_step_size"] == pytest.approx(0.05)
    assert p5["worst_step_ratio"] == 0.25
    assert p3["title"] == "trial 3: worst case step=0.5*eps (0.05), final acc 0.3"
    assert p3["short_title"] == "trial 3: worst step=0.5*eps"
    assert [c["step_ratio"] for c in p3["curves"]] == [0.05, 0.25, 0.5]
    c = p3["curves"][0]
    assert c["iteration"] == [0, 1, 2, 3, 4] and c["name"] == "step=0.05*eps (0.005)"
    assert c["mean_acc"] == pytest.approx([0.9, 0.85, 0.8, 0.75, 0.7])
    assert c["worst_acc"] == pytest.approx([0.88, 0.83, 0.78, 0.73, 0.68])


def test_step_curves_info_bounded():
    r = standard_rescore()
    base = r["trials"][1]
    r["trials"] = [dict(copy.deepcopy(base), number=n) for n in range(10)]
    info = get_step_curves_info(r)
    assert len(info["panels"]) == MAX_STEP_TRIALS == 6
    assert info["selected"][0] == 0 and info["selected"][-1] == 9  # spread, both ends kept
    assert info["selected"] == sorted(info["selected"]) and info["available"] == list(range(10))
    fig = draw_step_curves(info)
    assert len(fig.data) == 6 * 3 * 2
    assert fig.layout.height == 120 + 300 * 2  # two rows of three panels


def test_step_curves_info_missing():
    info = get_step_curves_info(quick_rescore())
    assert info["panels"] == [] and info["skipped"] == [3, 5]
    assert info["message"] == NO_STEP_CURVES.format(suite="quick")
    fig = draw_step_curves(info)
    assert isinstance(fig, go.Figure) and len(fig.data) == 0


def test_draw_step_curves():
    fig = draw_step_curves(get_step_curves_info(standard_rescore()))
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert len(names) == 2 * 3 * 2
    assert names[:6] == [
        "step=0.05*eps mean of 3 runs", "step=0.05*eps worst of 3 runs",
        "step=0.25*eps mean of 3 runs", "step=0.25*eps worst of 3 runs",
        "step=0.5*eps mean of 3 runs", "step=0.5*eps worst of 3 runs",
    ]
    assert names[6:] == names[:6]
    assert [t.showlegend for t in fig.data] == [True] * 6 + [False] * 6
    assert [t.line.dash for t in fig.data[:2]] == ["solid", "dot"]
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["trial 3: worst step=0.5*eps", "trial 5: worst step=0.25*eps"]
    assert "trial 3: worst case step=0.5*eps (0.05), final acc 0.3" in fig.data[0].hovertemplate


# --------------------------------------------------------------------------------------------
# transfer
# --------------------------------------------------------------------------------------------


def test_transfer_info():
    info = get_transfer_info(standard_rescore())
    assert info["message"] is None
    assert info["models"] == ["trial 3", "trial 5", "trial 7"]
    assert info["clean_acc"] == [0.97, 0.95, 0.0]
    assert info["acc"][0] == [0.70, 0.88, 0.0] and info["acc"][1][0] == 0.91
    assert info["white_box"] == [0.70, 0.66, 0.0]
    assert info["vulnerability"][0] == [0.28, 0.07, None]
    assert info["acc_text"][0] == ["0.70", "0.88", "0.00"]
    assert info["vulnerability_text"][2] == ["0.04", "0.05", ""]
    assert info["attack"] == "PGD-20 linf eps=0.1" and info["samples"] == 100 and info["split"] == "val"


@pytest.mark.parametrize("transfer", ["absent", None, {"models": []}])
def test_transfer_info_missing(transfer):
    r = standard_rescore()
    if transfer == "absent":
        del r["transfer"]
    else:
        r["transfer"] = transfer
    info = get_transfer_info(r)
    assert info["message"] == NO_TRANSFER.format(suite="standard") and info["models"] == []
    fig = draw_transfer(info)
    assert isinstance(fig, go.Figure) and len(fig.data) == 0


def test_draw_transfer():
    fig = draw_transfer(get_transfer_info(standard_rescore()))
    assert isinstance(fig, go.Figure)
    assert [(t.type, t.name) for t in fig.data] == [("heatmap", "transfer accuracy"), ("heatmap", "vulnerability")]
    acc, vuln = fig.data
    assert list(acc.x) == list(acc.y) == ["trial 3", "trial 5", "trial 7"]
    assert acc.texttemplate == vuln.texttemplate == "%{text}"
    assert vuln.z[0][2] is None and vuln.text[0][2] == ""  # undefined vulnerability: a blank cell
    assert acc.zmin == 0.0 and acc.zmax == 1.0
    assert fig.layout.yaxis.autorange == "reversed"  # first source on top


# --------------------------------------------------------------------------------------------
# Sections, summary, escaping
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [[], None])
def test_sections_and_summary_empty(empty):
    sections = robustness_sections(empty)
    assert sections == [("Robustness re-score", "rescore",
                         "No rescore yet: run `dse rescore STUDY.yaml --suite standard`.", None)]
    assert robustness_summary(empty) == ""


def test_sections_order_and_figures():
    sections = robustness_sections([standard_rescore(), quick_rescore()])
    assert [(title, slug) for title, slug, _, _ in sections] == [
        ("Robustness re-score", "rescore"),
        ("Robust accuracy vs eps (standard suite)", "eps_curves_standard"),
        ("PGD convergence per step size (standard suite)", "step_curves_standard"),
        ("Transfer between front points (standard suite)", "transfer_standard"),
        ("Robust accuracy vs eps (quick suite)", "eps_curves_quick"),
        ("PGD convergence per step size (quick suite)", "step_curves_quick"),
        ("Transfer between front points (quick suite)", "transfer_quick"),
    ]
    figs = [fig for _, _, _, fig in sections]
    assert all(isinstance(f, go.Figure) for f in figs[:4]) and figs[4:] == [None, None, None]
    notes = [note for _, _, note, _ in sections]
    assert STANDARD in notes[0] and QUICK in notes[0] and "Masking flagged: trial 5." in notes[0]
    assert "100 samples of the val split" in notes[1] and "No curve for: trial 7." in notes[1]
    assert "3 random starts" in notes[2] and "No curves for: trial 7." in notes[2]
    assert "diagonal is the white-box accuracy" in notes[3]
    assert notes[4] == NO_EPS_CURVES.format(suite="quick") and notes[6] == NO_TRANSFER.format(suite="quick")


def test_sections_duplicate_suites_get_unique_slugs():
    slugs = [slug for _, slug, _, _ in robustness_sections([quick_rescore(), quick_rescore()])]
    assert len(slugs) == len(set(slugs)) and "eps_curves_quick_2" in slugs


def test_summary_table():
    page = robustness_summary([standard_rescore(), quick_rescore()])
    header = "".join(f"<th>{h}</th>" for h in ["suite", "trial", "candidate", "search robust acc", "suite robust acc",
                                                "drop", "pgd-50x5", "apgd-ce", "apgd-t", "fab", "masking flags"])
    assert header in page and 'class="dse-sortable"' in page
    assert page.count("<tr data-number=") == 5
    row5 = page.split('<tr data-number="5">')[1].split("</tr>")[0]
    assert ">0.8</td>" in row5 and ">0.5</td>" in row5 and ">0.3</td>" in row5
    assert "zero_or_nonfinite_gradients, black_box_beats_white_box" in row5 and "color:#a00" in row5
    row7 = page.split('<tr data-number="7">')[1].split("</tr>")[0]
    assert '<td data-sort="">' in row7  # no search figure, no drop: blank cells sorted last
    assert f"<b>standard</b> suite (val split): {STANDARD}" in page


def test_summary_table_info():
    assert get_rescore_table_info([]) is None and get_rescore_table_info(None) is None
    info = get_rescore_table_info([standard_rescore(), quick_rescore()])
    assert info["columns"][:6] == ["suite", "trial", "candidate", "search robust acc", "suite robust acc", "drop"]
    assert info["columns"][-1] == "masking flags" and len(info["rows"]) == 5
    assert [r["number"] for r in info["rows"]] == [3, 5, 7, 3, 5]
    row5 = info["rows"][1]["cells"]
    assert row5[-1]["display"] == "zero_or_nonfinite_gradients, black_box_beats_white_box"
    assert row5[-1]["style"] and row5[3]["sort"] == 0.80
    assert info["rows"][2]["cells"][3] == {"display": "", "sort": None, "css_class": "", "style": ""}
    assert info["suites"][0] == {"suite": "standard", "text": f" suite (val split): {STANDARD}"}
    # the info dict of the same files keeps the flags as a list
    assert get_rescore_info([standard_rescore()])["suites"][0]["trials"][1]["flags"] == [
        "zero_or_nonfinite_gradients", "black_box_beats_white_box"]


def _figure_strings(fig: go.Figure) -> str:
    """Every string plotly will render as HTML: trace names, hover texts, titles, annotations."""
    out = [json.dumps(fig.layout.title.text)]
    out += [a.text for a in fig.layout.annotations or []]
    out += [fig.layout.xaxis.title.text or ""]
    for t in fig.data:
        out.append(str(t.name))
        out += [str(h) for h in (getattr(t, "hovertext", None) or [])]
        out.append(str(getattr(t, "hovertemplate", "") or ""))
        if t.type == "heatmap":
            out += [str(v) for v in t.x]
    return "\n".join(out)


def test_escaping_of_candidate_measurement_and_names():
    r = standard_rescore()
    r["suite"] = "standard"
    r["trials"][0]["candidate"] = {"arch": "mobilenet_tiny", "note": EVIL}
    r["trials"][0]["measurement"] = f"standard suite {EVIL}"
    r["trials"][1]["search_measurement"] = EVIL
    r["trials"][1]["masking_flags"] = [EVIL]
    r["trials"][1]["eps_curve"]["attack"] = EVIL
    r["transfer"]["models"][1] = EVIL
    r["transfer"]["attack"] = EVIL
    sections = robustness_sections([r])
    assert len(sections) == 4
    for title, slug, note, fig in sections:
        assert "<script>" not in note and "<script" not in slug
        assert fig is not None and "<script>" not in _figure_strings(fig)
    assert "&lt;script&gt;" in sections[0][2]  # the measurement, escaped, in the note
    assert "&lt;script&gt;" in sections[1][2] and "&lt;script&gt;" in sections[3][2]
    assert "&lt;script&gt;" in "".join(sections[0][3].data[1].hovertext)
    summary = robustness_summary([r])
    assert "<script>" not in summary and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in summary
    # the same figures as JSON (what write_report embeds) hold no raw tag either
    for _, _, _, fig in sections:
        assert "<script>" not in fig.to_json()


def test_evil_suite_name_is_escaped():
    r = quick_rescore()
    r["suite"] = EVIL
    sections = robustness_sections([r])
    for title, slug, note, fig in sections:
        assert "<" not in slug and "<script>" not in note
        if fig is not None:
            assert "<script>" not in _figure_strings(fig)
    assert "<script>" not in robustness_summary([r])
