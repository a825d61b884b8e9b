"""Small layers shared by the model builders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "make_divisible"]


def make_divisible(value: float, divisor: int = 8, *, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Rounds a channel count to the nearest multiple of ``divisor`` (the MobileNet/timm rule).

    The result is at least ``min_value`` (default ``divisor``) and, if rounding down lost more
    than ``1 - round_limit`` of ``value``, one ``divisor`` is added back.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


class Normalize(nn.Module):
    """Per-channel standardization inside the model, so that attacks see inputs in [0, 1].

    Args:
        mean: Per-channel mean of the input.
        std: Per-channel standard deviation of the input.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
