"""CIFAR ResNet-20/56 reproduce He et al.'s parameter counts and seed 004's 8/8-bit BOPS."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dse.models._layers import Normalize
from dse.models._resnet import BasicBlock, PadShortcut, ResNetConfig, build_resnet
from dse.profile import count_params, profile_model

CIFAR = dict(in_channels=3, num_classes=10, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
DIGITS = dict(in_channels=1, num_classes=10, mean=(0.3,), std=(0.4,))


def _resnet(arch: str, **kwargs) -> nn.Module:
    return build_resnet(ResNetConfig(arch=arch), **(kwargs or CIFAR))


@pytest.mark.parametrize(("arch", "params_m"), [("resnet20", 0.27), ("resnet56", 0.85)])
def test_params_match_he_et_al(arch: str, params_m: float) -> None:
    prof = profile_model(_resnet(arch), in_channels=3, image_size=32)
    assert prof["params"] / 1e6 == pytest.approx(params_m, rel=0.02)
    assert prof["params"] == count_params(_resnet(arch))


def test_resnet20_macs_give_seed004_8bit_bops() -> None:
    prof = profile_model(_resnet("resnet20"), in_channels=3, image_size=32)
    # stem 3*16*9*1024 + stage 1: 6 * 16*16*9*1024 + stages 2, 3: (16*32*9*256 + 5 * 32*32*9*256) each
    # + linear 64*10; option-A shortcuts add nothing (a 1x1 projection would add 262,144).
    assert prof["macs"] == 40_551_040
    assert prof["macs"] * 64 / 1e8 == pytest.approx(25.95, rel=0.001)  # seed 004 Table 2, 8/8 bits
    assert len(prof["layers"]) == 20  # 19 convs + 1 linear: the 20 weighted layers
    assert prof["layers"][0]["name"] == "conv1" and prof["layers"][-1]["name"] == "linear"


def test_resnet56_depth_and_macs() -> None:
    prof = profile_model(_resnet("resnet56"), in_channels=3, image_size=32)
    assert len(prof["layers"]) == 56
    assert prof["macs"] * 64 / 1e8 == pytest.approx(80.31, rel=0.001)  # seed 004 Table 2, ResNet-56 8/8


def test_macs_agree_with_torch_flop_counter() -> None:
    model = _resnet("resnet20").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    assert profile_model(model, in_channels=3, image_size=32)["macs"] == counter.get_total_flops() // 2


def test_layout_and_named_sublayers() -> None:
    model = _resnet("resnet20")
    assert isinstance(next(iter(model.children())), Normalize)
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [3, 3, 3]
    first = model.layer2[0]
    assert isinstance(first, BasicBlock)
    for name in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
        assert hasattr(first, name)
    assert first.conv1.stride == (2, 2) and first.conv1.out_channels == 32
    assert isinstance(first.shortcut, PadShortcut) and not list(first.shortcut.parameters())
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    assert model.linear.in_features == 64


def test_pad_shortcut_matches_conv_shape_on_odd_sizes() -> None:
    block = BasicBlock(16, 32, stride=2)
    for size in (8, 7, 5):
        assert block(torch.rand(2, 16, size, size)).shape == (2, 32, (size + 1) // 2, (size + 1) // 2)
    out = PadShortcut(16, 32, 2)(torch.ones(1, 16, 4, 4))
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0 and out[:, 8:24].eq(1).all()


def test_runs_on_8x8_digits_and_backprops() -> None:
    model = _resnet("resnet20", **DIGITS)
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert x.grad is not None and model.conv1.weight.grad is not None
    with torch.no_grad():
        assert _resnet("resnet56", **DIGITS).eval()(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_config_forbids_unknown_keys_and_is_frozen() -> None:
    with pytest.raises(ValidationError):
        ResNetConfig(arch="resnet20", width_mult=1.0)
    with pytest.raises(ValidationError):
        ResNetConfig(arch="resnet32")
    config = ResNetConfig(arch="resnet56")
    with pytest.raises(ValidationError):
        config.arch = "resnet20"
    assert ResNetConfig.model_validate({"arch": "resnet20"}) == ResNetConfig()
