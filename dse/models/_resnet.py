"""CIFAR ResNet-20 and ResNet-56 (He et al. 2016, section 4.2), the backbones of seed 004.

Architecture as data: an arch name maps to ``n`` (blocks per stage) and one builder decodes
the stage specs ``(channels, n, stride)``:

* ``Normalize`` first (inputs stay in [0, 1]);
* stem: 3x3 conv, stride 1, 16 channels, BN, ReLU;
* three stages of ``n`` basic blocks (two 3x3 convs with BN; ReLU after the first and after
  the sum) with 16, 32 and 64 channels; the first block of stages 2 and 3 has stride 2;
  ``n = 3`` gives ResNet-20 (6n + 2 = 20 weighted layers), ``n = 9`` ResNet-56;
* global average pool, linear classifier.

Shortcut: option A of He et al. (identity; where the shape changes, the input is subsampled
with stride 2 and zero-padded to the new width, so shortcuts add no parameters and no MACs).
He et al. use option A for their CIFAR ResNets, and so does seed 004: its Table 2 BOPS of the
8/8-bit ResNet-20, 25.95e8, is exactly 64 x the option-A MACs (40,551,040 for 32x32); 1x1
projection shortcuts (option B) would add 262,144 MACs (26.12e8 BOPS). Parameters:
ResNet-20 0.27M and ResNet-56 0.85M, the figures of He et al.'s Table 6.

The layer names follow the common CIFAR implementation: ``conv1``/``bn1`` (stem),
``layer1``..``layer3`` of :class:`BasicBlock` (``conv1``, ``bn1``, ``conv2``, ``bn2``,
``shortcut``), ``pool``, ``linear``. Any image size works (8x8 digits become 8, 4, 2 pixels
per stage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from dse.models._layers import Normalize

__all__ = [
    "BLOCKS_PER_STAGE",
    "BasicBlock",
    "PadShortcut",
    "ResNet",
    "ResNetConfig",
    "ResNetStage",
    "build_resnet",
    "resnet_stages",
]

#: Basic blocks per stage (n of He et al.: depth = 6n + 2).
BLOCKS_PER_STAGE: dict[str, int] = {"resnet20": 3, "resnet56": 9}
STEM_CHANNELS = 16
_STAGE_CHANNELS = (16, 32, 64)
_STAGE_STRIDES = (1, 2, 2)


@dataclass(frozen=True)
class ResNetStage:
    """One stage: ``n`` basic blocks with ``c`` output channels, the first with stride ``s``."""

    c: int
    n: int
    s: int


class ResNetConfig(BaseModel):
    """Candidate keys of ``arch: resnet20`` and ``arch: resnet56`` (the depth is the only knob)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["resnet20", "resnet56"] = "resnet20"


def resnet_stages(config: ResNetConfig) -> list[ResNetStage]:
    """Decodes a candidate into its three stage specs."""
    n = BLOCKS_PER_STAGE[config.arch]
    return [ResNetStage(c=c, n=n, s=s) for c, s in zip(_STAGE_CHANNELS, _STAGE_STRIDES, strict=True)]


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the channels to ``out_ch`` (no weights).

    Args:
        in_ch: Input channels.
        out_ch: Output channels (at least ``in_ch``); the new channels are split evenly before and after.
        stride: Spatial subsampling (taking every ``stride``-th pixel, as a stride-``stride`` 3x3 conv
            with padding 1 does, so the shapes match for odd sizes too).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option-A shortcut cannot shrink {in_ch} to {out_ch} channels")
        self.stride = stride
        self.pad_before = (out_ch - in_ch) // 2
        self.pad_after = out_ch - in_ch - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an option-A shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of ``conv1`` (and the shortcut's subsampling).
    """

    def __init__(self, in_ch: int, out_ch: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = (
            nn.Identity() if stride == 1 and in_ch == out_ch else PadShortcut(in_ch, out_ch, stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet for inputs in [0, 1]; normalization is the first layer.

    Args:
        stages: Decoded stage specs (see :func:`resnet_stages`).
        in_channels: Image channels of the data set.
        num_classes: Classes of the data set.
        mean: Per-channel input mean.
        std: Per-channel input standard deviation.
    """

    def __init__(
        self,
        *,
        stages: Sequence[ResNetStage],
        in_channels: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.act1 = nn.ReLU(inplace=True)
        in_ch = STEM_CHANNELS
        for index, stage in enumerate(stages, start=1):
            blocks = []
            for i in range(stage.n):
                blocks.append(BasicBlock(in_ch, stage.c, stride=stage.s if i == 0 else 1))
                in_ch = stage.c
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.num_stages = len(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(self.normalize(x))))
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.linear(torch.flatten(self.pool(x), 1))


def build_resnet(
    config: ResNetConfig, *, in_channels: int, num_classes: int, mean: Sequence[float], std: Sequence[float]
) -> ResNet:
    """Builds ResNet-20 or ResNet-56 from a validated candidate.

    Args:
        config: The candidate (``arch`` picks the depth).
        in_channels: Image channels of the data set.
        num_classes: Classes of the data set.
        mean: Per-channel input mean (normalization inside the model).
        std: Per-channel input standard deviation.

    Returns:
        The model, taking ``[N, in_channels, H, W]`` inputs in [0, 1] and returning logits.
    """
    return ResNet(stages=resnet_stages(config), in_channels=in_channels, num_classes=num_classes, mean=mean, std=std)
