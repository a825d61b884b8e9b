"""The Jinja2 environment of the report's templates (``dse/report/templates/``).

Autoescape is on for every HTML template. Each printed value goes through
:func:`dse.report.formatting.escape` (the escaping of the figures' hover texts, so the whole page
escapes one way); values that are already HTML (plotly's ``<div>`` and script, escaped notes)
are passed as :class:`markupsafe.Markup` and printed as they are.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from dse.report.formatting import escape, sort_key

__all__ = ["environment", "render"]


def _finalize(value: Any) -> Any:
    """Escapes a printed value with :func:`escape` unless it is already markup."""
    if hasattr(value, "__html__"):
        return value
    return Markup(escape(value))


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    """The report's template environment (built once, on first use)."""
    env = Environment(
        loader=PackageLoader("dse.report", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=True),
        finalize=_finalize,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )
    env.filters["sort_key"] = sort_key
    return env


def render(template: str, /, **context: Any) -> Markup:
    """Renders the template named ``template`` with ``context``; the result is markup (safe to embed)."""
    return Markup(environment().get_template(template).render(**context))
