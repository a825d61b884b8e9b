"""Compression objectives: seed 004 Table 2 BOPS, bit-packed and DEFLATE sizes, sparsity, latency."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from dse.compress.quant import LayerQuant, QConv2d, QLinear, QuantSpec, quantize_model
from dse.data import Split
from dse.models import ResNetConfig, build_resnet
from dse.profile import FP_BITS, bops_from_layers, profile_model
from objectives import EvalSettings
from objectives._compression import (
    COMPRESSION_OBJECTIVES,
    bops,
    compressed_bytes,
    latency_batch_ms,
    latency_info,
    latency_ms,
    size_bytes,
    sparsity,
)

SETTINGS = EvalSettings()
CIFAR = dict(in_channels=3, num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

#: Seed 004 Table 2, CIFAR-10 rows: (method, weights, activations, kind, BOPS). ``kind`` is
#: ``fp`` (counted at 8/8), ``fixed`` (bits) or ``mbn`` (weights/activations are bases M/N).
TABLE2_CIFAR10: dict[str, list[tuple[str, int, int, str, float]]] = {
    "resnet20": [
        ("ResNet-20 8/8", 8, 8, "fp", 25.95e8),
        ("PACT-4", 4, 4, "fixed", 6.70e8),
        ("PACT-2", 2, 2, "fixed", 1.89e8),
        ("XNOR-Net", 1, 1, "fixed", 0.68e8),
        ("MBN 1x1", 1, 1, "mbn", 0.68e8),
        ("MBN 3x1", 3, 1, "mbn", 1.49e8),
        ("MBN 1x3", 1, 3, "mbn", 1.49e8),
        ("MBN 5x1", 5, 1, "mbn", 2.29e8),
        ("MBN 1x5", 1, 5, "mbn", 2.29e8),
        ("MBN 7x1", 7, 1, "mbn", 3.09e8),
        ("MBN 1x7", 1, 7, "mbn", 3.09e8),
        ("MBN 3x3", 3, 3, "mbn", 3.98e8),
        ("MBN 5x5", 5, 5, "mbn", 10.31e8),
    ],
    "resnet56": [
        ("ResNet-56 8/8", 8, 8, "fp", 80.31e8),
        ("PACT-4", 4, 4, "fixed", 20.29e8),
        ("PACT-2", 2, 2, "fixed", 5.29e8),
        ("XNOR-Net", 1, 1, "fixed", 1.53e8),
        ("MBN 1x1", 1, 1, "mbn", 1.53e8),
        ("MBN 3x1", 3, 1, "mbn", 4.03e8),
        ("MBN 1x3", 1, 3, "mbn", 4.03e8),
        ("MBN 5x1", 5, 1, "mbn", 6.54e8),
        ("MBN 1x5", 1, 5, "mbn", 6.54e8),
        ("MBN 7x1", 7, 1, "mbn", 9.04e8),
        ("MBN 1x7", 1, 7, "mbn", 9.04e8),
        ("MBN 3x3", 3, 3, "mbn", 11.54e8),
        ("MBN 5x5", 5, 5, "mbn", 31.54e8),
    ],
}


def resnet_bops_table(arch: str) -> list[dict]:
    """Table 2's BOPS of a CIFAR-10 ResNet recomputed from its per-layer MACs.

    Every layer but the first conv and the last linear takes the row's bits (fixed point) or
    bases (multi-bit: 1 x 1 bit x M x N); those two stay in full precision and count at 8 x 8.
    """
    model = build_resnet(ResNetConfig(arch=arch), **CIFAR)
    macs = [layer["macs"] for layer in profile_model(model, in_channels=3, image_size=32)["layers"]]
    rows = []
    for method, w, a, kind, paper in TABLE2_CIFAR10[arch]:
        inner = {"fp": (FP_BITS, FP_BITS, 1), "fixed": (w, a, 1), "mbn": (1, 1, w * a)}[kind]
        layers = []
        for i, m in enumerate(macs):
            wb, ab, mult = (FP_BITS, FP_BITS, 1) if i in (0, len(macs) - 1) else inner
            layers.append({"macs": m, "weight_bits": wb, "act_bits": ab, "multiplier": mult})
        rows.append({"method": method, "bops": bops_from_layers(layers), "paper": paper})
    return rows

# Seed 004 Table 2 prints 3.98e8 BOPS for ResNet-20 MBN 3x3, but every other ResNet-20 MBN row lies
# on 0.2835e8 + 0.4011e8 * M * N (1x1 0.68, 3x1/1x3 1.49, 5x1 2.29, 7x1 3.09, 5x5 10.31), which gives
# 3.89e8 for M * N = 9: the printed value has its last two digits swapped. The same counting
# reproduces ResNet-56 MBN 3x3 (11.54e8) exactly, so the rule is right and only that cell is off (-2.2%).
MISPRINTED = {("resnet20", "MBN 3x3")}


@pytest.fixture(scope="module")
def tables() -> dict[str, list[dict]]:
    return {arch: resnet_bops_table(arch) for arch in TABLE2_CIFAR10}


ROWS = [(arch, i) for arch, rows in TABLE2_CIFAR10.items() for i in range(len(rows))]


@pytest.mark.parametrize(
    ("arch", "index"), ROWS, ids=[f"{a}-{TABLE2_CIFAR10[a][i][0].replace(' ', '_')}" for a, i in ROWS]
)
def test_reproduces_seed004_table2_bops(tables: dict, arch: str, index: int) -> None:
    row = tables[arch][index]
    if (arch, row["method"]) in MISPRINTED:
        assert row["bops"] / 1e8 == pytest.approx(3.89, abs=0.005)
        pytest.xfail(f"Table 2 prints {row['paper'] / 1e8:.2f}e8, a digit swap of the computed 3.89e8 (see MISPRINTED)")
    assert row["bops"] == pytest.approx(row["paper"], rel=0.02), row["method"]


def test_bops_from_layers_counts_bits_and_bases() -> None:
    layers = [
        {"macs": 100, "weight_bits": 32, "act_bits": 32, "multiplier": 1},  # fp: counted at 8 x 8
        {"macs": 10, "weight_bits": 4, "act_bits": 2},  # fixed point, multiplier defaults to 1
        {"macs": 10, "weight_bits": 1, "act_bits": 1, "multiplier": 6},  # MBN 3x2
        {"macs": 10, "weight_bits": 32, "act_bits": 4, "multiplier": 1},  # fp weights only
    ]
    assert bops_from_layers(layers) == 100 * 64 + 10 * 8 + 10 * 6 + 10 * 32
    assert bops_from_layers(layers, fp_bits=None) == 100 * 1024 + 80 + 60 + 10 * 128
    assert bops_from_layers([]) == 0.0


def _split(channels: int = 3, size: int = 32, n: int = 4) -> Split:
    return Split(x=torch.rand(n, channels, size, size), y=torch.zeros(n, dtype=torch.long))


def test_bops_objective_of_fp_resnet20_is_the_8bit_figure() -> None:
    model = build_resnet(ResNetConfig(), **CIFAR)
    assert bops(model, _split(), SETTINGS) / 1e8 == pytest.approx(25.95, rel=0.001)


@pytest.mark.parametrize(
    ("spec", "paper"),
    [
        ({"mode": "mbn", "weight_bases": 3, "act_bases": 1}, 1.49e8),
        ({"mode": "mbn", "weight_bases": 1, "act_bases": 1}, 0.68e8),
        ({"mode": "fixed", "weight_bits": 4, "act_bits": 4}, 6.70e8),
        ({"mode": "fixed", "weight_bits": 2, "act_bits": 2, "first_last_bits": 32}, 1.89e8),
    ],
)
def test_bops_of_dse_quant_resnet20_match_table2(spec: dict, paper: float) -> None:
    model = quantize_model(build_resnet(ResNetConfig(), **CIFAR), QuantSpec(**spec))
    data = _split(n=2)
    assert bops(model, data, SETTINGS) == pytest.approx(paper, rel=0.02)
    fp = build_resnet(ResNetConfig(), **CIFAR)
    assert size_bytes(model, data, SETTINGS) < 0.5 * size_bytes(fp, data, SETTINGS)
    assert compressed_bytes(model, data, SETTINGS) < 0.5 * compressed_bytes(fp, data, SETTINGS)


def _hand_model(mask: bool = True) -> nn.Sequential:
    """A float conv, a 4-bit conv (masked) and an MBN 3x1 linear; the quantized layers leave their
    inputs unquantized so that no clipping level or activation basis adds tensors."""
    torch.manual_seed(0)
    conv_fp = nn.Conv2d(1, 2, 3, padding=1, bias=True)  # 18 weights, 2 biases
    conv_q = QConv2d(2, 4, 3, padding=1, bias=False, quant=LayerQuant("fixed", weight_bits=4, act_bits=4, quantize_input=False))
    if mask:
        conv_q.register_buffer("weight_mask", (torch.arange(72) % 4 != 0).float().view(4, 2, 3, 3))
    linear = QLinear(4, 3, quant=LayerQuant("mbn", weight_bases=3, act_bases=1, quantize_input=False))  # 12 weights, 3 biases
    return nn.Sequential(conv_fp, conv_q, nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def test_size_bytes_of_hand_made_model() -> None:
    expected = (
        18 * 4 + 2 * 4  # fp conv: 32-bit weights and biases
        + 72 * 4 // 8 + 72 // 8  # 4-bit conv: 36 bytes of weights + 9 bytes of 1-bit mask
        + 4 * 4 * 4  # BN: weight, bias, running mean, running var (num_batches_tracked is not stored)
        + 5 + 3 * 4 + 3 * 4  # MBN 3x1 linear: 12 * 3 bits = 36 bits -> 5 bytes, 3 fp32 scales, 3 biases
    )
    assert size_bytes(_hand_model(), _split(1, 4), SETTINGS) == expected == 218


def test_bops_objective_reads_layer_bits() -> None:
    # Per image of 4x4: conv_fp 16*2*9 = 288 MACs at 8x8, conv_q 16*4*18 = 1152 at 4x4, linear 12 at 1x1x3.
    assert bops(_hand_model(), _split(1, 4), SETTINGS) == 288 * 64 + 1152 * 16 + 12 * 3


def test_sparsity_is_exact_after_masks() -> None:
    model = _hand_model()
    with torch.no_grad():
        model[0].weight[0, 0, 0, :] = 0.0  # 3 exact zeros in the first conv: not a prunable layer
    # Prunable layers are those prune_ratio targets: here only the middle 4-bit conv, whose mask
    # zeroes every 4th of its 72 weights; the first conv and the last linear are left out.
    assert sparsity(model, _split(1, 4), SETTINGS) == pytest.approx(18 / 72, abs=1e-12)
    assert sparsity(_hand_model(mask=False), _split(1, 4), SETTINGS) == 0.0


def test_sparsity_of_torch_pruned_model() -> None:
    from dse.compress.pruning import prunable_layers

    model = build_resnet(ResNetConfig(), **CIFAR)
    layers = [(m, "weight") for _, m in prunable_layers(model)]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.7)
    assert sparsity(model, _split(), SETTINGS) == pytest.approx(0.7, abs=1e-4)


def test_compressed_bytes_smaller_for_sparse_and_quantized() -> None:
    torch.manual_seed(0)
    dense = build_resnet(ResNetConfig(), **CIFAR)
    sparse = build_resnet(ResNetConfig(), **CIFAR)
    sparse.load_state_dict(dense.state_dict())
    for m in sparse.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_buffer("weight_mask", (torch.rand_like(m.weight) > 0.9).float())
    data = _split()
    dense_size, sparse_size = compressed_bytes(dense, data, SETTINGS), compressed_bytes(sparse, data, SETTINGS)
    assert sparse_size < 0.35 * dense_size
    assert dense_size <= size_bytes(dense, data, SETTINGS) * 1.01  # fp32 noise barely compresses
    quantize_model(dense, QuantSpec(mode="fixed", weight_bits=2, act_bits=2, first_last_bits=32))
    assert compressed_bytes(dense, data, SETTINGS) < 0.2 * dense_size  # 2-bit codes instead of fp32


def test_latency_positive_and_info_says_threads() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).train()
    data = _split(1, 8, n=5)
    one = latency_ms(model, data, SETTINGS, warmup=1, repeats=3)
    batch = latency_batch_ms(model, data, SETTINGS, warmup=1, repeats=3, batch_size=16)
    assert one > 0 and batch > 0
    assert model.training  # mode restored
    info = latency_info(model, EvalSettings(batch_size=64))
    assert info["torch_threads"] == torch.get_num_threads() and info["device"] == "cpu"
    assert info["batch_size"] == 64 and info["warmup"] > 0 and info["repeats"] > 0


def test_registry_entries() -> None:
    assert set(COMPRESSION_OBJECTIVES) == {
        "bops", "size_bytes", "compressed_bytes", "sparsity", "latency_ms", "latency_batch_ms"
    }
    directions = {name: o.direction for name, o in COMPRESSION_OBJECTIVES.items()}
    assert directions.pop("sparsity") == "maximize"
    assert set(directions.values()) == {"minimize"}
    assert all(o.description for o in COMPRESSION_OBJECTIVES.values())
