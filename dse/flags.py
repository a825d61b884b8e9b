"""argparse types of the ``dse`` command line: each flag's value is checked when it is parsed, so
a bad flag is one ``dse: error:`` line before anything runs, reads or writes.

Numbers are finite and in range, trial lists are whole numbers, a device exists on this machine,
a storage URL parses and its driver is installed, and an output path is a writable file path
(checked without creating anything).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dse.errors import DseError

__all__ = ["fraction", "int_at_least", "non_negative_int", "output_file", "positive_float", "positive_int", "storage_url",
           "torch_device", "trial_list"]


def int_at_least(minimum: int):
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def torch_device(text: str) -> str:
    """argparse type: a torch device that exists here (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device like cpu, cuda or cuda:0, got {text!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def trial_list(text: str) -> list[int]:
    """argparse type: comma-separated trial numbers (whole numbers >= 0), e.g. ``3,7``."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated trial numbers like 3,7, got {text!r}")
    return [int(part) for part in parts]


def output_file(text: str) -> str:
    """argparse type: a file path that can be written (not a folder; its nearest existing folder
    writable), checked before any work starts. Nothing is created."""
    import os

    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file path")
    _check_writable_parent(path, text)
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: is not writable")
    return text


def _check_writable_parent(path: Path, text: str) -> None:
    """``path``'s nearest existing ancestor is a writable folder (argparse error otherwise)."""
    import os

    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: folder {existing} is not writable")


def storage_url(text: str) -> str:
    """argparse type: an SQLAlchemy URL that parses and whose driver is installed (nothing opened)."""
    from dse.study.preflight import check_storage_url

    try:
        check_storage_url(text, where="storage")
    except DseError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("storage: ")) from None
    return text


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text}")
    return value
