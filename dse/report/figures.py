"""Thin plotly drawers of the study report: each takes a :mod:`dse.report.info` dict, returns a Figure.

plotly is imported inside the drawers, so the info builders stay usable without it. Every string
taken from the data is escaped (plotly renders titles, names and hover texts as HTML).
"""

from __future__ import annotations

from typing import Any

from dse.report.formatting import PALETTE, axis_title, escape, unit_of
from dse.report.trials import PLOTTED

__all__ = [
    "GREY",
    "KNEE_COLOR",
    "KNEE_MARKER",
    "PARETO_COLOR",
    "draw_dynamics",
    "draw_hypervolume",
    "draw_parcoords",
    "draw_pareto_3d",
    "draw_pareto_pair",
    "draw_pareto_single",
    "study_figures",
]

PARETO_COLOR = "#1f77b4"
KNEE_COLOR = "#d62728"
GREY = "#a0a0a0"

_MARKERS = {
    "pareto": {"color": PARETO_COLOR, "size": 9, "symbol": "circle", "line": {"width": 1, "color": "white"}},
    "dominated": {"color": GREY, "size": 7, "symbol": "circle", "opacity": 0.7},
    "infeasible": {"color": GREY, "size": 8, "symbol": "x", "opacity": 0.8},
}
_NAMES = {"pareto": "Pareto", "dominated": "dominated (feasible)", "infeasible": "infeasible"}
KNEE_MARKER = {"color": KNEE_COLOR, "size": 22, "symbol": "star", "opacity": 1.0,
               "line": {"color": "black", "width": 1.5}}
"""The knee: a filled, outlined star larger than every other marker, drawn last (on top)."""
_KNEE_MARKER_3D = {"color": KNEE_COLOR, "size": 10, "symbol": "diamond", "opacity": 1.0,
                   "line": {"color": "black", "width": 2}}


def _error_bars(data: dict[str, Any], k: int) -> dict[str, Any] | None:
    """Asymmetric plotly error bars of objective ``k`` (None when no point has an interval)."""
    values = [v[k] for v in data["values"]]
    lows = [lo[k] for lo in data.get("low", [])]
    highs = [hi[k] for hi in data.get("high", [])]
    if not lows or all(lo is None for lo in lows):
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": [0.0 if hi is None else hi - v for v, hi in zip(values, highs)],
        "arrayminus": [0.0 if lo is None else v - lo for v, lo in zip(values, lows)],
        "color": PARETO_COLOR,
        "thickness": 1,
        "width": 3,
    }


def draw_pareto_pair(info: dict[str, Any], pair_index: int):
    """2-D scatter of one objective pair, the Pareto points joined by a step line."""
    import plotly.graph_objects as go

    i, j = info["pairs"][pair_index]
    step = info["steps"][pair_index]
    fig = go.Figure()
    for cat in PLOTTED:
        data = info["categories"][cat]
        bars = {}
        if cat == "pareto":  # 95% intervals of the front members (accuracies)
            bars = {"error_x": _error_bars(data, i), "error_y": _error_bars(data, j)}
        fig.add_trace(
            go.Scatter(
                x=[v[i] for v in data["values"]],
                y=[v[j] for v in data["values"]],
                mode="markers",
                name=f"{_NAMES[cat]} ({len(data['numbers'])})",
                marker=_MARKERS[cat],
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
                customdata=data["numbers"],
                **{k: v for k, v in bars.items() if v is not None},
            )
        )
    if len(step["x"]) > 1:
        fig.add_trace(
            go.Scatter(
                x=step["x"],
                y=step["y"],
                mode="lines",
                line={"color": PARETO_COLOR, "shape": step["line_shape"], "width": 1.5},
                name="front" if len(info["objectives"]) == 2 else "2-D front of the Pareto set",
                hoverinfo="skip",
            )
        )
    _add_knee(fig, info, lambda v: {"x": [v[i]], "y": [v[j]]}, go.Scatter)
    labels = [escape(lbl) for lbl in info["labels"]]
    titles = _axis_titles(info)
    fig.update_layout(
        title=f"Pareto front: {labels[i]} vs {labels[j]}",
        xaxis_title=titles[i],
        yaxis_title=titles[j],
        height=480,
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0.0},
        margin={"t": 90},
    )
    return fig


def _axis_titles(info: dict[str, Any]) -> list[str]:
    """Escaped axis titles with units (``"robust_acc (max) [fraction]"``)."""
    titles = info.get("axis_titles") or [axis_title(n, d) for n, d in zip(info["objectives"], info["directions"])]
    return [escape(t) for t in titles]


def _add_knee(fig, info: dict[str, Any], coords, trace_cls, marker: dict[str, Any] | None = None) -> None:
    """Marks the knee point (if any) with a filled, outlined, larger marker, added last (on top)."""
    knee = info.get("knee")
    if knee is None:
        return
    data = info["categories"]["pareto"]
    k = data["numbers"].index(knee)
    fig.add_trace(
        trace_cls(
            mode="markers",
            name=f"knee (trial {knee}): recommended",
            marker=marker or KNEE_MARKER,
            hovertext=[data["hover"][k]],
            hovertemplate="%{hovertext}<extra></extra>",
            **coords(data["values"][k]),
        )
    )


