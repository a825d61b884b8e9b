"""Model registry: a candidate spec (plain mapping) in, an ``nn.Module`` on [0, 1] inputs out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from torch import nn

from dse._errors import SpecError
from dse._validation import one_line_error
from dse.models._layers import Normalize, make_divisible
from dse.models._mobilenet_tiny import MobileNetTiny, MobileNetTinyConfig, build_mobilenet_tiny

__all__ = [
    "ARCHS",
    "ArchEntry",
    "MobileNetTiny",
    "MobileNetTinyConfig",
    "Normalize",
    "build_model",
    "make_divisible",
    "validate_candidate",
]


@dataclass(frozen=True)
class ArchEntry:
    """One architecture: the pydantic model of its candidate keys and its builder."""

    config_cls: type[BaseModel]
    build: Callable[..., nn.Module]


def _nb201_entry() -> ArchEntry:
    from objectives._nb201 import NB201Config, build_nb201

    return ArchEntry(NB201Config, build_nb201)


ARCHS: dict[str, ArchEntry] = {
    "mobilenet_tiny": ArchEntry(MobileNetTinyConfig, build_mobilenet_tiny),
    # NAS-Bench-201 cells: looked up in published results (tabular studies), never built.
    "nb201": _nb201_entry(),
}


def validate_candidate(candidate: Mapping[str, Any], *, where: str = "candidate") -> BaseModel:
    """Validates a candidate mapping against its architecture's keys and ranges.

    Raises:
        SpecError: One line naming the unknown arch, unknown key or bad value.
    """
    if not isinstance(candidate, Mapping):
        raise SpecError(f"{where}: expected a mapping of candidate keys, got {type(candidate).__name__}")
    arch = candidate.get("arch")
    if arch is None:
        raise SpecError(f"{where}: arch: missing (known: {', '.join(sorted(ARCHS))})")
    if arch not in ARCHS:
        raise SpecError(f"{where}: arch: unknown architecture {arch!r} (known: {', '.join(sorted(ARCHS))})")
    try:
        return ARCHS[arch].config_cls.model_validate(dict(candidate))
    except ValidationError as err:
        raise SpecError(one_line_error(err, where=where)) from err


def build_model(
    candidate: Mapping[str, Any] | BaseModel,
    *,
    in_channels: int,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> nn.Module:
    """Builds the model of a candidate for a data set's channels, classes and normalization."""
    config = candidate if isinstance(candidate, BaseModel) else validate_candidate(candidate)
    entry = ARCHS[config.arch]  # type: ignore[attr-defined]
    return entry.build(config, in_channels=in_channels, num_classes=num_classes, mean=mean, std=std)
