"""Thin plotly drawers of the report's "Compute" section (:func:`~dse.report.compute_info.get_compute_info`).

plotly is imported inside the drawers, so the info builder stays usable without it.
"""

from __future__ import annotations

from typing import Any

from dse.report.figures import GREY, PARETO_COLOR

__all__ = ["OUTCOME_STYLE", "compute_figures", "draw_epochs_per_trial", "draw_hypervolume_per_epoch"]

OUTCOME_STYLE = {
    "complete": ("complete", PARETO_COLOR),
    "stopped": ("stopped early (PRUNED)", "#ff7f0e"),
    "failed": ("failed", GREY),
    "running": ("running", "#c7c7c7"),
}
"""Legend name and colour of each outcome drawn (repeats train 0 epochs and are not drawn)."""


def draw_hypervolume_per_epoch(info: dict[str, Any]):
    """Hypervolume (fraction of the final one) against the cumulative epochs trained."""
    import plotly.graph_objects as go

    curve = info["curve"]
    hover = ["start"] + [f"after trial {n}" for n in curve["numbers"][1:]]
    fig = go.Figure(
        go.Scatter(
            x=curve["epochs"],
            y=curve["fraction"],
            mode="lines+markers",
            line={"shape": "hv", "color": PARETO_COLOR},
            marker={"size": 5},
            name="hypervolume",
            hovertext=hover,
            hovertemplate="%{hovertext}<br>%{x} epochs trained<br>hypervolume: %{y:.1%} of final<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Hypervolume against epochs trained (trials in order of {info['order']})",
        xaxis_title="epochs trained (cumulative)",
        yaxis_title="hypervolume (fraction of final)",
        yaxis={"range": [0, 1.05], "tickformat": ".0%"},
        height=420,
        template="plotly_white",
    )
    return fig


def draw_epochs_per_trial(info: dict[str, Any]):
    """Epochs trained per trial, coloured by outcome, with a dashed line at the full epoch count."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for outcome, (name, color) in OUTCOME_STYLE.items():
        rows = [t for t in info["trials"] if t["outcome"] == outcome]
        if not rows:
            continue
        hover = [
            f"trial {t['number']}: {t['epochs_trained']} epochs"
            + (f", stopped at epoch {t['stopped_at_epoch']}" if t["stopped_at_epoch"] is not None else "")
            for t in rows
        ]
        fig.add_trace(
            go.Bar(
                x=[t["number"] for t in rows],
                y=[t["epochs_trained"] for t in rows],
                name=f"{name} ({len(rows)})",
                marker={"color": color},
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    full = info["totals"]["full_epochs"]
    if full > 0:
        fig.add_hline(y=full, line={"dash": "dash", "color": "black", "width": 1},
                      annotation_text=f"full training: {full} epochs", annotation_position="top left")
    fig.update_layout(
        title="Epochs trained per trial",
        xaxis_title="trial number",
        yaxis_title="epochs trained",
        barmode="overlay",
        bargap=0.15,
        height=420,
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0.0},
        margin={"t": 90},
    )
    return fig


def compute_figures(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(slug, figure)`` for the compute section, in page order."""
    return [
        ("compute_hypervolume_per_epoch", draw_hypervolume_per_epoch(info)),
        ("compute_epochs_per_trial", draw_epochs_per_trial(info)),
    ]
