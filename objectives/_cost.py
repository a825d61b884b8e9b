"""Cost objectives: params and MACs, counted as seed 000 counts them (see :mod:`dse.profile`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from dse.data import Split
from dse.profile import profile_model
from objectives._base import EvalSettings

__all__ = ["cached_profile", "macs", "params"]


def cached_profile(model: nn.Module, data: Split, cache: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`dse.profile.profile_model` for one image of ``data``'s size, kept in ``cache["profile"]``."""
    if cache is not None and "profile" in cache:
        return cache["profile"]
    _, channels, size, _ = data.x.shape
    result = profile_model(model, in_channels=channels, image_size=size)
    if cache is not None:
        cache["profile"] = result
    return result


def params(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Conv and linear weights plus linear biases; BatchNorm excluded."""
    return float(cached_profile(model, data, cache)["params"])


def macs(model: nn.Module, data: Split, settings: EvalSettings, *, cache: dict[str, Any] | None = None) -> float:
    """Multiply-accumulates of conv and linear layers for one image of the data set's size."""
    return float(cached_profile(model, data, cache)["macs"])
