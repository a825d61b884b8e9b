"""The study report page: info builders, figures and the ``report.html.j2`` template, in one file.

:func:`write_report` computes every info dict (:mod:`dse.report.info`,
:mod:`dse.report.compute_info`), draws the figures (:mod:`dse.report.figures`,
:mod:`dse.report.compute_figures`, :mod:`dse.report.robustness`), embeds them as HTML (plotly.js
once, nothing from the network) and renders the page template.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from dse.io import atomic_write_text
from dse.report.chromium import export_png
from dse.report.compute_figures import compute_figures
from dse.report.compute_info import compute_section_wanted, get_compute_info, scheduler_name
from dse.report.figures import study_figures
from dse.report.formatting import slug
from dse.report.info import (
    get_dynamics_info,
    get_hypervolume_info,
    get_masking_info,
    get_pareto_info,
    get_summary_info,
)
from dse.report.recommended import get_recommended_info
from dse.report.rendering import render
from dse.report.robustness import robustness_sections, robustness_summary
from dse.report.table_info import get_table_info
from dse.report.trials import study_objectives

__all__ = ["write_report"]

_PLOTLY_CONFIG = {"responsive": True, "displaylogo": False}


def _figure_html(fig: Any, name: str, *, include_plotlyjs: bool) -> Markup:
    """One figure as an HTML ``<div>`` (with the plotly.js bundle when ``include_plotlyjs``)."""
    return Markup(
        fig.to_html(
            full_html=False,
            include_plotlyjs=include_plotlyjs,
            div_id=f"dse-{slug(name)}",
            config=_PLOTLY_CONFIG,
            default_height=f"{fig.layout.height or 450}px",
        )
    )


def _table_rows(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of :func:`~dse.report.info.get_table_info` as the table macro takes them."""
    rows = []
    for row in table["rows"]:
        cells = [
            {"display": display, "sort": key, "css_class": "error" if column == "error" else "", "style": ""}
            for column, (display, key) in zip(table["columns"], row["cells"])
        ]
        css = "pareto" if row["pareto"] else "repeat" if row.get("repeat") else ""
        rows.append({"number": row["number"], "css_class": css, "cells": cells})
    return rows


def _compute_section(
    trials: pd.DataFrame, epochs: pd.DataFrame | None, meta: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The compute section's numbers (None when the study has no early stopping to show)."""
    if not compute_section_wanted(trials, meta):
        return None
    specs, _, _ = study_objectives(meta)
    max_epochs = meta.get("max_epochs")
    info = get_compute_info(trials, epochs, specs, max_epochs=int(max_epochs) if max_epochs else None)
    name = scheduler_name(meta)
    info["scheduler"] = name if name and name.lower() != "fifo" else "mo_asha"
    info["saving_text"] = f"{100.0 * info['totals']['saving']:.1f}%"
    return info


def write_report(
    trials: pd.DataFrame,
    epochs: pd.DataFrame | None,
    meta: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    selected: Sequence[int] | None = None,
    png_dir: str | os.PathLike | None = None,
) -> Path:
    """Writes the study report as one self-contained, offline HTML file.

    The page opens with the recommended candidate (the knee: see
    :mod:`dse.report.recommended`), then holds a summary (measurement, objectives, constraints,
    trial counts, Pareto-set size, knee point), the Pareto plots (a 2-D scatter per objective pair, a 3-D scatter for
    three objectives, parallel coordinates beyond three), the hypervolume per trial, the
    compute section (when trials were stopped early or the scheduler is not ``fifo``: see
    :mod:`dse.report.compute_info`), per-epoch dynamics of the selected trials, the
    robustness sections (when the study has model checkpoints or rescores) and a sortable
    table of all trials. plotly.js is embedded once; nothing is loaded from the network.

    Args:
        trials: The trials table (one row per Optuna trial).
        epochs: Per-epoch metrics; may be empty or None.
        meta: The study meta (``name``, ``objectives``, ``metrics``, ``constraints``,
            ``measurement``, ``storage``, ``sampler``, ``rescore``; optionally ``scheduler``
            (a name or ``{"name": ...}``), ``max_epochs`` and ``study_file`` (the study YAML,
            named in the recommended candidate's ``dse export`` command)).
        path: The HTML file to write (parent folders are created).
        selected: Trial numbers whose training dynamics are drawn (default: the Pareto
            trials, at most 8).
        png_dir: When given, every figure is also written there as PNG (needs kaleido; see
            :func:`dse.report.chromium.export_png`).

    Returns:
        The path written.
    """
    path = Path(path)
    trials = trials.reset_index(drop=True)
    pareto = get_pareto_info(trials, meta)
    hv = get_hypervolume_info(trials, meta)
    dyn = get_dynamics_info(trials, epochs, meta, selected=selected)
    table = get_table_info(trials, meta)

    figs = study_figures(pareto, hv, dyn)
    blocks: dict[str, list[Markup]] = {"pareto": [], "hypervolume": [], "dynamics": []}
    for k, (section, name, fig) in enumerate(figs):
        blocks[section].append(_figure_html(fig, name, include_plotlyjs=k == 0))
        if png_dir is not None:
            export_png(fig, Path(png_dir) / f"{slug(name)}.png")

    rescores = list(meta.get("rescore") or [])
    has_models = "checkpoint" in trials.columns and trials["checkpoint"].notna().any()
    robustness = []
    for title, name, note, fig in robustness_sections(rescores) if rescores or has_models else []:
        html = None
        if fig is not None:
            html = _figure_html(fig, name, include_plotlyjs=not figs)
            if png_dir is not None:
                export_png(fig, Path(png_dir) / f"{slug(name)}.png")
        robustness.append({"title": title, "note": note, "figure": html})

    compute = _compute_section(trials, epochs, meta)
    if compute is not None:
        compute["figures"] = []
        for name, fig in compute_figures(compute):
            compute["figures"].append(_figure_html(fig, name, include_plotlyjs=not figs))
            if png_dir is not None:
                export_png(fig, Path(png_dir) / f"{slug(name)}.png")

    page = render(
        "report.html.j2",
        name=str(meta.get("name") or "study"),
        measurement=meta.get("measurement") or "not recorded",
        summary=get_summary_info(trials, meta, pareto),
        recommended=get_recommended_info(trials, meta, pareto),
        figures=blocks,
        hypervolume=hv,
        dynamics=dyn,
        compute=compute,
        robustness=robustness,
        rescore_summary=robustness_summary(rescores) if robustness else Markup(""),
        masking=get_masking_info(trials),
        table={"columns": table["columns"], "rows": _table_rows(table)},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path
