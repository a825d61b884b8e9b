"""BatchNorm folding for attack passes, and frozen batch statistics (dse.robust.fold)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dse.models import build_model
from dse.robust.attacks import pgd
from dse.robust.fold import fold_batchnorm, frozen_batch_statistics

CANDIDATES = {
    "mobilenet_tiny": {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2},
    "resnet20": {"arch": "resnet20"},
    "fixed_2_2": {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2, "quant": "fixed", "weight_bits": 2, "act_bits": 2},
    "mbn_3x1": {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2, "quant": "mbn", "weight_bases": 3, "act_bases": 1},
    "pruned": {"arch": "resnet20", "prune_scheme": "irregular", "prune_ratio": 0.5},
}


def _model(candidate: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(candidate, in_channels=3, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    # non-trivial running statistics and affine parameters, as after training
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), [x])
    return grad


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_folded_view_computes_the_eval_model(name: str) -> None:
    model = _model(CANDIDATES[name])
    folded = fold_batchnorm(model)
    assert folded is not None
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    with torch.no_grad():
        expected = model(x)
    got = folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    grad, want = _input_grad(folded, x, y), _input_grad(model, x, y)
    # quantizers round: a rounding boundary may flip for a few elements, so compare the gradients' directions
    cos = F.cosine_similarity(grad.flatten(), want.flatten(), dim=0)
    assert cos > 0.999
    assert not any(p.requires_grad for p in folded.graph_module.parameters() if p not in set(model.parameters()))


def test_plain_convs_are_folded_and_no_batchnorm_is_left() -> None:
    model = _model(CANDIDATES["mobilenet_tiny"])
    folded = fold_batchnorm(model)
    assert folded is not None
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert folded.folded_convs == n_bn  # every BN of MobileNet-tiny follows a plain conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # the live model is untouched and still has its BatchNorm layers
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn


def test_quantized_and_pruned_convs_are_shared_not_folded() -> None:
    model = _model(CANDIDATES["fixed_2_2"])
    folded = fold_batchnorm(model)
    assert folded is not None
    live = {id(m) for m in model.modules()}
    shared_quant = [m for m in folded.modules() if type(m).__name__ == "QConv2d"]
    assert shared_quant and all(id(m) in live for m in shared_quant)


def test_refresh_follows_weight_and_statistics_changes() -> None:
    model = _model(CANDIDATES["resnet20"])
    folded = fold_batchnorm(model)
    assert folded is not None
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.mul_(1.5)
        expected = model(x)
        stale = folded(x)
        assert not torch.allclose(stale, expected, atol=1e-3)
        torch.testing.assert_close(folded.refresh()(x), expected, rtol=1e-4, atol=1e-4)


def test_a_model_without_batchnorm_or_untraceable_is_not_folded() -> None:
    assert fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) is None

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return self.bn(self.conv(x))

    assert fold_batchnorm(Branchy()) is None


def test_frozen_batch_statistics_give_the_training_pass_function() -> None:
    model = _model(CANDIDATES["mobilenet_tiny"])
    x = torch.rand(16, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [m.momentum for m in bn]
        for m in bn:
            m.momentum = 0.0
        train_logits = model(x)
        for m, momentum in zip(bn, momenta):
            m.momentum = momentum
    model.load_state_dict(before)
    with frozen_batch_statistics(model, x):
        assert model.training  # flags restored inside the block; the caller chooses eval
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), train_logits, rtol=1e-4, atol=1e-4)
            folded = fold_batchnorm(model)
            assert folded is not None
            torch.testing.assert_close(folded(x), train_logits, rtol=1e-4, atol=1e-4)
    assert model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=f"{key} changed")


def test_frozen_batch_statistics_restore_on_error() -> None:
    model = _model(CANDIDATES["resnet20"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_batch_statistics(model, torch.rand(4, 3, 16, 16)):
            raise RuntimeError("boom")
    assert model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_pgd_on_the_folded_view_finds_the_same_examples() -> None:
    model = _model(CANDIDATES["mobilenet_tiny"])
    folded = fold_batchnorm(model)
    assert folded is not None
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
    kwargs = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 5}
    a = pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kwargs)
    b = pgd(folded, x, y, generator=torch.Generator().manual_seed(1), **kwargs)
    # sign steps: a gradient component near zero may flip; nearly every pixel agrees
    assert (a - b).abs().le(1e-6).float().mean() > 0.99


# --------------------------------------------------------------------------- in training (recipe attack_bn)


def test_recipe_attack_bn_modes() -> None:
    from dse.training import Recipe

    assert Recipe.parse({"method": "fast_at"}).attack_bn == "batch"  # see dse.recipe.METHOD_DEFAULTS
    assert Recipe.parse({"attack_bn": "frozen_batch"}).attack_fold_bn is True
    with pytest.raises(Exception, match="attack_bn"):
        Recipe.parse({"attack_bn": "frozen"})


@pytest.mark.parametrize("method", ["pgd_at", "trades"])
def test_folded_and_unfolded_frozen_batch_attacks_give_the_same_loss(method: str, digits) -> None:
    import copy

    from dse.training import Recipe, _adversarial_loss, seed_everything
    from tests.conftest import make_model

    seed_everything(0)
    model = make_model(digits).train()
    x, y = digits.train.x[:64], digits.train.y[:64]
    attack = {"name": "pgd", "eps": 0.1, "step_size": 0.025, "steps": 7}
    recipe = Recipe.parse({"method": method, "attack": attack, "attack_bn": "frozen_batch"})
    unfolded = copy.deepcopy(model)
    folded = fold_batchnorm(model)
    assert folded is not None and folded.folded_convs > 0
    loss_f, logits_f = _adversarial_loss(model, x, y, recipe, torch.Generator().manual_seed(1), folded=folded)
    loss_u, logits_u = _adversarial_loss(unfolded, x, y, recipe, torch.Generator().manual_seed(1))
    # TRADES starts 0.001 from x, where the KL gradient is tiny and the sign of some components
    # follows float rounding (~4% of pixels differ after 7 steps); PGD's examples agree exactly here
    assert float(loss_f.detach()) == pytest.approx(float(loss_u.detach()), rel=1e-2)
    if method == "pgd_at":
        torch.testing.assert_close(logits_f, logits_u, rtol=1e-3, atol=1e-3)
        # the statistics pass and the attack left the running statistics to the training pass alone
        for (name, a), b in zip(model.state_dict().items(), unfolded.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, msg=name)

