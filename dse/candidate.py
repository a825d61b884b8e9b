"""Candidate files: a YAML mapping of flat candidate keys, plus optional ``recipe``, ``data`` and
``eval`` sections (and ``source``, where ``dse export`` notes the study and trial it came from;
training ignores it). The same plain data is searched, stored, exported and trained.

Example::

    arch: mobilenet_tiny
    width_mult: 0.35
    expand_ratio: 6
    data: {dataset: digits}
    recipe: {method: pgd_at, epochs: 30}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from dse.errors import SpecError
from dse.errors import did_you_mean, read_yaml_mapping
from dse.io import atomic_write_text
from dse.models import validate_candidate

__all__ = ["SECTIONS", "CandidateFile", "dump_candidate_file", "load_candidate_file", "parse_set_args"]

SECTIONS = ("recipe", "data", "eval", "source")


class CandidateFile(dict):
    """A candidate (flat keys) with its optional sections, as read from a file or ``--set`` flags."""

    @property
    def candidate(self) -> dict[str, Any]:
        return {k: v for k, v in self.items() if k not in SECTIONS}

    def section(self, name: str) -> dict[str, Any]:
        value = self.get(name) or {}
        if not isinstance(value, Mapping):
            raise SpecError(f"{name}: expected a mapping, got {type(value).__name__}")
        return dict(value)


def parse_set_args(items: Sequence[str]) -> dict[str, Any]:
    """Parses ``KEY=VALUE`` flags; values are read as YAML scalars or lists (``0.35``, ``[6, 6, 8, 8, 10]``).

    A dotted key sets a section field: ``recipe.epochs=5``.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise SpecError(f"--set {key}: cannot read value {raw!r}: {err.__class__.__name__}") from err
        section, dot, field = key.partition(".")
        if dot:
            if section not in SECTIONS:
                raise SpecError(f"--set {key}: unknown section {section!r}{did_you_mean(section, SECTIONS)} (known: {', '.join(SECTIONS)})")
            result.setdefault(section, {})[field] = value
        else:
            result[key] = value
    return result


def load_candidate_file(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> CandidateFile:
    """Reads a candidate file (if given) and applies ``--set`` overrides, then validates the candidate.

    Raises:
        SpecError: Missing or unreadable file, not a mapping, unknown arch or key, bad value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path, "candidate")
    for key, value in parse_set_args(overrides).items():
        if key in SECTIONS:
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    result = CandidateFile(data)
    where = str(path) if path is not None else "candidate"
    validated = validate_candidate(result.candidate, where=where).model_dump()
    return CandidateFile({**validated, **{s: result[s] for s in SECTIONS if s in result}})


def dump_candidate_file(path: str | os.PathLike[str], candidate: Mapping[str, Any], **sections: Any) -> None:
    """Writes a candidate and its sections (``recipe=...``, ``data=...``) as YAML."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SpecError(f"unknown sections {sorted(unknown)}")
    content = dict(candidate) | {k: v for k, v in sections.items() if v is not None}
    atomic_write_text(path, yaml.safe_dump(content, sort_keys=False))
