"""Paths inside a study file, resolved the same way from any working directory.

The rule: a relative path written in a study file (``data.root``, ``lookup.root``, ``output_dir``,
``space.options.table``, the file path of a ``sqlite:///`` storage URL) is relative to the folder
of the study file; ``~`` expands to the home folder. Two defaults do not come from the file and
keep their own anchors: ``output_dir`` left out is ``runs/NAME`` under the working directory (where
``dse run`` was started), and ``lookup.root`` left out is ``shared/data/nb201-robustness`` beside
the dse checkout. Everything is made absolute when the file is read, so Ray trials (which run in
other folders) and every command see the same paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LOOKUP_ROOT", "resolve_path", "resolve_sqlite_url", "resolve_study_paths"]

#: ``lookup.root`` when the study file does not give one: the published NAS-Bench-201 results
#: beside the checkout (``<checkout>/../shared/data/nb201-robustness``).
DEFAULT_LOOKUP_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201-robustness"


def resolve_path(value: str, base: Path) -> str:
    """``value`` with ``~`` expanded, made absolute against ``base`` when relative."""
    path = Path(value).expanduser()
    return str((path if path.is_absolute() else base / path).resolve())


def resolve_sqlite_url(url: str, base: Path) -> str:
    """A ``sqlite:///relative.db`` URL with its file made absolute against ``base`` (other URLs,
    in-memory SQLite and ``file:`` URIs unchanged; an unparsable URL is left for the storage check)."""
    if not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    return parsed.set(database=resolve_path(database, base)).render_as_string(hide_password=False)


def resolve_study_paths(config: Any, base: Path) -> Any:
    """A copy of a validated ``StudyConfig`` with every path absolute (see the module's rule)."""
    update: dict[str, Any] = {}
    if config.output_dir:
        update["output_dir"] = resolve_path(config.output_dir, base)
    else:
        update["output_dir"] = str((Path("runs") / config.name).resolve())
    if config.storage:
        update["storage"] = resolve_sqlite_url(config.storage, base)
    if config.data.root:
        update["data"] = config.data.model_copy(update={"root": resolve_path(config.data.root, base)})
    if config.is_replay and isinstance(config.space.options.get("table"), str):
        table = resolve_path(config.space.options["table"], base)
        update["space"] = config.space.model_copy(update={"options": {**config.space.options, "table": table}})
    if config.lookup is not None:
        explicit = "root" in config.lookup.model_fields_set
        root = resolve_path(config.lookup.root, base) if explicit else str(DEFAULT_LOOKUP_ROOT)
        update["lookup"] = config.lookup.model_copy(update={"root": root})
    return config.model_copy(update=update)