def draw_pareto_single(info: dict[str, Any]):
    """One objective: its value against the trial number."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cat in PLOTTED:
        data = info["categories"][cat]
        fig.add_trace(
            go.Scatter(
                x=data["numbers"],
                y=[v[0] for v in data["values"]],
                mode="markers",
                name=f"{_NAMES[cat]} ({len(data['numbers'])})",
                marker=_MARKERS[cat],
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    label = escape(info["labels"][0])
    _add_knee(fig, info, lambda v: {"x": [info["knee"]], "y": [v[0]]}, go.Scatter)
    fig.update_layout(title=f"{label} per trial", xaxis_title="trial number", yaxis_title=_axis_titles(info)[0],
                      height=450, template="plotly_white")
    return fig


def draw_pareto_3d(info: dict[str, Any]):
    """3-D scatter of the first three objectives."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cat in PLOTTED:
        data = info["categories"][cat]
        marker = dict(_MARKERS[cat])
        marker["size"] = 5 if cat == "pareto" else 4
        marker.pop("line", None)
        fig.add_trace(
            go.Scatter3d(
                x=[v[0] for v in data["values"]],
                y=[v[1] for v in data["values"]],
                z=[v[2] for v in data["values"]],
                mode="markers",
                name=f"{_NAMES[cat]} ({len(data['numbers'])})",
                marker=marker,
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    _add_knee(fig, info, lambda v: {"x": [v[0]], "y": [v[1]], "z": [v[2]]}, go.Scatter3d, marker=_KNEE_MARKER_3D)
    labels = [escape(lbl) for lbl in info["labels"]]
    titles = _axis_titles(info)
    fig.update_layout(
        title="Pareto front: " + ", ".join(labels[:3]),
        scene={"xaxis_title": titles[0], "yaxis_title": titles[1], "zaxis_title": titles[2]},
        height=620,
        template="plotly_white",
    )
    return fig


def draw_parcoords(info: dict[str, Any]):
    """Parallel coordinates over all objectives (better is up on every axis)."""
    import plotly.graph_objects as go

    cats = ("dominated", "pareto")
    knee = info.get("knee")
    values = [v for c in cats for v in info["categories"][c]["values"]]
    colors = [
        (2.0 if n == knee else 1.0) if c == "pareto" else 0.0
        for c in cats for n in info["categories"][c]["numbers"]
    ]
    dims = []
    for k, (label, direction) in enumerate(zip(_axis_titles(info), info["directions"])):
        col = [v[k] for v in values]
        dim: dict[str, Any] = {"label": label, "values": col}
        if col:
            lo, hi = min(col), max(col)
            dim["range"] = [lo, hi] if direction == "maximize" else [hi, lo]
        dims.append(dim)
    fig = go.Figure(
        go.Parcoords(
            line={"color": colors, "cmin": 0.0, "cmax": 2.0,
                  "colorscale": [[0.0, "#d0d0d0"], [0.5, PARETO_COLOR], [1.0, KNEE_COLOR]]},
            dimensions=dims,
        )
    )
    n_p = len(info["categories"]["pareto"]["numbers"])
    fig.update_layout(
        title=f"All objectives (Pareto trials in blue: {n_p}; knee in red; feasible dominated in grey; better is up)",
        height=480,
        template="plotly_white",
    )
    return fig


def draw_hypervolume(info: dict[str, Any]):
    """Hypervolume against the trial number, as a fraction of the reference box when there is one."""
    import plotly.graph_objects as go

    fraction = info.get("fraction")
    fig = go.Figure(
        go.Scatter(
            x=info["numbers"],
            y=info["hypervolume"] if fraction is None else fraction,
            mode="lines+markers",
            line={"shape": "hv", "color": PARETO_COLOR},
            marker={"size": 4},
            name="hypervolume",
        )
    )
    fig.update_layout(
        title=escape(info["title"]),
        xaxis_title="trial number",
        yaxis_title="hypervolume" if fraction is None else "hypervolume [fraction]",
        yaxis_range=None if fraction is None else [0.0, 1.0],
        height=420,
        template="plotly_white",
    )
    return fig


def draw_dynamics(info: dict[str, Any]):
    """One panel per validation metric, one line per trial, against the epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = info["metrics"]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[escape(m) for m in metrics])
    for t, line in enumerate(info["lines"]):
        color = PALETTE[t % len(PALETTE)]
        for c, metric in enumerate(metrics):
            fig.add_trace(
                go.Scatter(
                    x=line["epoch"],
                    y=line["values"][metric],
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"color": color},
                    name=escape(line["label"]),
                    legendgroup=str(line["number"]),
                    showlegend=c == 0,
                    hovertemplate=(
                        f"trial {line['number']}<br>epoch %{{x}}<br>{escape(metric)}: %{{y:.4g}}<extra></extra>"
                    ),
                    connectgaps=True,
                ),
                row=1,
                col=c + 1,
            )
            fig.update_xaxes(title_text="epoch", row=1, col=c + 1)
            fig.update_yaxes(title_text=escape(unit_of(metric.removeprefix("val_")) or ""), row=1, col=c + 1)
    fig.update_layout(
        title="Training dynamics of the selected trials (validation metrics per epoch)",
        height=440,
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0},
        margin={"b": 120},
    )
    return fig


def study_figures(pareto: dict, hv: dict, dyn: dict) -> list[tuple[str, str, Any]]:
    """``(section, slug, figure)`` for every figure of the report, in page order."""
    names = pareto["objectives"]
    figs: list[tuple[str, str, Any]] = []
    m = len(names)
    if m == 1:
        figs.append(("pareto", f"best_{names[0]}", draw_pareto_single(pareto)))
    if m > 3:
        figs.append(("pareto", "parcoords", draw_parcoords(pareto)))
    if m == 3:
        figs.append(("pareto", "pareto_3d", draw_pareto_3d(pareto)))
    for k, (i, j) in enumerate(pareto["pairs"]):
        figs.append(("pareto", f"pareto_{names[i]}_vs_{names[j]}", draw_pareto_pair(pareto, k)))
    figs.append(("hypervolume", "hypervolume", draw_hypervolume(hv)))
    if dyn["message"] is None:
        figs.append(("dynamics", "dynamics", draw_dynamics(dyn)))
    return figs
