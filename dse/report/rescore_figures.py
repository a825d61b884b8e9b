"""Thin plotly drawers of the rescore sections: each takes a rescore / curves info dict.

* :func:`draw_rescore`: per front point, the robust accuracy the search measured and the one the
  suite measured, as a dumbbell; trials whose gradient-masking checks failed are red crosses;
* :func:`draw_eps_curves`: accuracy against the radius (seed 002, Alg. 2), chance level dashed;
* :func:`draw_step_curves`: accuracy against the PGD iteration per step size, mean and worst over
  random starts (seed 004, sec. 4.1);
* :func:`draw_transfer`: transfer accuracy matrix and vulnerability (seed 003, eq. 7) heat-maps.

An info dict with a ``message`` is drawn as that message alone.
"""

from __future__ import annotations

import math
from typing import Any

from dse.report.curves_info import step_label
from dse.report.formatting import PALETTE, escape, format_number, k255

__all__ = ["FLAG_COLOR", "SEARCH_COLOR", "SUITE_COLOR", "draw_eps_curves", "draw_rescore", "draw_step_curves",
           "draw_transfer"]

SEARCH_COLOR = "#7f7f7f"
SUITE_COLOR = "#1f77b4"
FLAG_COLOR = "#d62728"


def _message_figure(title: str, message: str):
    """An empty figure that shows ``message`` (an info dict's reason for drawing nothing)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=escape(message), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_layout(title=escape(title), height=200, template="plotly_white",
                      xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def draw_rescore(info: dict[str, Any]):
    """Dumbbells per suite (one panel each): search robust acc -> suite robust acc per trial.

    Traces per suite panel: ``drop`` (the grey connecting lines), ``search robust acc``,
    ``re-scored robust acc`` (trials without flags) and, when a trial is flagged,
    ``re-scored, masking flagged`` (red crosses). The legend shows each name once.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    suites = [s for s in info["suites"] if s["trials"]]
    if not suites:
        return _message_figure("Re-scored robust accuracy", info["message"] or "Nothing was re-scored.")
    titles = [f"{escape(s['suite'])} suite ({escape(s['split'])} split)" for s in suites]
    fig = make_subplots(rows=1, cols=len(suites), subplot_titles=titles, shared_yaxes=True,
                        horizontal_spacing=0.06)
    shown: set[str] = set()

    def legend(name: str) -> bool:
        first = name not in shown
        shown.add(name)
        return first

    for c, s in enumerate(suites, start=1):
        trials = s["trials"]
        xs, ys = [], []
        for t in trials:
            if t["search_robust_acc"] is not None and t["robust_acc"] is not None:
                xs += [t["label"], t["label"], None]
                ys += [t["search_robust_acc"], t["robust_acc"], None]
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name="drop", line={"color": "#c8c8c8", "width": 3},
                       legendgroup="drop", showlegend=legend("drop"), hoverinfo="skip"),
            row=1, col=c,
        )
        fig.add_trace(
            go.Scatter(
                x=[t["label"] for t in trials],
                y=[t["search_robust_acc"] for t in trials],
                mode="markers",
                name="search robust acc",
                marker={"color": SEARCH_COLOR, "size": 9, "symbol": "circle-open", "line": {"width": 2}},
                legendgroup="search",
                showlegend=legend("search"),
                hovertext=[t["hover"] for t in trials],
                hovertemplate="%{hovertext}<extra></extra>",
            ),
            row=1, col=c,
        )
        clean = [t for t in trials if not t["flags"]]
        fig.add_trace(
            go.Scatter(
                x=[t["label"] for t in clean],
                y=[t["robust_acc"] for t in clean],
                mode="markers",
                name="re-scored robust acc",
                marker={"color": SUITE_COLOR, "size": 10, "symbol": "circle"},
                legendgroup="suite",
                showlegend=legend("suite"),
                hovertext=[t["hover"] for t in clean],
                hovertemplate="%{hovertext}<extra></extra>",
            ),
            row=1, col=c,
        )
        flagged = [t for t in trials if t["flags"]]
        if flagged:
            fig.add_trace(
                go.Scatter(
                    x=[t["label"] for t in flagged],
                    y=[t["robust_acc"] for t in flagged],
                    mode="markers",
                    name="re-scored, masking flagged",
                    marker={"color": FLAG_COLOR, "size": 12, "symbol": "x"},
                    legendgroup="flagged",
                    showlegend=legend("flagged"),
                    hovertext=[t["hover"] for t in flagged],
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                row=1, col=c,
            )
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=[t["label"] for t in trials],
                         row=1, col=c)
    fig.update_yaxes(title_text="robust accuracy", row=1, col=1)
    fig.update_layout(
        title="Robust accuracy of the front points: search attack vs attack suite",
        height=460,
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0.0},
        margin={"t": 110},
    )
    return fig


def draw_eps_curves(info: dict[str, Any]):
    """Accuracy against eps, one line per trial, chance level as a dashed ``chance`` line."""
    import plotly.graph_objects as go

    title = f"Robust accuracy vs eps ({escape(info['suite'])} suite)"
    if info["message"] is not None:
        return _message_figure(title, info["message"])
    fig = go.Figure()
    for k, line in enumerate(info["lines"]):
        k255 = " (%{customdata})" if line["k255"] is not None else ""
        template = f"{escape(line['label'])}<br>eps %{{x:.4g}}{k255}<br>accuracy %{{y:.3f}}<extra></extra>"
        fig.add_trace(
            go.Scatter(
                x=line["eps"],
                y=line["acc"],
                customdata=line["k255"],
                mode="lines+markers",
                marker={"size": 5},
                line={"color": PALETTE[k % len(PALETTE)]},
                name=escape(line["label"]),
                hovertemplate=template,
            )
        )
    if info["chance"] is not None:
        all_eps = [e for line in info["lines"] for e in line["eps"]]
        fig.add_trace(
            go.Scatter(
                x=[min(all_eps), max(all_eps)],
                y=[info["chance"], info["chance"]],
                mode="lines",
                line={"color": "#555555", "dash": "dash", "width": 1.5},
                name=f"chance ({format_number(info['chance'], 3)})",
                hoverinfo="skip",
            )
        )
    norm = escape(info["norm_label"])
    fig.update_layout(
        title=title + (f": {escape(info['attack'])}" if info["attack"] else ""),
        xaxis_title=f"eps ({norm} radius)" + (", k/255 in hover" if info["norm"] == "linf" else ""),
        yaxis_title="accuracy",
        yaxis={"range": [0, 1.02]},
        height=440,
        template="plotly_white",
    )
    return fig


