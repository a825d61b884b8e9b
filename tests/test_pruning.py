"""Pruning masks, schemes and training-time pruners (dse.compress.pruning)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dse.errors import SpecError
from dse.models import build_model
from dse.compress.pruner import Pruner, cubic_schedule, make_pruner
from dse.compress.pruning import (
    PRUNE_SCHEMES,
    attach_masks,
    layer_ratios,
    layer_sparsity,
    prunable_layers,
    prune,
    sparsity,
)

TINY = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}
SCHEMES = [s for s in PRUNE_SCHEMES if s != "none"]
EPOCHS, STEPS = 4, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on shared CPU cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SmallCNN(nn.Module):
    """Stem conv, conv, depthwise conv, conv, hidden linear, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.dw(x))
        x = F.relu(self.conv3(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def small() -> nn.Module:
    return SmallCNN()


def tiny() -> nn.Module:
    return build_model(TINY, in_channels=1, num_classes=10, mean=(0.5,), std=(0.3,))


BUILDERS = {"small": small, "tiny": tiny}


def _steps(model: nn.Module, pruner: Pruner | None, opt: torch.optim.Optimizer, n: int, gen: torch.Generator) -> None:
    model.train()
    for _ in range(n):
        x = torch.rand(8, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        if pruner is not None:
            loss = loss + pruner.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if pruner is not None:
            pruner.after_step()


def _train_pruned(builder: str, scheme: str, ratio: float) -> tuple[nn.Module, Pruner, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = BUILDERS[builder]()
    pruner = make_pruner(model, scheme, ratio, EPOCHS)
    assert pruner is not None
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    for epoch in range(1, EPOCHS + 1):
        _steps(model, pruner, opt, STEPS, gen)
        pruner.on_epoch_end(epoch)
    pruner.finalize()
    return model, pruner, opt


@pytest.mark.parametrize("builder", ["small", "tiny"])
@pytest.mark.parametrize("ratio", [0.5, 0.8])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_training_reaches_target_and_survives_checkpoints(builder, ratio, scheme, tmp_path):
    model, pruner, opt = _train_pruned(builder, scheme, ratio)
    assert sparsity(model) == pytest.approx(ratio, abs=0.01)

    _steps(model, pruner, opt, 2, torch.Generator().manual_seed(2))  # fine-tuning keeps the masks
    assert sparsity(model) == pytest.approx(ratio, abs=0.01)
    assert float(pruner.penalty()) == 0.0

    model.eval()
    x = torch.rand(4, 1, 8, 8)
    expected = model(x)
    state = model.state_dict()
    assert all(f"{name}.weight_mask" in state for name, _ in prunable_layers(model))

    fresh = BUILDERS[builder]()
    attach_masks(fresh)
    fresh.load_state_dict(state, strict=True)
    assert sparsity(fresh) == pytest.approx(sparsity(model), abs=1e-12)
    torch.testing.assert_close(fresh.eval()(x), expected)

    path = tmp_path / "pruned.pt"
    torch.save(state, path)
    reloaded = BUILDERS[builder]()
    attach_masks(reloaded)
    reloaded.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert sparsity(reloaded) == pytest.approx(ratio, abs=0.01)
    torch.testing.assert_close(reloaded.eval()(x), expected)


def test_masks_are_reapplied_in_forward_after_loading():
    torch.manual_seed(0)
    model = small()
    prune(model, 0.5, "irregular")
    state = model.state_dict()
    dense = small()
    dense_state = dict(dense.state_dict())
    attach_masks(dense)
    # dense weights with the pruned masks: the pre-hook zeroes the masked weights on forward
    state = {**{k: v for k, v in state.items() if k.endswith("weight_mask")}, **dense_state}
    dense.load_state_dict(state, strict=True)
    dense(torch.rand(2, 1, 8, 8))
    assert sparsity(dense) == pytest.approx(0.5, abs=0.01)
    assert all(float((m.weight[m.weight_mask == 0] != 0).sum()) == 0 for _, m in prunable_layers(dense))


def test_prunable_layers_keep_first_conv_and_last_linear_dense():
    model = tiny()
    names = [n for n, _ in prunable_layers(model)]
    assert "conv_stem" not in names and "classifier" not in names
    assert "conv_head" in names and "blocks.0.conv_dw" in names  # depthwise convs are prunable
    for scheme in SCHEMES:
        torch.manual_seed(0)
        m = small()
        prune(m, 0.8, scheme)
        assert not hasattr(m.conv1, "weight_mask") and not hasattr(m.fc2, "weight_mask")
        assert bool((m.conv1.weight != 0).all()) and bool((m.fc2.weight != 0).all())
        assert [n for n, _ in prunable_layers(m)] == ["conv2", "dw", "conv3", "fc1"]


def test_attach_masks_is_idempotent():
    model = small()
    attach_masks(model)
    model.conv2.weight_mask[0] = 0
    attach_masks(model)
    assert len(model.conv2._forward_pre_hooks) == 1
    assert float(model.conv2.weight_mask[0].sum()) == 0
    assert model.conv2.weight_mask.dtype == model.conv2.weight.dtype
    assert model.conv2.weight_mask.shape == model.conv2.weight.shape


def test_sparsity_is_measured():
    model = small()
    assert sparsity(model) == 0.0
    with torch.no_grad():
        model.fc1.weight.zero_()  # zeros without any mask count
    total = sum(m.weight.numel() for _, m in prunable_layers(model))
    assert sparsity(model) == pytest.approx(model.fc1.weight.numel() / total)
    assert layer_sparsity(model)["fc1"] == 1.0 and layer_sparsity(model)["conv2"] == 0.0


@pytest.mark.parametrize("ratio", [0.5, 0.8])
def test_funnel_ratios_rise_with_depth_and_average_to_target(ratio):
    for builder in (small, tiny):
        torch.manual_seed(0)
        model = builder()
        ratios = layer_ratios(model, ratio, "funnel")
        values = list(ratios.values())
        assert all(b > a for a, b in zip(values, values[1:]))
        assert 0 < values[0] and values[-1] < 1
        sizes = {n: m.weight.numel() for n, m in prunable_layers(model)}
        mean = sum(ratios[n] * sizes[n] for n in ratios) / sum(sizes.values())
        assert mean == pytest.approx(ratio, abs=1e-9)
        prune(model, ratio, "funnel")
        measured = layer_sparsity(model)
        for name, target in ratios.items():
            assert measured[name] == pytest.approx(target, abs=1.0 / sizes[name] + 1e-9)


def test_irregular_ratios_differ_per_layer_with_global_threshold():
    torch.manual_seed(0)
    model = small()
    with torch.no_grad():
        model.fc1.weight.mul_(0.01)  # a layer of tiny weights is pruned first
    ratios = layer_ratios(model, 0.2, "irregular")
    assert ratios["fc1"] > 0.7
    assert ratios["conv2"] < 0.05
    prune(model, 0.2, "irregular")
    assert sparsity(model) == pytest.approx(0.2, abs=1e-3)


@pytest.mark.parametrize("ratio", [0.5, 0.8])
def test_structured_removes_whole_output_channels(ratio):
    for builder in (small, tiny):
        torch.manual_seed(0)
        model = builder()
        prune(model, ratio, "structured")
        assert sparsity(model) == pytest.approx(ratio, abs=0.01)
        channel_ratios = layer_ratios(model, ratio, "structured")
        for name, m in prunable_layers(model):
            rows = m.weight_mask.reshape(m.weight.shape[0], -1)
            assert bool(((rows == 0).all(1) | (rows == 1).all(1)).all())  # whole rows only
            removed = int((rows == 0).all(1).sum())
            assert 0 < m.weight.shape[0] - removed  # every layer keeps a channel
            assert removed / m.weight.shape[0] == pytest.approx(channel_ratios[name])
            zero_rows = (m.weight.reshape(m.weight.shape[0], -1) == 0).all(1)
            assert bool(zero_rows[(rows == 0).all(1)].all())
    assert model.blocks[0].conv_dw.groups == model.blocks[0].conv_dw.weight.shape[0]  # depthwise checked above


def test_admm_penalty_decreases_as_weights_approach_z():
    torch.manual_seed(0)
    model = small()
    pruner = Pruner(model, scheme="admm", ratio=0.5, epochs=3, rho=1e-2)
    with torch.no_grad():
        for m in pruner._modules:
            m.weight.add_(0.1 * torch.randn_like(m.weight))
    pruner.on_epoch_end(1)  # Z, U updated
    assert any(float(u.abs().sum()) > 0 for u in pruner._u)
    p0 = pruner.penalty()
    assert p0.requires_grad and float(p0.detach()) > 0
    penalties = [float(p0.detach())]
    for step in (0.5, 1.0):
        with torch.no_grad():
            for m, z, u in zip(pruner._modules, pruner._z, pruner._u):
                m.weight.add_(step * (z - u - m.weight))
        penalties.append(float(pruner.penalty().detach()))
    assert penalties[0] > penalties[1] > penalties[2]
    assert penalties[2] == pytest.approx(0.0, abs=1e-10)
    # Z is the projection onto the sparsity set: exactly half zero
    zeros = sum(int((z == 0).sum()) for z in pruner._z)
    assert zeros == pytest.approx(0.5 * sum(z.numel() for z in pruner._z), abs=1)
    assert sparsity(model) < 0.01  # no hard pruning before the last epoch
    pruner.on_epoch_end(3)
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert float(pruner.penalty()) == 0.0


def test_dns_splices_back_a_growing_weight():
    torch.manual_seed(0)
    model = small()
    pruner = Pruner(model, scheme="dns", ratio=0.5, epochs=4)
    pruner.on_epoch_end(1)
    assert sparsity(model) > 0.1
    mask = model.conv3.weight_mask
    idx = tuple(int(i) for i in (mask == 0).nonzero()[0])
    assert float(model.conv3.weight.detach()[idx]) == 0.0
    with torch.no_grad():  # as an optimizer update would: the pruned weight's gradient step is large
        model.conv3.weight[idx] = 10 * float(model.conv3.weight.abs().max())
    pruner.after_step()
    assert float(model.conv3.weight_mask[idx]) == 1.0
    assert float(model.conv3.weight.detach()[idx]) != 0.0
    # and a kept weight that shrinks is pruned
    kept = tuple(int(i) for i in (model.conv2.weight_mask == 1).nonzero()[0])
    with torch.no_grad():
        model.conv2.weight[kept] = 0.0
    pruner.after_step()
    assert float(model.conv2.weight_mask[kept]) == 0.0


def test_dns_masked_weights_keep_training():
    torch.manual_seed(0)
    model = small()
    pruner = Pruner(model, scheme="dns", ratio=0.5, epochs=4)
    pruner.on_epoch_end(1)
    dense_before = [d.clone() for d in pruner._dense]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _steps(model, pruner, opt, 1, torch.Generator().manual_seed(0))
    masked = model.conv3.weight_mask == 0
    assert bool((pruner._dense[2][masked] != dense_before[2][masked]).any())
    assert bool((model.conv3.weight[masked] == 0).all())


def test_gradual_schedule_is_cubic_and_monotone():
    assert cubic_schedule(0.8, 0, 1, 4) == 0.0
    values = [cubic_schedule(0.8, e, 1, 4) for e in range(1, 5)]
    assert values == sorted(values) and values[-1] == pytest.approx(0.8)
    assert values[0] == pytest.approx(0.8 * (1 - 0.75**3))
    torch.manual_seed(0)
    model = small()
    pruner = Pruner(model, scheme="irregular", ratio=0.8, epochs=4, start_epoch=2)
    pruner.on_epoch_end(1)
    assert sparsity(model) == 0.0
    seen = []
    for epoch in (2, 3, 4):
        pruner.on_epoch_end(epoch)
        seen.append(sparsity(model))
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.8, abs=0.01)


def test_make_pruner_none_and_zero():
    model = small()
    assert make_pruner(model, "none", 0.0, 3) is None
    assert make_pruner(model, "irregular", 0.0, 3) is None
    assert isinstance(make_pruner(model, "funnel", 0.5, 3), Pruner)


@pytest.mark.parametrize("ratio", [1.0, -0.1, float("nan")])
def test_bad_ratio_names_prune_ratio(ratio):
    model = small()
    for call in (
        lambda: prune(model, ratio, "irregular"),
        lambda: make_pruner(model, "irregular", ratio, 3),
        lambda: layer_ratios(model, ratio, "funnel"),
        lambda: Pruner(model, scheme="admm", ratio=ratio, epochs=3),
    ):
        with pytest.raises(SpecError, match="prune_ratio") as info:
            call()
        assert "\n" not in str(info.value)


def test_unknown_scheme_names_prune_scheme():
    model = small()
    for call in (
        lambda: prune(model, 0.5, "magnitude"),
        lambda: make_pruner(model, "magnitude", 0.5, 3),
        lambda: Pruner(model, scheme="magnitude", ratio=0.5, epochs=3),
    ):
        with pytest.raises(SpecError, match="prune_scheme") as info:
            call()
        assert "\n" not in str(info.value)


def test_admm_hard_prunes_before_the_end_and_retrains_with_fixed_masks():
    """A short recipe ends far from Z: ADMM hard-prunes after epochs - admm_retrain_epochs and the
    remaining epochs train with the masks fixed (digits, 10 epochs: the end-of-training hard prune
    had left 0.10 accuracy)."""
    from dse.compress.pruner import admm_retrain_epochs_for

    assert [admm_retrain_epochs_for(e) for e in (1, 2, 3, 5, 10, 20)] == [0, 1, 1, 1, 2, 4]
    assert admm_retrain_epochs_for(10, 0.0) == 0 and admm_retrain_epochs_for(10, 0.5) == 5
    with pytest.raises(SpecError, match="admm_retrain_fraction"):
        admm_retrain_epochs_for(10, 1.0)
    torch.manual_seed(0)
    model = small()
    pruner = make_pruner(model, "admm", 0.5, 10)
    assert pruner.admm_retrain_epochs == 2
    for epoch in range(1, 8):
        pruner.on_epoch_end(epoch)
        assert float(pruner.penalty().detach()) > 0 and not pruner._admm_done
    pruner.on_epoch_end(8)
    assert pruner._admm_done and float(pruner.penalty().detach()) == 0.0
    masks = [getattr(m, "weight_mask").clone() for m in pruner._modules]
    zeros = sum(int((k == 0).sum()) for k in masks)
    assert zeros == pytest.approx(0.5 * sum(k.numel() for k in masks), rel=0.01)
    with torch.no_grad():  # a retraining step moves every weight; the masks stay and pruned weights stay zero
        for m in pruner._modules:
            m.weight.add_(0.1)
    pruner.after_step()
    for m, k in zip(pruner._modules, masks):
        assert torch.equal(getattr(m, "weight_mask"), k)
        assert bool((m.weight[k == 0] == 0).all())
    with pytest.raises(SpecError, match="admm_retrain_epochs"):
        Pruner(model, scheme="admm", ratio=0.5, epochs=3, admm_retrain_epochs=3)
    assert Pruner(model, scheme="admm", ratio=0.5, epochs=3).admm_retrain_epochs == 1
