"""Model registry: a candidate spec (plain mapping) in, an ``nn.Module`` on [0, 1] inputs out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from torch import nn

from dse.errors import SpecError, did_you_mean, one_line_error
from dse.compress.keys import COMPRESSION_KEYS, CompressionConfig, apply_compression
from dse.models._layers import Normalize, make_divisible
from dse.models._mobilenet_tiny import (
    EXPANDABLE_STAGES,
    MAX_WIDTH_MULT,
    MIN_WIDTH_MULT,
    NUM_STAGES,
    InvertedResidual,
    MobileNetTiny,
    MobileNetTinyConfig,
    build_mobilenet_tiny,
)
from dse.models._resnet import ResNet, ResNetConfig, build_resnet

__all__ = [
    "ARCHS",
    "EXPANDABLE_STAGES",
    "MAX_WIDTH_MULT",
    "MIN_WIDTH_MULT",
    "NUM_STAGES",
    "InvertedResidual",
    "ArchEntry",
    "Candidate",
    "MobileNetTiny",
    "MobileNetTinyConfig",
    "Normalize",
    "ResNet",
    "ResNetConfig",
    "build_resnet",
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
    from dse.models.nb201 import NB201Config, build_nb201

    return ArchEntry(NB201Config, build_nb201)


ARCHS: dict[str, ArchEntry] = {
    "mobilenet_tiny": ArchEntry(MobileNetTinyConfig, build_mobilenet_tiny),
    "resnet20": ArchEntry(ResNetConfig, build_resnet),
    "resnet56": ArchEntry(ResNetConfig, build_resnet),
    # NAS-Bench-201 cells: looked up in published results (tabular studies), never built.
    "nb201": _nb201_entry(),
}


@dataclass(frozen=True)
class Candidate:
    """A validated candidate: the architecture's keys and the compression keys."""

    arch_config: BaseModel
    compression: CompressionConfig

    @property
    def arch(self) -> str:
        return self.arch_config.arch  # type: ignore[attr-defined]

    def model_dump(self) -> dict[str, Any]:
        """Plain data: architecture keys, then the compression keys that differ from the defaults."""
        return {**self.arch_config.model_dump(), **self.compression.model_dump(exclude_defaults=True)}


def validate_candidate(candidate: Mapping[str, Any], *, where: str = "candidate") -> Candidate:
    """Validates a candidate mapping against its architecture's keys and the compression keys.

    Raises:
        SpecError: One line naming the unknown arch, unknown key, bad value or impossible combination.
    """
    if isinstance(candidate, Candidate):
        return candidate
    if not isinstance(candidate, Mapping):
        raise SpecError(f"{where}: expected a mapping of candidate keys, got {type(candidate).__name__}")
    arch = candidate.get("arch")
    if arch is None:
        raise SpecError(f"{where}: arch: missing (known: {', '.join(sorted(ARCHS))})")
    if arch not in ARCHS:
        raise SpecError(f"{where}: arch: unknown architecture {arch!r}{did_you_mean(arch, ARCHS)} (known: {', '.join(sorted(ARCHS))})")
    arch_keys = {k: v for k, v in candidate.items() if k not in COMPRESSION_KEYS}
    compression_keys = {k: v for k, v in candidate.items() if k in COMPRESSION_KEYS}
    try:
        arch_config = ARCHS[arch].config_cls.model_validate(arch_keys)
        compression = CompressionConfig.model_validate(compression_keys)
    except ValidationError as err:  # compression keys are picked by name: an unknown key is the architecture's
        raise SpecError(one_line_error(err, where=where, model=ARCHS[arch].config_cls)) from err
    return Candidate(arch_config, compression)


def build_model(
    candidate: Mapping[str, Any] | Candidate,
    *,
    in_channels: int,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> nn.Module:
    """Builds the model of a candidate for a data set's channels, classes and normalization,
    with its quantized layers and pruning masks."""
    validated = validate_candidate(candidate)
    entry = ARCHS[validated.arch]
    model = entry.build(validated.arch_config, in_channels=in_channels, num_classes=num_classes, mean=mean, std=std)
    return apply_compression(model, validated.compression)
