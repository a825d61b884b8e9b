"""Checkpoints: a state_dict plus plain data (candidate, data, recipe, eval settings, metrics).

Everything is a tensor, dict, list, str, int, float or None, so it loads with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dse.errors import DataError
from dse.io import atomic_write

__all__ = ["load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, **meta: Any) -> Path:
    """Saves ``model.state_dict()`` (on CPU) and ``meta`` (plain data) to ``path``, atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT_VERSION, "state_dict": state, **meta}, tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads a checkpoint safely (``weights_only=True``).

    Raises:
        DataError: Missing, unreadable or not a dse checkpoint (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files; name the file, keep the cause
        raise DataError(f"{path}: not a loadable checkpoint ({type(err).__name__})") from err
    if not isinstance(payload, dict) or "state_dict" not in payload or "candidate" not in payload:
        raise DataError(f"{path}: not a dse checkpoint (no state_dict/candidate)")
    return payload
