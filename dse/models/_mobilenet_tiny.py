"""MobileNet-tiny: the inverted-residual network of seed 000, scaled by width and expand ratio.

Architecture as data (as timm's ``_efficientnet_builder`` does): a list of stage specs
``(t, c, n, s)`` is decoded by one builder. The definition reproduces seed 000's Tables 1
and 2 (see ``shared/reference/mobilenet_tiny.md``):

* stem: 3x3 conv, stride 1, ``make_divisible(32 * W)`` channels, BN, ReLU;
* stages ``(t, c, n, s)``: (1,16,1,1), (E,24,2,1), (E,32,3,2), (E,64,4,2), (E,96,3,1),
  (E,160,3,2), (6,320,1,1); E replaces t in the five middle stages only;
* hidden width = in_channels * t; a block with t = 1 has no 1x1 expansion conv;
* shortcut: identity for stride 1 and equal widths, 1x1 conv + BN projection for stride 1 and
  different widths, none for stride 2;
* head: 1x1 conv to ``make_divisible(1280 * max(1, W))``, BN, ReLU, global average pool, linear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

from dse.models._layers import Normalize, make_divisible

__all__ = ["MobileNetTiny", "MobileNetTinyConfig", "StageSpec", "build_mobilenet_tiny", "stage_specs"]

#: Number of stages, and the indices of the stages whose expand ratio is E.
NUM_STAGES = 7
EXPANDABLE_STAGES = (1, 2, 3, 4, 5)
MIN_WIDTH_MULT, MAX_WIDTH_MULT = 0.1, 2.0
MIN_EXPAND, MAX_EXPAND = 1, 64


@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks: expansion ``t``, output channels ``c``, ``n`` blocks, first stride ``s``."""

    t: int
    c: int
    n: int
    s: int


_BASE_STAGES = (
    StageSpec(1, 16, 1, 1),
    StageSpec(6, 24, 2, 1),
    StageSpec(6, 32, 3, 2),
    StageSpec(6, 64, 4, 2),
    StageSpec(6, 96, 3, 1),
    StageSpec(6, 160, 3, 2),
    StageSpec(6, 320, 1, 1),
)


class MobileNetTinyConfig(BaseModel):
    """Candidate keys of ``arch: mobilenet_tiny``.

    ``width_mult`` is one number or one per stage (7); ``expand_ratio`` one integer or one per
    expandable middle stage (5).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["mobilenet_tiny"] = "mobilenet_tiny"
    width_mult: float | list[float] = 0.35
    expand_ratio: int | list[int] = 6

    @field_validator("width_mult")
    @classmethod
    def _check_width(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != NUM_STAGES:
            raise ValueError(f"a per-stage list needs {NUM_STAGES} values, got {len(value)}")
        for v in values:
            if not MIN_WIDTH_MULT <= v <= MAX_WIDTH_MULT:
                raise ValueError(f"{v} is outside [{MIN_WIDTH_MULT}, {MAX_WIDTH_MULT}]")
        return value

    @field_validator("expand_ratio")
    @classmethod
    def _check_expand(cls, value: int | list[int]) -> int | list[int]:
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != len(EXPANDABLE_STAGES):
            raise ValueError(f"a per-stage list needs {len(EXPANDABLE_STAGES)} values, got {len(value)}")
        for v in values:
            if not MIN_EXPAND <= v <= MAX_EXPAND:
                raise ValueError(f"{v} is outside [{MIN_EXPAND}, {MAX_EXPAND}]")
        return value

    def stage_width_mults(self) -> list[float]:
        """The width multiplier of each of the 7 stages."""
        return list(self.width_mult) if isinstance(self.width_mult, list) else [self.width_mult] * NUM_STAGES

    def stage_expand_ratios(self) -> list[int]:
        """The expand ratio t of each of the 7 stages (first and last stage keep their own)."""
        ratios = list(self.expand_ratio) if isinstance(self.expand_ratio, list) else [self.expand_ratio] * 5
        return [_BASE_STAGES[0].t, *ratios, _BASE_STAGES[-1].t]


def stage_specs(config: MobileNetTinyConfig) -> list[StageSpec]:
    """Decodes a candidate into concrete stage specs (channels already scaled)."""
    specs = []
    for base, w, t in zip(_BASE_STAGES, config.stage_width_mults(), config.stage_expand_ratios(), strict=True):
        specs.append(StageSpec(t=t, c=make_divisible(base.c * w), n=base.n, s=base.s))
    return specs


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_ch)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (omitted for t = 1), 3x3 depthwise, 1x1 linear projection.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the depthwise conv.
        expand_ratio: Hidden width is ``in_ch * expand_ratio``.
    """

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self.conv_pw, self.bn1 = _conv_bn(in_ch, hidden, 1)
            self.act1 = nn.ReLU(inplace=True)
        self.conv_dw, self.bn2 = _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden)
        self.act2 = nn.ReLU(inplace=True)
        self.conv_pwl, self.bn3 = _conv_bn(hidden, out_ch, 1)
        self.shortcut: nn.Module | None
        if stride != 1:
            self.shortcut = None
        elif in_ch == out_ch:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(*_conv_bn(in_ch, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = self.act1(self.bn1(self.conv_pw(out)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class MobileNetTiny(nn.Module):
    """MobileNet-tiny for inputs in [0, 1]; normalization is the first layer.

    Args:
        stages: Decoded stage specs (see :func:`stage_specs`).
        stem_channels: Channels of the 3x3 stem conv.
        head_channels: Channels of the final 1x1 conv.
        in_channels: Image channels of the data set.
        num_classes: Classes of the data set.
        mean: Per-channel input mean.
        std: Per-channel input standard deviation.
    """

    def __init__(
        self,
        *,
        stages: Sequence[StageSpec],
        stem_channels: int,
        head_channels: int,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv_stem, self.bn_stem = _conv_bn(in_channels, stem_channels, 3)
        self.act_stem = nn.ReLU(inplace=True)
        blocks: list[nn.Module] = []
        in_ch = stem_channels
        for stage in stages:
            for i in range(stage.n):
                blocks.append(
                    InvertedResidual(in_ch, stage.c, stride=stage.s if i == 0 else 1, expand_ratio=stage.t)
                )
                in_ch = stage.c
        self.blocks = nn.Sequential(*blocks)
        self.conv_head, self.bn_head = _conv_bn(in_ch, head_channels, 1)
        self.act_head = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_stem(self.bn_stem(self.conv_stem(self.normalize(x))))
        x = self.blocks(x)
        x = self.act_head(self.bn_head(self.conv_head(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_mobilenet_tiny(
    config: MobileNetTinyConfig, *, in_channels: int, num_classes: int, mean: Sequence[float], std: Sequence[float]
) -> MobileNetTiny:
    """Builds MobileNet-tiny from a validated candidate."""
    widths = config.stage_width_mults()
    return MobileNetTiny(
        stages=stage_specs(config),
        stem_channels=make_divisible(32 * widths[0]),
        head_channels=make_divisible(1280 * max(1.0, widths[-1])),
        in_channels=in_channels,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
