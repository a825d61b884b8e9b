"""dse.compress.freeze.cached_weights: quantized weights computed once for a training attack's steps
and for an evaluation; every value computed is exactly the one computed without the cache."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import objectives
from dse import training
from dse.compress.freeze import cached_weights, frozen
from dse.compress.pruning import MASK_BUFFER, attach_masks, prunable_layers
from dse.compress.quant import QUANT_LAYERS
from dse.data import Dataset, Split
from dse.models import build_model
from dse.recipe import Recipe
from dse.training import seed_everything, train

TINY = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}
CANDIDATES = {
    "fixed 2/2 per channel": {**TINY, "quant": "fixed", "weight_bits": 2, "act_bits": 2, "per_channel": True},
    "fixed 4/4": {**TINY, "quant": "fixed", "weight_bits": 4, "act_bits": 4},
    "MBN 3x1 per channel": {**TINY, "quant": "mbn", "weight_bases": 3, "act_bases": 1, "per_channel": True},
    "MBN 1x3": {**TINY, "quant": "mbn", "weight_bases": 1, "act_bases": 3},
    "pow2 5-bit": {**TINY, "quant": "pow2", "weight_bits": 5},
    "resnet20 MBN 3x3": {"arch": "resnet20", "quant": "mbn", "weight_bases": 3, "act_bases": 3, "per_channel": True},
}


def _model(candidate: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(candidate, in_channels=1, num_classes=10, mean=(0.3,), std=(0.4,))
    model.train()
    with torch.no_grad():
        model(torch.rand(32, 1, 8, 8))  # BatchNorm statistics and PACT sign flags
    return model


def _pass(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    logits = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), x)
    return logits.detach(), grad


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_cached_weights_compute_exactly_what_the_layers_compute(name):
    model = _model(CANDIDATES[name])
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
    assert layers
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for mode in ("train", "eval"):
        model.train(mode == "train")
        plain = _pass(model, x, y)
        with cached_weights(model) as same:
            assert same is model
            assert all(layer.weight_cache is not None and not layer.weight_cache.requires_grad for layer in layers)
            with cached_weights(model):  # nested: the outer cache stays
                pass
            assert all(layer.weight_cache is not None for layer in layers)
            cached = _pass(model, x, y)
            F.cross_entropy(model(x), y).backward()
        assert torch.equal(plain[0], cached[0]), f"{mode}: logits"
        assert torch.equal(plain[1], cached[1]), f"{mode}: input gradient"
        assert all(layer.weight.grad is None for layer in layers), "no weight gradient through the cache"
        assert all(layer.weight_cache is None for layer in layers), "released on exit"
        F.cross_entropy(model(x), y).backward()
        assert all(layer.weight.grad is not None for layer in layers), "outside the block the weights train again"
        model.zero_grad(set_to_none=True)


def test_cached_weights_of_a_pruned_layer_are_masked_as_its_forward_masks_them():
    """An optimizer step may move masked weights; the pre-hook zeroes them before each forward, and
    the cache zeroes them before quantizing."""
    model = _model(CANDIDATES["fixed 4/4"])
    attach_masks(model)
    torch.manual_seed(1)
    for _, layer in prunable_layers(model):
        getattr(layer, MASK_BUFFER).copy_((torch.rand_like(layer.weight) > 0.5).float())
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = _pass(model, x, y)
    model.load_state_dict(state)  # masked weights nonzero again, as after an optimizer step
    with cached_weights(model):
        cached = _pass(model, x, y)
    assert torch.equal(plain[0], cached[0]) and torch.equal(plain[1], cached[1])


def test_frozen_wins_over_the_cache_and_a_float_model_passes_through():
    model = _model(CANDIDATES["MBN 1x3"])
    with frozen(model), cached_weights(model):
        assert all(m.weight_cache is None for m in model.modules() if isinstance(m, QUANT_LAYERS))
    plain = _model(TINY)
    with cached_weights(plain) as same:
        assert same is plain


def _data(digits) -> Dataset:
    return Dataset(spec=digits.spec, train=Split(x=digits.train.x[:96], y=digits.train.y[:96]),
                   val=Split(x=digits.val.x[:32], y=digits.val.y[:32]), test=digits.test)


def _uncached(model):
    return contextlib.nullcontext(model)


@pytest.mark.parametrize(("name", "attack_bn"), [("fixed 2/2 per channel", "batch"), ("MBN 3x1 per channel", "frozen_batch")])
def test_adversarial_training_is_bitwise_the_same_with_the_cache(digits, monkeypatch, name, attack_bn):
    """PGD-AT with the training attack on cached weights ends in exactly the weights it ends in
    without the cache (one epoch, three attack steps; with ``frozen_batch`` the last on batch statistics)."""
    data = _data(digits)
    recipe = Recipe.parse({"method": "pgd_at", "epochs": 1, "batch_size": 32, "eval_every": 0, "attack_bn": attack_bn,
                           "attack_batch_steps": 1 if attack_bn == "frozen_batch" else 0,
                           "attack": {"name": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 3}})
    states = []
    for patch in (False, True):
        if patch:
            monkeypatch.setattr(training, "cached_weights", _uncached)
        seed_everything(0)
        model = build_model(CANDIDATES[name], in_channels=1, num_classes=10, mean=data.spec.mean, std=data.spec.std)
        train(model, data, recipe, device="cpu")
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_evaluation_and_checks_are_the_same_with_the_cache(digits, monkeypatch):
    model = _model(CANDIDATES["MBN 3x1 per channel"]).eval()
    settings = objectives.default_eval_settings("digits")
    checks = dataclasses.replace(settings.checks, strong_steps=10, strong_restarts=1, square_queries=50, eps_multiples=(1.0, 2.0))
    settings = dataclasses.replace(settings, max_samples=16, checks=checks, attack=dataclasses.replace(settings.attack, steps=5))
    results = []
    for patch in (False, True):
        if patch:
            monkeypatch.setattr(objectives, "cached_weights", _uncached)
        cache: dict = {}
        scores = objectives.evaluate_objectives(model, digits.test, settings, ["natural_acc", "robust_acc", "pert_instability"],
                                                cache=cache)
        checks = objectives.check_masking(model, digits.test, settings, cache=cache)
        results.append((scores, checks["checks"]))
    assert results[0] == results[1]
