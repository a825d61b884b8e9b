"""One self-contained HTML report of a study: Pareto plots, hypervolume, training dynamics, table.

The report follows Optuna's plotting pattern: pure ``get_*_info()`` builders turn the runner's
tables into plain data structures (lists, dicts, numbers; tested directly), and thin ``draw_*()``
functions turn those into ``plotly.graph_objects.Figure`` objects. :func:`write_report` renders
everything with a Jinja2 template into one HTML page that embeds plotly.js once and needs no
network (no CDN, no external script, style sheet or font).

Modules, one job each:

* :mod:`dse.report.formatting`: escaping, slugs, number formats, palette;
* :mod:`dse.report.trials`: reading the trials table (objectives, categories, candidates, hover);
* :mod:`dse.report.intervals`: 95% (Wilson) intervals of accuracies and statistical ties on the front;
* :mod:`dse.report.recommended`: the "recommended candidate" panel (the knee, its scores with
  intervals, checkpoint and the export / train commands);
* :mod:`dse.report.info` / :mod:`dse.report.figures`: the study sections' data and figures;
* :mod:`dse.report.table_info`: the table of all trials;
* :mod:`dse.report.compute_info` / :mod:`dse.report.compute_figures`: the compute section (epochs
  trained and saved by early stopping, hypervolume against epochs);
* :mod:`dse.report.rescore_info`, :mod:`dse.report.curves_info`,
  :mod:`dse.report.rescore_figures`, :mod:`dse.report.robustness`: the ``dse rescore`` sections;
* :mod:`dse.report.chromium`: PNG export through kaleido and Chromium;
* :mod:`dse.report.rendering` and ``templates/``: the page template;
* :mod:`dse.report.page`: :func:`write_report`.

Inputs are those of the study runner:

* ``trials``: one row per Optuna trial (``number``, ``state``, ``feasible``,
  ``constraint_violation``, ``error``, ``duration_s``, ``candidate`` (JSON), ``cand.<key>``
  columns and one float column per objective / metric);
* ``epochs``: per-epoch metrics (``number``, ``epoch``, ``val_natural_acc``, ...), possibly
  empty;
* ``meta``: ``name``, ``objectives`` (``[{"name", "direction"}]``), ``metrics``,
  ``constraints``, ``measurement``, ``storage``, ``sampler``, ``rescore``; optionally
  ``study_file`` (the study YAML's path, named in the panel's commands).

Example:
    >>> write_report(trials, epochs, meta, "runs/study/report.html")  # doctest: +SKIP
"""

from dse.report.chromium import export_png
from dse.report.compute_info import get_compute_info
from dse.report.info import (
    get_dynamics_info,
    get_hypervolume_info,
    get_pareto_info,
    get_summary_info,
)
from dse.report.intervals import tied_groups, wilson_interval
from dse.report.page import write_report
from dse.report.recommended import get_recommended_info
from dse.report.table_info import get_table_info

__all__ = [
    "export_png",
    "get_compute_info",
    "get_dynamics_info",
    "get_hypervolume_info",
    "get_pareto_info",
    "get_recommended_info",
    "get_summary_info",
    "get_table_info",
    "tied_groups",
    "wilson_interval",
    "write_report",
]