def draw_step_curves(info: dict[str, Any]):
    """One panel per drawn trial: accuracy against the PGD iteration per step size.

    Per panel and step size two traces: ``<step> mean of N runs`` (solid) and ``<step> worst of N
    runs`` (dotted), one colour per step ratio; the legend shows each pair once.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = f"PGD convergence per step size ({escape(info['suite'])} suite)"
    if info["message"] is not None:
        return _message_figure(title, info["message"])
    panels = info["panels"]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[escape(p["short_title"]) for p in panels],
                        shared_yaxes=True, vertical_spacing=0.18 if rows > 1 else 0.1)
    colors = {r: PALETTE[k % len(PALETTE)] for k, r in enumerate(info["step_ratios"])}
    runs = info["runs"]
    of_runs = f" of {runs} runs" if runs is not None else " over runs"
    shown: set[str] = set()
    for k, panel in enumerate(panels):
        row, col = k // cols + 1, k % cols + 1
        for curve in panel["curves"]:
            color = colors[curve["step_ratio"]]
            for kind, dash in (("mean", "solid"), ("worst", "dot")):
                name = f"{step_label(curve['step_ratio'], None)} {kind}{of_runs}"
                fig.add_trace(
                    go.Scatter(
                        x=curve["iteration"],
                        y=curve[f"{kind}_acc"],
                        mode="lines",
                        line={"color": color, "dash": dash, "width": 2 if kind == "mean" else 1.5},
                        name=escape(name),
                        legendgroup=escape(name),
                        showlegend=name not in shown,
                        hovertemplate=(
                            f"{escape(panel['label'])}, {escape(curve['name'])}<br>iteration %{{x}}"
                            f"<br>{kind} accuracy %{{y:.3f}}<br>{escape(panel['title'])}<extra></extra>"
                        ),
                    ),
                    row=row,
                    col=col,
                )
                shown.add(name)
            fig.update_xaxes(title_text="PGD iteration", row=row, col=col)
    for r in range(1, rows + 1):
        fig.update_yaxes(title_text="accuracy", row=r, col=1)
    fig.update_annotations(font_size=13)
    eps = info["eps"]
    eps_text = f"eps={format_number(eps)}" + (f" ({k255(eps)})" if eps is not None and info["norm"] == "linf" else "")
    fig.update_layout(
        title=f"{title}: {escape(info['norm'] or '')} {escape(eps_text)}; solid = mean, dotted = worst{escape(of_runs)}",
        height=120 + 300 * rows,
        template="plotly_white",
        legend={"tracegroupgap": 2},
    )
    return fig


def draw_transfer(info: dict[str, Any]):
    """Two heat-maps: ``transfer accuracy`` (diagonal = white box) and ``vulnerability``."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = f"Transfer between front points ({escape(info['suite'])} suite)"
    if info["message"] is not None:
        return _message_figure(title, info["message"])
    models = [escape(m) for m in info["models"]]
    m = len(models)
    clean = [[info["clean_acc"][j] for j in range(m)] for _ in range(m)]
    vuln_vals = [v for row in info["vulnerability"] for v in row if v is not None]
    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.22,
        subplot_titles=["accuracy of target on source's examples", "vulnerability (clean - adv) / clean"],
    )
    common = {"x": models, "y": models, "texttemplate": "%{text}", "hoverongaps": False, "xgap": 1, "ygap": 1}
    fig.add_trace(
        go.Heatmap(
            z=info["acc"], text=info["acc_text"], customdata=clean, zmin=0.0, zmax=1.0,
            colorscale="Blues", name="transfer accuracy",
            colorbar={"title": {"text": "acc"}, "x": 0.40, "len": 0.9},
            hovertemplate=("source %{y}<br>target %{x}<br>accuracy %{z:.3f}"
                           "<br>target clean acc %{customdata:.3f}<extra></extra>"),
            **common,
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Heatmap(
            z=info["vulnerability"], text=info["vulnerability_text"], customdata=clean,
            zmin=min([0.0] + vuln_vals), zmax=max([1.0] + vuln_vals),
            colorscale="Reds", name="vulnerability",
            colorbar={"title": {"text": "V"}, "x": 1.0, "len": 0.9},
            hovertemplate=("source %{y}<br>target %{x}<br>vulnerability %{z:.3f}"
                           "<br>target clean acc %{customdata:.3f}<extra></extra>"),
            **common,
        ),
        row=1, col=2,
    )
    for c in (1, 2):
        fig.update_xaxes(title_text="target (evaluated)", type="category", row=1, col=c)
        fig.update_yaxes(title_text="source (attacked)" if c == 1 else None, type="category",
                         autorange="reversed", row=1, col=c)
    fig.update_layout(
        title=title + (f": {escape(info['attack'])}" if info["attack"] else ""),
        height=max(380, 160 + 45 * m),
        template="plotly_white",
    )
    return fig


